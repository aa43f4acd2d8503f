"""A command's run of the steps: load the spec, sweep what killed runs left, open this process's
scratch and the MLflow runs, then the steps in order, each handed its upstream results.

    fit        prepare -> train
    calibrate  prepare -> train -> calibrate
    validate   prepare -> train -> calibrate -> validate (the same for `run`)
"""

from __future__ import annotations

from pathlib import Path

from ..files import Scratch, ensure_folder, sweep
from ..spec import load_spec
from ..tracking import Tracker, flatten, resolve_uri
from . import calibrate, prepare, train, validate
from .context import Context, StepResult

LAST_STEP = {"fit": "train", "calibrate": "calibrate", "validate": "validate", "run": "validate"}


def run(
    command: str,
    spec_path: Path,
    tracking_uri: str | None = None,
    force: bool = False,
    force_step: str | None = None,
    compare: Path | None = None,
    baseline: Path | None = None,
) -> dict:
    """Run `command`'s steps; returns its result (metrics, bundle, steps, report and verdict for
    validate, the MLflow run and where everything is)."""
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
