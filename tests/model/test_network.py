"""The sparse linear layer's formula and state rules, through the network built from a plan; the
network built from a plan equals, weight for weight, what the plan declares; seeded training."""

import numpy as np
import torch

from snn.pipeline.data.encoded import EncodedSplit
from snn.pipeline.model.blocks import BLOCKS
from snn.pipeline.model.blocks.base import Entries, IdSpace
from snn.pipeline.model.network import Network
from snn.pipeline.model.plan import ModelSpec, plan_for
from snn.pipeline.train.loop import train_model
from snn.pipeline.train.spec import TrainSpec

SPARSE = BLOCKS["sparse_linear"]


def _layer(num_ids=4, width=3, activation="none", seed=0):
    """A network whose first block is a sparse linear layer: (the network, its node, its weights)."""
    torch.manual_seed(seed)
    spec = ModelSpec.model_validate(
        {"sparse_linear": {"width": width, "activation": activation}, "mlp": {"layers": []}}
    )
    network = Network(plan_for(spec, IdSpace(num_ids, 2)))
    return network, network.plan.nodes[0], network.block_weights("sparse")


def _batch():
    ids = torch.tensor([0, 2, 1, 2, 3])
    values = torch.tensor([2.0, -4.0, 0.5, 1.0, 3.0])
    offsets = torch.tensor([0, 2])  # row 0: ids 0,2 ; row 1: ids 1,2,3
    return ids, values, offsets


def _forward(node, weights, ids, values, offsets, training):
    return SPARSE.forward(node, weights, {"entries": Entries(ids, values, offsets)}, training)["out"]


def test_forward_matches_the_formula():
    _, node, weights = _layer()
    with torch.no_grad():
        weights["id_bias"].copy_(torch.tensor([[0.1], [-0.2], [0.3], [0.0]]))
        weights["bias"].copy_(torch.tensor([0.5, 0.0, -0.5]))
    ids, values, offsets = _batch()
    out = _forward(node, weights, ids, values, offsets, training=True)  # the max folded in first
    max_abs = torch.tensor([2.0, 0.5, 4.0, 3.0])
    W, b = weights["weight"].detach(), weights["id_bias"].detach()
    expected = []
    for row in ([0, 1], [2, 3, 4]):
        total = weights["bias"].detach().clone()
        for k in row:
            i = ids[k]
            total += W[i] * (values[k] / max_abs[i] + b[i, 0])
        expected.append(total)
    torch.testing.assert_close(out, torch.stack(expected))
    torch.testing.assert_close(weights["max_abs"], max_abs)


def test_training_is_order_independent_within_a_batch():
    ids, values, offsets = _batch()
    (_, node, a), (_, _, b) = _layer(seed=1), _layer(seed=1)
    out_a = _forward(node, a, ids, values, offsets, True)
    # the same two rows in the other order
    out_b = _forward(
        node, b, torch.tensor([1, 2, 3, 0, 2]), torch.tensor([0.5, 1.0, 3.0, 2.0, -4.0]), torch.tensor([0, 3]), True
    )
    torch.testing.assert_close(out_a, out_b.flip(0))
    torch.testing.assert_close(a["max_abs"], b["max_abs"])


def test_inference_normalized_values_stay_in_unit_range_and_state_is_frozen():
    network, node, weights = _layer()
    ids, values, offsets = _batch()
    _forward(node, weights, ids, values, offsets, True)
    before = {k: v.clone() for k, v in network.state_dict().items()}
    big = torch.tensor([100.0, -50.0, 0.1, 7.0, -3.0])
    with torch.no_grad():
        scaled = SPARSE.forward(node, weights, {"entries": Entries(ids, big, offsets)}, False)["scaled"]
        network.eval()
        network(ids, big, offsets)
        network.infer(ids, big, offsets)
    assert torch.all(scaled.abs() <= 1.0)
    for k, v in network.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


def test_the_network_holds_what_the_plan_declares():
    spec = ModelSpec.model_validate(
        {
            "sparse_linear": {"width": 3},
            "interactions": {"dim": 2},
            "mlp": {"layers": [4, 2], "norm": "batch", "dropout": 0.1},
        }
    )
    plan = plan_for(spec, IdSpace(97, 5))
    network = Network(plan)
    assert {k: tuple(v.shape) for k, v in network.state_dict().items()} == {k: w.shape for k, w in plan.weights.items()}
    trained_row_wise = {id(t) for t in network.row_tables()}
    for name, weight in plan.weights.items():
        block, local = name.split(".", 1)
        tensor = network.block_weights(block)[local]
        assert isinstance(tensor, torch.nn.Parameter) == weight.trainable, name
        assert (id(tensor) in trained_row_wise) == (weight.per_id and weight.trainable), name


def _split(n, seed):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 10, size=(n, 5)) + np.arange(5) * 10  # feature j owns ids [10j, 10j + 10)
    y = (ids[:, 0] < 5).astype(np.float32)
    return EncodedSplit.from_dense(ids, np.ones((n, 5), np.float32), y, np.ones(n, np.float32))


def test_seeded_training_is_bit_reproducible():
    train, val = _split(2000, 0), _split(500, 1)
    spec = TrainSpec(epochs=2, batch_size=128, seed=3, device="cpu")
    plan = plan_for(ModelSpec(), IdSpace(50, 5))
    a = train_model(plan, spec, train, val)
    b = train_model(plan, spec, train, val)
    for k in a.state:
        np.testing.assert_array_equal(a.state[k], b.state[k])
    assert a.history[-1]["val_auc"] > 0.95
