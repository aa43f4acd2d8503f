"""A command's run of the steps: sweep what killed runs left, open this process's scratch and the
MLflow runs, then the steps in order, each handed its upstream results.

    fit        prepare -> train
    calibrate  prepare -> train -> calibrate
    validate   prepare -> train -> calibrate -> validate (the same for `run`)
"""

from __future__ import annotations

from hashlib import sha256
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from .. import __version__
from ..data.sources import input_fingerprints
from ..errors import InputError
from ..files import Scratch, ensure_folder, sweep
from ..serving.mlflow_model import promote as promote_version
from ..serving.mlflow_model import register as register_version
from ..spec import LoadedSpec
from ..tracking import Tracker, flatten, git_commit, metric_name, resolve_uri
from . import calibrate, prepare, train, validate
from .context import Context, StepResult
from .prepare import example_of

if TYPE_CHECKING:
    from ..train.distributed import Group

LAST_STEP = {"fit": "train", "calibrate": "calibrate", "validate": "validate", "run": "validate"}
SUMMARY = ("auc", "logloss", "rce", "calibration_ratio", "ece")  # a graded split's figures on the parent run


def run(
    command: str,
    loaded: LoadedSpec,
    tracking_uri: str | None = None,
    force: bool = False,
    force_step: str | None = None,
    compare: Path | None = None,
    baseline: Path | None = None,
    register: str | None = None,
    promote: str | None = None,
    tracking: bool = True,
) -> dict:
    """Run `command`'s steps; returns its result (metrics, bundle, steps, report and verdict for
    validate, the MLflow run and where everything is). With `register`, the final bundle's MLflow
    model becomes a new version of that registered model; with `promote` (validate, run), a passing
    verdict then points that alias at it, a failing one never does. `tracking=False` (or the spec's
    `tracking.enabled: false`) logs nothing to MLflow."""
    spec = loaded.spec
    tracking = tracking and spec.tracking.enabled
    if register is not None and not tracking:
        raise InputError("--register makes an MLflow model version: drop --no-tracking (or tracking.enabled: false)")
    group = ranks(spec)
    tracking = tracking and (group is None or group.leader)  # rank 0 alone logs
    workdir = ensure_folder(loaded.workdir, "workdir")
    # scratch of killed processes: removed (by rank 0 alone); their MLflow runs ended below
    orphans = sweep(workdir) if group is None or group.leader else []
    scratch = Scratch(workdir)
    uri = resolve_uri(tracking_uri, spec.tracking.uri, workdir) if tracking else None
    try:
        tracker = Tracker(uri or "", spec.tracking.experiment or spec.name, workdir, scratch, enabled=tracking)
        ctx = Context(workdir, loaded.base_dir, spec.name, tracker, scratch, force, force_step, group)
        steps: dict[str, StepResult] = {}
        with tracker.command(
            f"{spec.name} · {command}", explicit_params(loaded), run_tags(command, loaded), loaded.text, orphans
        ):
            steps["prepare"] = prepare.run(ctx, spec)
            steps["train"] = train.run(ctx, spec, steps["prepare"])
            last = steps["train"]
            if group is not None:  # training is done together; rank 0 goes on alone
                group.stop()
                ctx.group = None
                if not group.leader:
                    return {"rank": group.rank, "command": command, "steps": {}}
            if LAST_STEP[command] in ("calibrate", "validate"):
                last = steps["calibrate"] = calibrate.run(ctx, spec, steps["prepare"], steps["train"])
            if LAST_STEP[command] == "validate":
                result, steps["validate"] = validate.run(ctx, spec, last, compare, baseline)
            else:
                result = {"bundle": str(last.path / "bundle"), "metrics": last.info["metrics"]}
                result.update({k: last.info[k] for k in ("calibrator", "evidence") if k in last.info})
                if not last.cached and last.info.get("model_uri"):  # a cached step's model is in its own run
                    result["model_uri"] = last.info["model_uri"]
            if register is not None:
                result["registered"] = registered(tracker, steps, last, register, promote, result.get("verdict"))
            tracker.summary(*summary_of(result))
            tracker.datasets(dataset_inputs(loaded, steps["prepare"]))
    finally:
        scratch.close()
    result.update(
        {
            "command": command,
            "spec": str(loaded.path),
            "steps": {k: v.summary() for k, v in steps.items()},
            "mlflow_run_id": tracker.parent_id,  # None when nothing ran (or tracking is off)
            "mlflow_built_by": steps[LAST_STEP[command]].info.get("mlflow_run_id") if steps else None,
            "tracking_uri": uri,
            "workdir": str(workdir),
        }
    )
    return result


def ranks(spec) -> Group | None:
    """The ranks torchrun started (train/distributed.py), joined; None for one process."""
    from ..train.distributed import Group

    group = Group.from_env()
    if group is None:
        return None
    from ..train.loop import pick_device

    group.start(pick_device(spec.train.device).type)
    return group


def explicit_params(loaded: LoadedSpec) -> dict[str, str]:
    """The spec's values as MLflow params: only those the YAML sets, flattened (`model.mlp.layers`)."""
    return flatten(loaded.spec.model_dump(mode="json", exclude_unset=True))


def run_tags(command: str, loaded: LoadedSpec) -> dict[str, str]:
    """The parent run's tags: command, spec name, file and hash, snn's version, the git commit."""
    tags = {
        "snn.command": command,
        "snn.spec": loaded.spec.name,
        "snn.spec_file": str(loaded.path),
        "snn.spec_hash": loaded.spec_hash,
        "snn.version": __version__,
    }
    commit = git_commit(loaded.base_dir)
    if commit is not None:
        tags["snn.git_commit"] = tags["mlflow.source.git.commit"] = commit
    return tags


def summary_of(result: dict) -> tuple[dict[str, float], dict[str, str]]:
    """The figures and tags a command's parent run carries: the graded split's calibrated metrics
    (and raw AUC and log loss) with the verdict, or the last step's metrics (fit, calibrate)."""
    verdict = result.get("verdict")
    if verdict is None:
        return dict(result["metrics"]), {}
    split = result["gated_split"]
    graded = result["metrics"][split]
    by_task = {None: graded} if "calibrated" in graded else graded
    figures: dict[str, float] = {"verdict_passed": float(verdict["passed"])}
    for task, kinds in by_task.items():
        prefix = split if task is None else f"{split}_{task}"
        figures.update({metric_name(prefix, k): kinds["calibrated"][k] for k in SUMMARY})
        figures.update({metric_name(prefix, "raw", k): kinds["raw"][k] for k in ("auc", "logloss")})
    return figures, {"snn.verdict": "pass" if verdict["passed"] else "fail", "snn.graded_split": split}


def mlflow_type(dtype: pl.DataType) -> str:
    """A polars column type as an MLflow schema type (text files' columns are all strings)."""
    if dtype == pl.Boolean:
        return "boolean"
    return "double" if dtype.is_float() else "long" if dtype.is_integer() else "string"


def dataset_inputs(loaded: LoadedSpec, prepared: StepResult) -> list[tuple[str, Path, str, dict[str, str]]]:
    """Each data source as (context: train/validation/test, path, digest, {column: MLflow type}): the
    digest is the sha256 of the file's digest and the source's row range; the columns are those of
    the train file (prepare's example rows)."""
    files = loaded.data_files
    digests = input_fingerprints(files)
    schema = example_of(prepared).schema
    columns = {name: mlflow_type(dtype) for name, dtype in schema.items()}
    return [
        (name, files.path(source), sha256(f"{digests[source.path]} {source.rows}".encode()).hexdigest(), columns)
        for name, source in files.sources()
        if source.path in digests
    ]


def registered(
    tracker: Tracker,
    steps: dict[str, StepResult],
    last: StepResult,
    name: str,
    alias: str | None,
    verdict: dict | None,
) -> dict:
    """Register the final bundle's MLflow model (logged by its step in this run, or now in the
    command's run when the step was cached) as a version of `name`; point `alias` at it when the
    verdict passed. -> {name, version, alias (or alias_refused)}."""
    model_uri = None if last.cached else last.info.get("model_uri")
    model_uri = model_uri or tracker.model(last.path / "bundle", example_of(steps["prepare"]))
    assert model_uri is not None, "registering needs tracking on (checked before any step)"
    uri = tracker.uri
    out: dict = {"name": name, "version": register_version(model_uri, name, uri), "model_uri": model_uri}
    if alias is not None:
        if verdict is not None and verdict["passed"]:
            promote_version(name, out["version"], alias, uri)
            out["alias"] = alias
        else:
            out["alias_refused"] = f"{alias!r} stays where it was: the verdict failed"
    return out
