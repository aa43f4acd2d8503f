"""Isotonic calibration against sklearn, and the analytic downsampling correction."""

import numpy as np
import pytest
from sklearn.isotonic import IsotonicRegression

from snn.pipeline.evaluation import metrics
from snn.pipeline.evaluation.calibrate import Isotonic, downsampling_correction
from snn.pipeline.evaluation.spec import IsotonicCalibration


def _data(n=4000, seed=0):
    rng = np.random.default_rng(seed)
    s = np.round(rng.uniform(size=n), 3)  # ties
    y = (rng.uniform(size=n) < s**2).astype(float)
    w = rng.uniform(0.5, 2.0, n)
    return s, y, w


def test_block_ends_without_smoothing_equals_sklearn():
    s, y, w = _data()
    ours = Isotonic.fit(s, y, w, IsotonicCalibration(kind="isotonic", interpolation="block_ends", pseudo_count=0))
    ref = IsotonicRegression(out_of_bounds="clip").fit(s, y, sample_weight=w)
    grid = np.r_[np.linspace(-0.2, 1.2, 3001), s]
    np.testing.assert_allclose(ours(grid), ref.predict(grid), atol=1e-6)


def test_centered_is_strictly_increasing_and_keeps_ranking():
    s, y, w = _data(seed=1)
    cal = Isotonic.fit(s, y, w, IsotonicCalibration(kind="isotonic"))
    assert np.all(np.diff(cal.xs) > 0) and np.all(np.diff(cal.ys) > 0)
    assert metrics.auc(y, cal(s), w) >= metrics.auc(y, s, w) - 1e-3
    assert cal.ys.min() > 0 and cal.ys.max() < 1  # smoothing keeps log loss finite


def test_clamped_outside_the_knots():
    cal = Isotonic(np.array([0.2, 0.8]), np.array([0.1, 0.7]))
    assert cal([0.0, 0.5, 1.0]).tolist() == pytest.approx([0.1, 0.4, 0.7])


def test_downsampling_correction_recovers_the_true_rate():
    rng = np.random.default_rng(5)
    p_true = rng.uniform(0.01, 0.3, 200_000)
    y = rng.uniform(size=p_true.size) < p_true
    rate = 0.1
    keep = y | (rng.uniform(size=y.size) < rate)
    # the Bayes-optimal score on downsampled data is p/(p + (1-p)·rate)
    p_down = p_true / (p_true + (1 - p_true) * rate)
    np.testing.assert_allclose(downsampling_correction(p_down, rate), p_true, rtol=1e-12)
    observed = y[keep].mean()
    assert observed == pytest.approx(np.mean(p_down[keep]), rel=0.02)
