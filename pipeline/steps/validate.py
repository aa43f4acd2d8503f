"""Step `validate` (never cached): metrics raw and calibrated per split, per slice, against the
oracle and a baseline bundle; plots; gates; parity against online scores -> a report folder and a
verdict.

Metric kinds: raw (the network's probability, with the analytic downsampling correction when
negatives were downsampled), uncorrected (without it; downsampled models only), calibrated (the
served score), oracle, baseline. Gates and plots grade the test split. Without one they grade
the validation split, whose rows chose the epoch kept and fit the calibrator: the verdict is then
marked `in_sample` and a warning says so (stderr, verdict.json, the MLflow tag snn.in_sample)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from ..data.spec import DataFiles
from ..evaluation import metrics
from ..evaluation.gates import evaluate_gates, slice_metrics
from ..evaluation.parity import compare, read_predictions
from ..evaluation.plots import reliability_png, roc_png
from ..files import input_file, locked
from ..serving.batch import load_model, score_splits
from ..spec import Spec
from ..store.bundle import Bundle, replace_folder
from .context import Context, StepResult, log, read

READS = {"data": "data", "validation": "validation", "parity": "parity"}
IN_SAMPLE_WARNING = (
    "IN-SAMPLE: no test split, so gates and plots grade the validation split, the rows that chose the epoch kept "
    "and fit the calibrator; its figures are optimistic. Add data.test (a file or rows) for held-out figures."
)


def run(
    ctx: Context, spec: Spec, calibrated: StepResult, compare_path: Path | None = None, baseline: Path | None = None
) -> dict:
    """The report of the calibrated bundle: {"metrics", "verdict", "report", "bundle"[, "parity"]}."""
    values = read(spec, READS)
    validation, parity_spec = values["validation"], values["parity"]
    bundle = Bundle.load(calibrated.path / "bundle")
    baseline = baseline or (ctx.resolve(validation.baseline) if validation.baseline else None)
    baseline_bundle = Bundle.load(baseline) if baseline else None
    report_dir = ctx.workdir / "reports" / ctx.name
    if compare_path is not None:
        input_file(
            compare_path, "--compare file", f"write it with `snn predict --online BUNDLE DATA -o {compare_path}`"
        )
    tmp = ctx.scratch.folder("validate")
    result: dict = {"metrics": {}, "bundle": str(calibrated.path / "bundle")}
    kw = {"eps": validation.logloss_eps, "ece_bins": validation.ece_bins}
    with ctx.tracker.step("validate"):
        evaluated = score_splits(
            DataFiles(values["data"], ctx.base_dir),
            list(validation.slices),
            bundle,
            load_model(bundle),
            baseline_bundle,
        )
        curves: dict[str, dict] = {}  # per split: the raw (corrected) and calibrated scores, for the plots
        for name, split in evaluated.items():
            scored, y, w = split.scored, split.labels, split.weights
            raw, final = bundle.corrected(scored["raw_score"].to_numpy()), scored["score"].to_numpy()
            curves[name] = {"raw": raw, "calibrated": final}
            split_metrics = {
                "raw": metrics.all_metrics(y, raw, w, **kw),
                "calibrated": metrics.all_metrics(y, final, w, **kw),
            }
            if bundle.negative_rate != 1.0:
                split_metrics["uncorrected"] = metrics.all_metrics(y, scored["raw_score"].to_numpy(), w, **kw)
            if split.oracle is not None:
                split_metrics["oracle"] = metrics.all_metrics(y, split.oracle, w, **kw)
            if split.baseline is not None:
                split_metrics["baseline"] = metrics.all_metrics(y, split.baseline, w, **kw)
            if validation.slices:
                split_metrics["slices"] = slice_metrics(split.slices, validation.slices, y, final, w, **kw)
            result["metrics"][name] = split_metrics
            scored.with_columns(pl.Series("label", y)).write_parquet(tmp / f"predictions_{name}.parquet")
            for kind in [k for k in ("raw", "uncorrected", "calibrated", "oracle") if k in split_metrics]:
                ctx.tracker.metrics({f"{name}_{kind}_{k}": v for k, v in split_metrics[kind].items()})
        gated_split = list(evaluated)[-1]  # test when there is one, else validation
        in_sample = gated_split != "test"
        gated, scored = result["metrics"][gated_split], evaluated[gated_split].scored
        y, w = evaluated[gated_split].labels, evaluated[gated_split].weights
        title = f"{gated_split} split" + (" (IN-SAMPLE)" if in_sample else "")
        reliability_png(tmp / "reliability.png", y, curves[gated_split], w, validation.ece_bins, title)
        roc_png(tmp / "roc.png", y, curves[gated_split], w, title)
        result["gated_split"] = gated_split
        verdict = evaluate_gates(
            validation.gates,
            gated["calibrated"],
            gated.get("baseline"),
            gated_split,
            bundle_path=result["bundle"],
            baseline_path=str(baseline) if baseline else None,
        )
        verdict["in_sample"] = in_sample
        if in_sample:
            verdict["warning"] = IN_SAMPLE_WARNING
            log(f"[validate] WARNING: {IN_SAMPLE_WARNING}")
        ctx.tracker.tags({"snn.in_sample": str(in_sample).lower(), "snn.graded_split": gated_split})
        if compare_path is not None:
            online = read_predictions(compare_path, bundle.key, scored.schema[bundle.key])
            parity = compare(scored, online, bundle.key, parity_spec)
            (tmp / "parity.json").write_text(json.dumps(parity, indent=2, default=str))
            result["parity"] = parity
            ctx.tracker.metrics({f"parity_{k}": v for k, v in parity.items() if isinstance(v, (int, float))})
            if not parity["passed"]:
                verdict["passed"] = False
                verdict["failures"].append(
                    f"parity: {parity['rows_failing']} rows differ beyond atol={parity_spec.atol} "
                    f"rtol={parity_spec.rtol} ({parity['nan_rows']} of them NaN; max abs diff "
                    f"{parity['max_abs_diff']:.3g}; rows {parity['failing_keys']}), {parity['missing_online']} "
                    "offline rows missing online"
                )
        (tmp / "metrics.json").write_text(json.dumps(result["metrics"], indent=2))
        (tmp / "verdict.json").write_text(json.dumps(verdict, indent=2))
        report_dir.parent.mkdir(parents=True, exist_ok=True)
        with locked(ctx.workdir / "locks" / f"report-{ctx.name}.lock"):
            replace_folder(tmp, report_dir, ctx.scratch)
        ctx.tracker.artifact(report_dir, "report")
        ctx.tracker.metrics({"verdict_passed": float(verdict["passed"])})
    result["verdict"] = verdict
    result["report"] = str(report_dir)
    log(f"[validate] report: {report_dir}")
    return result
