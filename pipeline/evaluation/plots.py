"""PNG plots of the validation report (matplotlib, imported on first use, Agg backend): reliability
diagrams on quantile bins with the weight per bin below them, ROC and precision-recall curves, the
learning curve of training, and reliability per slice value. Every title names what it grades.

Raw and calibrated differ in color, line style and marker (raw: orange, dashed, squares; calibrated:
blue, solid, circles); raw is drawn on top, partly transparent, so neither hides the other. A split
whose labels are all of one class gets ROC and precision-recall axes with a note and no curve."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import metrics

STYLES = {
    "raw": {"color": "tab:orange", "linestyle": "--", "marker": "s", "alpha": 0.75, "zorder": 3},
    "calibrated": {"color": "tab:blue", "linestyle": "-", "marker": "o", "zorder": 2},
}
# ROC and PR curves hold a point per distinct score: a marker every tenth of the curve, raw's half a step later
MARK_EVERY = {"raw": (0.05, 0.1), "calibrated": (0.0, 0.1)}
SLICE_STYLES = [  # (color, marker, line style) of the slice values, most rows first
    ("tab:blue", "o", "-"),
    ("tab:orange", "s", "--"),
    ("tab:green", "^", "-."),
    ("tab:red", "D", ":"),
    ("tab:purple", "v", "-"),
    ("tab:brown", "P", "--"),
]
SKIPPED_NAMED = 4  # skipped slice values named in a title; the rest are counted


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _thresholds(y, p, w=None) -> tuple[np.ndarray, np.ndarray]:
    """For each distinct score t from the highest down [m]: the weight of positives Σ_{p≥t} wy and
    of negatives Σ_{p≥t} w(1−y) scored at least t."""
    y, p, w = np.asarray(y, np.float64), np.asarray(p, np.float64), metrics.weights_or_ones(y, w)
    order = np.argsort(-p, kind="stable")
    p, pos, neg = p[order], (w * y)[order], (w * (1 - y))[order]
    last = np.r_[p[1:] != p[:-1], True]
    return np.cumsum(pos)[last], np.cumsum(neg)[last]


def roc_points(y, p, w=None):
    """(false positive rate, true positive rate) arrays, one point per distinct score (and (0, 0))."""
    tp, fp = _thresholds(y, p, w)
    return np.r_[0.0, fp / max(fp[-1], 1e-12)], np.r_[0.0, tp / max(tp[-1], 1e-12)]


def pr_points(y, p, w=None):
    """(recall, precision) arrays [m], one point per distinct score t from the highest down:
    recall = Σ_{p≥t} wy / Σ wy, precision = Σ_{p≥t} wy / Σ_{p≥t} w."""
    tp, fp = _thresholds(y, p, w)
    return tp / max(tp[-1], 1e-12), tp / np.maximum(tp + fp, 1e-12)


def average_precision(recall, precision) -> float:
    """AP = Σ_k (R_k − R_{k−1}) · P_k over pr_points' arrays [m] (R_0 = 0): the area under the
    step curve, scikit-learn's average_precision_score."""
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def reliability_png(path: Path, y, curves: dict[str, np.ndarray], w=None, bins: int = 10, split: str = "") -> None:
    """Reliability diagram of each curve ("raw", "calibrated": scores [n]) against the labels y [n]
    (weights w [n]) on `bins` quantile bins (metrics.quantile_reliability), the weight per bin below;
    the legend's ECE is metrics.ece (equal-width bins)."""
    binned = {
        f"{name} (ECE {metrics.ece(y, p, w, bins):.4f})": (metrics.quantile_reliability(y, p, w, bins), STYLES[name])
        for name, p in curves.items()
    }
    _reliability_figure(path, f"Reliability, {split}", binned, _count_label(w))


def slice_reliability_png(path: Path, y, p, values, w=None, bins: int = 10, column: str = "", split: str = "") -> None:
    """Reliability of the scores p [n] per value of the slice column `column` (values [n], text): a
    curve on `bins` quantile bins for each of the len(SLICE_STYLES) values with the most rows; the
    title names the values skipped."""
    y, p, values = np.asarray(y, np.float64), np.asarray(p, np.float64), np.asarray(values)
    w = np.ones(len(y)) if w is None else np.asarray(w, np.float64)
    names, rows = np.unique(values, return_counts=True)
    ranked = [str(names[i]) for i in np.lexsort((names, -rows))]
    shown, skipped = ranked[: len(SLICE_STYLES)], ranked[len(SLICE_STYLES) :]
    binned = {}
    for value, (color, marker, linestyle) in zip(shown, SLICE_STYLES):
        m = values == value
        label = f"{value} ({int(m.sum()):,} rows, ECE {metrics.ece(y[m], p[m], w[m], bins):.4f})"
        style = {"color": color, "marker": marker, "linestyle": linestyle, "alpha": 0.85}
        binned[label] = (metrics.quantile_reliability(y[m], p[m], w[m], bins), style)
    title = f"Reliability by {column}, {split}"
    if skipped:
        more = f" and {len(skipped) - SKIPPED_NAMED} more" if len(skipped) > SKIPPED_NAMED else ""
        title += f"\nskipped (fewer rows): {', '.join(skipped[:SKIPPED_NAMED])}{more}"
    _reliability_figure(path, title, binned, _count_label(w))


def roc_png(path: Path, y, curves: dict[str, np.ndarray], w=None, split: str = "") -> None:
    """ROC curve of each curve ("raw", "calibrated": scores [n]) against the labels y [n] (weights
    w [n]), its AUC (metrics.auc) in the legend."""
    fig, ax = _pyplot().subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "k:", label="chance")
    if _one_class(y, w):
        _note(ax)
    else:
        for name, p in curves.items():
            fpr, tpr = roc_points(y, p, w)
            label = f"{name} (AUC {metrics.auc(y, p, w):.4f})"
            ax.plot(fpr, tpr, **STYLES[name], markevery=MARK_EVERY[name], markersize=5, label=label)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="lower right")
    _save(fig, path, f"ROC, {split}")


def pr_png(path: Path, y, curves: dict[str, np.ndarray], w=None, split: str = "") -> None:
    """Precision-recall curve of each curve ("raw", "calibrated": scores [n]) against the labels
    y [n] (weights w [n]), drawn as the step function whose area is its average precision (in the
    legend); the dotted line is the positive rate, the precision of a random ranking."""
    fig, ax = _pyplot().subplots(figsize=(5, 5))
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
    if _one_class(y, w):
        _note(ax)
    else:
        weights = np.ones(len(y)) if w is None else np.asarray(w, np.float64)
        ctr = float(np.sum(weights * np.asarray(y, np.float64)) / weights.sum())
        ax.axhline(ctr, color="k", linestyle=":", label=f"positive rate {ctr:.4f}")
        for name, p in curves.items():
            recall, precision = pr_points(y, p, w)
            label = f"{name} (AP {average_precision(recall, precision):.4f})"
            ax.plot(
                np.r_[0.0, recall],
                np.r_[precision[0], precision],
                **STYLES[name],
                drawstyle="steps-pre",
                markevery=MARK_EVERY[name],
                markersize=5,
                label=label,
            )
        ax.legend(loc="upper right")
    _save(fig, path, f"Precision-recall, {split}")


def learning_curve_png(
    path: Path, history: list[dict], best_epoch: int, task: str | None = None, split: str = ""
) -> None:
    """Per epoch of the train step's history (rows: epoch, train_loss, val_logloss, val_auc; with
    tasks val_logloss_<task>, val_auc_<task>): the training loss and the validation log loss above,
    the validation AUC below (of `task` when given; the training loss is all tasks'), a vertical
    line at `best_epoch`, the epoch kept. A key missing from a row leaves that point out."""
    suffix = "" if task is None else f"_{task}"
    fig, (losses, aucs) = _pyplot().subplots(2, 1, figsize=(6, 6), sharex=True)
    lines = [
        (losses, "train_loss", "train loss" + ("" if task is None else " (all tasks)"), STYLES["raw"]),
        (losses, f"val_logloss{suffix}", "validation log loss", STYLES["calibrated"]),
        (aucs, f"val_auc{suffix}", "validation AUC", STYLES["calibrated"]),
    ]
    for ax, key, label, style in lines:
        points = [(row["epoch"], row[key]) for row in history if key in row]
        if points:
            epochs, values = zip(*points)
            ax.plot(epochs, values, **style, label=label)
    for ax in (losses, aucs):
        ax.axvline(best_epoch, color="tab:green", linestyle=":", label=f"best epoch {best_epoch} (kept)")
        ax.legend(loc="best")
    losses.set(ylabel="log loss")
    aucs.set(xlabel="epoch", ylabel="AUC")
    aucs.xaxis.get_major_locator().set_params(integer=True)
    _save(fig, path, f"Learning curve, {split}")


def _reliability_figure(path: Path, title: str, binned: dict[str, tuple], count_label: str) -> None:
    """Mean label against mean prediction per bin for each labelled ((mean_p, mean_y, weight), style),
    on the diagonal's axes spanning the bins' means (scale and limits: _span), and the weight per
    bin below; a mean outside the limits (an observed rate of 0 on log axes) is drawn on the edge."""
    fig, (ax, counts) = _pyplot().subplots(2, 1, figsize=(5.5, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    means = np.concatenate([np.r_[mean_p, mean_y] for (mean_p, mean_y, _), _ in binned.values()])
    scale, (lo, hi) = _span(means)
    ax.plot([lo, hi], [lo, hi], "k:", label="perfect")
    for label, ((mean_p, mean_y, weight), style) in binned.items():
        ax.plot(np.clip(mean_p, lo, hi), np.clip(mean_y, lo, hi), **style, label=label)
        counts.plot(np.clip(mean_p, lo, hi), weight, **style)
    ax.set(xscale=scale, yscale=scale, xlim=(lo, hi), ylim=(lo, hi), ylabel="observed positive rate")
    ax.legend(loc="upper left", fontsize=8)
    counts.set(xlabel="mean predicted probability (quantile bins)", ylabel=count_label, ylim=(0, None))
    _save(fig, path, title)


def _span(values: np.ndarray) -> tuple[str, tuple[float, float]]:
    """The scale and limits of a reliability axis holding `values` (bins' means in [0, 1]): log, from
    the smallest positive value / 1.5 to the largest × 1.5 (at most 1), when they span a decade or
    more; else linear, the range padded by 5% of it (0.01 at least), within [0, 1]."""
    positive = values[values > 0]
    if len(positive) and positive.max() >= 10 * positive.min():
        return "log", (positive.min() / 1.5, min(1.0, positive.max() * 1.5))
    pad = max(0.05 * float(values.max() - values.min()), 0.01)
    return "linear", (max(0.0, float(values.min()) - pad), min(1.0, float(values.max()) + pad))


def _count_label(w) -> str:
    return "rows per bin" if w is None or np.all(np.asarray(w) == 1) else "weight per bin"


def _one_class(y, w) -> bool:
    """Whether the labels y [n] (weights w [n]) hold no weighted positive or no weighted negative."""
    y = np.asarray(y, np.float64)
    w = np.ones(len(y)) if w is None else np.asarray(w, np.float64)
    return float(np.sum(w * y)) == 0 or float(np.sum(w * (1 - y))) == 0


def _note(ax) -> None:
    ax.text(0.5, 0.5, "labels of one class only: no curve", ha="center", va="center", transform=ax.transAxes)


def _save(fig, path: Path, title: str) -> None:
    """Title the figure, write the PNG and close it."""
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)
