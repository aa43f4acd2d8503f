"""The sparse linear layer's formula and state rules, and seeded training."""

import numpy as np
import pytest
import torch

from snn.pipeline.encoded import EncodedSplit
from snn.pipeline.model import SparseLinear, SparseNN
from snn.pipeline.spec import ModelSpec, TrainSpec
from snn.pipeline.train import train_model


def _batch():
    ids = torch.tensor([0, 2, 1, 2, 3])
    values = torch.tensor([2.0, -4.0, 0.5, 1.0, 3.0])
    offsets = torch.tensor([0, 2])  # row 0: ids 0,2 ; row 1: ids 1,2,3
    return ids, values, offsets


def test_forward_matches_the_formula():
    torch.manual_seed(0)
    layer = SparseLinear(4, 3, "none")
    with torch.no_grad():
        layer.id_bias.copy_(torch.tensor([[0.1], [-0.2], [0.3], [0.0]]))
        layer.bias.copy_(torch.tensor([0.5, 0.0, -0.5]))
    ids, values, offsets = _batch()
    out = layer(ids, values, offsets)  # training mode: max folded in first
    max_abs = torch.tensor([2.0, 0.5, 4.0, 3.0])
    W, b = layer.weight.detach(), layer.id_bias.detach()
    expected = []
    for row in ([0, 1], [2, 3, 4]):
        total = layer.bias.detach().clone()
        for k in row:
            i = ids[k]
            total += W[i] * (values[k] / max_abs[i] + b[i, 0])
        expected.append(total)
    torch.testing.assert_close(out, torch.stack(expected))
    torch.testing.assert_close(layer.max_abs, max_abs)


def test_training_is_order_independent_within_a_batch():
    ids, values, offsets = _batch()
    a, b = SparseLinear(4, 3), SparseLinear(4, 3)
    b.load_state_dict(a.state_dict())
    out_a = a(ids, values, offsets)
    # the same two rows in the other order
    out_b = b(torch.tensor([1, 2, 3, 0, 2]), torch.tensor([0.5, 1.0, 3.0, 2.0, -4.0]), torch.tensor([0, 3]))
    torch.testing.assert_close(out_a, out_b.flip(0))
    torch.testing.assert_close(a.max_abs, b.max_abs)


def test_inference_normalized_values_stay_in_unit_range_and_state_is_frozen():
    layer = SparseLinear(4, 3)
    ids, values, offsets = _batch()
    layer(ids, values, offsets)
    layer.eval()
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    big = torch.tensor([100.0, -50.0, 0.1, 7.0, -3.0])
    scale = layer.scale(ids, big)
    assert torch.all((big / scale).abs() <= 1.0)
    with torch.no_grad():
        layer(ids, big, offsets)
    for k, v in layer.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


def _split(n, seed):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 10, size=(n, 5)) + np.arange(5) * 10  # feature j owns ids [10j, 10j + 10)
    y = (ids[:, 0] < 5).astype(np.float32)
    return EncodedSplit.from_dense(ids, np.ones((n, 5), np.float32), y, np.ones(n, np.float32), None)


def test_seeded_training_is_bit_reproducible():
    train, val = _split(2000, 0), _split(500, 1)
    spec = TrainSpec(epochs=2, batch_size=128, seed=3, device="cpu")
    a = train_model(50, 5, ModelSpec(), spec, train, val)
    b = train_model(50, 5, ModelSpec(), spec, train, val)
    for k in a.state:
        np.testing.assert_array_equal(a.state[k], b.state[k])
    assert a.history[-1]["val_auc"] > 0.95


def test_take_gathers_rows_in_any_order():
    split = EncodedSplit(np.array([0, 2, 3, 6]), np.arange(6), np.arange(6, dtype=np.float32),
                         np.array([0, 1, 0], np.float32), np.ones(3, np.float32), None)
    batch = split.take(np.array([2, 0]))
    assert batch.ids.tolist() == [3, 4, 5, 0, 1] and batch.offsets.tolist() == [0, 3]
    assert batch.labels.tolist() == [0, 0]


def test_one_hot_splits_store_int32_ids_and_no_values(tmp_path):
    import polars as pl

    from snn.pipeline.encoded import SplitWriter, ids_dtype

    assert ids_dtype(2**31 - 1) == np.int32 and ids_dtype(2**31) == np.int64
    ids = np.array([[1, 5], [2, 6], [1, 7]])
    values = np.array([[1.0, 1.0], [1.0, 1.0], [1.0, 0.25]], np.float32)
    labels, weights, keys = np.array([1, 0, 1], np.float32), np.ones(3, np.float32), pl.Series("k", [10, 11, 12])
    for one_hot in (True, False):
        folder = tmp_path / f"one_hot_{one_hot}"
        with SplitWriter(folder, ids_dtype(8), one_hot) as writer:
            writer.append(ids[:2], values[:2], np.full(2, 2), labels[:2], weights[:2], keys[:2])
            writer.append(ids[2:], values[2:], np.full(1, 2), labels[2:], weights[2:], keys[2:])
        split = EncodedSplit.load(folder)
        assert split.ids.dtype == np.int32 and (folder / "ids.bin").stat().st_size == ids.size * 4
        assert (folder / "values.bin").exists() != one_hot
        batch, head = split.take(np.array([2, 0])), split.slice(0, 2)
        assert batch.ids.tolist() == [1, 7, 1, 5] and head.ids.tolist() == [1, 5, 2, 6]
        expected = [1.0, 1.0, 1.0, 1.0] if one_hot else [1.0, 0.25, 1.0, 1.0]
        assert batch.values.tolist() == expected and head.values.tolist() == [1.0] * 4
        assert split.load_keys().to_list() == [10, 11, 12]


@pytest.mark.parametrize("model", [
    {"sparse_linear": {"width": 6}, "mlp": {"layers": [5], "norm": "batch", "activation": "prelu"}},
    {"sparse_linear": {"width": 3}, "interactions": {"dim": 2}, "mlp": {"layers": [4, 2], "norm": "layer", "dropout": 0.1}},
], ids=["plain", "interactions"])
def test_state_shapes_equal_the_built_model(model):
    spec = ModelSpec.model_validate(model)
    built = {name: tuple(t.shape) for name, t in SparseNN(97, 5, spec).state_dict().items()}
    assert SparseNN.state_shapes(97, 5, spec) == built
