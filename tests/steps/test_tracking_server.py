"""Integration: `snn fit` against a real `mlflow server` on 127.0.0.1, read back with the client."""

import json

import mlflow
import numpy as np
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
    served = pyfunc.predict(rows.to_pandas())
    assert list(served.columns) == ["score", "raw_score"]
    np.testing.assert_allclose(served["score"].to_numpy(), model.score(rows), rtol=0, atol=1e-12)
