"""The spec's `train:` section: optimizer, batches, epochs, early stopping, negative downsampling."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ..config import INT64_MAX, Seed, Strict
from ..data.spec import NegativeDownsampling


class EarlyStopping(Strict):
    metric: Literal["logloss", "auc"] = Field(
        default="logloss",
        description="Validation metric watched, and the one that picks the epoch kept. log loss (a proper "
        "scoring rule) by default: AUC ignores overconfidence.",
    )
    patience: int = Field(default=3, ge=1, le=INT64_MAX, description="Epochs without improvement before stopping.")
    task: str | None = Field(
        default=None,
        description="With `tasks`: the task whose metric is watched; absent: the tasks' metrics weighted by their "
        "`weight`.",
    )


class TrainSpec(Strict):
    optimizer: Literal["adam", "adagrad"] = Field(default="adam", description="Optimizer for all parameters.")
    lr: float = Field(default=0.003, gt=0, le=1e3, description="Learning rate (finite, > 0).")
    lr_schedule: Literal["linear", "constant"] = Field(
        default="linear",
        description="constant: lr at every step; linear: lr·(1 − t/T) at step t of the T steps of all epochs.",
    )
    table_l2: float = Field(
        default=0.0,
        ge=0,
        le=1e3,
        description="L2 on the per-id table rows each step touches: the step's loss gains (l2/2)·Σ‖row‖² over them.",
    )
    weight_decay: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="Decoupled decay of the dense weight matrices, θ ← θ·(1 − lr·wd) before each step (AdamW's "
        "with adam); biases and norm scales are not decayed. lr·weight_decay must stay below 1.",
    )
    batch_size: int = Field(default=512, ge=1, le=1 << 24, description="Rows per step (at most 2^24).")
    epochs: int = Field(default=10, ge=1, le=100_000, description="Maximum passes over the training rows.")
    early_stopping: EarlyStopping | None = Field(
        default=None,
        description="Stop when validation stops improving. With or without it, the epoch with the best validation "
        "log loss (or the early-stopping metric) is the one kept.",
    )
    seed: Seed = Field(default=0, description="Seed of initialization and shuffling.")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="auto picks cuda when available.")
    negative_downsampling: NegativeDownsampling | None = Field(
        default=None, description="Keep only a share of negatives; calibration undoes it analytically."
    )

    @model_validator(mode="after")
    def _decay_below_one_step(self) -> TrainSpec:
        if self.lr * self.weight_decay >= 1:
            raise ValueError(
                f"train.lr × train.weight_decay is {self.lr * self.weight_decay:g}: the decay factor "
                "1 − lr·weight_decay would not be positive; lower one of them"
            )
        return self
