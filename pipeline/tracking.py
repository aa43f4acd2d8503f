"""MLflow tracking: one parent run per command, a nested run per step.

URI precedence: --tracking-uri > MLFLOW_TRACKING_URI > spec.tracking.uri > the embedded default
`sqlite:///<workdir>/mlflow.db` (artifacts in `<workdir>/mlartifacts`, never ./mlruns).
`mlflow` is imported lazily so `snn --help` stays fast.
"""

from __future__ import annotations

import logging
import math
import os
import urllib.error
import urllib.request
import sys
from contextlib import contextmanager, redirect_stdout
from pathlib import Path

from .errors import TrackingError


def resolve_uri(cli_uri: str | None, spec_uri: str | None, workdir: Path) -> str:
    uri = cli_uri or os.environ.get("MLFLOW_TRACKING_URI") or spec_uri
    if uri:
        return uri
    workdir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(workdir / 'mlflow.db').resolve()}"


def check_reachable(uri: str) -> None:
    """Fail fast (before any work) when an HTTP tracking server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5):
            pass
    except (urllib.error.URLError, OSError) as exc:
        raise TrackingError(
            f"MLflow tracking server {uri} is unreachable ({getattr(exc, 'reason', exc)}); start it, fix "
            "--tracking-uri / MLFLOW_TRACKING_URI / tracking.uri, or unset them to use the local sqlite store"
        ) from None


def flatten(obj, prefix: str = "") -> dict[str, str]:
    """Nested spec dict -> {'model.mlp.layers': '[64, 32]', 'features.age.kind': 'continuous', ...}."""
    out: dict[str, str] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(obj, list) and obj and all(isinstance(v, dict) and "name" in v for v in obj):
        for v in obj:
            out.update(flatten({k: x for k, x in v.items() if k != "name"}, f"{prefix}{v['name']}."))
    else:
        out[prefix.rstrip(".")] = str(obj)[:500]
    return out


class Tracker:
    """Thin wrapper over mlflow's fluent API; methods are no-ops outside a run."""

    def __init__(self, uri: str, experiment: str, workdir: Path):
        self.uri, self.experiment, self.workdir = uri, experiment, workdir
        self.parent_id: str | None = None

    def _setup(self):
        check_reachable(self.uri)
        for name in ("alembic", "mlflow", "mlflow.store.db.utils", "mlflow.tracking"):
            logging.getLogger(name).setLevel(logging.ERROR)
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        import mlflow

        mlflow.set_tracking_uri(self.uri)
        try:
            found = mlflow.get_experiment_by_name(self.experiment)
            if found is None:
                location = None
                if self.uri.startswith("sqlite:"):
                    location = (self.workdir / "mlartifacts").resolve().as_uri()
                mlflow.create_experiment(self.experiment, artifact_location=location)
            mlflow.set_experiment(self.experiment)
        except Exception as exc:
            raise TrackingError(f"MLflow at {self.uri} refused to set up experiment {self.experiment!r}: {exc}") from None
        return mlflow

    @contextmanager
    def command(self, name: str, params: dict | None = None, spec_text: str | None = None):
        saved = os.environ.get("MLFLOW_TRACKING_URI")  # mlflow.set_tracking_uri overwrites it
        # mlflow prints "View run ..." lines on stdout; stdout is reserved for --json
        with redirect_stdout(sys.stderr):
            try:
                mlflow = self._setup()
                with mlflow.start_run(run_name=name) as run:
                    self.parent_id = run.info.run_id
                    mlflow.set_tag("snn.command", name)
                    if params:
                        mlflow.log_params(params)
                    if spec_text is not None:
                        mlflow.log_text(spec_text, "spec.yaml")
                    yield self
            finally:
                if saved is None:
                    os.environ.pop("MLFLOW_TRACKING_URI", None)
                else:
                    os.environ["MLFLOW_TRACKING_URI"] = saved

    @contextmanager
    def step(self, name: str, cached: bool = False):
        import mlflow

        with mlflow.start_run(run_name=name, nested=True):
            mlflow.set_tag("snn.step", name)
            mlflow.set_tag("snn.cache_hit", str(cached).lower())
            yield self

    def params(self, params: dict) -> None:
        import mlflow

        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})

    def metrics(self, values: dict, step: int | None = None) -> None:
        import mlflow

        clean = {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and math.isfinite(v)}
        if clean:
            mlflow.log_metrics(clean, step=step)

    def artifact(self, path: Path, folder: str | None = None) -> None:
        import mlflow

        if path.is_dir():
            mlflow.log_artifacts(str(path), folder or path.name)
        else:
            mlflow.log_artifact(str(path), folder)
