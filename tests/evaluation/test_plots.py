"""The report's plots: quantile reliability and precision-recall against scikit-learn, every plot
function writing a PNG on ordinary and degenerate inputs, and a small Adult validate run writing
them all into its report folder (and MLflow)."""

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from sklearn.calibration import calibration_curve
from sklearn.metrics import average_precision_score, precision_recall_curve

from snn.pipeline.evaluation import metrics, plots

from ..conftest import invoke

PNG = b"\x89PNG\r\n\x1a\n"


def low_ctr(n: int, seed: int = 5, decimals: int = 3):
    """A ~3% CTR model's scores p [n], rounded (many ties), labels drawn from them, integer weights in [1, 3]."""
    rng = np.random.default_rng(seed)
    p = np.round(1 / (1 + np.exp(-rng.normal(-4.0, 1.2, n))), decimals)
    y = (rng.uniform(size=n) < p).astype(np.float64)
    return y, p, rng.integers(1, 4, n).astype(np.float64)


def test_quantile_reliability_matches_sklearn_quantile_calibration_curve():
    y, p, _ = low_ctr(4000)  # a multiple of the bins: sklearn's interpolated edges split the rows as ours do
    mean_p, mean_y, weight = metrics.quantile_reliability(y, p, bins=10)
    true, predicted = calibration_curve(y, p, n_bins=10, strategy="quantile")
    np.testing.assert_allclose(mean_y, true, rtol=0, atol=1e-12)
    np.testing.assert_allclose(mean_p, predicted, rtol=0, atol=1e-12)
    assert weight.sum() == 4000 and weight.max() <= 1.2 * 400  # not all in the first bin: ~n / bins each
    # otherwise an edge may move one row across: each bin's means within 2 rows' share of theirs
    y, p, _ = low_ctr(4007, seed=6)
    mean_p, mean_y, weight = metrics.quantile_reliability(y, p, bins=10)
    true, predicted = calibration_curve(y, p, n_bins=10, strategy="quantile")
    assert len(mean_y) == len(true)
    np.testing.assert_allclose(mean_y, true, rtol=0, atol=2 / weight.min())
    np.testing.assert_allclose(mean_p, predicted, rtol=0, atol=2 * p.max() / weight.min())


def test_weighted_quantile_reliability_is_the_unweighted_one_of_repeated_rows():
    y, p, w = low_ctr(3001)
    w[-1] += (10 - w.sum() % 10) % 10  # a total weight divisible by the bins
    mean_p, mean_y, weight = metrics.quantile_reliability(y, p, w, bins=10)
    true, predicted = calibration_curve(
        np.repeat(y, w.astype(int)), np.repeat(p, w.astype(int)), n_bins=10, strategy="quantile"
    )
    np.testing.assert_allclose(mean_y, true, rtol=0, atol=1e-12)
    np.testing.assert_allclose(mean_p, predicted, rtol=0, atol=1e-12)
    assert weight.sum() == pytest.approx(w.sum())


def test_quantile_reliability_keeps_ties_in_one_bin():
    mean_p, mean_y, weight = metrics.quantile_reliability([0, 1, 0, 0, 1, 1], [0.1, 0.1, 0.1, 0.1, 0.9, 0.9], bins=3)
    np.testing.assert_allclose(mean_p, [0.1, 0.9])
    np.testing.assert_allclose(mean_y, [0.25, 1.0])
    np.testing.assert_allclose(weight, [4, 2])


@pytest.mark.parametrize("weighted", [False, True])
def test_pr_points_and_average_precision_match_sklearn_with_ties(weighted):
    y, p, w = low_ctr(5000, decimals=2)
    w = w if weighted else None
    recall, precision = plots.pr_points(y, p, w)
    sk_precision, sk_recall, _ = precision_recall_curve(y, p, sample_weight=w)
    # sklearn: thresholds ascending, then the point (recall 0, precision 1); ours: one per distinct score, descending
    assert len(recall) == len(np.unique(p))
    np.testing.assert_allclose(recall, sk_recall[:-1][::-1], rtol=0, atol=1e-12)
    np.testing.assert_allclose(precision, sk_precision[:-1][::-1], rtol=0, atol=1e-12)
    assert plots.average_precision(recall, precision) == pytest.approx(
        average_precision_score(y, p, sample_weight=w), abs=1e-12
    )


def ordinary():
    return low_ctr(3000)


def one_class_negative():
    y, p, w = low_ctr(500)
    return np.zeros_like(y), p, w


def one_class_positive():
    y, p, _ = low_ctr(500)
    return np.ones_like(y), p, None


def one_score():
    y, _, w = low_ctr(500)
    return y, np.full(len(y), 0.03), w


def all_zero():
    return np.zeros(200), np.zeros(200), None


CASES = [ordinary, one_class_negative, one_class_positive, one_score, all_zero]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.__name__)
def test_every_plot_writes_a_png(case, tmp_path):
    y, p, w = case()
    curves = {"raw": np.clip(p * 1.2, 0, 1), "calibrated": p}
    values = np.array(["Male", "Female", "null", "a", "b", "c", "d", "e"], dtype=object)[np.arange(len(y)) % 8]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no degenerate-axis or empty-legend warnings either
        plots.reliability_png(tmp_path / "reliability.png", y, curves, w, 10, "test split")
        plots.roc_png(tmp_path / "roc.png", y, curves, w, "test split")
        plots.pr_png(tmp_path / "pr.png", y, curves, w, "test split")
        plots.slice_reliability_png(tmp_path / "reliability_sex.png", y, p, values, w, 10, "sex", "test split")
    for name in ("reliability", "roc", "pr", "reliability_sex"):
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == PNG, name


def test_learning_curves_of_one_task_and_of_several(tmp_path):
    one = [{"epoch": e, "train_loss": 0.5 / e, "val_logloss": 0.4 + 0.01 * e, "val_auc": 0.8} for e in (1, 2, 3)]
    several = [
        {
            "epoch": 1,
            "train_loss": 0.9,
            "val_auc": 0.7,
            "val_logloss": 0.5,
            "val_auc_click": 0.7,
            "val_logloss_click": 0.5,
        },
        {"epoch": 2, "train_loss": 0.8, "val_auc": 0.72, "val_logloss": 0.48, "val_auc_click": 0.71},  # a key missing
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plots.learning_curve_png(tmp_path / "learning_curve.png", one, 1, None, "train and validation splits")
        plots.learning_curve_png(tmp_path / "learning_curve_click.png", several, 2, "click", "task click")
        plots.learning_curve_png(tmp_path / "learning_curve_buy.png", several, 2, "buy", "task buy")  # no such keys
        plots.learning_curve_png(tmp_path / "learning_curve_one.png", one[:1], 1, None, "one epoch")
    for name in ("learning_curve", "learning_curve_click", "learning_curve_buy", "learning_curve_one"):
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == PNG, name


def test_a_validate_run_writes_every_plot_into_the_report(small_run, runner):
    result = invoke(runner, "validate", small_run, "--json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    report = Path(out["report"])
    names = [
        "reliability.png",
        "roc.png",
        "pr.png",
        "learning_curve.png",
        "reliability_sex.png",
        "reliability_race.png",
    ]
    for name in names:
        assert (report / name).read_bytes()[:8] == PNG, name
    client = MlflowClient(out["tracking_uri"])
    parent = client.get_run(out["mlflow_run_id"])
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    validate_run = next(run for run in children if run.data.tags["snn.step"] == "validate")
    logged = {Path(a.path).name for a in client.list_artifacts(validate_run.info.run_id, "report")}
    assert set(names) <= logged
