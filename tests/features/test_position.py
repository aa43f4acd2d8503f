"""Position features: the train split reads the column, every other reading takes the served
position (batch and online alike), and a served position no train row has is refused."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from snn.pipeline.errors import InputError
from snn.pipeline.features.feature_map import FeatureMap
from snn.pipeline.features.spec import CategoricalFeature, PositionFeature


def _frame(n: int = 200, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame({"slot": rng.integers(1, 6, n), "city": rng.choice(["a", "b", "c"], n)})


@pytest.mark.parametrize("serve_as", [1, "3", None])
def test_training_reads_the_column_and_serving_takes_the_served_position(serve_as):
    frame = _frame()
    features = [
        PositionFeature(name="slot", kind="position", serve_as=serve_as),
        CategoricalFeature(name="city", kind="categorical"),
    ]
    served = FeatureMap.fit(features, frame, np.ones(frame.height))
    served = FeatureMap.from_json(json.loads(json.dumps(served.to_json())))
    training = served.for_training()
    assert training.layout() == served.layout()
    train_ids, train_values = training.encode_frame(frame)
    served_ids, served_values = served.encode_frame(frame)
    assert (train_values[:, 0] == 1).all() and (served_values[:, 0] == (0 if serve_as is None else 1)).all()
    assert served.layout()[0][3] == "id" and served.one_hot is (serve_as is not None) and training.one_hot
    encoder = served.encoders[0]
    expected_local = encoder.vocabulary.index(str(serve_as)) if serve_as is not None else len(encoder.vocabulary) + 1
    assert len(np.unique(train_ids[:, 0])) == 5  # five positions, five ids
    assert (served_ids[:, 0] == encoder.offset + expected_local).all()
    np.testing.assert_array_equal(train_ids[:, 1], served_ids[:, 1])
    # served readings do not need the column, batch or online
    without, _ = served.encode_frame(frame.drop("slot"))
    np.testing.assert_array_equal(without, served_ids)
    records = frame.drop("slot").to_dicts()
    online_ids, online_values = served.encode_records(records)
    np.testing.assert_array_equal(online_ids, served_ids)
    np.testing.assert_array_equal(online_values, served_values)
    assert served.columns == ["city"] and training.columns == ["slot", "city"]
    np.testing.assert_array_equal(training.encode_records(frame.to_dicts())[0], train_ids)


def test_a_served_position_no_train_row_has_is_refused():
    with pytest.raises(InputError, match="served as '9'.*no train row"):
        FeatureMap.fit([PositionFeature(name="slot", kind="position", serve_as=9)], _frame(), np.ones(200))
