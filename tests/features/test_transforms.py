"""Continuous transforms (discretizer log1p and normal): one id carrying t(x), missing on its own
id; the batch and online paths agree; the to-normal map is held against scikit-learn's
QuantileTransformer(output_distribution="normal") inside ±2.5 (they differ only in how the tails
are clipped and how ties are scored)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from sklearn.preprocessing import QuantileTransformer

from snn.pipeline.features.feature_map import FeatureMap
from snn.pipeline.features.spec import ContinuousFeature


def _fit(x: np.ndarray, discretizer: dict) -> FeatureMap:
    feature = ContinuousFeature(name="x", kind="continuous", discretizer=discretizer)
    return FeatureMap.fit([feature], pl.DataFrame({"x": x}), np.ones(len(x)))


def _values(fmap: FeatureMap, x) -> tuple[np.ndarray, np.ndarray]:
    ids, values = fmap.encode_frame(pl.DataFrame({"x": x}, schema={"x": pl.Float64}))
    online_ids, online_values = fmap.encode_records([{"x": v} for v in x])
    np.testing.assert_array_equal(online_ids, ids)
    np.testing.assert_array_equal(online_values, values.astype(np.float64))
    return ids[:, 0], values[:, 0].astype(np.float64)


def test_log1p_is_signed_and_missing_takes_its_own_id():
    fmap = _fit(np.array([0.0, 5.0]), {"kind": "log1p"})
    ids, values = _values(fmap, [0.0, 9.0, -9.0, None])
    assert ids.tolist() == [0, 0, 0, 1]
    np.testing.assert_allclose(values, [0.0, np.log(10.0), -np.log(10.0), 1.0], rtol=1e-7)
    assert fmap.layout()[0][3] == "value"


def test_to_normal_matches_sklearn_inside_the_tails():
    x = np.random.default_rng(0).normal(2.0, 3.0, 50_000)
    fmap = _fit(x, {"kind": "normal", "quantiles": 1000})
    _, z = _values(fmap, x)
    reference = QuantileTransformer(n_quantiles=1000, output_distribution="normal", subsample=None).fit(x[:, None])
    expected = reference.transform(x[:, None])[:, 0]
    inner = np.abs(expected) < 2.5
    assert np.abs(z - expected)[inner].max() <= 0.01
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.02


@pytest.mark.parametrize("seed", [0, 1])
def test_to_normal_is_monotone_and_standard_on_heavily_tied_counts(seed):
    x = np.floor(np.random.default_rng(seed).lognormal(1.0, 1.5, 30_000))  # a third of the rows are 0 or 1
    fmap = _fit(x, {"kind": "normal"})
    _, z = _values(fmap, x)
    order = np.argsort(x, kind="stable")
    assert (np.diff(z[order]) >= 0).all()
    assert abs(z.mean()) < 0.02 and abs(z.std() - 1) < 0.05
    _, beyond = _values(fmap, [x.min() - 100, x.max() + 1e6])
    assert beyond[0] == z.min() and beyond[1] == z.max()  # constant past the fitted range
