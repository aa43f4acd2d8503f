"""Calibrators: the analytic negative-downsampling correction, weighted isotonic regression and
Platt scaling, each a monotone map p -> p' stored as plain numbers (calibrator.json) and applied
by the same function in every scorer.

    isotonic  clamped piecewise-linear interpolation through knots (np.interp); with the defaults
              (block_ends, pseudo_count 0) the exact pool-adjacent-violators fit, so the mean
              prediction on the fit rows equals their mean label
    platt     p' = σ(a·logit(p) + b), (a, b) minimizing the weighted log loss (Newton); at the
              optimum ∂/∂b = Σw(p' − y) = 0, so it keeps the fit rows' mean too
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .spec import IsotonicCalibration, NoCalibration, PlattCalibration, ShiftCalibration


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

    def describe(self) -> str:
        return f"isotonic, {len(self.xs)} knots"


LOGIT_CLIP = 1e-12  # Platt reads logit(p) of p clipped to [LOGIT_CLIP, 1 − LOGIT_CLIP]


def _logit(p) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), LOGIT_CLIP, 1 - LOGIT_CLIP)
    return np.log(p) - np.log1p(-p)


def _sigmoid(t: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -t))


@dataclass
class Platt:
    """p' = σ(slope·logit(p) + intercept), slope ≥ 0 (monotone)."""

    slope: float
    intercept: float

    @classmethod
    def fit(cls, scores, labels, weights, fit_slope: bool = True, max_steps: int = 100) -> Platt:
        """Weighted log-loss fit by Newton's method with step halving (the loss is convex), from the
        identity (1, 0), until the gradient is below 1e-12 (or max_steps: separable rows have no
        finite optimum, and the fit stops at a steep, finite map). A negative best slope (scores
        ranked backwards) falls back to the best constant (slope 0); a single distinct score, or
        fit_slope False (the `shift` calibrator), fits the intercept alone with slope 1. Needs both
        classes (`fit_problem`)."""
        z = _logit(scores)
        y, w = np.asarray(labels, np.float64), np.asarray(weights, np.float64)
        w = w / w.sum()

        def loss(theta) -> float:
            t = theta[0] * z + theta[1]
            return float(np.sum(w * (np.logaddexp(0.0, t) - y * t)))

        def solve(theta: np.ndarray, free: np.ndarray) -> np.ndarray:
            for _ in range(max_steps):
                p = _sigmoid(theta[0] * z + theta[1])
                grad = np.array([np.sum(w * (p - y) * z), np.sum(w * (p - y))])[free]
                if np.max(np.abs(grad)) < 1e-12:
                    break
                h = w * p * (1 - p)
                hess = np.array([[np.sum(h * z * z), np.sum(h * z)], [np.sum(h * z), np.sum(h)]])[np.ix_(free, free)]
                step = np.zeros(2)
                step[free] = np.linalg.solve(hess + 1e-15 * np.eye(len(grad)), grad)
                current, scale = loss(theta), 1.0
                while scale > 1e-10 and loss(theta - scale * step) > current:
                    scale /= 2
                theta = theta - scale * step
            return theta

        if not fit_slope or np.ptp(z) == 0:  # a shift, or one score: only the level can be fit
            theta = solve(np.array([1.0, 0.0]), np.array([False, True]))
        else:
            theta = solve(np.array([1.0, 0.0]), np.array([True, True]))
            if theta[0] < 0:
                theta = solve(np.array([0.0, 0.0]), np.array([False, True]))
        return cls(float(theta[0]), float(theta[1]))

    def problem(self) -> str | None:
        if not (np.isfinite(self.slope) and np.isfinite(self.intercept)):
            return "Platt calibrator's slope or intercept is not finite"
        if self.slope < 0:
            return "Platt calibrator's slope is negative (it would reverse the ranking)"
        return None

    def __call__(self, scores):
        return _sigmoid(self.slope * _logit(scores) + self.intercept)

    def to_json(self) -> dict:
        return {"kind": "platt", "slope": self.slope, "intercept": self.intercept}

    def describe(self) -> str:
        return f"Platt, σ({self.slope:.4g}·logit(p) + {self.intercept:.4g})"


Calibrator = Isotonic | Platt


def fit_problem(labels, weights) -> str | None:
    """Why no calibrator can be fit on these rows (they need weight on both classes), or None."""
    y, w = np.asarray(labels, np.float64), np.asarray(weights, np.float64)
    total, positives = float(np.sum(w)), float(np.sum(w * y))
    if positives <= 0 or positives >= total:
        return f"the validation rows hold a single class (weight {total:g}, of it positive {positives:g})"
    return None


def fit_calibrator(
    spec: IsotonicCalibration | PlattCalibration | ShiftCalibration | NoCalibration, scores, labels, weights
) -> Calibrator | None:
    """The calibrator `spec` names, fit on (score, label, weight); None for `none`."""
    if isinstance(spec, IsotonicCalibration):
        return Isotonic.fit(scores, labels, weights, spec)
    if isinstance(spec, (PlattCalibration, ShiftCalibration)):
        keep = np.asarray(weights) > 0
        rows = (np.asarray(scores)[keep], np.asarray(labels)[keep], np.asarray(weights)[keep])
        return Platt.fit(*rows, fit_slope=isinstance(spec, PlattCalibration))
    return None


def calibrator_from_json(stored: dict) -> Calibrator:
    """calibrator.json -> the calibrator (ValueError when the kind is unknown: a damaged bundle)."""
    kind = stored.get("kind")
    if kind == "isotonic":
        return Isotonic(np.asarray(stored["xs"], dtype=np.float64), np.asarray(stored["ys"], dtype=np.float64))
    if kind == "platt":
        return Platt(float(stored["slope"]), float(stored["intercept"]))
    raise ValueError(f"calibrator.json has kind {kind!r}; this snn reads isotonic and platt")
