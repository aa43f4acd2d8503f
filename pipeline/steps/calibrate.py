"""Step `calibrate`: fit the calibrator on the raw scores of the prepared validation split (the
analytic downsampling correction first, then isotonic regression); write the calibrated bundle."""

from __future__ import annotations

from pathlib import Path

from ..evaluation import metrics
from ..evaluation.calibrate import Isotonic, downsampling_correction
from ..evaluation.spec import IsotonicCalibration
from ..model.inference import raw_probabilities
from ..serving.batch import load_model
from ..spec import Spec
from ..store.bundle import Bundle
from .context import Context, StepResult, cached_step, read
from .prepare import split_of

READS = {"calibration": "calibration"}


def run(ctx: Context, spec: Spec, prepared: StepResult, trained: StepResult) -> StepResult:
    values = read(spec, READS)

    def build(folder: Path) -> dict:
        calibration = values["calibration"]
        raw_bundle = Bundle.load(trained.path / "bundle")
        validation = split_of(prepared, "validation", raw_bundle.feature_map.num_ids)
        raw = raw_probabilities(load_model(raw_bundle), validation)
        corrected = downsampling_correction(raw, raw_bundle.negative_rate) if raw_bundle.negative_rate != 1 else raw
        calibrator = None
        if isinstance(calibration, IsotonicCalibration):
            calibrator = Isotonic.fit(corrected, validation.labels, validation.weights, calibration)
        bundle = raw_bundle.calibrated(calibration, calibrator, {})
        calibrated = bundle.finish(raw)
        y, w = validation.labels, validation.weights
        summary = {
            "val_logloss_raw": metrics.logloss(y, raw, w),
            "val_logloss_calibrated": metrics.logloss(y, calibrated, w),
            "val_calibration_ratio_raw": metrics.calibration_ratio(y, raw, w),
            "val_calibration_ratio_calibrated": metrics.calibration_ratio(y, calibrated, w),
            "knots": float(len(calibrator.xs)) if calibrator else 0.0,
        }
        bundle.metrics["calibrate"] = summary
        bundle.save(folder / "bundle")
        ctx.tracker.metrics(summary)
        ctx.tracker.artifact(folder / "bundle", "bundle")
        return {"metrics": summary}

    return cached_step(ctx, "calibrate", values, build, (prepared, trained))
