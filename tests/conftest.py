"""Shared fixtures: spec files written into temporary folders, pointing at the repo's data."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from snn.cli.app import app

ROOT = Path(__file__).resolve().parents[1]
ADULT_DIR = ROOT / "data" / "adult"
SHARED_DATA = Path(os.environ.get("SNN_SHARED_DATA", ROOT.parent / "shared" / "data"))
CRITEO = SHARED_DATA / "criteo" / "train_examples.txt"
ADULT_COLUMNS = [
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education_num",
    "marital_status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital_gain",
    "capital_loss",
    "hours_per_week",
    "native_country",
    "income",
]


def adult_spec_dict(**overrides) -> dict:
    """specs/adult.yaml with absolute data paths, updated by `overrides` (top-level keys)."""
    spec = yaml.safe_load((ROOT / "specs" / "adult.yaml").read_text())
    spec["data"]["train"]["path"] = str(ADULT_DIR / "adult.data")
    spec["data"]["test"]["path"] = str(ADULT_DIR / "adult.test")
    for key, value in overrides.items():
        spec[key] = value
    return spec


def small_adult_spec_dict() -> dict:
    """A fast Adult spec: 4,000 train rows, 1,500 test rows, 2 epochs."""
    spec = adult_spec_dict()
    spec["data"]["train"]["rows"] = [0, 4000]
    spec["data"]["test"]["rows"] = [0, 1500]
    spec["train"].update(epochs=2, early_stopping=None)
    spec["validation"]["gates"] = {}
    return spec


def write_spec(folder: Path, spec: dict, name: str = "spec.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture
def runner():
    return CliRunner()


def invoke(runner, *args):
    """Run the CLI in-process; returns click's Result (exit_code, stdout, stderr)."""
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="session")
def small_run(tmp_path_factory):
    """The small Adult spec, fitted and calibrated once for the session."""
    folder = tmp_path_factory.mktemp("small")
    spec_path = write_spec(folder, small_adult_spec_dict())
    result = invoke(CliRunner(), "calibrate", spec_path, "--json")
    assert result.exit_code == 0, result.stderr
    return spec_path


@contextmanager
def environment(name: str, value: str):
    """The environment variable `name` set to `value` inside the block, restored after it."""
    saved = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved


@contextmanager
def native_off():
    """SNN_NATIVE=0 inside the block: every kernel off, the references run; the libraries are loaded
    afresh after it (the environment restored first, so no test inherits a cached absence)."""
    from snn.pipeline import native

    try:
        with environment("SNN_NATIVE", "0"):
            native.forget_libraries()
            yield
    finally:
        native.forget_libraries()


@pytest.fixture(params=["native", "fallback"])
def kernels(request):
    """Runs a test twice: with the native kernels, and with SNN_NATIVE=0 (the numpy, polars and torch
    references every kernel sits beside)."""
    from snn.pipeline.native.loader import library

    if request.param == "native":
        if library() is None:
            pytest.skip("no C compiler: the native kernels cannot be built")
        yield request.param
    else:
        with native_off():
            yield request.param


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    port = _free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    proc = subprocess.Popen(
        [
            str(mlflow_bin),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'server.db'}",
            "--artifacts-destination",
            str(tmp_path / "artifacts"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    try:
        while True:
            try:
                with urllib.request.urlopen(uri + "/health", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail("mlflow server did not start within 90 s")
                time.sleep(0.5)
        yield uri
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
