"""Integration: `snn fit` against a real `mlflow server` on 127.0.0.1, read back with the client."""

import json

import mlflow
import numpy as np
import polars as pl
import pytest
from mlflow.tracking import MlflowClient

import snn

from ..conftest import ADULT_DIR, invoke, small_adult_spec_dict, write_spec


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
    # the raw bundle is an MLflow model of the train run, loaded back through pyfunc from the server
    (logged,) = client.search_logged_models(
        [parent.info.experiment_id], filter_string=f"source_run_id = '{train_run.info.run_id}'"
    )
    mlflow.set_tracking_uri(mlflow_server)
    pyfunc = mlflow.pyfunc.load_model(f"models:/{logged.model_id}")
    model = snn.load(out["bundle"])
    rows = model.bundle.reader.read(ADULT_DIR / "adult.test", (0, 200))
    numbers = [name for name, kind in model.schema.items() if kind == "continuous"]  # the signature's doubles
    served = pyfunc.predict(rows.with_columns(pl.col(numbers).cast(pl.Float64)).to_pandas())
    assert list(served.columns) == ["score", "raw_score"]
    np.testing.assert_allclose(served["score"].to_numpy(), model.score(rows), rtol=0, atol=1e-12)


@pytest.mark.integration
def test_register_and_promote_only_on_a_passing_verdict(runner, tmp_path, mlflow_server):
    """validate --register NAME --promote champion on a real server: a passing verdict registers a version and
    points the alias at it (pyfunc loads models:/NAME@champion); a failing one registers a version but leaves
    the alias where it was; a registration that fails leaves no registered model behind."""
    from snn.pipeline.errors import TrackingError
    from snn.pipeline.serving.mlflow_model import register

    spec = write_spec(tmp_path / "work", small_adult_spec_dict())
    args = ("--tracking-uri", mlflow_server, "--register", "adult", "--promote", "champion", "--json")
    passed = invoke(runner, "validate", spec, *args)
    assert passed.exit_code == 0, passed.stderr
    registered = json.loads(passed.stdout)["registered"]
    assert registered["model_uri"].startswith("models:/m-")
    assert {k: v for k, v in registered.items() if k != "model_uri"} == {
        "name": "adult",
        "version": "1",
        "alias": "champion",
    }
    client = MlflowClient(mlflow_server)
    assert client.get_model_version_by_alias("adult", "champion").version == "1"
    mlflow.set_tracking_uri(mlflow_server)
    try:
        champion = mlflow.pyfunc.load_model("models:/adult@champion")
    finally:
        mlflow.set_tracking_uri(None)
    model = snn.load(json.loads(passed.stdout)["bundle"])
    rows = model.bundle.reader.read(ADULT_DIR / "adult.test", (0, 50))
    numbers = [name for name, kind in model.schema.items() if kind == "continuous"]
    assert len(champion.predict(rows.with_columns(pl.col(numbers).cast(pl.Float64)).to_pandas())) == 50

    failing = small_adult_spec_dict()
    failing["validation"]["gates"] = {"auc": {"min": 0.999}}
    failed = invoke(runner, "validate", write_spec(tmp_path / "work", failing, "failing.yaml"), *args)
    assert failed.exit_code == 3
    registered = json.loads(failed.stdout)["registered"]
    assert registered["version"] == "2" and "alias_refused" in registered
    assert client.get_model_version_by_alias("adult", "champion").version == "1"

    with pytest.raises(TrackingError, match="could not register"):
        register("models:/m-0123456789abcdef", "ghost", mlflow_server)
    assert "ghost" not in {model.name for model in client.search_registered_models()}
    usage = invoke(runner, "validate", spec, "--promote", "champion")
    assert usage.exit_code == 2 and "--register" in usage.stderr
