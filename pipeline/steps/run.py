"""A command's run of the steps: load the spec, sweep what killed runs left, open this process's
scratch and the MLflow runs, then the steps in order, each handed its upstream results.

    fit        prepare -> train
    calibrate  prepare -> train -> calibrate
    validate   prepare -> train -> calibrate -> validate (the same for `run`)
"""

from __future__ import annotations

from pathlib import Path

from ..files import Scratch, ensure_folder, sweep
from ..serving.mlflow_model import log_model
from ..serving.mlflow_model import promote as promote_version
from ..serving.mlflow_model import register as register_version
from ..spec import load_spec
from ..tracking import Tracker, flatten, resolve_uri
from . import calibrate, prepare, train, validate
from .context import Context, StepResult
from .prepare import example_of

LAST_STEP = {"fit": "train", "calibrate": "calibrate", "validate": "validate", "run": "validate"}


def run(
    command: str,
    spec_path: Path,
    tracking_uri: str | None = None,
    force: bool = False,
    force_step: str | None = None,
    compare: Path | None = None,
    baseline: Path | None = None,
    register: str | None = None,
    promote: str | None = None,
) -> dict:
    """Run `command`'s steps; returns its result (metrics, bundle, steps, report and verdict for
    validate, the MLflow run and where everything is). With `register`, the final bundle's MLflow
    model becomes a new version of that registered model; with `promote` (validate, run), a passing
    verdict then points that alias at it, a failing one never does."""
    loaded = load_spec(spec_path)
    spec = loaded.spec
    workdir = ensure_folder(loaded.workdir, "workdir")
    orphans = sweep(workdir)  # scratch of killed processes: removed; their MLflow runs ended below
    scratch = Scratch(workdir)
    try:
        uri = resolve_uri(tracking_uri, spec.tracking.uri, workdir)
        tracker = Tracker(uri, spec.tracking.experiment or spec.name, workdir, scratch)
        ctx = Context(workdir, loaded.base_dir, spec.name, tracker, scratch, force, force_step)
        steps: dict[str, StepResult] = {}
        with tracker.command(command, flatten(spec.model_dump(mode="json")), loaded.text, orphans=orphans):
            steps["prepare"] = prepare.run(ctx, spec)
            steps["train"] = train.run(ctx, spec, steps["prepare"])
            last = steps["train"]
            if LAST_STEP[command] in ("calibrate", "validate"):
                last = steps["calibrate"] = calibrate.run(ctx, spec, steps["prepare"], steps["train"])
            if LAST_STEP[command] == "validate":
                result = validate.run(ctx, spec, last, compare, baseline)
            else:
                result = {"bundle": str(last.path / "bundle"), "metrics": last.info["metrics"]}
                result.update({k: last.info[k] for k in ("calibrator", "evidence") if k in last.info})
                if not last.cached:  # a cached step's model was logged to the store of its own run
                    result["model_uri"] = last.info["model_uri"]
            if register is not None:
                result["registered"] = registered(steps, last, register, promote, result.get("verdict"), uri)
    finally:
        scratch.close()
    result.update(
        {
            "command": command,
            "spec": str(spec_path),
            "steps": {k: v.summary() for k, v in steps.items()},
            "mlflow_run_id": tracker.parent_id,
            "tracking_uri": uri,
            "workdir": str(workdir),
        }
    )
    return result


def registered(
    steps: dict[str, StepResult], last: StepResult, name: str, alias: str | None, verdict: dict | None, uri: str
) -> dict:
    """Register the final bundle's MLflow model (logged by its step in this run, or now in the
    command's run when the step was cached) as a version of `name`; point `alias` at it when the
    verdict passed. -> {name, version, alias (or alias_refused)}."""
    model_uri = None if last.cached else last.info.get("model_uri")
    model_uri = model_uri or log_model(last.path / "bundle", example_of(steps["prepare"]))
    out: dict = {"name": name, "version": register_version(model_uri, name, uri), "model_uri": model_uri}
    if alias is not None:
        if verdict is not None and verdict["passed"]:
            promote_version(name, out["version"], alias, uri)
            out["alias"] = alias
        else:
            out["alias_refused"] = f"{alias!r} stays where it was: the verdict failed"
    return out
