"""Weighted offline metrics. Shapes: labels y [n] in [0, 1], predictions p [n] in [0, 1], weights w [n].

AUC is Mann–Whitney with ties counted ½; log loss clips p to [eps, 1 − eps];
RCE = 100 · (1 − CE_model / CE(ctr)) with ctr = Σwy / Σw; calibration ratio = Σwp / Σwy;
ECE = Σ_b (W_b / W) · |ȳ_b − p̄_b| over equal-width bins; Brier = Σw(p − y)² / Σw.
"""

from __future__ import annotations

import numpy as np


def weights_or_ones(y, w):
    return np.ones(len(y), dtype=np.float64) if w is None else np.asarray(w, dtype=np.float64)


def auc(y, p, w=None) -> float:
    y, p, w = np.asarray(y, np.float64), np.asarray(p, np.float64), weights_or_ones(y, w)
    order = np.argsort(p, kind="stable")
    p, pos, neg = p[order], (w * y)[order], (w * (1 - y))[order]
    group_starts = np.flatnonzero(np.r_[True, p[1:] != p[:-1]])
    pos_g, neg_g = np.add.reduceat(pos, group_starts), np.add.reduceat(neg, group_starts)
    neg_below = np.cumsum(neg_g) - neg_g
    total_pos, total_neg = pos_g.sum(), neg_g.sum()
    if total_pos == 0 or total_neg == 0:
        return float("nan")
    return float(np.sum(pos_g * (neg_below + 0.5 * neg_g)) / (total_pos * total_neg))


def logloss(y, p, w=None, eps: float = 1e-7) -> float:
    y, w = np.asarray(y, np.float64), weights_or_ones(y, w)
    p = np.clip(np.asarray(p, np.float64), eps, 1 - eps)
    return float(-np.sum(w * (y * np.log(p) + (1 - y) * np.log(1 - p))) / w.sum())


def rce(y, p, w=None, eps: float = 1e-7) -> float:
    w = weights_or_ones(y, w)
    ctr = float(np.sum(w * np.asarray(y)) / w.sum())
    baseline = logloss(y, np.full(len(y), ctr), w, eps)
    return float(100.0 * (1.0 - logloss(y, p, w, eps) / baseline)) if baseline > 0 else float("nan")


def calibration_ratio(y, p, w=None) -> float:
    w = weights_or_ones(y, w)
    positives = float(np.sum(w * np.asarray(y)))
    return float(np.sum(w * np.asarray(p)) / positives) if positives > 0 else float("nan")


def reliability(y, p, w=None, bins: int = 10):
    """Per equal-width bin: (mean prediction, mean label, weight) arrays, empty bins dropped."""
    y, p, w = np.asarray(y, np.float64), np.asarray(p, np.float64), weights_or_ones(y, w)
    return _bin_means(np.clip((p * bins).astype(np.int64), 0, bins - 1), y, p, w, bins)


def quantile_reliability(y, p, w=None, bins: int = 10):
    """Per equal-weight bin of p: (mean prediction, mean label, weight) arrays [≤ bins], empty bins
    dropped. The edges are p's weighted quantiles: with the scores sorted p_(1) ≤ … ≤ p_(n),
    e_k = p_(j) for the first j whose cumulative weight Σ_{i≤j} w_(i) ≥ k·W/bins (k = 1 … bins − 1);
    a row falls in bin #{k : e_k < p}, so tied scores share a bin (a run of ties wider than a bin
    empties the bins it spans). Per bin b: p̄_b = Σ_b wp / W_b, ȳ_b = Σ_b wy / W_b."""
    y, p, w = np.asarray(y, np.float64), np.asarray(p, np.float64), weights_or_ones(y, w)
    order = np.argsort(p, kind="stable")
    cumulative = np.cumsum(w[order])
    edges = p[order][np.searchsorted(cumulative, cumulative[-1] * np.arange(1, bins) / bins)]
    return _bin_means(np.searchsorted(edges, p), y, p, w, bins)  # searchsorted: the number of edges below p


def _bin_means(index, y, p, w, bins: int):
    """Per bin of `index` [n] (ints in [0, bins)): (Σ_b wp / W_b, Σ_b wy / W_b, W_b), empty bins dropped."""
    weight = np.bincount(index, weights=w, minlength=bins)
    mean_p = np.bincount(index, weights=w * p, minlength=bins)
    mean_y = np.bincount(index, weights=w * y, minlength=bins)
    kept = weight > 0
    return mean_p[kept] / weight[kept], mean_y[kept] / weight[kept], weight[kept]


def ece(y, p, w=None, bins: int = 10) -> float:
    mean_p, mean_y, weight = reliability(y, p, w, bins)
    return float(np.sum(weight * np.abs(mean_y - mean_p)) / weight.sum())


def brier(y, p, w=None) -> float:
    w = weights_or_ones(y, w)
    return float(np.sum(w * (np.asarray(p, np.float64) - np.asarray(y)) ** 2) / w.sum())


def all_metrics(y, p, w=None, eps: float = 1e-7, ece_bins: int = 10) -> dict[str, float]:
    return {
        "auc": auc(y, p, w),
        "logloss": logloss(y, p, w, eps),
        "rce": rce(y, p, w, eps),
        "calibration_ratio": calibration_ratio(y, p, w),
        "ece": ece(y, p, w, ece_bins),
        "brier": brier(y, p, w),
        "rows": float(len(y)),
        "ctr": float(np.sum(weights_or_ones(y, w) * np.asarray(y)) / weights_or_ones(y, w).sum()),
    }
