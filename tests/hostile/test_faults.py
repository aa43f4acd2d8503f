"""Faults on real processes: kill -9 at five points, SIGTERM and SIGINT mid-epoch, two runs started
together on a fresh work directory, a write past the file size limit. After each, a rerun gives the
weights of an uninterrupted run bit for bit, no scratch folder is left, and no MLflow run is RUNNING."""

from __future__ import annotations

import json
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from .corpus import base_frame, base_spec

SNN = str(Path(sys.executable).with_name("snn"))
EPOCHS = 3
WAIT_SECONDS = 180


def fault_spec() -> dict:
    """Epochs long enough (about a second each here) to be killed in the middle of one."""
    spec = base_spec()
    spec["train"].update(epochs=EPOCHS, batch_size=16)
    spec["model"]["mlp"]["layers"] = [16]
    return spec


def make_folder(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    base_frame(12_000, 0).write_csv(folder / "train.csv")
    base_frame(2_000, 1).write_csv(folder / "test.csv")
    (folder / "spec.yaml").write_text(yaml.safe_dump(fault_spec(), sort_keys=False))
    return folder / "spec.yaml"


class Run:
    """`snn <args>` as a child process; its stderr lines are collected as they come."""

    def __init__(self, *args: str, **popen):
        # one thread each: two test processes share the machine's cores with their snn children
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        popen.setdefault("stdout", subprocess.DEVNULL)
        self.process = subprocess.Popen([SNN, *args], stderr=subprocess.PIPE, text=True, env=env, **popen)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def wait_for(self, ready, what: str) -> None:
        """Poll until `ready()`; fail if the process ends first."""
        deadline = time.monotonic() + WAIT_SECONDS
        while not ready():
            if self.process.poll() is not None:
                self.reader.join(5)
                pytest.fail(f"snn ended (exit {self.process.returncode}) before {what}:\n{self.stderr}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {what} within {WAIT_SECONDS} s:\n{self.stderr}")
            time.sleep(0.005)

    def said(self, text: str):
        return lambda: text in self.stderr

    def finish(self) -> int:
        code = self.process.wait(WAIT_SECONDS)
        self.reader.join(5)
        return code


def calibrated_bundle(folder: Path) -> Path:
    return folder / ".snn" / "bundles" / "tiny"


def weights(bundle: Path) -> dict[str, bytes]:
    with np.load(bundle / "weights.npz") as npz:
        arrays = {k: npz[k].tobytes() for k in npz.files}
    return {**arrays, "calibrator": (bundle / "calibrator.json").read_bytes()}


def train_info(folder: Path) -> dict:
    return json.loads(next((folder / ".snn" / "steps").glob("train-*/step.json")).read_text())


def run_statuses(folder: Path) -> list[str]:
    with sqlite3.connect(folder / ".snn" / "mlflow.db") as db:
        return [status for (status,) in db.execute("select status from runs")]


def assert_clean(folder: Path) -> None:
    tmp = folder / ".snn" / "tmp"
    assert not tmp.exists() or list(tmp.iterdir()) == [], list(tmp.iterdir())
    assert "RUNNING" not in run_statuses(folder), run_statuses(folder)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("uninterrupted")
    run = Run("calibrate", str(make_folder(folder)))
    assert run.finish() == 0, run.stderr
    return {"weights": weights(calibrated_bundle(folder)), "epochs": train_info(folder)["metrics"]["epochs_run"]}


def _checkpoint(folder: Path):
    return lambda: any((folder / ".snn" / "checkpoints").glob("train-*/checkpoint.pt"))


def _in_scratch(folder: Path, step: str):
    return lambda: any((folder / ".snn" / "tmp").glob(f"*/{step}-*"))


def _done(folder: Path, step: str):
    return lambda: any((folder / ".snn" / "steps").glob(f"{step}-*/step.json"))


# name: (the moment to kill at, the epoch a rerun resumes at: 0 = trains from the start)
KILL_POINTS = {
    "during-prepare": (lambda run, folder: run.wait_for(_in_scratch(folder, "prepare"), "prepare"), 0),
    # an epoch is ~0.4 s of 9,626 rows: kill soon after the step starts, before its first checkpoint
    "mid-epoch-1": (lambda run, folder: (run.wait_for(run.said("[train]"), "training"), time.sleep(0.1)), 0),
    "mid-epoch-2": (
        lambda run, folder: (run.wait_for(_checkpoint(folder), "the first checkpoint"), time.sleep(0.3)),
        2,
    ),
    "mid-last-epoch": (
        lambda run, folder: (run.wait_for(run.said(f"epoch {EPOCHS - 1}:"), f"epoch {EPOCHS - 1}"), time.sleep(0.3)),
        EPOCHS,
    ),
    "during-calibrate": (lambda run, folder: run.wait_for(_done(folder, "train"), "the train step"), None),
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_kill_9_then_rerun_equals_an_uninterrupted_run(point, tmp_path, uninterrupted):
    spec = make_folder(tmp_path)
    wait, resumes_at = KILL_POINTS[point]
    run = Run("calibrate", str(spec))
    wait(run, tmp_path)
    run.process.send_signal(signal.SIGKILL)
    assert run.finish() == -signal.SIGKILL
    rerun = Run("calibrate", str(spec))
    assert rerun.finish() == 0, rerun.stderr
    assert weights(calibrated_bundle(tmp_path)) == uninterrupted["weights"], f"killed {point}: other weights"
    if resumes_at is not None:  # a kill after the train step was done leaves it cached
        info = train_info(tmp_path)["metrics"]
        assert info["resumed_at_epoch"] == resumes_at, rerun.stderr
        if resumes_at:
            assert f"resuming at epoch {resumes_at}" in rerun.stderr
    else:
        assert "[train] cache hit" in rerun.stderr
    assert_clean(tmp_path)


@pytest.mark.parametrize(
    "signum, code, says", [(signal.SIGTERM, 143, "terminated (SIGTERM)"), (signal.SIGINT, 130, "interrupted (SIGINT)")]
)
def test_sigterm_and_sigint_clean_up_and_the_rerun_resumes(signum, code, says, tmp_path, uninterrupted):
    spec = make_folder(tmp_path)
    run = Run("calibrate", str(spec))
    run.wait_for(_checkpoint(tmp_path), "the first checkpoint")
    time.sleep(0.3)
    run.process.send_signal(signum)
    assert run.finish() == code, run.stderr
    assert says in run.stderr and "Traceback" not in run.stderr, run.stderr
    assert_clean(tmp_path)  # the signal's clean-up ran: no scratch, runs ended
    assert "KILLED" in run_statuses(tmp_path)
    rerun = Run("calibrate", str(spec))
    assert rerun.finish() == 0, rerun.stderr
    assert "resuming at epoch 2" in rerun.stderr
    assert weights(calibrated_bundle(tmp_path)) == uninterrupted["weights"]
    assert_clean(tmp_path)


def test_two_runs_started_together_on_a_fresh_workdir(tmp_path, uninterrupted):
    spec = make_folder(tmp_path)
    runs = [Run("run", str(spec), "--json", stdout=subprocess.PIPE) for _ in range(2)]
    codes = [run.finish() for run in runs]
    assert codes == [0, 0], [run.stderr for run in runs]
    assert sum("[train] cache hit" in run.stderr for run in runs) == 1  # the second waited, then reused it
    results = [json.loads(run.process.stdout.read()) for run in runs]
    assert results[0]["metrics"] == results[1]["metrics"]
    assert weights(calibrated_bundle(tmp_path)) == uninterrupted["weights"]
    assert_clean(tmp_path)


def test_a_write_past_the_file_size_limit_is_a_machine_error(tmp_path, uninterrupted):
    spec = make_folder(tmp_path)
    assert Run("fit", str(spec)).finish() == 0

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    bundle = tmp_path / ".snn" / "bundles" / "tiny.raw"
    run = Run(
        "predict", str(bundle), str(tmp_path / "train.csv"), "-o", str(tmp_path / "out.parquet"), preexec_fn=small_files
    )
    assert run.finish() == 1
    assert "past the size limit" in run.stderr and "bug in snn" not in run.stderr, run.stderr
    assert not (tmp_path / "out.parquet").exists() and not list(tmp_path.glob(".out.parquet*"))
