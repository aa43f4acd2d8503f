"""Multi-task training (train/tasks.py): the summed task losses, a dependent task's rows, the
gradient scale at the shared/tower boundary, per-task keep decisions, the served product."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
from sklearn.metrics import log_loss

from snn.pipeline.data.chunks import task_keeps
from snn.pipeline.data.encoded import EncodedSplit, SplitWriter
from snn.pipeline.data.rows import unit_hash
from snn.pipeline.data.spec import NegativeDownsampling, TaskSampling
from snn.pipeline.model.blocks.base import IdSpace
from snn.pipeline.model.blocks.gradient_scale import scaled_gradient
from snn.pipeline.model.plan import ModelSpec, plan_for
from snn.pipeline.train.loop import train_model
from snn.pipeline.train.spec import EarlyStopping, TrainSpec
from snn.pipeline.train.tasks import TaskSpec, multitask_loss, served_probabilities, towers_of

CLICK, CONVERT = TaskSpec(name="click"), TaskSpec(name="convert", given="click", pos_weight=3.0, weight=0.5)


def _labels(rng, n: int) -> np.ndarray:
    click = (rng.random(n) < 0.3).astype(np.float32)
    return np.stack([click, click * (rng.random(n) < 0.4)], 1).astype(np.float32)


def test_the_loss_is_each_tasks_weighted_log_loss_on_its_rows():
    """L = Σ_t weight_t · L_t, L_t a log loss with class weights on the rows the task learns from:
    cross-checked against scikit-learn's log_loss with sample weights (1e-12 in float64)."""
    rng = np.random.default_rng(0)
    labels, weights = _labels(rng, 400), rng.uniform(0.5, 2, (400, 2))
    weights[rng.random(400) < 0.2, 0] = 0  # rows the click task's downsampling dropped
    logits = rng.normal(0, 1.5, (400, 2))
    got = multitask_loss(*(torch.from_numpy(a) for a in (logits, labels.astype(np.float64), weights)), [CLICK, CONVERT])
    p = 1 / (1 + np.exp(-logits))
    expected = 0.0
    for t, task in enumerate((CLICK, CONVERT)):
        rows = weights[:, t] * (labels[:, 0] == 1 if task.given else 1) > 0
        y, w = labels[rows, t], weights[rows, t]
        c = task.pos_weight * y + task.neg_weight * (1 - y)
        # log_loss normalizes by Σ its sample weights (w·c); the task loss by Σ w
        expected += task.weight * log_loss(y, p[rows, t], sample_weight=w * c, labels=[0, 1]) * (w * c).sum() / w.sum()
    assert abs(float(got) - expected) < 1e-12


def test_a_dependent_task_ignores_the_rows_where_its_condition_is_0():
    rng = np.random.default_rng(1)
    labels, weights = _labels(rng, 300), np.ones((300, 2))
    logits = rng.normal(0, 1, (300, 2))
    base = multitask_loss(
        *(torch.from_numpy(a) for a in (logits, labels.astype(np.float64), weights)), [CLICK, CONVERT]
    )
    unclicked = labels[:, 0] == 0
    labels[unclicked, 1] = 1.0  # whatever a row without a click says about conversion ...
    logits[unclicked, 1] = rng.normal(0, 5, unclicked.sum())  # ... and whatever the tower predicts there
    again = multitask_loss(
        *(torch.from_numpy(a) for a in (logits, labels.astype(np.float64), weights)), [CLICK, CONVERT]
    )
    assert float(again) == float(base)


def test_the_gradient_scale_scales_exactly():
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    for scale in (0.0, 0.25, 1.0):
        out = scaled_gradient(x, scale)
        assert torch.equal(out, x)
        (grad,) = torch.autograd.grad((out * 2).sum(), x, allow_unused=True) if scale else (None,)
        if scale:
            assert torch.equal(grad, torch.full_like(x, 2 * scale))
        else:
            assert not out.requires_grad  # nothing flows back at all


def _splits(labels: np.ndarray, seed: int = 0) -> tuple[EncodedSplit, EncodedSplit]:
    rng = np.random.default_rng(seed)
    n = len(labels)
    ids = np.stack([rng.integers(0, 40, n), 40 + rng.integers(0, 30, n)], 1)
    split = EncodedSplit.from_dense(ids, np.ones((n, 2), np.float32), labels, np.ones((n, 2), np.float32))
    return split, split


@pytest.mark.parametrize("scale", [0.0, 1.0])
def test_gradient_scale_0_leaves_the_shared_layers_untouched_by_that_task(scale):
    """Two trainings that differ only in the conversion task's labels: with gradient_scale 0 on it,
    every shared weight (the sparse linear layer's tables, the shared MLP) ends bit-identical, and
    only its own tower differs; with 1, the shared layers differ too."""
    rng = np.random.default_rng(2)
    labels = _labels(rng, 600)
    other = labels.copy()
    other[:, 1] = labels[:, 0] * (rng.random(600) < 0.8)  # the dependent task's labels changed
    tasks = [TaskSpec(name="click"), TaskSpec(name="convert", given="click", gradient_scale=scale)]
    spec = ModelSpec.model_validate({"sparse_linear": {"width": 4}, "mlp": {"layers": [3]}})
    plan = plan_for(spec, IdSpace(70, 2), towers=towers_of(tasks))
    assert plan.outputs == ("click_head.out", "convert_head.out")
    assert ("convert_scale" in [b.name for b in plan.blocks]) is (scale == 0.0)
    # the epoch kept is judged on the click task alone (the summed metric would see the changed labels)
    train = TrainSpec(epochs=2, batch_size=64, seed=3, lr=0.05, early_stopping=EarlyStopping(task="click", patience=5))
    states = [train_model(plan, train, *_splits(y), tasks=tasks).state for y in (labels, other)]
    shared = [name for name in states[0] if not name.startswith(("click_", "convert_"))]
    assert {name.split(".")[0] for name in shared} == {"sparse", "mlp"}
    same = [np.array_equal(states[0][name], states[1][name]) for name in shared]
    assert all(same) if scale == 0.0 else not all(same)
    assert not np.array_equal(states[0]["convert_head.weight"], states[1]["convert_head.weight"])
    assert np.array_equal(states[0]["click_head.weight"], states[1]["click_head.weight"]) is (scale == 0.0)


def test_each_task_keeps_its_rows():
    rng = np.random.default_rng(4)
    labels = _labels(rng, 5000)
    keys = pl.Series("k", np.arange(5000))
    rule = NegativeDownsampling(rate=0.1, seed=7)
    kept = task_keeps(labels, keys, [TaskSampling(downsampling=rule), TaskSampling(given=0)])
    np.testing.assert_array_equal(kept[:, 0], (labels[:, 0] > 0) | (unit_hash(keys, 7) < 0.1))
    np.testing.assert_array_equal(kept[:, 1], labels[:, 0] > 0)  # a conversion's rows: the clicks
    assert abs(kept[labels[:, 0] == 0, 0].mean() - 0.1) < 0.02


def test_a_dependent_task_is_served_as_the_product():
    p = np.array([[0.2, 0.5], [0.9, 0.1]])
    np.testing.assert_allclose(served_probabilities(p, [CLICK, CONVERT]), [[0.2, 0.1], [0.9, 0.09]], rtol=1e-15)


def test_split_files_hold_a_label_and_a_weight_per_task(tmp_path):
    rng = np.random.default_rng(5)
    labels, weights = _labels(rng, 50), rng.uniform(0, 1, (50, 2)).astype(np.float32)
    with SplitWriter(tmp_path / "s") as writer:
        writer.append(
            rng.integers(0, 9, (50, 3)), rng.random((50, 3)).astype(np.float32), np.full(50, 3), labels, weights
        )
    split = EncodedSplit.load(tmp_path / "s")
    np.testing.assert_array_equal(split.labels, labels)
    np.testing.assert_array_equal(split.weights, weights)
    batch = split.take(np.array([3, 1]))
    np.testing.assert_array_equal(batch.labels, labels[[3, 1]])


def test_the_calibrate_summary_names_each_task_whatever_its_name(capsys):
    """`snn calibrate`'s lines for several tasks read each task's figures by its name (names may hold '_')."""
    from snn.cli.app import _print_calibrate

    metrics = {
        f"val_{what}_{stage}_{task}": value
        for task, value in (("add_to_cart", 0.25), ("buy", 0.5))
        for what in ("logloss", "calibration_ratio")
        for stage in ("raw", "calibrated")
    }
    evidence = {"add_to_cart": {"cv_logloss": {"platt": 0.1}}, "buy": {}}
    _print_calibrate({"metrics": metrics, "calibrator": {"add_to_cart": "platt", "buy": "none"}, "evidence": evidence})
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "add_to_cart: calibrator: platt  (cross-validated log loss: platt 0.1000)"
    assert lines[1].startswith("add_to_cart: validation logloss 0.2500 -> 0.2500")
    assert lines[2] == "buy: calibrator: none  (cross-validated log loss: not compared)"
