"""Id lists: the batch path (polars columns: list columns and delimited text) and the online path
(a request's dicts) give the same ids, values and lengths; truncation keeps the first or the last
ids; vocabularies count items over train rows; ragged rows lay each feature's entries in order."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from snn.pipeline.errors import InputError
from snn.pipeline.features.feature_map import FeatureMap
from snn.pipeline.features.spec import CategoricalFeature, ContinuousFeature, IdListFeature


def _feature(**options) -> IdListFeature:
    return IdListFeature(name="tags", kind="id_list", **options)


def _fit(feature: IdListFeature, column: pl.Series, extra: dict | None = None) -> FeatureMap:
    frame = pl.DataFrame({"tags": column, **(extra or {})})
    features = [feature] + [
        ContinuousFeature(name=name, kind="continuous")
        if name == "x"
        else CategoricalFeature(name=name, kind="categorical")
        for name in (extra or {})
    ]
    return FeatureMap.fit(features, frame, np.ones(frame.height))


def _rows(fmap: FeatureMap, frame: pl.DataFrame, records: list[dict]):
    batch = fmap.encode_rows(frame)
    online = fmap.encode_records_rows(records)
    for got, expected in zip(online, batch):
        np.testing.assert_array_equal(got, np.asarray(expected, dtype=got.dtype))
    return batch


def test_vocabulary_counts_items_and_keeps_frequent_ones():
    column = pl.Series(["a,b,a", "b", None, "", "c , a", "d"])
    fmap = _fit(_feature(min_count=2), column)
    assert fmap.encoders[0].vocabulary == ["a", "b"]  # a: 3, b: 2; c and d once
    ids, values, lengths = fmap.encode_rows(pl.DataFrame({"tags": column}))
    assert lengths.tolist() == [3, 1, 0, 0, 2, 1]
    assert ids.tolist() == [0, 1, 0, 1, 2, 0, 2]  # OOV = 2
    assert (values == 1).all()


@pytest.mark.parametrize("keep, expected", [("first", ["a", "b"]), ("last", ["c", "d"])])
def test_long_lists_keep_the_first_or_the_last_ids(keep, expected):
    feature = _feature(max_length=2, keep=keep)
    column = pl.Series(["a,b,c,d"])
    fmap = _fit(feature, pl.Series(["a,b,c,d,a,b,c,d"]))
    ids, _, lengths = _rows(fmap, pl.DataFrame({"tags": column}), [{"tags": "a,b,c,d"}])
    vocabulary = fmap.encoders[0].vocabulary
    assert lengths.tolist() == [2] and [vocabulary[i] for i in ids] == expected


def test_list_columns_text_and_online_lists_encode_alike():
    lists = pl.Series("tags", [[3, 7], [], None, [7, 7, 11]], dtype=pl.List(pl.Int64))
    fmap = _fit(_feature(), lists)
    records = [{"tags": [3, 7]}, {"tags": []}, {"tags": None}, {"tags": "7,7,11"}]
    _, _, lengths = _rows(fmap, pl.DataFrame({"tags": lists}), records)
    assert lengths.tolist() == [2, 0, 0, 3]
    # a record without the key is an empty list too
    assert fmap.encode_records_rows([{}])[2].tolist() == [0]


def test_hash_buckets_are_stable_and_shared_by_both_paths():
    feature = _feature(hash_buckets=64, separator="|")
    column = pl.Series(["x|y", "z", "q|x|y"])
    fmap = _fit(feature, column)
    ids, _, _ = _rows(fmap, pl.DataFrame({"tags": column}), [{"tags": t} for t in column.to_list()])
    assert fmap.encoders[0].size == 65 and ids.max() < 64
    assert ids[0] == ids[4] and ids[1] == ids[5]  # x and y hash the same wherever they appear


def test_weighted_lists_carry_their_weights():
    feature = _feature(weighted=True)
    column = pl.Series(["a:0.5,b:2", "b:1.25", None])
    fmap = _fit(feature, column)
    records = [{"tags": {"a": 0.5, "b": 2}}, {"tags": ["b:1.25"]}, {"tags": None}]
    _, values, lengths = _rows(fmap, pl.DataFrame({"tags": column}), records)
    assert values.tolist() == [0.5, 2.0, 1.25] and lengths.tolist() == [2, 1, 0]
    assert not fmap.one_hot


@pytest.mark.parametrize("cell, says", [("a:0.5,b", "has no ':weight'"), ("a:x", "not a finite number")])
def test_a_weighted_item_without_a_number_is_refused_on_both_paths(cell, says):
    fmap = _fit(_feature(weighted=True), pl.Series(["a:1"]))
    with pytest.raises(InputError, match=says):
        fmap.encode_rows(pl.DataFrame({"tags": [cell]}))
    with pytest.raises(InputError, match="tags"):
        fmap.encode_records_rows([{"tags": cell}])


def test_ragged_rows_lay_each_feature_in_order():
    column = pl.Series(["a,b", "", "b"])
    extra = {"x": [1.0, 2.0, 3.0], "c": ["u", "v", "u"]}
    fmap = _fit(_feature(), column, extra)
    assert fmap.ragged and [kind for *_, kind in fmap.layout()] == ["list", "id", "id"]
    frame = pl.DataFrame({"tags": column, **extra})
    records = frame.to_dicts()
    ids, _, lengths = _rows(fmap, frame, records)
    assert lengths.tolist() == [4, 2, 3]
    offsets = [e.offset for e in fmap.encoders]
    fields = np.searchsorted(offsets, ids, side="right") - 1
    assert fields.tolist() == [0, 0, 1, 2, 1, 2, 0, 1, 2]


@pytest.mark.parametrize("buckets", [None, 64])
def test_a_feature_that_shares_another_encodes_each_value_to_the_same_local_id(buckets):
    """`shares`: the id list `cart` takes `items`'s vocabulary (or its hash buckets, hashed under
    its name), so a value has one local id in both and their sizes are equal; the categorical
    `last` shares it too."""
    frame = pl.DataFrame({"items": ["a,b,c", "b", "d,a"], "cart": ["b,zz", "", "a"], "last": ["c", "a", "zz"]})
    features = [
        IdListFeature(name="items", kind="id_list", hash_buckets=buckets),
        IdListFeature(name="cart", kind="id_list", shares="items"),
        CategoricalFeature(name="last", kind="categorical", shares="items"),
    ]
    fmap = FeatureMap.fit(features, frame, np.ones(3))
    fmap = FeatureMap.from_json(json.loads(json.dumps(fmap.to_json())))
    items, cart, last = fmap.encoders
    assert items.size == cart.size == last.size
    ids, _, lengths = fmap.encode_rows(frame)
    local = {}
    for row, (start, stop) in enumerate(zip(np.cumsum(lengths) - lengths, np.cumsum(lengths))):
        local[row] = ids[start:stop]
    # row 0: items a,b,c | cart b,zz | last c ; row 2: items d,a | cart a | last zz
    assert local[0][1] - items.offset == local[0][3] - cart.offset  # b in items and in cart
    assert local[0][2] - items.offset == local[0][5] - last.offset  # c in items and as last
    assert local[2][1] - items.offset == local[2][2] - cart.offset  # a in items and in cart
    online, _, _ = fmap.encode_records_rows(frame.to_dicts())
    np.testing.assert_array_equal(online, ids)
