"""The spec's `calibration:`, `validation:` and `parity:` sections."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from ..config import Strict, at_most, gigabytes

Metric = Literal["auc", "logloss", "rce", "calibration_ratio", "ece", "brier"]
MAX_ECE_BINS = 10_000


class IsotonicCalibration(Strict):
    kind: Literal["isotonic"] = Field(description="Calibrator tag.")
    interpolation: Literal["block_ends", "centered"] = Field(
        default="block_ends",
        description="block_ends: sklearn IsotonicRegression's step-with-ramps knots, exactly the pool-adjacent-"
        "violators fit (the mean of its fit rows kept); centered: interpolate between block centroids (strictly "
        "increasing, keeps ranking, but not mean-exact).",
    )
    pseudo_count: float = Field(
        default=0.0,
        ge=0,
        le=1e12,
        description="Prior weight added to each block: y = (Σwy + c/2) / (Σw + c). 0 keeps the fit rows' mean exact.",
    )


class PlattCalibration(Strict):
    kind: Literal["platt"] = Field(description="Calibrator tag: σ(a·logit(p) + b), fit by weighted log loss.")


class ShiftCalibration(Strict):
    kind: Literal["shift"] = Field(
        description="Calibrator tag: σ(logit(p) + b), the one shift of the logit that makes the mean prediction on "
        "the fit rows equal their mean label (ranking and spread kept)."
    )


class NoCalibration(Strict):
    kind: Literal["none"] = Field(description="Calibrator tag: only the analytic downsampling correction.")


CalibratorKind = Literal["shift", "platt", "isotonic", "none"]


class AutoCalibration(Strict):
    kind: Literal["auto"] = Field(
        description="Pick among the candidates by cross-validated log loss on the validation split, then fit the "
        "winner on all of it; the choice and each candidate's figures are recorded in the bundle and the run."
    )
    candidates: list[CalibratorKind] = Field(
        default=["shift", "platt", "isotonic"],
        min_length=1,
        description="Calibrators to choose from; on a tie the earlier one wins. The defaults all keep the mean of "
        "their fit rows; `none` (the raw score) is always measured beside them, and may be listed.",
    )
    folds: int = Field(default=5, ge=2, le=100, description="Cross-validation folds over the validation rows.")
    isotonic: IsotonicCalibration = Field(
        default=IsotonicCalibration(kind="isotonic"), description="Settings of the isotonic candidate."
    )

    @field_validator("candidates")
    @classmethod
    def _distinct(cls, candidates: list[str]) -> list[str]:
        if len(set(candidates)) != len(candidates):
            raise ValueError(f"calibration candidates repeat a kind: {candidates}; list each once")
        return candidates


Calibration = Annotated[
    AutoCalibration | IsotonicCalibration | PlattCalibration | ShiftCalibration | NoCalibration,
    Field(discriminator="kind"),
]


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
    ] = Field(default=10, description="Bins of the ECE (equal-width) and of the reliability diagrams (equal-count).")
    logloss_eps: float = Field(default=1e-7, gt=0, lt=0.5, description="Probabilities are clipped to [eps, 1-eps].")


class ParitySpec(Strict):
    atol: float = Field(default=1e-6, ge=0, description="Absolute tolerance of offline vs online scores.")
    rtol: float = Field(default=1e-5, ge=0, description="Relative tolerance of offline vs online scores.")
    worst_rows: int = Field(default=10, ge=1, le=10_000, description="How many of the worst rows to report.")
