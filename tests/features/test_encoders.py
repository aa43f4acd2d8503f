"""Discretizers and vocabularies: sklearn cross-checks, ties, hashing, batch == online."""

import hashlib

import numpy as np
import polars as pl
import pytest
import yaml
from sklearn.preprocessing import KBinsDiscretizer

from snn.pipeline.data.readers import Reader
from snn.pipeline.errors import InputError
from snn.pipeline.features.categorical import CategoricalEncoder
from snn.pipeline.features.continuous import ContinuousEncoder
from snn.pipeline.features.feature_map import FITTERS, FeatureMap
from snn.pipeline.features.quantiles import percentile_edges, weighted_quantiles
from snn.pipeline.features.spec import BinaryFeature, CategoricalFeature, ContinuousFeature
from snn.pipeline.features.values import stable_bucket
from snn.pipeline.native import IntegerLookup
from snn.pipeline.spec import parse_spec

from ..conftest import ADULT_DIR, adult_spec_dict


def fitted(feature, series):
    """The feature's encoder fitted on one column (unit weights)."""
    fitter = FITTERS[type(feature)](feature)
    fitter.update(series, np.ones(len(series)))
    return fitter.finish()


def batch_ids(encoder, series) -> np.ndarray:
    """The batch path's local ids (encode_into with the encoder's offset 0)."""
    out = np.empty(len(series), dtype=np.int64)
    encoder.encode_into(series, out)
    return out


@pytest.fixture(scope="module")
def adult():
    reader = Reader("csv", tuple(adult_spec_dict()["data"]["columns"]), ",", ("", "?"), comment_prefix="|")
    return reader.read(ADULT_DIR / "adult.data"), reader.read(ADULT_DIR / "adult.test")


def test_unweighted_quantiles_equal_numpy():
    x = np.random.default_rng(0).lognormal(size=1001)
    qs = np.linspace(0, 1, 17)
    np.testing.assert_array_equal(
        weighted_quantiles(x, np.ones_like(x), qs), np.quantile(x, qs, method="averaged_inverted_cdf")
    )


def test_edges_and_bins_match_kbinsdiscretizer(adult):
    train, test = adult
    x = train["fnlwgt"].cast(pl.Float64).to_numpy()
    kb = KBinsDiscretizer(
        n_bins=16, encode="ordinal", strategy="quantile", subsample=None, quantile_method="averaged_inverted_cdf"
    ).fit(x.reshape(-1, 1))
    edges = percentile_edges(x, np.ones_like(x), 16)
    np.testing.assert_allclose(edges, kb.bin_edges_[0], rtol=0, atol=0)
    enc = ContinuousEncoder("fnlwgt", edges.tolist())
    values = enc.encode_into(test["fnlwgt"], ids := np.empty(test.height, dtype=np.int64))
    xt = test["fnlwgt"].cast(pl.Float64).to_numpy()
    np.testing.assert_array_equal(ids, kb.transform(xt.reshape(-1, 1))[:, 0].astype(int))
    assert np.all(values == 1.0)


def test_bins_are_left_closed_and_clamped():
    enc = ContinuousEncoder("x", [0.0, 1.0, 2.0, 3.0])
    ids = batch_ids(enc, pl.Series("x", [-5.0, 0.0, 0.999, 1.0, 2.5, 3.0, 99.0, None]))
    assert ids.tolist() == [0, 0, 0, 1, 2, 2, 2, 3]  # None -> its own id (n_bins)


def test_heavy_ties_get_their_own_bin(adult):
    train, _ = adult
    x = train["capital_gain"].cast(pl.Float64).to_numpy()
    edges = percentile_edges(x, np.ones_like(x), 32)
    plain = np.unique(np.quantile(x, np.linspace(0, 1, 33), method="averaged_inverted_cdf"))
    assert len(plain) - 1 <= 3  # equal-frequency collapses on 92% zeros
    assert len(edges) - 1 >= 20  # we keep the non-zero values resolved
    enc = ContinuousEncoder("capital_gain", edges.tolist())
    ids = batch_ids(enc, pl.Series([0.0, 1.0, 2174.0]))
    assert ids[0] != ids[1] and ids[1] != ids[2]
    share = np.bincount(batch_ids(enc, train["capital_gain"])) / len(x)
    assert share[0] == pytest.approx(np.mean(x == 0))  # the zeros, and only they, fill bin 0


def test_weighted_edges_follow_the_weights():
    x = np.arange(100, dtype=float)
    w = np.where(x < 50, 3.0, 1.0)  # the lower half holds 75% of the weight
    edges = percentile_edges(x, w, 4)
    # cumulative weight 3(i+1) below 50: quartile targets 50, 100, 150 land on 16, 33 and (49+50)/2
    assert edges.tolist() == [0.0, 16.0, 33.0, 49.5, 99.0]


def test_vocabulary_min_count_oov_and_missing():
    s = pl.Series("c", ["a", "a", "a", "b", "b", "c", None])
    enc = fitted(CategoricalFeature(name="c", kind="categorical", min_count=2), s)
    assert enc.vocabulary == ["a", "b"]
    assert batch_ids(enc, pl.Series("c", ["a", "b", "c", "never-seen", None])).tolist() == [0, 1, 2, 2, 3]
    ids, values = enc.encode_values(["never-seen", None, "a"])
    assert ids.tolist() == [2, 3, 0] and values.tolist() == [1.0] * 3


@pytest.mark.parametrize("high", [3_000, 2**40], ids=["dense-keys", "sparse-keys"])
def test_integer_ids_online_equal_batch_and_text_values(high, kernels):
    rng = np.random.default_rng(7)
    seen = rng.choice(rng.integers(-high, high, 500), 5_000)
    feature = CategoricalFeature(name="c", kind="categorical", min_count=2)
    enc = fitted(feature, pl.Series("c", seen, dtype=pl.Int64))
    assert len(enc.vocabulary) > 400
    queries = [int(v) for v in rng.choice(seen, 400)] + [int(v) for v in rng.integers(-high, high, 400)]
    queries += [None, high * 4, -high * 4]
    batch = batch_ids(enc, pl.Series("c", queries, dtype=pl.Int64))
    online, values = enc.encode_values(queries)  # integers: the vectorized lookup
    as_text = enc.encode_values([None if v is None else str(v) for v in queries])[0]  # text: the dict path
    assert online.tolist() == batch.tolist() == as_text.tolist()
    assert values.tolist() == [1.0] * len(queries)
    if kernels == "fallback":
        assert (enc._integer_lookup.dense is not None) == (high < 2**16)
    beyond_float = [2**60 + 1, None, queries[0]]  # past 2^53: the per-value path, same answers
    assert (
        enc.encode_values(beyond_float)[0].tolist()
        == enc.encode_values([str(2**60 + 1), None, str(queries[0])])[0].tolist()
    )


@pytest.mark.parametrize("keys", [np.arange(0, 300, 3), np.array([5, -(2**50), 2**50, 17, 0])], ids=["dense", "sparse"])
def test_integer_lookup_equals_a_dict(keys, kernels):
    values = np.arange(len(keys)) * 10
    lookup = IntegerLookup(keys, values, default=-1)
    assert (lookup.table is not None) == (kernels == "native")
    if kernels == "fallback":
        assert (lookup.dense is not None) == (len(keys) > 5)
    queries = np.concatenate([keys, keys + 1, keys - 1, [2**62, -(2**62)]])
    expected = dict(zip(keys.tolist(), values.tolist()))
    assert lookup(queries).tolist() == [expected.get(q, -1) for q in queries.tolist()]
    missing = np.arange(len(queries)) % 3 == 0
    into = np.zeros(len(queries), dtype=np.int32)
    lookup(queries, missing, missing_id=-7, offset=100, out=into)
    assert into.tolist() == [-7 + 100 if m else expected.get(q, -1) + 100 for q, m in zip(queries.tolist(), missing)]
    empty = IntegerLookup(np.array([], dtype=np.int64), np.array([], dtype=np.int64), default=9)
    assert empty(queries).tolist() == [9] * len(queries)


def test_hashing_is_stable_blake2b():
    expected = int.from_bytes(hashlib.blake2b(b"c\x1fvalue", digest_size=8).digest(), "little") % 1000
    assert stable_bucket("c", "value", buckets=1000) == expected
    enc = CategoricalEncoder("c", buckets=1000)
    assert batch_ids(enc, pl.Series("c", ["value", None])).tolist() == [expected, 1000]
    assert enc.encode_values(["value", None])[0].tolist() == [expected, 1000]


def test_non_numeric_and_infinite_values_are_named(adult):
    enc = ContinuousEncoder("age", [0.0, 50.0, 100.0])
    with pytest.raises(InputError, match="non-numeric values such as \\['abc'\\]"):
        batch_ids(enc, pl.Series(["1", "abc"]))
    with pytest.raises(InputError, match="infinite"):
        batch_ids(enc, pl.Series([1.0, float("inf")]))


def test_online_encoding_equals_batch_on_adult(adult):
    train, test = adult
    spec = parse_spec(yaml.safe_dump(adult_spec_dict()))
    extra = [
        ContinuousFeature(name="age_raw", kind="continuous", discretizer={"kind": "none"}),
        ContinuousFeature(name="hours_hashed", kind="continuous", discretizer={"kind": "hashing", "buckets": 64}),
        CategoricalFeature(name="occupation_hashed", kind="categorical", hash_buckets=50),
    ]
    aliases = {"age_raw": "age", "hours_hashed": "hours_per_week", "occupation_hashed": "occupation"}
    train = train.with_columns([pl.col(v).alias(k) for k, v in aliases.items()])
    test = test.with_columns([pl.col(v).alias(k) for k, v in aliases.items()])
    fmap = FeatureMap.fit(list(spec.features) + extra, train, np.ones(train.height))
    assert FeatureMap.fit(spec.features, train.head(500), np.ones(500)).one_hot and not fmap.one_hot  # age_raw
    ids, values = fmap.encode_frame(test)
    fmap2 = FeatureMap.from_json(fmap.to_json())
    records = test.head(3000).to_dicts()
    online_ids, online_values = fmap2.encode_records(records)
    np.testing.assert_array_equal(online_ids, ids[:3000])
    np.testing.assert_allclose(online_values, values[:3000], rtol=1e-7)
    one_by_one = [fmap2.encode_records([record]) for record in records[:200]]
    assert [row[0].tolist() for row, _ in one_by_one] == ids[:200].tolist()


def test_a_request_encodes_as_its_records_do_whatever_the_kinds_of_value(kernels):
    train = pl.DataFrame(
        {
            "n": [0.5, 1.5, 2.5, 3.5, None] * 4,
            "raw": [1.0, -2.0, 3.0, None, 5.0] * 4,
            "hashed": [1.0, 2.0, 3.0, 4.0, 5.0] * 4,
            "code": [7, 8, 9, 2**40, None] * 4,
            "word": ["a", "b", "c", None, "a"] * 4,
            "tag": ["x", "y", "z", "x", None] * 4,
            "flag": [0, 1, 1, 0, 1] * 4,
        }
    )
    features = [
        ContinuousFeature(name="n", kind="continuous", discretizer={"kind": "percentile", "bins": 3}),
        ContinuousFeature(name="raw", kind="continuous", discretizer={"kind": "none"}),
        ContinuousFeature(name="hashed", kind="continuous", discretizer={"kind": "hashing", "buckets": 16}),
        CategoricalFeature(name="code", kind="categorical"),
        CategoricalFeature(name="word", kind="categorical"),
        CategoricalFeature(name="tag", kind="categorical", hash_buckets=8),
        BinaryFeature(name="flag", kind="binary"),
    ]
    fmap = FeatureMap.fit(features, train, np.ones(train.height))
    plain = [
        {"n": 1.0, "raw": 2.5, "hashed": 3.0, "code": 8, "word": "b", "tag": "y", "flag": 1},
        {"n": None, "raw": None, "hashed": None, "code": None, "word": None, "tag": None, "flag": 0},
        {"n": 7, "raw": -4, "code": 2**40, "word": "never", "flag": True},  # ints; absent keys
        {"n": np.float64(2.0), "raw": True, "hashed": 2**60, "code": 12345, "word": "a", "tag": "q", "flag": "yes"},
    ]
    mixed = plain + [
        {"n": "2.25", "raw": "1e3", "hashed": False, "code": 2**60 + 1, "word": 5, "tag": 3.0, "flag": 1.0},
        {"n": float("nan"), "raw": -0.0, "hashed": 1.5, "code": 8.0, "word": True, "tag": None, "flag": None},
    ]
    for request in (plain, mixed, tuple(mixed)):  # a tuple of records takes the Python path
        ids, values = fmap.encode_records(request)
        singles = [fmap.encode_records([record]) for record in request]
        assert ids.tolist() == [row[0].tolist() for row, _ in singles]
        assert values.tolist() == [row[0].tolist() for _, row in singles]
    with pytest.raises(InputError, match="feature 'n'.*infinite"):
        fmap.encode_records(plain + [{"n": 10**400}])
    with pytest.raises(InputError, match="feature 'raw'.*infinite"):
        fmap.encode_records(plain + [{"raw": float("-inf")}])
    assert fmap.encode_records([])[0].shape == (0, len(features))


def test_uint64_categories_past_int64_keep_their_vocabulary_ids(kernels):
    big = 2**64 - 5
    series = pl.Series("c", [big, big, 3, 3, 3, None], dtype=pl.UInt64)
    enc = fitted(CategoricalFeature(name="c", kind="categorical"), series)
    assert enc.vocabulary == ["3", str(big)]
    assert batch_ids(enc, pl.Series("c", [big, 3, 7, None], dtype=pl.UInt64)).tolist() == [1, 0, 2, 3]
    assert enc.encode_values([big, 3, 7, None])[0].tolist() == [1, 0, 2, 3]
