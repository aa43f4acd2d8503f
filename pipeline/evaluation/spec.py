"""The spec's `calibration:`, `validation:` and `parity:` sections."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from ..config import Strict, at_most, gigabytes

Metric = Literal["auc", "logloss", "rce", "calibration_ratio", "ece", "brier"]
MAX_ECE_BINS = 10_000


class IsotonicCalibration(Strict):
    kind: Literal["isotonic"] = Field(description="Calibrator tag.")
    interpolation: Literal["centered", "block_ends"] = Field(
        default="centered",
        description="centered: interpolate between block centroids (strictly increasing, keeps ranking); "
        "block_ends: sklearn IsotonicRegression's step-with-ramps knots.",
    )
    pseudo_count: float = Field(
        default=1.0, ge=0, description="Prior weight added to each block: y = (sum wy + c/2) / (sum w + c)."
    )


class NoCalibration(Strict):
    kind: Literal["none"] = Field(description="Calibrator tag: only the analytic downsampling correction.")


Calibration = Annotated[IsotonicCalibration | NoCalibration, Field(discriminator="kind")]


class Gate(Strict):
    min: float | None = Field(default=None, description="Fail when the metric is below this.")
    max: float | None = Field(default=None, description="Fail when the metric is above this.")
    max_drop_vs_baseline: float | None = Field(
        default=None, ge=0, description="Fail when the metric falls more than this below the baseline's."
    )
    max_increase_vs_baseline: float | None = Field(
        default=None, ge=0, description="Fail when the metric rises more than this above the baseline's."
    )


class ValidationSpec(Strict):
    slices: list[str] = Field(default=[], description="Columns to report metrics per value of.")
    gates: dict[Metric, Gate] = Field(default={}, description="Thresholds on calibrated test metrics.")
    baseline: str | None = Field(default=None, description="Bundle to compare against for *_vs_baseline gates.")
    ece_bins: Annotated[
        int, Field(ge=2), at_most(MAX_ECE_BINS, lambda v: f"{gigabytes(v * 24.0)} of bin totals for no finer a picture")
    ] = Field(default=10, description="Equal-width bins of the ECE and reliability diagram.")
    logloss_eps: float = Field(default=1e-7, gt=0, lt=0.5, description="Probabilities are clipped to [eps, 1-eps].")


class ParitySpec(Strict):
    atol: float = Field(default=1e-6, ge=0, description="Absolute tolerance of offline vs online scores.")
    rtol: float = Field(default=1e-5, ge=0, description="Relative tolerance of offline vs online scores.")
    worst_rows: int = Field(default=10, ge=1, le=10_000, description="How many of the worst rows to report.")
