"""Step `calibrate`: fit the calibrator on the raw scores of the prepared validation split (the
analytic downsampling correction first, then the calibrator the spec names, or the one `auto`
picks by cross-validated log loss); write the calibrated bundle with the choice and its evidence."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ..evaluation import metrics
from ..evaluation.calibrate import fit_calibrator, fit_problem
from ..evaluation.choice import Choice, choose_calibrator
from ..evaluation.spec import AutoCalibration
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
        corrected = raw_bundle.corrected(raw)
        y, w = validation.labels, validation.weights
        if isinstance(calibration, AutoCalibration):
            choice = choose_calibrator(corrected, y, w, calibration)
        else:
            problem = fit_problem(y, w) if calibration.kind != "none" else None
            if problem is not None:
                raise InputError(
                    f"calibration.kind {calibration.kind}: {problem}; give the validation split rows of both "
                    "classes (data.holdout or data.validation), or use calibration kind none or auto"
                )
            choice = Choice(calibration.kind, fit_calibrator(calibration, corrected, y, w))
        bundle = raw_bundle.calibrated(calibration, choice.calibrator, {})
        calibrated = bundle.finish(raw)
        summary = {
            "val_logloss_raw": metrics.logloss(y, corrected, w),
            "val_logloss_calibrated": metrics.logloss(y, calibrated, w),
            "val_calibration_ratio_raw": metrics.calibration_ratio(y, corrected, w),
            "val_calibration_ratio_calibrated": metrics.calibration_ratio(y, calibrated, w),
        }
        for kind, value in choice.evidence.get("cv_logloss", {}).items():
            summary[f"cv_logloss_{kind}"] = value
        bundle.metrics["calibrate"] = {**summary, "calibrator": choice.kind, "evidence": choice.evidence}
        bundle.save(folder / "bundle")
        ctx.tracker.metrics(summary)
        ctx.tracker.params({"calibrator": choice.kind})
        ctx.tracker.artifact(folder / "bundle", "bundle")
        return {"metrics": summary, "calibrator": choice.kind, "evidence": choice.evidence}

    return cached_step(ctx, "calibrate", values, build, (prepared, trained))
