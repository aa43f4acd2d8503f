"""The spec's `train:` section: optimizer, batches, epochs, early stopping, negative downsampling."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..config import INT64_MAX, Seed, Strict
from ..data.spec import NegativeDownsampling


class EarlyStopping(Strict):
    metric: Literal["auc", "logloss"] = Field(default="auc", description="Validation metric watched.")
    patience: int = Field(default=3, ge=1, le=INT64_MAX, description="Epochs without improvement before stopping.")


class TrainSpec(Strict):
    optimizer: Literal["adam", "adagrad"] = Field(default="adam", description="Optimizer for all parameters.")
    lr: float = Field(default=0.003, gt=0, le=1e3, description="Learning rate (finite, > 0).")
    batch_size: int = Field(default=512, ge=1, le=1 << 24, description="Rows per step (at most 2^24).")
    epochs: int = Field(default=10, ge=1, le=100_000, description="Maximum passes over the training rows.")
    early_stopping: EarlyStopping | None = Field(default=None, description="Stop when validation stops improving.")
    seed: Seed = Field(default=0, description="Seed of initialization and shuffling.")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="auto picks cuda when available.")
    negative_downsampling: NegativeDownsampling | None = Field(
        default=None, description="Keep only a share of negatives; calibration undoes it analytically."
    )
