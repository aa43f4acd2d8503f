"""Row-wise training machinery: deduplication, the row optimizers against torch's SparseAdam and
Adagrad, the sort-free path for narrow tables, one-hot batches without values, the fused dense Adam."""

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from snn.pipeline.data.encoded import CSRBatch
from snn.pipeline.model import network as network_module
from snn.pipeline.model.blocks.base import IdSpace
from snn.pipeline.model.network import Network
from snn.pipeline.model.plan import ModelSpec, plan_for
from snn.pipeline.model.rows import deduplicate
from snn.pipeline.train.loop import training_step
from snn.pipeline.train.optimizers import Optimizers, RowAdagrad, RowAdam
from snn.pipeline.train.spec import TrainSpec

NUM_IDS, WIDTH = 50, 6


def _batches(steps=6, rows=16, per_row=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        ids = torch.randint(0, NUM_IDS, (rows * per_row,), generator=g)  # repeats within rows and across
        values = torch.randn(rows * per_row, generator=g) * 3
        offsets = torch.arange(rows) * per_row
        target = torch.randn(rows, WIDTH, generator=g)
        yield ids, values, offsets, target


def test_deduplicate_describes_the_batch():
    ids = torch.tensor([7, 3, 7, 1, 3, 7])
    offsets = torch.tensor([0, 2, 5])  # rows: [7, 3], [7, 1, 3], [7]
    batch = deduplicate(ids, offsets, NUM_IDS)
    assert batch.unique.tolist() == [1, 3, 7]
    assert torch.equal(batch.unique[batch.inverse], ids)
    assert ids[batch.order].tolist() == [1, 3, 3, 7, 7, 7]
    assert batch.entry_rows.tolist() == [1, 0, 1, 0, 1, 2]
    assert batch.starts.tolist() == [0, 1, 3]
    uniform = torch.tensor([0, 2, 4])  # the same ids as rows of width 2: [7, 3], [7, 1], [3, 7]
    known, derived = deduplicate(ids, uniform, NUM_IDS, width=2), deduplicate(ids, uniform, NUM_IDS)
    assert known.row_of_entry.tolist() == derived.row_of_entry.tolist() == [0, 0, 1, 1, 2, 2]


@pytest.mark.parametrize("l2", [0.0, 0.3])
@pytest.mark.parametrize("kind", ["adam", "adagrad"])
def test_row_optimizers_equal_torch_sparse_optimizers(kind, l2):
    """The row-wise path (gathered rows, g + l2·θ on them) equals the dense definition: the full
    table under torch's sparse optimizer, loss + (l2/2)·Σ‖θ_r‖² over the batch's distinct ids."""
    torch.manual_seed(2)
    reference = torch.nn.Parameter(torch.randn(NUM_IDS, WIDTH))
    table = reference.detach().clone()
    torch_opt = (
        torch.optim.SparseAdam([reference], lr=0.05) if kind == "adam" else torch.optim.Adagrad([reference], lr=0.05)
    )
    row_opt = RowAdam([table], lr=0.05, l2=l2) if kind == "adam" else RowAdagrad([table], lr=0.05, l2=l2)
    for ids, values, offsets, target in _batches(steps=8):
        torch_opt.zero_grad()
        pooled = F.embedding_bag(ids, reference, offsets, mode="sum", per_sample_weights=values, sparse=True)
        touched = F.embedding(torch.unique(ids), reference, sparse=True)
        (((pooled - target) ** 2).sum() + l2 / 2 * (touched**2).sum()).backward()
        torch_opt.step()

        batch = deduplicate(ids, offsets, NUM_IDS)
        rows = table.index_select(0, batch.unique).requires_grad_()
        pooled = F.embedding_bag(batch.inverse, rows, offsets, mode="sum", per_sample_weights=values)
        ((pooled - target) ** 2).sum().backward()
        row_opt.step([batch.unique], [rows])
    torch.testing.assert_close(table, reference.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("width", [1, 3])
def test_narrow_tables_train_sort_free_with_the_same_updates(width):
    """A logistic-regression model (width 1; and 3, the 2-D backward) deduplicates through the bitmap
    (scattered batch) and takes the same steps as the grouped (sorted) path, which the tests above hold
    to torch."""
    spec = ModelSpec.model_validate({"sparse_linear": {"width": width, "activation": "none"}, "mlp": {"layers": []}})
    models = []
    for narrow in (network_module.NARROW_ROWS, 0):  # 0: every table counts as wide -> grouped
        torch.manual_seed(5)
        net = Network(plan_for(spec, IdSpace(NUM_IDS, 5)))
        optimizers = Optimizers.for_model(net, TrainSpec(lr=0.05))
        original = network_module.NARROW_ROWS
        network_module.NARROW_ROWS = narrow
        try:
            for ids, values, offsets, _ in _batches(steps=5):
                batch = CSRBatch(
                    ids.numpy(),
                    values.numpy(),
                    offsets.numpy(),
                    (torch.arange(len(offsets)) % 2).float().numpy(),
                    torch.ones(len(offsets)).numpy(),
                )
                structure = net.deduplicate(ids, offsets)
                assert (structure.order is None) == (narrow > 0)
                training_step(net, optimizers, batch, torch.device("cpu"))
        finally:
            network_module.NARROW_ROWS = original
        models.append(net)
    scattered, grouped = models
    for name, tensor in scattered.state_dict().items():
        torch.testing.assert_close(tensor, grouped.state_dict()[name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("width", [1, 8], ids=["scattered", "grouped"])
def test_one_hot_batches_skip_the_values_with_the_same_updates(width):
    """A batch flagged one-hot trains without a values tensor (max_abs ← max(max_abs, 1)) and takes
    exactly the steps of the same batch with explicit values of 1.0; int32 ids (as stored) train
    exactly like int64 ones."""
    spec = ModelSpec.model_validate(
        {"sparse_linear": {"width": width}, "interactions": {"dim": 3}, "mlp": {"layers": [4]}}
    )
    states = []
    for one_hot in (True, False):
        torch.manual_seed(3)
        net = Network(plan_for(spec, IdSpace(NUM_IDS, 5)))
        optimizers = Optimizers.for_model(net, TrainSpec(lr=0.05))
        for ids, _, offsets, _ in _batches(steps=4):
            stored = ids.numpy().astype(np.int32 if one_hot else np.int64)
            batch = CSRBatch(
                stored,
                np.ones(len(ids), np.float32),
                offsets.numpy(),
                (torch.arange(len(offsets)) % 2).float().numpy(),
                np.ones(len(offsets), np.float32),
                width=5,
                one_hot=one_hot,
            )
            assert (net.deduplicate(ids, offsets).order is None) == (width == 1)
            training_step(net, optimizers, batch, torch.device("cpu"))
        states.append(net.state_dict())
    for name, tensor in states[0].items():
        assert torch.equal(tensor, states[1][name]), name


def test_fused_dense_adam_equals_torch_adam():
    from snn.pipeline.train.optimizers import FusedAdam

    torch.manual_seed(4)
    ours = [
        torch.nn.Parameter(torch.randn(5, 3)),
        torch.nn.Parameter(torch.randn(3)),
        torch.nn.Parameter(torch.randn(2)),
    ]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    mine, reference = FusedAdam(ours, lr=0.01), torch.optim.Adam(theirs, lr=0.01)
    for step in range(6):
        grads = [torch.randn_like(p) for p in ours]
        for params in (ours, theirs):
            for index, (p, g) in enumerate(zip(params, grads)):
                p.grad = (
                    None if (index == 2 and step % 2) else g.clone()
                )  # a parameter without a gradient is left alone
        mine.step()
        reference.step()
        mine.zero_grad()
        reference.zero_grad()
        assert all(p.grad is None for p in ours)
        for a, b in zip(ours, theirs):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("optimizer", ["adam", "adagrad"])
def test_weight_decay_is_decoupled_and_spares_vectors(optimizer):
    """Optimizers' dense step with weight decay equals torch's: AdamW with the decay on the weight
    matrices only (adam); θ ← θ·(1 − lr·wd), then torch's Adagrad (adagrad). Biases keep no decay."""
    torch.manual_seed(5)
    spec = TrainSpec(lr=0.05, weight_decay=0.3, optimizer=optimizer)
    plan = plan_for(ModelSpec.model_validate({"sparse_linear": {"width": 4}, "mlp": {"layers": [3]}}), IdSpace(20, 2))
    net = Network(plan)
    ours = Optimizers.for_model(net, spec)
    dense = [p for p in net.parameters() if all(p is not t for t in net.row_tables())]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in dense]
    matrices = [q for p, q in zip(dense, theirs) if p.ndim >= 2]
    vectors = [q for p, q in zip(dense, theirs) if p.ndim < 2]
    assert matrices and vectors and {id(p) for p in ours.decayed} == {id(p) for p in dense if p.ndim >= 2}
    if optimizer == "adam":
        groups = [{"params": matrices, "weight_decay": 0.3}, {"params": vectors, "weight_decay": 0.0}]
        reference = torch.optim.AdamW(groups, lr=0.05)
    else:
        reference = torch.optim.Adagrad(theirs, lr=0.05)
    for step in range(5):
        ours.set_lr(0.05 * (1 - step / 5))
        for group in reference.param_groups:
            group["lr"] = 0.05 * (1 - step / 5)
        for p, q in zip(dense, theirs):
            g = torch.randn_like(p)
            p.grad, q.grad = g.clone(), g.clone()
        ours.step_dense()
        if optimizer == "adagrad":
            with torch.no_grad():
                for q in matrices:
                    q.mul_(1 - 0.05 * (1 - step / 5) * 0.3)
        reference.step()
        for p, q in zip(dense, theirs):
            torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-6, atol=1e-7)


def test_the_spec_sets_the_regularizers():
    net = Network(plan_for(ModelSpec(), IdSpace(20, 2)))
    for optimizer in ("adam", "adagrad"):
        built = Optimizers.for_model(net, TrainSpec(optimizer=optimizer, table_l2=0.02, weight_decay=0.3, lr=0.1))
        assert (built.rows.l2, built.weight_decay, built.lr) == (0.02, 0.3, 0.1)


def test_row_adam_counts_steps_per_table_as_sparse_adam_counts_them_per_parameter():
    """Two tables, the second touched every other step (a tail popularity block): each table's
    bias correction follows its own step count, as SparseAdam's per-parameter `step`."""
    torch.manual_seed(5)
    references = [torch.nn.Parameter(torch.randn(20, 3)) for _ in range(2)]
    tables = [r.detach().clone() for r in references]
    torch_opt = torch.optim.SparseAdam(references, lr=0.05)
    row_opt = RowAdam(tables, lr=0.05)
    for step in range(6):
        ids = [torch.tensor([1, 4, 4, 7]), torch.tensor([2, 5]) if step % 2 else None]
        torch_opt.zero_grad()
        loss = sum((F.embedding(i, r, sparse=True) ** 2).sum() for i, r in zip(ids, references) if i is not None)
        loss.backward()
        torch_opt.step()
        uniques = [torch.unique(i) if i is not None else torch.zeros(0, dtype=torch.int64) for i in ids]
        rows = [t.index_select(0, u).requires_grad_() for t, u in zip(tables, uniques)]
        loss = 0
        for i, u, r in zip(ids, uniques, rows):
            if i is not None:
                loss = loss + (r[torch.searchsorted(u, i)] ** 2).sum()
        loss.backward()
        row_opt.step(uniques, rows)
    for table, reference in zip(tables, references):
        torch.testing.assert_close(table, reference.detach(), rtol=1e-5, atol=1e-6)
    assert row_opt.table_steps == [6, 3]
