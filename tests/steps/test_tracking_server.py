"""Integration: `snn fit` against a real `mlflow server` on 127.0.0.1, read back with the client."""

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ..conftest import invoke, small_adult_spec_dict, write_spec


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


@pytest.mark.integration
def test_fit_logs_to_a_real_mlflow_server(runner, tmp_path, mlflow_server):
    spec = write_spec(tmp_path / "work", small_adult_spec_dict())
    result = invoke(runner, "fit", spec, "--json", "--tracking-uri", mlflow_server)
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["tracking_uri"] == mlflow_server
    client = MlflowClient(mlflow_server)
    parent = client.get_run(out["mlflow_run_id"])
    assert parent.data.tags["snn.command"] == "fit"
    train_run = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}' and tags.`snn.step` = 'train'",
    )[0]
    assert train_run.data.metrics["best_val_auc"] == pytest.approx(out["metrics"]["best_val_auc"])
    assert len(client.get_metric_history(train_run.info.run_id, "val_logloss")) == 2
    assert "bundle" in {a.path for a in client.list_artifacts(train_run.info.run_id)}
