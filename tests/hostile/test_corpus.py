"""Run every case of the hostile corpus (corpus.py): the exit code it promises, no traceback, no
"bug in snn", and a message that names the thing."""

from __future__ import annotations

import signal
from contextlib import contextmanager

import pytest
from typer.testing import CliRunner

from snn.cli.app import app

from ..conftest import environment
from .corpus import CASES, Workspace, base_spec, write_base, write_spec

CASE_SECONDS = 120  # a case that reads a FIFO or /dev/zero would hang: fail it instead


@contextmanager
def deadline(seconds: int):
    def expired(signum, frame):
        raise TimeoutError(f"the case ran past {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def run_cli(args: list[str]):
    with deadline(CASE_SECONDS):
        return CliRunner().invoke(app, args, catch_exceptions=False)


@pytest.fixture(scope="session")
def tracking_store(tmp_path_factory) -> str:
    """One MLflow store per test process for every case (a fresh sqlite store per case costs seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture(scope="session")
def trained(tmp_path_factory, tracking_store):
    """The base spec calibrated, and its test split scored online (online.parquet)."""
    ws = Workspace(tmp_path_factory.mktemp("trained"))
    write_base(ws)
    spec = write_spec(ws, base_spec())
    with environment("MLFLOW_TRACKING_URI", tracking_store):
        result = run_cli(["calibrate", str(spec)])
        assert result.exit_code == 0, result.stderr
        bundle = ws.folder / ".snn" / "bundles" / "tiny"
        result = run_cli(
            ["predict", str(bundle), str(ws.path("test.csv")), "-o", str(ws.path("online.parquet")), "--online"]
        )
        assert result.exit_code == 0, result.stderr
    return ws.folder


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case(case, tmp_path, trained, tracking_store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_store)
    ws = Workspace(tmp_path, trained)
    args = case.build(ws)
    result = run_cli(args)
    stderr = result.stderr
    assert result.exit_code == case.exit_code, f"exit {result.exit_code}, expected {case.exit_code}:\n{stderr}"
    assert "Traceback" not in stderr and "bug in snn" not in stderr, stderr
    for fragment in case.says:
        assert fragment in stderr, f"{fragment!r} not in:\n{stderr}"
    if case.check is not None:
        case.check(ws)


def test_every_class_has_three_cases_and_the_corpus_a_hundred():
    kinds = [c.kind for c in CASES]
    assert len(CASES) >= 100
    assert all(kinds.count(kind) >= 3 for kind in ("silent", "exit", "resource", "message", "fault")), kinds
