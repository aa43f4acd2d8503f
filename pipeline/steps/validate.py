"""Step `validate` (never cached): metrics raw and calibrated per split, per slice, against the
oracle and a baseline bundle; plots; gates; parity against online scores -> a report folder and a
verdict.

Metric kinds: raw (the network's probability, with the analytic downsampling correction when
negatives were downsampled), uncorrected (without it; downsampled models only), calibrated (the
served score), oracle, baseline. Gates and plots grade the test split. Without one they grade
the validation split, whose rows chose the epoch kept and fit the calibrator: the verdict is then
marked `in_sample` and a warning says so (stderr, verdict.json, the MLflow tag snn.in_sample).

With several tasks, all of it per task, on every row of the split (a dependent task's served
score is the product): metrics under metrics[split][task], plots `<plot>_<task>.png`, the gates
applied to each task (a failure names the task) and parity on each `score_<task>` column."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from ..data.spec import DataFiles
from ..errors import InputError
from ..evaluation import metrics
from ..evaluation.gates import evaluate_gates, slice_metrics
from ..evaluation.parity import compare, read_predictions
from ..evaluation.plots import reliability_png, roc_png
from ..files import input_file, locked
from ..serving.batch import ScoredSplit, load_model, score_splits
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
        if bundle.tasks and baseline_bundle is not None:
            raise InputError("a baseline bundle compares one-task models; leave validation.baseline out with tasks")
        views: dict[str, list[TaskView]] = {}  # per split: what each task is graded on
        for name, split in evaluated.items():
            views[name] = task_views(bundle, split)
            per_task = {}
            for view in views[name]:
                view_metrics = {
                    "raw": metrics.all_metrics(view.y, view.raw, view.w, **kw),
                    "calibrated": metrics.all_metrics(view.y, view.final, view.w, **kw),
                }
                if view.uncorrected is not None:
                    view_metrics["uncorrected"] = metrics.all_metrics(view.y, view.uncorrected, view.w, **kw)
                if view.oracle is not None:
                    view_metrics["oracle"] = metrics.all_metrics(view.y, view.oracle, view.w, **kw)
                if split.baseline is not None:
                    view_metrics["baseline"] = metrics.all_metrics(view.y, split.baseline, view.w, **kw)
                if validation.slices:
                    view_metrics["slices"] = slice_metrics(
                        split.slices, validation.slices, view.y, view.final, view.w, **kw
                    )
                per_task[view.task] = view_metrics
                prefix = name if view.task is None else f"{name}_{view.task}"
                for kind in [k for k in ("raw", "uncorrected", "calibrated", "oracle") if k in view_metrics]:
                    ctx.tracker.metrics({f"{prefix}_{kind}_{k}": v for k, v in view_metrics[kind].items()})
            result["metrics"][name] = per_task.get(None, per_task)  # one task: its metrics at the top
            labels = (
                {"label": split.labels}
                if not bundle.tasks
                else {f"label_{task.name}": split.labels[:, t] for t, task in enumerate(bundle.tasks)}
            )
            split.scored.with_columns(**labels).write_parquet(tmp / f"predictions_{name}.parquet")
        gated_split = list(evaluated)[-1]  # test when there is one, else validation
        in_sample = gated_split != "test"
        scored = evaluated[gated_split].scored
        title = f"{gated_split} split" + (" (IN-SAMPLE)" if in_sample else "")
        verdicts = []
        for view in views[gated_split]:
            curves = {"raw": view.raw, "calibrated": view.final}
            suffix, where = ("", title) if view.task is None else (f"_{view.task}", f"{title}, task {view.task}")
            reliability_png(tmp / f"reliability{suffix}.png", view.y, curves, view.w, validation.ece_bins, where)
            roc_png(tmp / f"roc{suffix}.png", view.y, curves, view.w, where)
            graded = result["metrics"][gated_split] if view.task is None else result["metrics"][gated_split][view.task]
            verdicts.append(
                evaluate_gates(
                    validation.gates,
                    graded["calibrated"],
                    graded.get("baseline"),
                    gated_split if view.task is None else f"{gated_split} (task {view.task})",
                    bundle_path=result["bundle"],
                    baseline_path=str(baseline) if baseline else None,
                )
            )
        result["gated_split"] = gated_split
        verdict = merged_verdict(verdicts, [view.task for view in views[gated_split]], gated_split)
        verdict["in_sample"] = in_sample
        if in_sample:
            verdict["warning"] = IN_SAMPLE_WARNING
            log(f"[validate] WARNING: {IN_SAMPLE_WARNING}")
        ctx.tracker.tags({"snn.in_sample": str(in_sample).lower(), "snn.graded_split": gated_split})
        if compare_path is not None:
            names = tuple(bundle.score_names)
            online = read_predictions(compare_path, bundle.key, scored.schema[bundle.key], names)
            reports = {
                name: compare(
                    scored.select(bundle.key, pl.col(name).alias("score")),
                    online.select(bundle.key, pl.col(name).alias("score")),
                    bundle.key,
                    parity_spec,
                )
                for name in names
            }
            parity = (
                reports["score"]
                if names == ("score",)
                else {**reports, "passed": all(r["passed"] for r in reports.values())}
            )
            (tmp / "parity.json").write_text(json.dumps(parity, indent=2, default=str))
            result["parity"] = parity
            for name, report in reports.items():
                tag = "parity" if name == "score" else f"parity_{name.removeprefix('score_')}"
                ctx.tracker.metrics({f"{tag}_{k}": v for k, v in report.items() if isinstance(v, (int, float))})
                if not report["passed"]:
                    verdict["passed"] = False
                    task = "" if name == "score" else f" (task {name.removeprefix('score_')})"
                    verdict["failures"].append(
                        f"parity{task}: {report['rows_failing']} rows differ beyond atol={parity_spec.atol} "
                        f"rtol={parity_spec.rtol} ({report['nan_rows']} of them NaN; max abs diff "
                        f"{report['max_abs_diff']:.3g}; rows {report['failing_keys']}), {report['missing_online']} "
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


@dataclass
class TaskView:
    """What one task is graded on over one split's rows [n]: its labels and weights, its served
    probability before calibration (raw, downsampling-corrected), its final score, the raw score
    without the correction (a downsampled one-task model), and the oracle. task: None for one task."""

    task: str | None
    y: np.ndarray
    w: np.ndarray
    raw: np.ndarray
    final: np.ndarray
    uncorrected: np.ndarray | None
    oracle: np.ndarray | None


def task_views(bundle: Bundle, split: ScoredSplit) -> list[TaskView]:
    """One view per task of a scored split (one, task None, for a one-task bundle)."""
    scored = split.scored
    if not bundle.tasks:
        raw = scored["raw_score"].to_numpy()
        uncorrected = raw if bundle.negative_rate != 1.0 else None
        final = scored["score"].to_numpy()
        return [TaskView(None, split.labels, split.weights, bundle.corrected(raw), final, uncorrected, split.oracle)]
    raw = np.stack([scored[f"raw_score_{task.name}"].to_numpy() for task in bundle.tasks], 1)
    served = bundle.served(raw)
    views = []
    for t, task in enumerate(bundle.tasks):
        oracle = None if split.oracle is None or np.isnan(split.oracle[:, t]).all() else split.oracle[:, t]
        final = scored[f"score_{task.name}"].to_numpy()
        views.append(TaskView(task.name, split.labels[:, t], split.weights[:, t], served[:, t], final, None, oracle))
    return views


def merged_verdict(verdicts: list[dict], tasks: list[str | None], split: str) -> dict:
    """One verdict from each task's: passed when all passed; every check marked with its task."""
    if tasks == [None]:
        return verdicts[0]
    merged = {**verdicts[0], "split": split, "failures": [], "checks": []}
    for task, verdict in zip(tasks, verdicts):
        merged["failures"] += [f"task {task}: {failure}" for failure in verdict["failures"]]
        merged["checks"] += [{**check, "task": task} for check in verdict["checks"]]
    merged["passed"] = not merged["failures"]
    return merged
