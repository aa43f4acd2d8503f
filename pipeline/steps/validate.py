"""Step `validate` (cached, as every step): metrics raw and calibrated per split, per slice, against the
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
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from ..data.sources import file_digest, input_fingerprints
from ..data.spec import DataFiles
from ..errors import InputError
from ..evaluation import metrics
from ..evaluation.gates import evaluate_gates, slice_metrics
from ..evaluation.parity import compare, read_predictions
from ..evaluation.plots import learning_curve_png, pr_png, reliability_png, roc_png, slice_reliability_png
from ..evaluation.spec import ValidationSpec
from ..files import input_file
from ..spec import Spec
from ..store.bundle import Bundle, slice_text
from ..store.cache import folder_digest, link_to
from ..tracking import metric_name
from .context import Context, StepResult, cached_step, log, read

if TYPE_CHECKING:
    from ..serving.batch import ScoredSplit

READS = {"data": "data", "validation": "validation", "parity": "parity"}
IN_SAMPLE_WARNING = (
    "IN-SAMPLE: no test split, so gates and plots grade the validation split, the rows that chose the epoch kept "
    "and fit the calibrator; its figures are optimistic. Add data.test (a file or rows) for held-out figures."
)


def run(
    ctx: Context, spec: Spec, calibrated: StepResult, compare_path: Path | None = None, baseline: Path | None = None
) -> tuple[dict, StepResult]:
    """The report of the calibrated bundle, {"metrics", "verdict", "gated_split", "report", "bundle"[,
    "parity"]}, and the step. Cached like the other steps: its key covers the calibrated bundle's, the fields it
    reads, and the digests of the data files, the --compare file and the baseline bundle. The report
    is the step's folder, linked from `<workdir>/reports/<name>/latest` and, for each build, from
    `<workdir>/reports/<name>/<UTC time>-<key>`, so no run overwrites another's report."""
    values = read(spec, READS)
    validation = values["validation"]
    baseline = baseline or (ctx.resolve(validation.baseline) if validation.baseline else None)
    files = DataFiles(values["data"], ctx.base_dir)
    inputs = input_fingerprints(files)
    if compare_path is not None:
        input_file(
            compare_path, "--compare file", f"write it with `snn predict --online BUNDLE DATA -o {compare_path}`"
        )
        inputs["--compare"] = file_digest(compare_path)
    if baseline is not None:
        inputs["--baseline"] = folder_digest(baseline)

    def build(folder: Path) -> dict:
        return report(ctx, values, calibrated, compare_path, baseline, folder)

    step = cached_step(ctx, "validate", values, build, (calibrated,), inputs)
    reports = ctx.workdir / "reports" / ctx.name
    if not step.cached:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        link_to(reports / f"{stamp}-{step.key[:8]}", step.path)
    link_to(reports / "latest", step.path)
    info = step.info
    if info["verdict"].get("in_sample"):
        log(f"[validate] WARNING: {IN_SAMPLE_WARNING}")
    result = {k: info[k] for k in ("metrics", "verdict", "gated_split", "parity") if k in info}
    result.update(bundle=str(calibrated.path / "bundle"), report=str(step.path))
    log(f"[validate] report: {reports / 'latest'} -> {step.path}")
    return result, step


def report(
    ctx: Context,
    values: dict,
    calibrated: StepResult,
    compare_path: Path | None,
    baseline: Path | None,
    folder: Path,
) -> dict:
    """Score the splits, grade them and write the report into `folder` (metrics.json, verdict.json,
    predictions_<split>.parquet, the plots, parity.json); returns the step's info."""
    validation, parity_spec = values["validation"], values["parity"]
    bundle = Bundle.load(calibrated.path / "bundle")
    baseline_bundle = Bundle.load(baseline) if baseline else None
    result: dict = {"metrics": {}}
    kw = {"eps": validation.logloss_eps, "ece_bins": validation.ece_bins}
    from ..serving.batch import load_model, score_splits  # torch: imported only when the step runs

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
            ctx.tracker.metrics(slice_figures(prefix, view_metrics.get("slices", {})))
        result["metrics"][name] = per_task.get(None, per_task)  # one task: its metrics at the top
        labels = (
            {"label": split.labels}
            if not bundle.tasks
            else {f"label_{task.name}": split.labels[:, t] for t, task in enumerate(bundle.tasks)}
        )
        split.scored.with_columns(**labels).write_parquet(folder / f"predictions_{name}.parquet")
    gated_split = list(evaluated)[-1]  # test when there is one, else validation
    in_sample = gated_split != "test"
    scored = evaluated[gated_split].scored
    title = f"{gated_split} split ({len(scored):,} rows)" + (" (IN-SAMPLE)" if in_sample else "")
    history = bundle.metrics.get("history")
    if history is None:
        log("[validate] no learning curve: the bundle holds no training history (an older snn trained it)")
    verdicts = []
    for view in views[gated_split]:
        suffix, task = ("", "") if view.task is None else (f"_{view.task}", f", task {view.task}")
        write_plots(folder, suffix, view, evaluated[gated_split].slices, validation, title + task)
        if history is not None:
            best = bundle.metrics["train"]["best_epoch"]
            where = "train and validation splits" + task
            learning_curve_png(folder / f"learning_curve{suffix}.png", history, best, view.task, where)
        graded = result["metrics"][gated_split] if view.task is None else result["metrics"][gated_split][view.task]
        verdicts.append(
            evaluate_gates(
                validation.gates,
                graded["calibrated"],
                graded.get("baseline"),
                gated_split if view.task is None else f"{gated_split} (task {view.task})",
                bundle_path=str(calibrated.path / "bundle"),
                baseline_path=str(baseline) if baseline else None,
            )
        )
    result["gated_split"] = gated_split
    verdict = merged_verdict(verdicts, [view.task for view in views[gated_split]], gated_split)
    verdict["in_sample"] = in_sample
    if in_sample:
        verdict["warning"] = IN_SAMPLE_WARNING
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
        (folder / "parity.json").write_text(json.dumps(parity, indent=2, default=str))
        result["parity"] = parity
        for name, checked in reports.items():
            tag = "parity" if name == "score" else f"parity_{name.removeprefix('score_')}"
            ctx.tracker.metrics({f"{tag}_{k}": v for k, v in checked.items() if isinstance(v, (int, float))})
            if not checked["passed"]:
                verdict["passed"] = False
                task = "" if name == "score" else f" (task {name.removeprefix('score_')})"
                verdict["failures"].append(
                    f"parity{task}: {checked['rows_failing']} rows differ beyond atol={parity_spec.atol} "
                    f"rtol={parity_spec.rtol} ({checked['nan_rows']} of them NaN; max abs diff "
                    f"{checked['max_abs_diff']:.3g}; rows {checked['failing_keys']}), {checked['missing_online']} "
                    "offline rows missing online"
                )
    (folder / "metrics.json").write_text(json.dumps(result["metrics"], indent=2))
    (folder / "verdict.json").write_text(json.dumps(verdict, indent=2))
    ctx.tracker.artifact(folder, "report")
    ctx.tracker.metrics({"verdict_passed": float(verdict["passed"])})
    result["verdict"] = verdict
    return result


SLICE_FIGURES = ("auc", "logloss", "calibration_ratio", "rows")
SLICE_VALUES_LOGGED = 100  # per slice column, the values with the most rows


def slice_figures(prefix: str, slices: dict) -> dict[str, float]:
    """Slice metrics as MLflow metrics, `<split>_slice_<column>_<value>_<metric>` (characters MLflow
    refuses replaced), for the SLICE_VALUES_LOGGED values of each column with the most rows."""
    figures: dict[str, float] = {}
    for column, by_value in slices.items():
        biggest = sorted(by_value.items(), key=lambda item: -item[1]["rows"])[:SLICE_VALUES_LOGGED]
        for value, values in biggest:
            figures |= {metric_name(prefix, "slice", column, value, k): values[k] for k in SLICE_FIGURES}
    return figures


def write_plots(
    folder: Path, suffix: str, view: TaskView, slices: pl.DataFrame, validation: ValidationSpec, where: str
) -> None:
    """One task's plots of the graded split (`where` names it in the titles) into `folder`, each
    `<plot><suffix>.png`: reliability, roc, pr of the raw and calibrated scores, and per slice column
    reliability_<column> of the calibrated scores by value (`slices`: the split's slice columns)."""
    curves = {"raw": view.raw, "calibrated": view.final}
    bins = validation.ece_bins
    reliability_png(folder / f"reliability{suffix}.png", view.y, curves, view.w, bins, where)
    roc_png(folder / f"roc{suffix}.png", view.y, curves, view.w, where)
    pr_png(folder / f"pr{suffix}.png", view.y, curves, view.w, where)
    for column in validation.slices:
        values = slice_text(slices[column])
        path = folder / f"reliability_{column}{suffix}.png"
        slice_reliability_png(path, view.y, view.final, values, view.w, bins, column, where)


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
