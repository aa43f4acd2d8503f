"""The encoders' per-value kernels: native hash tables and binning against plain numpy and polars
answers, and the native and fallback paths against each other (the `kernels` fixture runs both)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from snn.pipeline import native
from snn.pipeline.hash_table import HashTable, IntegerLookup, Totals, bin_ids


def _as_dict(frame: pl.DataFrame) -> dict:
    return dict(zip(frame["key"].to_list(), frame["total"].to_list()))


def test_float_totals_equal_a_group_by(kernels):
    rng = np.random.default_rng(0)
    values = np.round(rng.lognormal(2, 2, 30_000), 1)
    values[rng.random(len(values)) < 0.1] = np.nan
    values[:50] = -0.0  # counted with 0.0
    values[50:60] = 0.0
    weights = rng.random(len(values))
    totals = Totals()
    for chunk in range(3):  # chunks accumulate
        part = slice(chunk * 10_000, (chunk + 1) * 10_000)
        totals.add_numbers(values[part], weights[part])
    present = ~np.isnan(values)
    expected = (pl.DataFrame({"key": values[present] + 0.0, "total": weights[present]})
                .group_by("key").agg(pl.col("total").sum()))
    got, want = _as_dict(totals.result()), _as_dict(expected)
    assert got.keys() == want.keys() and len(got) > 2_000  # far past the first table's 512 keys
    np.testing.assert_allclose([got[k] for k in want], list(want.values()), rtol=1e-12)
    assert totals.result().height == len(want)  # -0.0 is no key of its own (the dicts would merge it)
    assert got[0.0] == pytest.approx(weights[present & (values == 0)].sum(), rel=1e-12)


def test_integer_counts_skip_nulls_and_text_counts_too(kernels):
    series = pl.Series("c", [5, None, -2**62, 5, 7, None, 2**62, 5], dtype=pl.Int64)
    totals = Totals()
    totals.count(series)
    totals.count(series.head(2))
    assert _as_dict(totals.result()) == {5: 4.0, -2**62: 1.0, 7: 1.0, 2**62: 1.0}
    text = Totals()
    text.count(pl.Series("c", ["a", None, "b", "a"]))
    assert _as_dict(text.result()) == {"a": 2.0, "b": 1.0}
    assert Totals().result().height == 0


@pytest.mark.skipif(native.library() is None, reason="no C compiler: the native kernels cannot be built")
def test_a_table_takes_one_key_type_and_grows_without_losing_keys():
    table = HashTable(native.library(), capacity=8)
    keys = np.arange(0, 10_000, 7, dtype=np.int64) * 1_000_003
    table.add(keys)
    table.add(keys[::2])
    got_keys, counts = table.items()
    assert len(table.keys) >= 2 * len(keys)  # grown from 8 slots, at most half full
    assert dict(zip(got_keys.tolist(), counts.tolist())) == {k: 2.0 if i % 2 == 0 else 1.0 for i, k in enumerate(keys.tolist())}
    with pytest.raises(TypeError, match="int64"):
        table.add(np.array([1.5]))


@pytest.mark.parametrize("edges", [[], [0.5], [-1.0, 0.0, 2.5, 2.5, 10.0], list(np.linspace(-3, 3, 31))],
                         ids=["none", "one", "repeated", "31"])
def test_bins_equal_searchsorted(edges, kernels):
    rng = np.random.default_rng(1)
    inner = np.array(edges, dtype=np.float64)
    x = np.concatenate([rng.normal(0, 3, 2_000), inner, [np.nan, -np.inf, np.inf, -0.0]])
    expected = np.searchsorted(inner, x, side="right")
    expected[np.isnan(x)] = len(inner) + 1
    out = np.empty(len(x), dtype=np.int64)
    assert bin_ids(x, inner, None, len(inner) + 1, 0, out) == 2  # the two infinities are counted
    assert out.tolist() == expected.tolist()
    relabel = np.arange(len(inner) + 2) * 3 + 1  # hashed bins: ids per bin, the last for missing
    into = np.empty(len(x), dtype=np.int32)
    bin_ids(x, inner, relabel, len(inner) + 1, 1000, into)
    assert into.tolist() == (relabel[expected] + 1000).tolist()


def test_lookup_writes_int32_buffers_in_place_and_rejects_others(kernels):
    lookup = IntegerLookup(np.array([10, 20]), np.array([0, 1]), default=2)
    buffer = np.zeros((2, 4), dtype=np.int32)
    lookup(np.array([20, 10, 30, 10]), np.array([False, False, False, True]), missing_id=3, offset=5, out=buffer[1])
    assert buffer.tolist() == [[0] * 4, [6, 5, 7, 8]]
    if kernels == "native":
        with pytest.raises(ValueError, match="contiguous int64 or int32"):
            lookup(np.array([20]), out=np.zeros(1, dtype=np.float64))
