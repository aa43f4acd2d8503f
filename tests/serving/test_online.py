"""The online scorer (numpy, or its native kernels) equals the torch batch scorer across model shapes and
value kinds."""

import numpy as np
import polars as pl
import pytest
import torch
import yaml

from snn.pipeline.data.encoded import EncodedSplit
from snn.pipeline.features.feature_map import FeatureMap
from snn.pipeline.model.blocks.base import IdSpace
from snn.pipeline.model.inference import raw_probabilities
from snn.pipeline.model.network import Network
from snn.pipeline.model.plan import plan_for
from snn.pipeline.serving.batch import load_model
from snn.pipeline.serving.online import OnlineScorer
from snn.pipeline.spec import parse_spec
from snn.pipeline.store.bundle import Bundle, Recipe

ROWS = 300


def _frame(seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 2**40, 40)  # sparse integer keys: the sorted-search lookup
    return pl.DataFrame(
        {
            "x": rng.normal(size=ROWS),
            "amount": pl.Series(rng.exponential(50, ROWS)).scatter(np.flatnonzero(rng.random(ROWS) < 0.1), None),
            "city": rng.choice(ids, ROWS),
            "shop": pl.Series(rng.integers(0, 30, ROWS)).scatter(
                np.flatnonzero(rng.random(ROWS) < 0.1), None
            ),  # dense keys
            "y": rng.integers(0, 2, ROWS),
        }
    )


@pytest.mark.parametrize("raw_amount", [True, False], ids=["raw-values", "one-hot"])
@pytest.mark.parametrize(
    "model",
    [
        {"sparse_linear": {"width": 6}, "mlp": {"layers": [5]}},
        {"sparse_linear": {"width": 6}, "interactions": {"dim": 3}, "mlp": {"layers": [5, 4], "norm": "layer"}},
        {"sparse_linear": {"width": 6, "activation": "tanh"}, "interactions": {"dim": 3}, "mlp": {"layers": []}},
    ],
    ids=["plain", "interactions", "interactions-no-hidden"],
)
def test_online_scores_equal_batch_scores(model, raw_amount, kernels):
    amount = {"kind": "none"} if raw_amount else {"kind": "percentile", "bins": 8}
    spec = parse_spec(
        yaml.safe_dump(
            {
                "version": 1,
                "name": "online",
                "data": {
                    "format": "parquet",
                    "train": {"path": "t.parquet"},
                    "holdout": {"fraction": 0.1},
                    "label": {"column": "y"},
                },
                "features": [
                    {"name": "x", "kind": "continuous"},
                    {"name": "amount", "kind": "continuous", "discretizer": amount},
                    {"name": "city", "kind": "categorical"},
                    {"name": "shop", "kind": "categorical"},
                ],
                "model": model,
            }
        )
    )
    train, test = _frame(0), _frame(1)
    feature_map = FeatureMap.fit(spec.features, train, np.ones(ROWS))
    assert feature_map.one_hot is not raw_amount
    torch.manual_seed(0)
    plan = plan_for(spec.model, IdSpace(feature_map.num_ids, len(feature_map.encoders)))
    net = Network(plan)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.normal_(std=0.3)  # id biases and projections away from their zero init
        net.block_weights("sparse")["max_abs"].uniform_(0.5, 2.0)
    weights = {k: v.numpy().copy() for k, v in net.state_dict().items()}
    recipe = Recipe(data=spec.data, features=list(spec.features), model=spec.model, train=spec.train)
    bundle = Bundle(recipe, feature_map, plan, weights)
    ids, values = feature_map.encode_frame(test)
    batch = raw_probabilities(load_model(bundle), EncodedSplit.from_dense(ids, values, test["y"], np.ones(ROWS)))
    online = OnlineScorer(bundle)
    many = online.raw_encoded(*feature_map.encode_records(test.to_dicts()))
    np.testing.assert_allclose(many, batch, rtol=0, atol=1e-12)
    single = [online.raw(record) for record in test.head(20).to_dicts()]
    np.testing.assert_allclose(single, batch[:20], rtol=0, atol=1e-12)
