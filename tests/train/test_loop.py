"""The training loop keeps the best epoch by validation log loss, with or without early stopping."""

import numpy as np
import pytest
import torch

from snn.pipeline.data.encoded import EncodedSplit
from snn.pipeline.evaluation import metrics
from snn.pipeline.model.blocks.base import IdSpace
from snn.pipeline.model.inference import raw_probabilities
from snn.pipeline.model.network import Network
from snn.pipeline.model.plan import ModelSpec, plan_for
from snn.pipeline.train.loop import train_model
from snn.pipeline.train.spec import EarlyStopping, TrainSpec


def _overfitting_splits():
    """A weak signal in feature 0 and a per-row id in feature 1: a high learning rate memorizes the
    train rows, so validation log loss is best early and then rises."""
    rng = np.random.default_rng(0)

    def split(n, first_id):
        signal = rng.integers(0, 4, n)
        y = (rng.uniform(size=n) < 0.2 + 0.15 * signal).astype(np.float32)
        ids = np.column_stack([signal, 4 + first_id + np.arange(n)])
        return EncodedSplit.from_dense(ids, np.ones((n, 2), np.float32), y, np.ones(n, np.float32))

    return split(600, 0), split(600, 600)


@pytest.mark.parametrize("early_stopping", [None, EarlyStopping(patience=20)])
def test_the_best_epoch_is_kept_and_reported(early_stopping):
    train, validation = _overfitting_splits()
    spec = TrainSpec(
        epochs=6,
        lr=0.05,
        lr_schedule="constant",
        weight_decay=0.0,
        batch_size=32,
        seed=1,
        device="cpu",
        early_stopping=early_stopping,
    )
    plan = plan_for(
        ModelSpec.model_validate({"sparse_linear": {"width": 16}, "mlp": {"layers": [16]}}), IdSpace(1204, 2)
    )
    result = train_model(plan, spec, train, validation)
    losses = [row["val_logloss"] for row in result.history]
    assert len(losses) == 6  # no early stop: patience not reached
    assert losses[-1] > min(losses) + 0.01, "the setup must make the last epoch worse than the best"
    assert result.best_epoch == 1 + int(np.argmin(losses)) < 6
    network = Network(plan)
    network.load_state_dict({k: torch.from_numpy(v) for k, v in result.state.items()})
    network.eval()
    kept = metrics.logloss(validation.labels, raw_probabilities(network, validation), validation.weights)
    assert kept == pytest.approx(min(losses), rel=1e-5)  # the weights kept are the best epoch's


def test_early_stopping_watches_log_loss_by_default():
    assert EarlyStopping().metric == "logloss"


def test_the_linear_schedule_decays_the_rate_to_zero_over_all_steps(monkeypatch):
    from snn.pipeline.train.optimizers import Optimizers

    seen = []
    original = Optimizers.set_lr

    def recording(self, lr):
        seen.append((lr, self.rows.lr))
        original(self, lr)
        assert self.rows.lr == lr and self.dense.lr == lr

    monkeypatch.setattr(Optimizers, "set_lr", recording)
    train, validation = _overfitting_splits()
    spec = TrainSpec(epochs=2, lr=0.04, batch_size=100, seed=1, device="cpu", lr_schedule="linear")
    plan = plan_for(ModelSpec(), IdSpace(1204, 2))
    train_model(plan, spec, train, validation)
    steps = 2 * 6  # 600 rows in batches of 100, twice
    assert [lr for lr, _ in seen] == pytest.approx([0.04 * (1 - t / steps) for t in range(steps)])
