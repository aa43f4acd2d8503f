"""MLflow tracking: one parent run per command, a nested run per step.

URI precedence: --tracking-uri > MLFLOW_TRACKING_URI > spec.tracking.uri > the embedded default
`sqlite:///<workdir>/mlflow.db` (artifacts in `<workdir>/mlartifacts`, never ./mlruns).
`mlflow` is imported lazily so `snn --help` stays fast.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, redirect_stdout
from pathlib import Path
from typing import Any

from pydantic import Field

from .config import Strict
from .errors import Terminated, TrackingError
from .files import Scratch, ensure_folder, locked


class TrackingSpec(Strict):
    enabled: bool = Field(
        default=True, description="Log runs and models to MLflow; false (or `--no-tracking`): no MLflow at all."
    )
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
    """Nested spec dict -> {'model.mlp.layers': '[64, 32]', 'features.age.kind': 'continuous', ...}
    (a list of named mappings is keyed by each item's name)."""
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


def git_commit(folder: Path) -> str | None:
    """The commit checked out in the git work tree holding `folder`, or None outside one."""
    try:
        found = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = found.stdout.strip()
    return commit if found.returncode == 0 and len(commit) in (40, 64) else None


METRIC_NAME = re.compile(r"[^A-Za-z0-9_\-. /:]")


def metric_name(*parts: str) -> str:
    """A metric name from parts joined by '_', characters MLflow refuses replaced by '-'."""
    return METRIC_NAME.sub("-", "_".join(parts))[:250]


class Tracker:
    """One command's MLflow runs, over mlflow's fluent API: a parent run named `<spec> · <command>`
    and a nested run per step that runs. The parent opens with the first step that runs (a command
    whose steps were all cached starts no MLflow at all: nothing new happened, and its results name
    the run that built them), and carries the spec's explicitly set values as flattened params, tags
    (command, spec name and hash, snn version, git commit, cached steps, verdict) and the summary
    metrics. `enabled=False` (tracking off) makes every method a no-op.

    Runs end FINISHED, FAILED (the error as the `snn.error` tag and the run's description) or KILLED
    (a signal: Ctrl-C, SIGTERM). Every run a process opens is noted in its scratch folder; when the
    process is killed outright (kill -9), the next command that sweeps the workdir ends those runs as
    KILLED (`end_orphaned_runs`)."""

    def __init__(self, uri: str, experiment: str, workdir: Path, scratch: Scratch | None = None, enabled: bool = True):
        self.uri, self.experiment, self.workdir, self.scratch = uri, experiment, workdir, scratch
        self.enabled = enabled
        self.parent_id: str | None = None
        self.open_runs: list[str] = []
        self.cached_steps: list[str] = []
        self._open_parent: Callable[[], Any] | None = None  # inside command(): opens the parent run once

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
                message = f"{type(exc).__name__}: {exc}"[:5000]
                mlflow.set_tags({"snn.error": message, "mlflow.note.content": f"failed: {message}"})
                raise

    @contextmanager
    def command(
        self,
        run_name: str,
        params: dict[str, str] | None = None,
        tags: dict[str, str] | None = None,
        spec_text: str | None = None,
        orphans: Sequence[dict] = (),
    ) -> Iterator[Tracker]:
        """The command's scope. Its parent run (`run_name`, with `params`, `tags` and the spec text as
        spec.yaml) opens with the first step that runs; when every step was cached, none opens."""
        if not self.enabled:
            yield self
            return
        saved = os.environ.get("MLFLOW_TRACKING_URI")  # mlflow.set_tracking_uri overwrites it
        # mlflow prints "View run ..." lines on stdout; stdout is reserved for --json
        with redirect_stdout(sys.stderr), ExitStack() as stack:
            try:

                def open_parent():
                    mlflow = self._setup()
                    ended = self.end_orphaned_runs(list(orphans))
                    if ended:
                        sys.stderr.write(f"[tracking] ended {ended} run(s) of killed processes as KILLED\n")
                    run = stack.enter_context(self._run(mlflow, run_name=run_name))
                    self.parent_id = run.info.run_id
                    mlflow.set_tags(tags or {})
                    if params:
                        for start in range(0, len(params), 100):  # MLflow takes 100 params per call
                            mlflow.log_params(dict(list(params.items())[start : start + 100]))
                    if spec_text is not None:
                        mlflow.log_text(spec_text, "spec.yaml")
                    return mlflow

                self._open_parent = functools.cache(open_parent)
                yield self
                if self.parent_id is not None:
                    mlflow = self._open_parent()
                    mlflow.set_tags({"snn.cached_steps": ",".join(self.cached_steps)})
                elif any(note.get("runs") for note in orphans):  # nothing ran, but killed runs to end
                    self._setup()
                    self.end_orphaned_runs(list(orphans))
            finally:
                self._open_parent = None
                if saved is None:
                    os.environ.pop("MLFLOW_TRACKING_URI", None)
                else:
                    os.environ["MLFLOW_TRACKING_URI"] = saved

    @property
    def live(self) -> bool:
        """Whether a run is open to log to (tracking on, the parent opened)."""
        return self.enabled and self.parent_id is not None and self._open_parent is not None

    def cached(self, name: str) -> None:
        """Note a cached step (the parent's `snn.cached_steps` tag); it gets no run of its own."""
        self.cached_steps.append(name)

    @contextmanager
    def step(self, name: str):
        """A step that runs: a nested run of the parent (opened now if it is not yet)."""
        if not self.enabled or self._open_parent is None:
            yield self
            return
        mlflow = self._open_parent()
        with self._run(mlflow, run_name=name, nested=True):
            mlflow.set_tags({"snn.step": name, "snn.cache_hit": "false"})
            yield self

    def summary(self, metrics: dict, tags: dict) -> None:
        """The command's figures and tags on its parent run, when it has one (call it outside any step)."""
        if not self.live:
            return
        self.metrics(metrics)
        self.tags(tags)

    def datasets(self, inputs: Sequence[tuple[str, Path, str, dict[str, str]]]) -> None:
        """Log each (context, path, digest, {column: type}) as a dataset input of the active run,
        named `<context>: <file name>` (metadata only: MLflow never reads the file)."""
        if not self.live:
            return
        import mlflow
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.types import ColSpec, Schema

        for context, path, digest, columns in inputs:
            schema = Schema([ColSpec(kind, name) for name, kind in columns.items()]) if columns else None
            with warnings.catch_warnings():  # "can be interpreted in multiple ways": a local file either way
                warnings.simplefilter("ignore")
                source = resolve_dataset_source(str(path))
            name = f"{context}: {path.name}"  # one file may hold two splits (row ranges)
            dataset = MetaDataset(source, name=name, digest=digest[:16], schema=schema)  # type: ignore[abstract]
            # MLflow gets-or-creates the dataset row without a transaction: two commands logging one
            # dataset at once collide (a unique constraint), so one process at a time logs, and a
            # collision with another work directory's process is retried once (the row then exists)
            with locked(self.workdir / "locks" / "mlflow.lock"):
                try:
                    mlflow.log_input(dataset, context=context)
                except mlflow.exceptions.MlflowException:
                    mlflow.log_input(dataset, context=context)

    def model(self, bundle: Path, example) -> str | None:
        """Log the bundle as an MLflow model in the active run (serving/mlflow_model.py); its URI, or
        None with tracking off. Outside a step it is logged in the command's run (opened if need be)."""
        if not self.enabled or self._open_parent is None:
            return None
        self._open_parent()
        from .serving.mlflow_model import log_model

        return log_model(bundle, example)

    def tags(self, tags: dict) -> None:
        if not self.live:
            return
        import mlflow

        mlflow.set_tags({k: str(v) for k, v in tags.items()})

    def params(self, params: dict) -> None:
        if not self.live:
            return
        import mlflow

        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})

    def metrics(self, values: dict, step: int | None = None) -> None:
        if not self.live:
            return
        import mlflow

        clean = {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and math.isfinite(v)}
        if clean:
            mlflow.log_metrics(clean, step=step)

    def artifact(self, path: Path, folder: str | None = None) -> None:
        if not self.live:
            return
        import mlflow

        if path.is_dir():
            mlflow.log_artifacts(str(path), folder or path.name)
        else:
            mlflow.log_artifact(str(path), folder)
