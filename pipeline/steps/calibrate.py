"""Step `calibrate`: fit the calibrator on the raw scores of the prepared validation split (the
analytic downsampling correction first, then the calibrator the spec names, or the one `auto`
picks by cross-validated log loss); write the calibrated bundle with the choice and its evidence.
With several tasks, one calibrator per task, fitted on that task's served probability (corrected
at its rate; a dependent task's the product) against its label on every validation row."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl

from ..errors import InputError
from ..evaluation import metrics
from ..evaluation.calibrate import Calibrator, fit_calibrator, fit_problem
from ..evaluation.choice import Choice, candidate_spec, choose_calibrator
from ..evaluation.spec import AutoCalibration, Calibration
from ..spec import Spec
from ..store.bundle import Bundle, slice_text
from .context import Context, StepResult, cached_step, read
from .prepare import SLICES, example_of, split_of

READS = {"calibration": "calibration"}


def run(ctx: Context, spec: Spec, prepared: StepResult, trained: StepResult) -> StepResult:
    values = read(spec, READS)

    def build(folder: Path) -> dict:
        from ..model.inference import raw_probabilities  # torch: imported only when the step runs
        from ..serving.batch import load_model

        calibration = values["calibration"]
        raw_bundle = Bundle.load(trained.path / "bundle")
        validation = split_of(prepared, "validation", raw_bundle.feature_map.num_ids)
        raw = raw_probabilities(load_model(raw_bundle), validation)
        labels, weights = validation.labels, validation.weights
        kind: str | dict
        if raw_bundle.tasks:
            slices_file = prepared.path / "splits" / "validation" / SLICES
            slices = pl.read_parquet(slices_file) if raw_bundle.slice_columns else None
            bundle, summary, kind, evidence = calibrate_tasks(raw_bundle, raw, labels, weights, calibration, slices)
        else:
            bundle, summary, kind, evidence = calibrate_one(raw_bundle, raw, labels, weights, calibration)
        bundle.save(folder / "bundle")
        ctx.tracker.metrics(summary)
        ctx.tracker.params({"calibrator": kind if isinstance(kind, str) else json.dumps(kind)})
        model_uri = ctx.tracker.model(folder / "bundle", example_of(prepared))
        return {"metrics": summary, "calibrator": kind, "evidence": evidence, "model_uri": model_uri}

    return cached_step(ctx, "calibrate", values, build, (prepared, trained))


def choose(p: np.ndarray, y: np.ndarray, w: np.ndarray, calibration: Calibration) -> Choice:
    """The calibrator of `calibration` fitted on (p, y, w): `auto`'s pick by cross-validated log
    loss, or the named kind (an InputError when the rows cannot fit it)."""
    if isinstance(calibration, AutoCalibration):
        return choose_calibrator(p, y, w, calibration)
    problem = fit_problem(y, w) if calibration.kind != "none" else None
    if problem is not None:
        raise InputError(
            f"calibration.kind {calibration.kind}: {problem}; give the validation split rows of both "
            "classes (data.holdout or data.validation), or use calibration kind none or auto"
        )
    return Choice(calibration.kind, fit_calibrator(calibration, p, y, w))


def calibrate_one(
    bundle: Bundle, raw: np.ndarray, labels: np.ndarray, weights: np.ndarray, calibration: Calibration
) -> tuple[Bundle, dict, str, dict]:
    """One task: the calibrator on the corrected validation probabilities [n] -> (the calibrated
    bundle, its metrics, the kind, the evidence)."""
    corrected = bundle.corrected(raw)
    choice = choose(corrected, labels, weights, calibration)
    calibrated_bundle = bundle.calibrated(calibration, choice.calibrator, {})
    calibrated = calibrated_bundle.finish(raw)
    y, w = labels, weights
    summary = {
        "val_logloss_raw": metrics.logloss(y, corrected, w),
        "val_logloss_calibrated": metrics.logloss(y, calibrated, w),
        "val_calibration_ratio_raw": metrics.calibration_ratio(y, corrected, w),
        "val_calibration_ratio_calibrated": metrics.calibration_ratio(y, calibrated, w),
    }
    for kind, value in choice.evidence.get("cv_logloss", {}).items():
        summary[f"cv_logloss_{kind}"] = value
    calibrated_bundle.metrics["calibrate"] = {**summary, "calibrator": choice.kind, "evidence": choice.evidence}
    return calibrated_bundle, summary, choice.kind, choice.evidence


def calibrate_tasks(
    bundle: Bundle,
    raw: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray,
    calibration: Calibration,
    slices: pl.DataFrame | None = None,
) -> tuple[Bundle, dict, dict, dict]:
    """Several tasks: each task's calibrator on its served probability over every validation row
    (raw, labels, weights [n, T]) -> (the calibrated bundle, metrics per task, the kinds, the
    evidence). A task calibrated by slice also gets, for each value of its column (`slices`: the
    validation rows' values as text) with at least `min_positives` weighted positives, a
    calibrator of the kind its own is, fit on that value's rows alone."""
    served = bundle.served(raw)
    breakdown: dict[str, dict[str, Calibrator]] = {}
    calibrators: dict[str, Calibrator] = {}
    summary: dict[str, float] = {}
    kinds: dict[str, str] = {}
    evidence: dict[str, dict] = {}
    for t, task in enumerate(bundle.tasks):
        y, w, p = labels[:, t], weights[:, t], served[:, t]
        choice = choose(p, y, w, calibration)
        if choice.calibrator is not None:
            calibrators[task.name] = choice.calibrator
        kinds[task.name], evidence[task.name] = choice.kind, choice.evidence
        final = choice.calibrator(p) if choice.calibrator is not None else p
        if task.breakdown is not None and slices is not None and choice.calibrator is not None:
            kind_spec = (
                candidate_spec(choice.kind, calibration) if isinstance(calibration, AutoCalibration) else calibration
            )
            values = slice_text(slices[task.breakdown.column])
            breakdown[task.name] = {}
            for value in sorted(set(values)):
                rows = values == value
                if (
                    float(np.sum(w[rows] * y[rows])) >= task.breakdown.min_positives
                    and fit_problem(y[rows], w[rows]) is None
                ):
                    calibrator = fit_calibrator(kind_spec, p[rows], y[rows], w[rows])
                    if calibrator is not None:
                        breakdown[task.name][value] = calibrator
                        final[rows] = calibrator(p[rows])
            summary[f"val_slices_calibrated_{task.name}"] = len(breakdown[task.name])
        summary |= {
            f"val_logloss_raw_{task.name}": metrics.logloss(y, p, w),
            f"val_logloss_calibrated_{task.name}": metrics.logloss(y, final, w),
            f"val_calibration_ratio_raw_{task.name}": metrics.calibration_ratio(y, p, w),
            f"val_calibration_ratio_calibrated_{task.name}": metrics.calibration_ratio(y, final, w),
        }
    calibrated = bundle.calibrated(calibration, None, {}, calibrators, breakdown)
    calibrated.metrics["calibrate"] = {**summary, "calibrator": kinds, "evidence": evidence}
    return calibrated, summary, kinds, evidence


def per_slice(
    kind_spec, p: np.ndarray, y: np.ndarray, w: np.ndarray, values: np.ndarray, min_positives: float
) -> dict[str, Calibrator]:
    """A calibrator of `kind_spec` per slice value [n] whose rows hold at least `min_positives`
    weighted positives (and both classes), fit on those rows alone."""
    out = {}
    for value in sorted(set(values)):
        rows = values == value
        if float(np.sum(w[rows] * y[rows])) < min_positives or fit_problem(y[rows], w[rows]) is not None:
            continue
        calibrator = fit_calibrator(kind_spec, p[rows], y[rows], w[rows])
        if calibrator is not None:
            out[str(value)] = calibrator
    return out
