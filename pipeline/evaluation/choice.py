"""Choosing the calibrator by cross-validated log loss (calibration kind `auto`).

The validation rows are dealt into K folds (a seeded permutation within each class, so every
fold holds its share of positives); each candidate is fit on K−1
folds and scores the fold left out, so every row gets an out-of-fold calibrated score from each
candidate. The candidate with the lowest out-of-fold log loss wins (the earlier listed on a tie)
and is then fit on all the rows. The default candidates (shift, platt, isotonic) each keep the mean
of their fit rows; the raw score (`none`) is measured beside them for the record, and competes
only when listed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import metrics
from .calibrate import Calibrator, fit_calibrator, fit_problem
from .spec import AutoCalibration, NoCalibration, PlattCalibration, ShiftCalibration

FOLD_SEED = 0


@dataclass
class Choice:
    """The chosen calibrator (None: raw scores), its kind and the evidence for it."""

    kind: str
    calibrator: Calibrator | None
    evidence: dict = field(default_factory=dict)


def candidate_spec(kind: str, spec: AutoCalibration):
    if kind == "isotonic":
        return spec.isotonic
    if kind == "shift":
        return ShiftCalibration(kind="shift")
    return PlattCalibration(kind="platt") if kind == "platt" else NoCalibration(kind="none")


def choose_calibrator(scores, labels, weights, spec: AutoCalibration) -> Choice:
    """scores, labels, weights [n] (scores already corrected for downsampling) -> the Choice, with
    evidence {"folds", "rows", "cv_logloss": {kind: value}, "cv_calibration_ratio": {kind: value}}
    or {"reason"} when no calibrator can be judged (a single class, or fewer rows of a class than
    folds): then none."""
    scores, labels, weights = (np.asarray(a, np.float64) for a in (scores, labels, weights))
    keep = weights > 0
    scores, labels, weights = scores[keep], labels[keep], weights[keep]
    problem = fit_problem(labels, weights)
    positive = labels > 0.5
    smaller = int(min(positive.sum(), (~positive).sum()))
    if problem is None and smaller < spec.folds:
        problem = f"{smaller} validation rows of one class, fewer than the {spec.folds} folds"
    if problem is not None:
        return Choice("none", None, {"reason": f"{problem}: no calibrator fit"})
    fold = np.empty(len(scores), dtype=np.int64)
    rng = np.random.default_rng(FOLD_SEED)
    for members in (np.flatnonzero(positive), np.flatnonzero(~positive)):
        fold[members[rng.permutation(len(members))]] = np.arange(len(members)) % spec.folds
    measured = [*spec.candidates, *(["none"] if "none" not in spec.candidates else [])]  # raw, for reference
    out_of_fold = {kind: np.empty(len(scores)) for kind in measured}
    for k in range(spec.folds):
        fit, held = fold != k, fold == k
        for kind in measured:
            calibrator = fit_calibrator(candidate_spec(kind, spec), scores[fit], labels[fit], weights[fit])
            out_of_fold[kind][held] = scores[held] if calibrator is None else calibrator(scores[held])
    losses = {kind: metrics.logloss(labels, p, weights) for kind, p in out_of_fold.items()}
    kind = min(spec.candidates, key=lambda k: (losses[k], spec.candidates.index(k)))
    evidence = {
        "folds": spec.folds,
        "rows": len(scores),
        "cv_logloss": losses,
        "cv_calibration_ratio": {k: metrics.calibration_ratio(labels, p, weights) for k, p in out_of_fold.items()},
    }
    return Choice(kind, fit_calibrator(candidate_spec(kind, spec), scores, labels, weights), evidence)
