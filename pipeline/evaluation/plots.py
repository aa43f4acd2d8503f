"""PNG plots: reliability diagram and ROC curve (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import metrics


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def roc_points(y, p, w=None):
    """(false positive rate, true positive rate) arrays, one point per distinct score."""
    y, p = np.asarray(y, np.float64), np.asarray(p, np.float64)
    w = np.ones(len(y)) if w is None else np.asarray(w, np.float64)
    order = np.argsort(-p, kind="stable")
    p, pos, neg = p[order], (w * y)[order], (w * (1 - y))[order]
    last = np.r_[p[1:] != p[:-1], True]
    tp, fp = np.cumsum(pos)[last], np.cumsum(neg)[last]
    return np.r_[0.0, fp / max(fp[-1], 1e-12)], np.r_[0.0, tp / max(tp[-1], 1e-12)]


def _save(path: Path, fig, ax, title: str, split: str, legend: str, xlabel: str, ylabel: str) -> None:
    """Unit axes, the title naming the split, the legend at `legend`; write the PNG and close."""
    ax.set(xlabel=xlabel, ylabel=ylabel, title=f"{title}, {split}" if split else title, xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc=legend)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)


def reliability_png(path: Path, y, curves: dict[str, np.ndarray], w=None, bins: int = 10, split: str = "") -> None:
    fig, ax = _pyplot().subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "k:", label="perfect")
    for name, p in curves.items():
        mean_p, mean_y, _ = metrics.reliability(y, p, w, bins)
        ax.plot(mean_p, mean_y, "o-", label=f"{name} (ECE {metrics.ece(y, p, w, bins):.4f})")
    _save(path, fig, ax, "Reliability", split, "upper left", "mean predicted probability", "observed positive rate")


def roc_png(path: Path, y, curves: dict[str, np.ndarray], w=None, split: str = "") -> None:
    fig, ax = _pyplot().subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "k:")
    for name, p in curves.items():
        fpr, tpr = roc_points(y, p, w)
        ax.plot(fpr, tpr, label=f"{name} (AUC {metrics.auc(y, p, w):.4f})")
    _save(path, fig, ax, "ROC", split, "lower right", "false positive rate", "true positive rate")
