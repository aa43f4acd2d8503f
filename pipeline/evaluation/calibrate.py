"""Calibrators: the analytic negative-downsampling correction and weighted isotonic regression.

Stored as plain arrays and applied by clamped piecewise-linear interpolation (np.interp), so the
online path applies the very same function.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .spec import IsotonicCalibration


def downsampling_correction(p, negative_rate: float, positive_rate: float = 1.0):
    """p' = p·r / (1 − p + r·p), r = neg_rate / pos_rate: the probability before downsampling."""
    r = negative_rate / positive_rate
    p = np.asarray(p, dtype=np.float64)
    return p * r / (1.0 - p + r * p)


def pool_adjacent_violators(y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted PAV on y already sorted by score: (block start indices, block means)."""
    starts, means, weights = [], [], []
    for i in range(len(y)):
        starts.append(i)
        means.append(float(y[i]))
        weights.append(float(w[i]))
        while len(means) > 1 and means[-2] >= means[-1]:
            total = weights[-2] + weights[-1]
            means[-2] = (means[-2] * weights[-2] + means[-1] * weights[-1]) / total
            weights[-2] = total
            starts.pop(), means.pop(), weights.pop()
    return np.asarray(starts, dtype=np.int64), np.asarray(means)


@dataclass
class Isotonic:
    """Monotone map x -> y given by knots (xs ascending, ys non-decreasing), clamped at both ends."""

    xs: np.ndarray
    ys: np.ndarray

    @classmethod
    def fit(cls, scores, labels, weights, spec: IsotonicCalibration) -> Isotonic:
        """Fit on held-out (score, label, weight).

        Ties in score are merged first (weighted mean label). `block_ends` keeps each PAV block's
        first and last score (sklearn IsotonicRegression's knots). `centered` puts one knot at
        each block's weighted mean score, giving a strictly increasing map that keeps AUC.
        Each block's value is smoothed as (Σwy + c/2) / (Σw + c), c = pseudo_count.
        """
        x = np.asarray(scores, np.float64)
        y, w = np.asarray(labels, np.float64), np.asarray(weights, np.float64)
        keep = w > 0
        x, y, w = x[keep], y[keep], w[keep]
        order = np.argsort(x, kind="stable")
        x, y, w = x[order], y[order], w[order]
        ux, first = np.unique(x, return_index=True)
        wsum = np.add.reduceat(w, first)
        ymean = np.add.reduceat(w * y, first) / wsum
        starts, means = pool_adjacent_violators(ymean, wsum)
        while True:  # smoothing can break monotonicity of small blocks: pool again until it holds
            block_w = np.add.reduceat(wsum, starts)
            means = np.add.reduceat(ymean * wsum, starts) / block_w
            smoothed = (means * block_w + spec.pseudo_count / 2) / (block_w + spec.pseudo_count)
            if np.all(np.diff(smoothed) > 0):
                break
            merged, _ = pool_adjacent_violators(smoothed, block_w + spec.pseudo_count)
            starts = starts[merged]
        if spec.interpolation == "centered":
            centers = np.add.reduceat(ux * wsum, starts) / block_w
            return cls(centers, smoothed)
        ends = np.r_[starts[1:] - 1, len(ux) - 1]
        xs = np.column_stack([ux[starts], ux[ends]]).reshape(-1)
        ys = np.repeat(smoothed, 2)
        single = np.r_[True, xs[1:] != xs[:-1]]  # one-value blocks give a duplicate knot
        return cls(xs[single], ys[single])

    def problem(self) -> str | None:
        """What makes these knots unusable, or None: equal lengths, finite, xs ascending, ys
        non-decreasing within [0, 1]."""
        if self.xs.ndim != 1 or self.xs.shape != self.ys.shape or len(self.xs) == 0:
            return f"calibrator has {self.xs.shape} xs but {self.ys.shape} ys"
        if not (np.isfinite(self.xs).all() and np.isfinite(self.ys).all()):
            return "calibrator knots are not all finite"
        if (np.diff(self.xs) < 0).any() or (np.diff(self.ys) < 0).any():
            return "calibrator knots are not ascending"
        if self.ys.min() < 0 or self.ys.max() > 1:
            return "calibrator values lie outside [0, 1]"
        return None

    def __call__(self, scores):
        return np.interp(np.asarray(scores, np.float64), self.xs, self.ys)

    def to_json(self) -> dict:
        return {"kind": "isotonic", "xs": self.xs.tolist(), "ys": self.ys.tolist()}
