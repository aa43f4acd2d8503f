"""Our metrics against scikit-learn's on weighted data with ties."""

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

from snn.pipeline.evaluation import metrics


@pytest.fixture
def scored():
    rng = np.random.default_rng(3)
    n = 5000
    p = np.round(rng.uniform(0.01, 0.99, n), 2)  # many ties
    y = (rng.uniform(size=n) < p).astype(float)
    w = rng.uniform(0.2, 3.0, n)
    return y, p, w


def test_auc_matches_sklearn_with_ties_and_weights(scored):
    y, p, w = scored
    assert metrics.auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert metrics.auc(y, p, w) == pytest.approx(roc_auc_score(y, p, sample_weight=w), abs=1e-12)


def test_auc_counts_ties_as_half():
    assert metrics.auc([0, 1], [0.5, 0.5]) == 0.5
    assert metrics.auc([0, 1, 1], [0.1, 0.1, 0.9]) == pytest.approx(0.75)


def test_logloss_and_brier_match_sklearn(scored):
    y, p, w = scored
    assert metrics.logloss(y, p, w) == pytest.approx(log_loss(y, p, sample_weight=w), abs=1e-12)
    assert metrics.brier(y, p, w) == pytest.approx(brier_score_loss(y, p, sample_weight=w), abs=1e-12)


def test_rce_calibration_ratio_and_ece(scored):
    y, p, w = scored
    ctr = np.sum(w * y) / np.sum(w)
    expected = 100 * (1 - log_loss(y, p, sample_weight=w) / log_loss(y, np.full(len(y), ctr), sample_weight=w))
    assert metrics.rce(y, p, w) == pytest.approx(expected, abs=1e-9)
    assert metrics.calibration_ratio(y, p, w) == pytest.approx(np.sum(w * p) / np.sum(w * y))
    # a predictor equal to the bin's observed rate has ECE 0
    assert metrics.ece([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == pytest.approx(0.0)
    assert metrics.ece([0, 0], [0.95, 0.95]) == pytest.approx(0.95)
