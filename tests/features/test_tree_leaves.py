"""Tree leaves as ids: the stored trees walked by numpy give scikit-learn's own predictions, the
batch and online paths give the same leaves, and the sample the trees fit on does not depend on how
the train rows were chunked."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier

from snn.pipeline.errors import ArtifactError, InputError
from snn.pipeline.features.feature_map import FeatureMap, finish_fitters, fitters, update_fitters
from snn.pipeline.features.spec import TreeLeavesFeature
from snn.pipeline.features.tree_leaves import (
    RARE_ROWS,
    TreeLeavesEncoder,
    _coding,
    _out_of_fold_codes,
    frame_inputs,
    trees_of,
)

from ..conftest import ADULT_DIR

COLUMNS = [
    "age", "workclass", "fnlwgt", "education", "education_num", "marital_status", "occupation",
    "relationship", "race", "sex", "capital_gain", "capital_loss", "hours_per_week", "native_country", "income",
]  # fmt: skip
INPUTS = ["age", "workclass", "education_num", "marital_status", "occupation", "capital_gain", "hours_per_week"]


@pytest.fixture(scope="module")
def adult() -> tuple[pl.DataFrame, np.ndarray]:
    frame = pl.read_csv(ADULT_DIR / "adult.data", has_header=False, new_columns=COLUMNS)
    frame = frame.with_columns(pl.col(pl.String).str.strip_chars().replace("?", None)).drop_nulls("income")
    frame = frame.with_columns(pl.col(c).cast(pl.Int64) for c in ("education_num", "capital_gain", "hours_per_week"))
    labels = (frame["income"] == ">50K").to_numpy().astype(np.float64)
    return frame, labels


def _feature(**options) -> TreeLeavesFeature:
    return TreeLeavesFeature(name="trees", kind="tree_leaves", inputs=INPUTS, **options)


def test_the_stored_trees_walked_by_numpy_give_sklearns_decision_function(adult):
    frame, labels = adult
    fitted = FeatureMap.fit([_feature(trees=12, max_leaf_nodes=15)], frame, np.ones(frame.height), labels)
    encoder = fitted.encoders[0]
    assert isinstance(encoder, TreeLeavesEncoder)
    x = encoder.inputs_of_frame(frame)
    model = HistGradientBoostingClassifier(max_iter=12, max_leaf_nodes=15, early_stopping=False, random_state=0)
    model.fit(x, labels > 0.5)
    walked = TreeLeavesEncoder("trees", INPUTS, trees_of(model), encoder.categories)
    leaves = walked.leaves(x)  # [n, trees], ids within the feature
    leaf_values = np.concatenate([p.nodes["value"][p.nodes["is_leaf"].astype(bool)] for (p,) in model._predictors])
    raw = leaf_values[leaves].sum(axis=1) + float(np.ravel(model._baseline_prediction)[0])
    assert np.abs(raw - model.decision_function(x)).max() <= 1e-9
    assert encoder.size == sum(len(t["feature"]) - len([f for f in t["feature"] if f >= 0]) for t in encoder.trees)
    assert leaves.min() == 0 and leaves.max() == walked.size - 1


def test_batch_and_online_leaves_are_the_same_with_missing_unseen_and_typed_values(adult):
    frame, labels = adult
    fmap = FeatureMap.fit([_feature(trees=8)], frame.head(5000), np.ones(5000), labels[:5000])
    batch = frame.slice(5000, 400).with_row_index("r")
    batch = batch.with_columns(
        workclass=pl.when(pl.col("r") == 0).then(pl.lit("Never-seen-before")).otherwise(pl.col("workclass")),
        age=pl.when(pl.col("r") == 1).then(None).otherwise(pl.col("age")),
        occupation=pl.when(pl.col("r") == 2).then(None).otherwise(pl.col("occupation")),
    ).drop("r")
    rows = batch.to_dicts()
    rows[3]["age"] = str(rows[3]["age"])  # a number sent as text
    rows[4]["age"] = float(rows[4]["age"])
    del rows[5]["capital_gain"]  # an absent key is missing
    batch = batch.with_columns(
        capital_gain=pl.when(pl.int_range(pl.len()) == 5).then(None).otherwise(pl.col("capital_gain"))
    )
    ids, values, lengths = fmap.encode_rows(batch)
    online_ids, online_values, online_lengths = fmap.encode_records_rows(rows)
    np.testing.assert_array_equal(ids, online_ids)
    np.testing.assert_array_equal(lengths, online_lengths)
    assert (lengths == 8).all() and (values == 1).all() and (online_values == 1).all()
    again = FeatureMap.from_json(json.loads(json.dumps(fmap.to_json())))
    np.testing.assert_array_equal(again.encode_rows(batch)[0], ids)


def test_the_sample_does_not_depend_on_the_chunks(adult):
    frame, labels = adult
    feature = _feature(trees=4, sample_rows=3000)
    encoders = []
    for chunks in (1, 7):
        running = fitters([feature])
        for part in np.array_split(np.arange(frame.height), chunks):
            rows = part % 2 == 0  # half the rows are train
            chunk = frame[part]
            update_fitters([feature], running, chunk, np.ones(len(part)), rows, labels[part])
        encoders.append(finish_fitters(running)[0])
    assert encoders[0].to_json() == encoders[1].to_json()


def test_text_inputs_are_coded_by_the_dense_rank_of_their_positive_rate(adult):
    """Codes rise with the smoothed positive rate, values of one rate share a code, and values with
    fewer than RARE_ROWS sample rows are missing (their rate would be mostly their own labels)."""
    frame, labels = adult
    encoder = FeatureMap.fit([_feature(trees=2)], frame, np.ones(frame.height), labels).encoders[0]
    codes = encoder.categories["marital_status"]
    rate = {v: labels[(frame["marital_status"] == v).to_numpy()].mean() for v in codes}
    assert max(codes, key=codes.get) == "Married-civ-spouse" and rate[min(codes, key=codes.get)] < 0.1
    assert sorted(set(codes.values())) == list(range(len(set(codes.values()))))
    counts = frame["workclass"].value_counts()
    rare = counts.filter(pl.col("count") < RARE_ROWS)["workclass"].drop_nulls().to_list()
    assert rare and not set(rare) & set(encoder.categories["workclass"])
    x = frame_inputs(frame.head(3), ["age", "marital_status"], {"marital_status": codes}, "t")
    np.testing.assert_array_equal(x[:, 0], frame["age"].head(3).to_numpy())
    np.testing.assert_array_equal(x[:, 1], [codes[v] for v in frame["marital_status"].head(3)])


def test_ties_share_a_code_and_rare_values_are_missing_when_fitting_too():
    """The out-of-fold codes the trees fit on sit on the serving codes' scale: a value whose rate
    ties another's takes the same code in both, so no split falls inside a tie group."""
    rng = np.random.default_rng(1)
    values = np.repeat([f"v{i}" for i in range(40)], 50)  # 40 values x 50 rows
    labels = np.tile(np.r_[np.ones(10), np.zeros(40)], 40)  # every value: rate 0.2, one tie group
    text = pl.Series(values)
    codes, rates = _coding(text, labels, np.ones(len(labels)))
    assert set(codes.values()) == {0} and len(rates) == 1
    folds = rng.permutation(len(labels)) % 5
    fitted = _out_of_fold_codes(text, labels, np.ones(len(labels)), folds, codes, rates)
    assert np.isin(fitted, [0, 1]).all()  # each out-of-fold rate sits at or just above the one rate
    rare = pl.Series(["r"] * 5 + ["v0"] * 45)
    codes, rates = _coding(rare, np.r_[np.ones(5), np.zeros(45)], np.ones(50))
    assert "r" not in codes
    fitted = _out_of_fold_codes(rare, np.r_[np.ones(5), np.zeros(45)], np.ones(50), np.arange(50) % 5, codes, rates)
    assert np.isnan(fitted[:5]).all() and not np.isnan(fitted[5:]).any()


def test_bad_inputs_and_damaged_trees_are_named(adult):
    frame, labels = adult
    fmap = FeatureMap.fit([_feature(trees=2)], frame.head(2000), np.ones(2000), labels[:2000])
    with pytest.raises(InputError, match="'age'.*not a number"):
        fmap.encode_records_rows([{"age": "old"}])
    with pytest.raises(InputError, match="'age'.*infinite"):
        fmap.encode_records_rows([{"age": float("inf")}])
    damaged = fmap.to_json()
    damaged["encoders"][0]["trees"][0]["left"][0] = 10**6
    with pytest.raises(ArtifactError, match="inconsistent"):
        FeatureMap.from_json(damaged)


def test_a_split_of_missing_from_present_values_walks_like_sklearn():
    """scikit-learn splits missing from present values with threshold +inf; stored as the largest
    float, the walk still gives its decision function, and the feature map stays plain JSON."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5000, 2))
    missing = rng.random(5000) < 0.3
    x[missing, 0] = np.nan
    y = missing | (x[:, 1] > 0)
    model = HistGradientBoostingClassifier(max_iter=5, early_stopping=False, random_state=0).fit(x, y)
    assert any(np.isinf(p.nodes["num_threshold"]).any() for (p,) in model._predictors)
    encoder = TreeLeavesEncoder("t", ["a", "b"], trees_of(model))
    leaf_values = np.concatenate([p.nodes["value"][p.nodes["is_leaf"].astype(bool)] for (p,) in model._predictors])
    raw = leaf_values[encoder.leaves(x)].sum(axis=1) + float(np.ravel(model._baseline_prediction)[0])
    assert np.abs(raw - model.decision_function(x)).max() <= 1e-12
    json.dumps(encoder.to_json(), allow_nan=False)
