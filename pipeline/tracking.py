"""MLflow tracking: one parent run per command, a nested run per step.

URI precedence: --tracking-uri > MLFLOW_TRACKING_URI > spec.tracking.uri > the embedded default
`sqlite:///<workdir>/mlflow.db` (artifacts in `<workdir>/mlartifacts`, never ./mlruns).
`mlflow` is imported lazily so `snn --help` stays fast.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, redirect_stdout
from pathlib import Path

from pydantic import Field

from .config import Strict
from .errors import Terminated, TrackingError
from .files import Scratch, ensure_folder, locked


class TrackingSpec(Strict):
    uri: str | None = Field(
        default=None, description="MLflow tracking URI; --tracking-uri and MLFLOW_TRACKING_URI take precedence."
    )
    experiment: str | None = Field(default=None, description="Experiment name; the spec's name when absent.")


def resolve_uri(cli_uri: str | None, spec_uri: str | None, workdir: Path) -> str:
    uri = cli_uri or os.environ.get("MLFLOW_TRACKING_URI") or spec_uri
    if uri:
        return uri
    ensure_folder(workdir, "workdir")
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
    """Thin wrapper over mlflow's fluent API; methods are no-ops outside a run.

    Runs end FINISHED, FAILED (with the error as the `snn.error` tag) or KILLED (a signal: Ctrl-C,
    SIGTERM). Every run a process opens is noted in its scratch folder; when the process is killed
    outright (kill -9), the next command that sweeps the workdir ends those runs as KILLED
    (`end_orphaned_runs`)."""

    def __init__(self, uri: str, experiment: str, workdir: Path, scratch: Scratch | None = None):
        self.uri, self.experiment, self.workdir, self.scratch = uri, experiment, workdir, scratch
        self.parent_id: str | None = None
        self.open_runs: list[str] = []

    def _setup(self):
        check_reachable(self.uri)
        for name in ("alembic", "mlflow", "mlflow.store.db.utils", "mlflow.tracking"):
            logging.getLogger(name).setLevel(logging.ERROR)
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        import mlflow

        mlflow.set_tracking_uri(self.uri)
        try:  # one process at a time creates the store (sqlite migrations) and the experiment
            with locked(self.workdir / "locks" / "mlflow.lock"):
                found = mlflow.get_experiment_by_name(self.experiment)
                if found is None:
                    location = None
                    if self.uri.startswith("sqlite:"):
                        location = (self.workdir / "mlartifacts").resolve().as_uri()
                    mlflow.create_experiment(self.experiment, artifact_location=location)
            mlflow.set_experiment(self.experiment)
        except Exception as exc:
            raise TrackingError(
                f"MLflow at {self.uri} refused to set up experiment {self.experiment!r}: {exc}"
            ) from None
        return mlflow

    def end_orphaned_runs(self, notes: list[dict]) -> int:
        """End as KILLED the runs that dead processes left RUNNING (their scratch notes); returns how many."""
        from mlflow.tracking import MlflowClient

        ended = 0
        for note in notes:
            if note.get("tracking_uri") != self.uri:
                continue
            client = MlflowClient(self.uri)
            for run_id in note.get("runs", []):
                try:
                    if client.get_run(run_id).info.status == "RUNNING":
                        client.set_terminated(run_id, "KILLED")
                        ended += 1
                except Exception:  # a run the store no longer has: nothing to end
                    continue
        return ended

    def _opened(self, run_id: str) -> None:
        self.open_runs.append(run_id)
        if self.scratch is not None:
            self.scratch.record("tracking_uri", self.uri)
            self.scratch.record("runs", self.open_runs)

    @contextmanager
    def _run(self, mlflow, **kwargs):
        """A run that ends KILLED on a signal and FAILED with the error's text on an exception."""
        with mlflow.start_run(**kwargs) as run:
            self._opened(run.info.run_id)
            try:
                yield run
            except (KeyboardInterrupt, Terminated):
                mlflow.end_run(status="KILLED")
                raise
            except BaseException as exc:
                mlflow.set_tag("snn.error", f"{type(exc).__name__}: {exc}"[:5000])
                raise

    @contextmanager
    def command(
        self, name: str, params: dict | None = None, spec_text: str | None = None, orphans: Sequence[dict] = ()
    ) -> Iterator[Tracker]:
        saved = os.environ.get("MLFLOW_TRACKING_URI")  # mlflow.set_tracking_uri overwrites it
        # mlflow prints "View run ..." lines on stdout; stdout is reserved for --json
        with redirect_stdout(sys.stderr):
            try:
                mlflow = self._setup()
                ended = self.end_orphaned_runs(list(orphans))
                if ended:
                    sys.stderr.write(f"[tracking] ended {ended} run(s) of killed processes as KILLED\n")
                with self._run(mlflow, run_name=name) as run:
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

        with self._run(mlflow, run_name=name, nested=True):
            mlflow.set_tag("snn.step", name)
            mlflow.set_tag("snn.cache_hit", str(cached).lower())
            yield self

    def tags(self, tags: dict) -> None:
        import mlflow

        mlflow.set_tags({k: str(v) for k, v in tags.items()})

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
