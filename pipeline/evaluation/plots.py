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


def reliability_png(path: Path, y, curves: dict[str, np.ndarray], w=None, bins: int = 10, split: str = "") -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "k:", label="perfect")
    for name, p in curves.items():
        mean_p, mean_y, _ = metrics.reliability(y, p, w, bins)
        ax.plot(mean_p, mean_y, "o-", label=f"{name} (ECE {metrics.ece(y, p, w, bins):.4f})")
    ax.set(
        xlabel="mean predicted probability",
        ylabel="observed positive rate",
        title=f"Reliability, {split}" if split else "Reliability",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def roc_png(path: Path, y, curves: dict[str, np.ndarray], w=None, split: str = "") -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "k:")
    for name, p in curves.items():
        fpr, tpr = roc_points(y, p, w)
        ax.plot(fpr, tpr, label=f"{name} (AUC {metrics.auc(y, p, w):.4f})")
    ax.set(
        xlabel="false positive rate",
        ylabel="true positive rate",
        title=f"ROC, {split}" if split else "ROC",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
