"""Every registered block, through the same checks: its torch forward equals its numpy scorer in
float64 (max abs diff <= 1e-12 on random inputs and weights), its row-wise training path equals its
full-table path in outputs and gradients, and its spec survives the plan's JSON round trip.

A new block adds its example here (EXAMPLES: a spec and the ports it reads) and to PLANS (a plan
that holds it); the checks then run on it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from snn.pipeline.model.blocks import BLOCKS
from snn.pipeline.model.blocks.base import (
    Entries,
    FieldInfo,
    FieldVectors,
    IdSpace,
    Node,
    Port,
    RequestEntries,
    as_array,
)
from snn.pipeline.model.network import Network
from snn.pipeline.model.plan import ModelSpec, Plan, plan_for
from snn.pipeline.model.rows import deduplicate

NUM_IDS, FIELDS, ROWS = 60, 5, 40
SPACE = IdSpace(NUM_IDS, FIELDS)
# laid-out spaces: one entry per feature (ids and numbers), and with id lists (one weighted)
LAID_OUT = IdSpace(
    NUM_IDS,
    FIELDS,
    (
        FieldInfo("a", 0, 10, "id"),
        FieldInfo("x", 10, 2, "value"),
        FieldInfo("b", 12, 18, "id"),
        FieldInfo("y", 30, 2, "value"),
        FieldInfo("c", 32, 28, "id"),
    ),
)
RAGGED = IdSpace(
    NUM_IDS,
    FIELDS,
    (
        FieldInfo("a", 0, 10, "id"),
        FieldInfo("x", 10, 2, "value"),
        FieldInfo("tags", 12, 18, "list"),
        FieldInfo("y", 30, 2, "value"),
        FieldInfo("terms", 32, 28, "list"),
    ),
)
# two id lists of one encoding (the second `shares` the first's), for tables shared by name
SHARED = IdSpace(
    NUM_IDS,
    FIELDS,
    (
        FieldInfo("a", 0, 10, "id"),
        FieldInfo("x", 10, 2, "value"),
        FieldInfo("tags", 12, 12, "list"),
        FieldInfo("terms", 24, 12, "list"),
        FieldInfo("z", 36, 24, "id"),
    ),
)

# kind -> [(spec, {input: port})]: the example inputs of each block kind
EXAMPLES = {
    "sparse_linear": [
        ({"width": 6, "activation": "tanh"}, {"entries": Port("entries", (FIELDS,))}),
        ({"width": 3, "activation": "prelu"}, {"entries": Port("entries", (FIELDS,))}),
        ({"width": 4, "features": ["c", "x"]}, {"entries": Port("entries", (FIELDS,))}, LAID_OUT),
        ({"width": 2, "features": ["terms", "a"]}, {"entries": Port("entries", (FIELDS,))}, RAGGED),
    ],
    "field_embedding": [({"dim": 4}, {"entries": Port("entries", (FIELDS,)), "scaled": Port("scaled")})],
    "dot_interaction": [({}, {"dense": Port("dense", (7,)), "fields": Port("fields", (FIELDS, 3))})],
    "mlp": [
        ({"layers": [8, 4], "activation": "relu", "norm": "batch"}, {"x": Port("dense", (9,))}),
        ({"layers": [5], "activation": "prelu", "norm": "layer", "dropout": 0.2}, {"x": Port("dense", (9,))}),
        ({"layers": [6, 2], "activation": "sigmoid"}, {"x": Port("dense", (3,))}),
        ({"layers": [], "activation": "none"}, {"x": Port("dense", (3,))}),
    ],
    "logit": [({}, {"x": Port("dense", (5,))})],
    "gradient_scale": [({"scale": scale}, {"x": Port("dense", (4,))}) for scale in (0.0, 0.3, 1.0)],
    "embedding_bag": [
        ({"dim": 4, "pooling": pooling}, {"entries": Port("entries", (FIELDS,))}, space)
        for pooling in ("sum", "mean", "max")
        for space in (LAID_OUT, RAGGED)
    ]
    + [({"dim": 3, "features": ["c", "a"]}, {"entries": Port("entries", (FIELDS,))}, LAID_OUT)]
    + [
        (
            {"dim": 3, "pooling": pooling, "shared": {"words": ["tags", "terms"]}},
            {"entries": Port("entries", (FIELDS,))},
            SHARED,
        )
        for pooling in ("sum", "max")
    ]
    + [({"dim": 2, "features": ["b", "a"], "shared": {}}, {"entries": Port("entries", (FIELDS,))}, LAID_OUT)],
    "mixed_embedding": [
        ({"dim": 4, "pooling": pooling, "tables": tables}, {"entries": Port("entries", (FIELDS,))}, space)
        for pooling in ("sum", "mean", "max")
        for space, tables in ((LAID_OUT, None), (RAGGED, None))
    ],
    "concat": [
        ({}, {"a": Port("dense", (3,)), "b": Port("fields", (FIELDS, 2)), "c": Port("dense", (1,))}),
        ({}, {"only": Port("fields", (FIELDS, 3))}),
    ],
    "dense_features": [
        ({}, {"entries": Port("entries", (FIELDS,))}, LAID_OUT),
        ({"missing_indicators": False, "features": ["y"]}, {"entries": Port("entries", (FIELDS,))}, RAGGED),
        ({}, {"entries": Port("entries", (FIELDS,))}, RAGGED),
    ],
}


def _tables(space: IdSpace, features=None, dim=4, blocks=2) -> list[dict]:
    """Resolved mixed-dim tables over `space` from made-up Zipf-like counts (popular ids first)."""
    from snn.pipeline.model.blocks.mixed_embedding import MixedEmbeddingSpec, resolve_dims

    counts = np.zeros(space.num_ids, np.int64)
    for f in space.fields:
        counts[f.offset : f.offset + f.size] = (1000 / np.arange(1, f.size + 1) ** 1.2).astype(np.int64)
    spec = MixedEmbeddingSpec(features=features, dim=dim, blocks=blocks, alpha=1.0)
    return [t.model_dump() for t in resolve_dims(spec, space, counts)]


for _spec, _ports, _space in EXAMPLES["mixed_embedding"]:
    _spec["tables"] = _tables(_space)
EXAMPLES["mixed_embedding"].append(
    (
        {"dim": 6, "features": ["c", "a"], "tables": _tables(LAID_OUT, ["c", "a"], dim=6, blocks=3)},
        {"entries": Port("entries", (FIELDS,))},
        LAID_OUT,
    )
)

# plans that hold every block, for the row-wise and JSON checks
PLANS = {
    "sparse-mlp": {"sparse_linear": {"width": 6, "activation": "tanh"}, "mlp": {"layers": [5], "norm": "batch"}},
    "prelu-layer-norm": {
        "sparse_linear": {"width": 4, "activation": "prelu"},
        "mlp": {"layers": [4, 3], "activation": "prelu", "norm": "layer"},
    },
    "interactions": {
        "sparse_linear": {"width": 5},
        "interactions": {"dim": 3},
        "mlp": {"layers": [4], "activation": "sigmoid"},
    },
    "logistic": {"sparse_linear": {"width": 1, "activation": "none"}, "mlp": {"layers": []}},
}
DLRM = {
    "blocks": [
        {"name": "dense", "kind": "dense_features", "inputs": {"entries": "features"}},
        {"name": "bottom", "kind": "mlp", "inputs": {"x": "dense.out"}, "layers": [4, 3]},
        {"name": "embed", "kind": "embedding_bag", "inputs": {"entries": "features"}, "dim": 3, "pooling": "mean"},
        {"name": "pairs", "kind": "dot_interaction", "inputs": {"dense": "bottom.out", "fields": "embed.out"}},
        {"name": "top", "kind": "mlp", "inputs": {"x": "pairs.out"}, "layers": [4]},
        {"name": "head", "kind": "logit", "inputs": {"x": "top.out"}},
    ]
}
# plans over a laid-out space: (spec, space)
LAID_OUT_PLANS = {
    "dlrm-ragged": (DLRM, RAGGED),
    "damped-tower": (
        {
            "blocks": [
                {"name": "wide", "kind": "sparse_linear", "inputs": {"entries": "features"}, "width": 4},
                {"name": "damped", "kind": "gradient_scale", "inputs": {"x": "wide.out"}, "scale": 0.25},
                {"name": "tower", "kind": "mlp", "inputs": {"x": "damped.out"}, "layers": [3]},
                {"name": "head", "kind": "logit", "inputs": {"x": "tower.out"}},
            ]
        },
        RAGGED,
    ),
    "dlrm-fixed": (DLRM, LAID_OUT),
    "split-net": (
        {
            "blocks": [
                {"name": "wide", "kind": "sparse_linear", "inputs": {"entries": "features"}, "width": 3},
                {"name": "dense", "kind": "dense_features", "inputs": {"entries": "features"}},
                {"name": "bags", "kind": "embedding_bag", "inputs": {"entries": "features"}, "features": ["tags"]},
                {
                    "name": "joined",
                    "kind": "concat",
                    "inputs": {"wide": "wide.out", "dense": "dense.out", "bags": "bags.out"},
                },
                {"name": "deep", "kind": "mlp", "inputs": {"x": "joined.out"}, "layers": [4]},
                {"name": "head", "kind": "logit", "inputs": {"x": "deep.out"}},
            ]
        },
        RAGGED,
    ),
    "split-net-groups": (
        {
            "blocks": [
                {
                    "name": "users",
                    "kind": "sparse_linear",
                    "inputs": {"entries": "features"},
                    "width": 3,
                    "features": ["a", "x", "tags"],
                },
                {
                    "name": "items",
                    "kind": "sparse_linear",
                    "inputs": {"entries": "features"},
                    "width": 2,
                    "features": ["terms", "y"],
                    "activation": "tanh",
                },
                {"name": "joined", "kind": "concat", "inputs": {"u": "users.out", "i": "items.out"}},
                {"name": "deep", "kind": "mlp", "inputs": {"x": "joined.out"}, "layers": [4]},
                {"name": "head", "kind": "logit", "inputs": {"x": "deep.out"}},
            ]
        },
        RAGGED,
    ),
    "split-net-groups-fixed": (
        {
            "blocks": [
                {
                    "name": "users",
                    "kind": "sparse_linear",
                    "inputs": {"entries": "features"},
                    "width": 1,
                    "features": ["a", "x"],
                    "activation": "none",
                },
                {
                    "name": "items",
                    "kind": "sparse_linear",
                    "inputs": {"entries": "features"},
                    "width": 3,
                    "features": ["b", "y", "c"],
                },
                {"name": "joined", "kind": "concat", "inputs": {"u": "users.out", "i": "items.out"}},
                {"name": "head", "kind": "logit", "inputs": {"x": "joined.out"}},
            ]
        },
        LAID_OUT,
    ),
    "mixed-dims": (
        {
            "blocks": [
                {"name": "dense", "kind": "dense_features", "inputs": {"entries": "features"}},
                {
                    "name": "mixed",
                    "kind": "mixed_embedding",
                    "inputs": {"entries": "features"},
                    "dim": 4,
                    "pooling": "mean",
                    "tables": _tables(RAGGED),
                },
                {"name": "pairs", "kind": "dot_interaction", "inputs": {"dense": "dense.out", "fields": "mixed.out"}},
                {"name": "head", "kind": "logit", "inputs": {"x": "pairs.out"}},
            ]
        },
        RAGGED,
    ),
    "mixed-dims-fixed": (
        {
            "blocks": [
                {
                    "name": "mixed",
                    "kind": "mixed_embedding",
                    "inputs": {"entries": "features"},
                    "dim": 4,
                    "features": ["b", "c"],
                    "tables": _tables(LAID_OUT, ["b", "c"], blocks=3),
                },
                {"name": "flat", "kind": "concat", "inputs": {"m": "mixed.out"}},
                {"name": "head", "kind": "logit", "inputs": {"x": "flat.out"}},
            ]
        },
        LAID_OUT,
    ),
    "shared-tables": (
        {
            "blocks": [
                {"name": "sparse", "kind": "sparse_linear", "inputs": {"entries": "features"}, "width": 3},
                {
                    "name": "bags",
                    "kind": "embedding_bag",
                    "inputs": {"entries": "features"},
                    "dim": 3,
                    "pooling": "mean",
                    "shared": {"words": ["terms", "tags"]},
                },
                {"name": "pairs", "kind": "dot_interaction", "inputs": {"dense": "sparse.out", "fields": "bags.out"}},
                {"name": "head", "kind": "logit", "inputs": {"x": "pairs.out"}},
            ]
        },
        SHARED,
    ),
    "sparse-and-bags": (
        {
            "blocks": [
                {"name": "sparse", "kind": "sparse_linear", "inputs": {"entries": "features"}, "width": 4},
                {"name": "bags", "kind": "embedding_bag", "inputs": {"entries": "features"}, "pooling": "max"},
                {"name": "pairs", "kind": "dot_interaction", "inputs": {"dense": "sparse.out", "fields": "bags.out"}},
                {"name": "head", "kind": "logit", "inputs": {"x": "pairs.out"}},
            ]
        },
        RAGGED,
    ),
}


def test_every_block_has_examples():
    assert set(EXAMPLES) == set(BLOCKS)
    plans = [(spec, SPACE) for spec in PLANS.values()] + list(LAID_OUT_PLANS.values())
    kinds = {block.kind for spec, space in plans for block in plan_for(ModelSpec.model_validate(spec), space).blocks}
    assert kinds == set(BLOCKS)


def _random_entries(rng, space: IdSpace = SPACE, rows: int = ROWS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random rows over `space`: ids int64 and values float64 [nnz], entries per row [rows]. A space
    without a layout: F random ids per row; with one: each feature's ids from its own range (lists
    of 0-4 ids, some repeated; numbers present or missing), in feature order."""
    if not space.fields:
        values = rng.normal(size=(rows, FIELDS)) * 3
        values[rng.random((rows, FIELDS)) < 0.3] = 1.0
        return rng.integers(0, NUM_IDS, rows * FIELDS), values.reshape(-1), np.full(rows, FIELDS)
    ids, values, lengths = [], [], np.zeros(rows, np.int64)
    for r in range(rows):
        for f in space.fields:
            if f.kind == "value":
                missing = rng.random() < 0.25
                ids.append(f.offset + int(missing))
                values.append(1.0 if missing else float(rng.normal() * 3))
                count = 1
            else:
                count = int(rng.integers(0, 5)) if f.kind == "list" else 1
                ids += list(f.offset + rng.integers(0, min(f.size, 4), count))
                values += list(rng.uniform(0.5, 2, count) if f.name == "terms" else np.ones(count))
            lengths[r] += count
    return np.array(ids, np.int64), np.array(values), lengths


def _inputs(ports: dict[str, Port], rng, space: IdSpace = SPACE) -> tuple[dict, dict]:
    """Random inputs for the ports: (torch, numpy) views of the same numbers."""
    torch_in, numpy_in = {}, {}
    ids, values, lengths = _random_entries(rng, space)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    for name, port in ports.items():
        if port.kind == "entries":
            width = FIELDS if not space.ragged else None
            torch_in[name] = Entries(
                torch.from_numpy(ids), torch.from_numpy(values), torch.from_numpy(offsets[:-1]), width
            )
            numpy_in[name] = (
                RequestEntries(ids.reshape(ROWS, FIELDS), values.reshape(ROWS, FIELDS))
                if width
                else RequestEntries(ids, values, offsets)
            )
        elif port.kind == "scaled":
            scaled = rng.uniform(-1, 1, (ROWS, FIELDS))
            torch_in[name], numpy_in[name] = torch.from_numpy(scaled.reshape(-1)), scaled
        elif port.kind == "dense":
            dense = rng.normal(size=(ROWS, *port.shape))
            torch_in[name], numpy_in[name] = torch.from_numpy(dense), dense
        else:
            fields = rng.normal(size=(ROWS, *port.shape))
            torch_in[name], numpy_in[name] = torch.from_numpy(fields), FieldVectors.of(fields)
    return torch_in, numpy_in


def _weights(kind: str, node: Node, rng) -> dict[str, torch.Tensor]:
    """The block's weights, started as training starts them, then moved off their start (so zero
    biases and unit scales are not what the check sees)."""
    block = BLOCKS[kind]
    torch.manual_seed(0)
    weights = {
        name: torch.empty(w.shape, dtype=torch.float64)
        for name, w in block.weights(node.spec, node.inputs, node.space).items()
    }
    block.init(node, weights)
    with torch.no_grad():
        for name, tensor in weights.items():
            tensor += torch.from_numpy(rng.normal(scale=0.3, size=tuple(tensor.shape)))
            if name.startswith(("max_abs", "running_var")):
                tensor.abs_()
    return weights


@pytest.mark.parametrize("kind, index", [(k, i) for k, examples in EXAMPLES.items() for i in range(len(examples))])
def test_torch_forward_equals_the_numpy_scorer_in_float64(kind, index):
    spec_dict, ports, *laid_out = EXAMPLES[kind][index]
    space = laid_out[0] if laid_out else SPACE
    block = BLOCKS[kind]
    node = Node(kind, block.Spec.model_validate(spec_dict), space, ports)
    rng = np.random.default_rng(index)
    weights = _weights(kind, node, rng)
    torch_in, numpy_in = _inputs(ports, rng, space)
    with torch.no_grad():
        expected = block.forward(node, weights, torch_in, training=False)
    got = block.score(node, block.serving_weights(node, {k: v.numpy() for k, v in weights.items()}), numpy_in)
    assert set(got) == set(expected)
    for name, value in got.items():
        value = value.dense() if isinstance(value, FieldVectors) else as_array(value)
        reference = expected[name].numpy().reshape(value.shape)
        assert np.abs(value - reference).max() <= 1e-12, (kind, name)


def _batch(seed: int, space: IdSpace):
    """16 rows over the space (repeated ids within rows and across), as torch ids, values, offsets
    and the width (None for ragged rows)."""
    ids, values, lengths = _random_entries(np.random.default_rng(seed), space, rows=16)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    width = None if space.ragged else FIELDS
    return torch.from_numpy(ids), torch.from_numpy(values), torch.from_numpy(offsets), width


ALL_PLANS = {name: (spec, SPACE) for name, spec in PLANS.items()} | LAID_OUT_PLANS


@pytest.mark.parametrize("name", list(ALL_PLANS))
def test_row_wise_training_equals_the_full_tables_in_outputs_and_gradients(name):
    spec, space = ALL_PLANS[name]
    plan = plan_for(ModelSpec.model_validate(spec), space)
    torch.manual_seed(3)
    full = Network(plan).double()
    if "sparse" in {b.name for b in plan.blocks}:
        with torch.no_grad():  # off the start: nonzero per-id biases
            full.block_weights("sparse")["id_bias"].normal_(std=0.3)
    rowwise = Network(plan).double()
    rowwise.load_state_dict(full.state_dict())
    ids, values, offsets, width = _batch(1, space)
    target = torch.randn(len(offsets), dtype=torch.float64)
    torch.manual_seed(7)
    out_full = full(ids, values, offsets, width)
    batch = deduplicate(ids, offsets, NUM_IDS, width)
    table_rows = rowwise.table_rows(batch.unique)
    rows = rowwise.gather_rows(table_rows)
    torch.manual_seed(7)
    out_rows = rowwise.forward_rows(rows, batch, values, offsets, width)
    torch.testing.assert_close(out_rows, out_full, rtol=1e-12, atol=1e-12)
    ((out_full - target) ** 2).sum().backward()
    ((out_rows - target) ** 2).sum().backward()
    for table, gathered, local in zip(full.row_tables(), rows, table_rows):
        if table.grad is None:  # a table no entry of the batch reads (a popularity block of the tail)
            assert len(local) == 0 and gathered.grad is None
            continue
        torch.testing.assert_close(gathered.grad, table.grad[local], rtol=1e-10, atol=1e-12)
        untouched = torch.ones(len(table), dtype=torch.bool)
        untouched[local] = False
        assert torch.all(table.grad[untouched] == 0)
    tables = {id(t) for t in full.row_tables()}
    mine = dict(rowwise.named_parameters())
    for weight_name, p in full.named_parameters():
        if id(p) not in tables:
            torch.testing.assert_close(mine[weight_name].grad, p.grad, rtol=1e-10, atol=1e-12)
    for buffer_name, buffer in full.named_buffers():  # the running max |v|, batch-norm statistics
        torch.testing.assert_close(dict(rowwise.named_buffers())[buffer_name], buffer, rtol=0, atol=0)


@pytest.mark.parametrize("name", list(ALL_PLANS))
def test_plans_and_block_specs_survive_json(name):
    spec, space = ALL_PLANS[name]
    plan = plan_for(ModelSpec.model_validate(spec), space)
    text = json.dumps(plan.to_json())
    again = Plan.from_json(json.loads(text))
    assert again == plan and again.weights == plan.weights
    for block, node in zip(again.blocks, again.nodes):
        assert BLOCKS[block.kind].Spec.model_validate_json(block.spec.model_dump_json()) == block.spec
        assert node.inputs == plan.nodes[again.blocks.index(block)].inputs
    network = Network(again)
    assert {k: tuple(v.shape) for k, v in network.state_dict().items()} == {k: w.shape for k, w in plan.weights.items()}


@pytest.mark.parametrize(
    "damage, says",
    [
        (lambda o: o.update(format=99), "plan format 99"),
        (lambda o: o["blocks"][0].update(kind="magic"), "unknown kind 'magic'"),
        (lambda o: o["blocks"][1].update(inputs={"x": "nowhere.out"}), "not written before it"),
        (lambda o: o["weights"]["sparse.weight"].update(shape=[2**40, 6]), "do not match its blocks"),
        (lambda o: o["blocks"][0]["spec"].update(activation="swish"), "plan is corrupted"),
        (lambda o: o["blocks"][0].update(name="Bad Name"), "not a new lowercase identifier"),
    ],
)
def test_a_damaged_plan_is_an_artifact_error(damage, says):
    from snn.pipeline.errors import ArtifactError

    obj = plan_for(ModelSpec.model_validate(PLANS["sparse-mlp"]), SPACE).to_json()
    damage(obj)
    with pytest.raises(ArtifactError, match=says):
        Plan.from_json(json.loads(json.dumps(obj)))


def test_a_written_out_plan_equals_the_sections_it_spells_out():
    sections = ModelSpec.model_validate(PLANS["interactions"])
    written = ModelSpec.model_validate(
        {
            "blocks": [
                {"name": "sparse", "kind": "sparse_linear", "inputs": {"entries": "features"}, "width": 5},
                {
                    "name": "embedding",
                    "kind": "field_embedding",
                    "inputs": {"entries": "features", "scaled": "sparse.scaled"},
                    "dim": 3,
                },
                {
                    "name": "interactions",
                    "kind": "dot_interaction",
                    "inputs": {"dense": "sparse.out", "fields": "embedding.out"},
                },
                {
                    "name": "mlp",
                    "kind": "mlp",
                    "inputs": {"x": "interactions.out"},
                    "layers": [4],
                    "activation": "sigmoid",
                },
                {"name": "head", "kind": "logit", "inputs": {"x": "mlp.out"}},
            ]
        }
    )
    assert plan_for(written, SPACE) == plan_for(sections, SPACE)


@pytest.mark.parametrize(
    "blocks, says",
    [
        ([{"name": "head", "kind": "logit", "inputs": {"x": "sparse.out"}}], "not written before it"),
        (
            [
                {"name": "s", "kind": "sparse_linear", "inputs": {"entries": "features"}},
                {"name": "head", "kind": "logit", "inputs": {"x": "s.scaled"}},
            ],
            "a scaled port; it takes a dense port",
        ),
        ([{"name": "s", "kind": "sparse_linear", "inputs": {"entries": "features"}, "width": 2}], "'head.out' is not"),
        ([{"name": "s", "kind": "magic", "inputs": {}}], "does not match any of the expected tags"),
    ],
)
def test_a_written_out_plan_that_does_not_wire_is_refused(blocks, says):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=says):
        ModelSpec.model_validate({"blocks": blocks})


def test_blocks_and_sections_are_not_given_together():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="either `blocks` or the sections"):
        ModelSpec.model_validate(
            {
                "mlp": {"layers": [3]},
                "blocks": [
                    {"name": "s", "kind": "sparse_linear", "inputs": {"entries": "features"}, "width": 1},
                    {"name": "head", "kind": "logit", "inputs": {"x": "s.out"}},
                ],
            }
        )
