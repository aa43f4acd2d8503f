"""Mixed-dimension tables: the dims follow popularity^α, fit the budget, round to powers of 2, and
a plan built from counts stores them (so serving needs no counts)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from snn.pipeline.model.blocks.base import FieldInfo, IdSpace
from snn.pipeline.model.blocks.mixed_embedding import MixedEmbeddingSpec, resolve_dims
from snn.pipeline.model.plan import ModelSpec, Plan, plan_for, uses_counts

SPACE = IdSpace(
    1100,
    3,
    (FieldInfo("small", 0, 10, "id"), FieldInfo("x", 10, 2, "value"), FieldInfo("big", 12, 1088, "id")),
)


def _counts(exponent: float = 1.1) -> np.ndarray:
    """Zipf accesses: each feature's ids most frequent first, 10,000 accesses per feature."""
    counts = np.zeros(SPACE.num_ids, np.int64)
    for f in SPACE.fields:
        if f.kind == "id":
            share = 1 / np.arange(1, f.size + 1) ** exponent
            counts[f.offset : f.offset + f.size] = np.round(10_000 * share / share.sum())
    return counts


def test_alpha_zero_gives_every_table_the_base_dim():
    tables = resolve_dims(MixedEmbeddingSpec(dim=16, alpha=0.0, blocks=3), SPACE, _counts())
    assert {t.dim for t in tables} == {16}
    assert sum(t.rows for t in tables) == 10 + 1088  # the tables tile both id features


def test_popular_blocks_get_wider_tables_and_dims_are_powers_of_2():
    tables = resolve_dims(MixedEmbeddingSpec(dim=16, alpha=0.5, blocks=4), SPACE, _counts())
    popularity = [_counts()[t.first_id : t.first_id + t.rows].sum() / t.rows for t in tables]  # accesses per row
    order = np.argsort(popularity)
    dims = np.array([t.dim for t in tables])
    assert np.all(np.diff(dims[order]) >= 0), "a more popular block got a narrower table"
    assert set(dims) <= {1, 2, 4, 8, 16} and dims.max() == 16 and dims.min() < 16
    exact = resolve_dims(MixedEmbeddingSpec(dim=16, alpha=0.5, blocks=4, power_of_2=False), SPACE, _counts())
    assert any(t.dim not in (1, 2, 4, 8, 16) for t in exact)


@pytest.mark.parametrize("budget", [2000, 5000, 9000])
def test_the_tables_fit_the_budget(budget):
    tables = resolve_dims(MixedEmbeddingSpec(dim=16, alpha=0.3, blocks=2, budget=budget), SPACE, _counts())
    assert sum(t.rows * t.dim for t in tables) <= budget
    with pytest.raises(ValueError, match="one per id"):
        resolve_dims(MixedEmbeddingSpec(dim=16, budget=1000), SPACE, _counts())


def test_the_plan_built_from_counts_stores_the_dims():
    spec = ModelSpec.model_validate(
        {
            "blocks": [
                {"name": "mixed", "kind": "mixed_embedding", "inputs": {"entries": "features"}, "dim": 8, "blocks": 2},
                {"name": "flat", "kind": "concat", "inputs": {"m": "mixed.out"}},
                {"name": "head", "kind": "logit", "inputs": {"x": "flat.out"}},
            ]
        }
    )
    assert uses_counts(spec) and not uses_counts(ModelSpec())
    with pytest.raises(ValueError, match="not resolved"):
        plan_for(spec, SPACE).weights  # noqa: B018  # the weights need the counts
    plan = plan_for(spec, SPACE, _counts())
    again = Plan.from_json(json.loads(json.dumps(plan.to_json())))
    assert again.weights == plan.weights
    tables = [w for w in plan.weights.values() if w.per_id]
    assert [w.first_id for w in tables] == sorted(w.first_id for w in tables) and tables[0].first_id == 0
    assert sum(w.shape[0] for w in tables) == 10 + 1088
