"""Calibrators against sklearn (isotonic regression, logistic regression for Platt), the mean kept on
their fit rows, the cross-validated choice among them, and the analytic downsampling correction."""

import numpy as np
import pytest
from sklearn.isotonic import IsotonicRegression

from snn.pipeline.evaluation import metrics
from snn.pipeline.evaluation.calibrate import Isotonic, Platt, calibrator_from_json, downsampling_correction
from snn.pipeline.evaluation.choice import choose_calibrator
from snn.pipeline.evaluation.spec import AutoCalibration, IsotonicCalibration


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
    cal = Isotonic.fit(s, y, w, IsotonicCalibration(kind="isotonic", interpolation="centered", pseudo_count=1))
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


def test_isotonic_defaults_keep_the_mean_of_their_fit_rows():
    """The default isotonic fit is the exact PAV solution: Σw·f(s) = Σw·y on the rows it was fit on."""
    for seed in range(3):
        s, y, w = _data(seed=seed)
        s = s**3  # overconfident-looking, skewed scores with ties
        cal = Isotonic.fit(s, y, w, IsotonicCalibration(kind="isotonic"))
        assert metrics.calibration_ratio(y, cal(s), w) == pytest.approx(1.0, abs=1e-9)
        assert metrics.calibration_ratio(y, s, w) < 0.9  # the raw scores were off


def _overconfident(n, seed, sharpen=3.0):
    """Scores σ(sharpen·logit(p)) for labels drawn with p: ranked well, overconfident for sharpen > 1."""
    rng = np.random.default_rng(seed)
    logit = rng.normal(-1.5, 1.0, n)
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-logit))).astype(float)
    return 1 / (1 + np.exp(-sharpen * logit)), y, rng.uniform(0.5, 2.0, n)


def test_platt_equals_sklearn_logistic_regression_and_keeps_the_mean():
    from sklearn.linear_model import LogisticRegression

    s, y, w = _overconfident(5000, 0)
    ours = Platt.fit(s, y, w)
    z = np.log(s / (1 - s))[:, None]
    ref = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000).fit(z, y, sample_weight=w)
    assert ours.slope == pytest.approx(ref.coef_[0, 0], abs=1e-6)
    assert ours.intercept == pytest.approx(ref.intercept_[0], abs=1e-6)
    assert ours.slope == pytest.approx(1 / 3, rel=0.1)  # undoes the sharpening
    assert metrics.calibration_ratio(y, ours(s), w) == pytest.approx(1.0, abs=1e-9)
    assert calibrator_from_json(ours.to_json()) == ours


def test_platt_never_reverses_the_ranking():
    s, y, w = _overconfident(3000, 1, sharpen=-1.0)  # scores ranked backwards
    cal = Platt.fit(s, y, w)
    assert cal.slope == 0 and cal.problem() is None
    assert metrics.calibration_ratio(y, cal(s), w) == pytest.approx(1.0, abs=1e-9)


def _held_out_logloss(choice, s, y, w):
    return metrics.logloss(y, s if choice.calibrator is None else choice.calibrator(s), w)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auto_calibration_fixes_overconfidence_and_never_loses_to_raw(seed):
    spec = AutoCalibration(kind="auto")
    s, y, w = _overconfident(4000, seed)
    choice = choose_calibrator(s, y, w, spec)
    losses = choice.evidence["cv_logloss"]
    assert choice.kind == min(spec.candidates, key=losses.get) != "none"
    assert set(losses) == {"shift", "platt", "isotonic", "none"} and choice.evidence["folds"] == 5
    assert losses[choice.kind] < losses["none"]  # raw, measured for the record
    fresh = _overconfident(20_000, seed + 100)
    assert _held_out_logloss(choice, *fresh) < metrics.logloss(fresh[1], fresh[0], fresh[2]) - 0.02

    calibrated = _overconfident(4000, seed, sharpen=1.0)  # the scores are the true probabilities
    choice = choose_calibrator(*calibrated, spec)
    fresh = _overconfident(20_000, seed + 100, sharpen=1.0)
    assert _held_out_logloss(choice, *fresh) <= metrics.logloss(fresh[1], fresh[0], fresh[2]) + 1e-3


@pytest.mark.parametrize("seed", [0, 1])
def test_every_default_candidate_keeps_the_mean_of_its_fit_rows(seed):
    from snn.pipeline.evaluation.calibrate import fit_calibrator
    from snn.pipeline.evaluation.choice import candidate_spec

    spec = AutoCalibration(kind="auto")
    s, y, w = _overconfident(3000, seed)
    for kind in spec.candidates:
        cal = fit_calibrator(candidate_spec(kind, spec), s, y, w)
        assert metrics.calibration_ratio(y, cal(s), w) == pytest.approx(1.0, abs=1e-6), kind
    shift = fit_calibrator(candidate_spec("shift", spec), s, y, w)
    assert shift.slope == 1.0 and metrics.auc(y, shift(s), w) == pytest.approx(metrics.auc(y, s, w), abs=1e-12)


def test_auto_calibration_of_a_single_class_is_none():
    s, _, w = _overconfident(500, 0)
    choice = choose_calibrator(s, np.zeros(500), w, AutoCalibration(kind="auto"))
    assert choice.kind == "none" and choice.calibrator is None and "single class" in choice.evidence["reason"]
    y = np.zeros(500)
    y[:3] = 1  # three positives, five folds
    choice = choose_calibrator(s, y, w, AutoCalibration(kind="auto"))
    assert (
        choice.kind == "none" and "3 validation rows of one class, fewer than the 5 folds" in choice.evidence["reason"]
    )


def test_platt_on_a_single_score_fits_the_level():
    s, y, w = np.full(400, 0.3), (np.arange(400) % 4 == 0).astype(float), np.ones(400)
    cal = Platt.fit(s, y, w)
    assert cal.slope == 1.0 and cal.problem() is None
    np.testing.assert_allclose(cal(s), 0.25, rtol=1e-9)


def test_auto_calibration_candidates_are_distinct():
    with pytest.raises(ValueError, match="repeat a kind"):
        AutoCalibration(kind="auto", candidates=["platt", "platt"])
