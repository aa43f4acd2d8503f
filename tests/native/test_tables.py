"""The encoders' per-value kernels: native hash tables and binning against plain numpy and polars
answers, and the native and fallback paths against each other (the `kernels` fixture runs both)."""

from __future__ import annotations

import itertools

import numpy as np
import polars as pl
import pytest

from snn.pipeline.native.columns import pieces
from snn.pipeline.native.loader import library
from snn.pipeline.native.tables import HashTable, IntegerLookup, Totals, bin_column, bin_ids


def _as_dict(frame: pl.DataFrame) -> dict:
    return dict(zip(frame["key"].to_list(), frame["total"].to_list()))


def _chunked(values: list, dtype, cuts: list[int]) -> pl.Series:
    """A series of several Arrow chunks (like a parquet file's row groups)."""
    bounds = [0, *cuts, len(values)]
    return pl.concat([pl.Series("x", values[a:b], dtype=dtype) for a, b in itertools.pairwise(bounds)], rechunk=False)


def test_float_totals_equal_a_group_by(kernels):
    rng = np.random.default_rng(0)
    values = np.round(rng.lognormal(2, 2, 30_000), 1)
    values[rng.random(len(values)) < 0.1] = np.nan
    values[:50] = -0.0  # counted with 0.0
    values[50:60] = 0.0
    nulls = rng.random(len(values)) < 0.1
    column = _chunked([None if n else v for v, n in zip(values.tolist(), nulls)], pl.Float64, [7_001, 20_003])
    weights = rng.random(len(values))
    rows = rng.random(len(values)) < 0.8
    totals = Totals()
    for start in range(0, 30_000, 9_999):  # chunks accumulate; slices start at odd validity bits
        part = slice(start, start + 9_999)
        totals.add_weighted(column[part], weights[part], rows[part])
    present = ~np.isnan(values) & ~nulls & rows
    expected = (
        pl.DataFrame({"key": values[present] + 0.0, "total": weights[present]})
        .group_by("key")
        .agg(pl.col("total").sum())
    )
    got, want = _as_dict(totals.result()), _as_dict(expected)
    assert got.keys() == want.keys() and len(got) > 2_000  # far past the first table's 512 keys
    np.testing.assert_allclose([got[k] for k in want], list(want.values()), rtol=1e-12)
    assert totals.result().height == len(want)  # -0.0 is no key of its own (the dicts would merge it)
    assert got[0.0] == pytest.approx(weights[present & (values == 0)].sum(), rel=1e-12)


def test_columns_are_read_in_place_piece_by_piece():
    values = [float(i) if i % 3 else None for i in range(1_000)]
    column = _chunked(values, pl.Float64, [333, 334, 900])[5:995]  # sliced: pieces start mid-chunk
    with pieces(column) as parts:
        assert [p.start for p in parts] == [0, 328, 329, 895] and sum(len(p.values) for p in parts) == 990
        for part in parts:
            expected = column[part.start : part.start + len(part.values)]
            valid = expected.is_not_null().to_numpy()
            assert (part.valid is not None) == (not valid.all())
            np.testing.assert_array_equal(part.values[valid], expected.drop_nulls().to_numpy())
    whole = pl.Series("x", [1.0, 2.0])
    with pieces(whole) as parts:
        assert parts[0].values.base is not None and parts[0].valid is None  # a view, not a copy
    with pytest.raises(TypeError, match="Float64 or Int64"), pieces(pl.Series("x", ["a"])):
        pass


def test_columns_bin_and_look_up_like_their_arrays(kernels):
    rng = np.random.default_rng(3)
    x = rng.normal(size=5_000)
    nulls = rng.random(len(x)) < 0.2
    floats = _chunked([None if n else v for v, n in zip(x.tolist(), nulls)], pl.Float64, [1_237])[3:]
    inner = np.array([-1.0, 0.0, 0.5])
    want = np.empty(len(floats), dtype=np.int64)
    bin_ids(floats.to_numpy(), inner, None, 9, 100, want)
    got = np.empty(len(floats), dtype=np.int32)
    assert bin_column(floats, inner, None, 9, 100, got) == 0
    np.testing.assert_array_equal(got, want)
    assert (got == 109).sum() == nulls[3:].sum()
    keys = rng.integers(0, 50, 5_000)
    ints = _chunked([None if n else int(k) for k, n in zip(keys, nulls)], pl.Int64, [2_001])[1:]
    lookup = IntegerLookup(np.arange(0, 50, 2), np.arange(25), default=25)
    got = lookup.lookup_column(ints, 26, 1_000, np.empty(len(ints), dtype=np.int32))
    expected = np.where(nulls[1:], 26, np.where(keys[1:] % 2 == 0, keys[1:] // 2, 25)) + 1_000
    np.testing.assert_array_equal(got, expected)


def test_integer_counts_skip_nulls_and_text_counts_too(kernels):
    series = pl.Series("c", [5, None, -(2**62), 5, 7, None, 2**62, 5], dtype=pl.Int64)
    totals = Totals()
    totals.count(series)
    totals.count(series.head(2))
    assert _as_dict(totals.result()) == {5: 4.0, -(2**62): 1.0, 7: 1.0, 2**62: 1.0}
    text = Totals()
    text.count(pl.Series("c", ["a", None, "b", "a"]))
    assert _as_dict(text.result()) == {"a": 2.0, "b": 1.0}
    assert Totals().result().height == 0


@pytest.mark.skipif(library() is None, reason="no C compiler: the native kernels cannot be built")
def test_a_table_takes_one_key_type_and_grows_without_losing_keys():
    table = HashTable(library(), capacity=8)
    keys = np.arange(0, 10_000, 7, dtype=np.int64) * 1_000_003
    table.add(keys)
    table.add(keys[::2])
    got_keys, counts = table.items()
    assert len(table.keys) >= 2 * len(keys)  # grown from 8 slots, at most half full
    assert dict(zip(got_keys.tolist(), counts.tolist())) == {
        k: 2.0 if i % 2 == 0 else 1.0 for i, k in enumerate(keys.tolist())
    }
    with pytest.raises(TypeError, match="int64"):
        table.add(np.array([1.5]))


@pytest.mark.parametrize(
    "edges",
    [[], [0.5], [-1.0, 0.0, 2.5, 2.5, 10.0], list(np.linspace(-3, 3, 31))],
    ids=["none", "one", "repeated", "31"],
)
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
