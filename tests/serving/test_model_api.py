"""The Python API: snn.load(bundle or MLflow model) -> Model.score / raw / predict / schema, drift."""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest

import snn
from snn.pipeline.errors import ArtifactError, InputError
from snn.pipeline.serving.batch import score_frame
from snn.pipeline.store.bundle import Bundle

from ..conftest import ADULT_DIR, ROOT, invoke


@pytest.fixture(scope="module")
def bundle_folder(small_run):
    return small_run.parent / ".snn" / "bundles" / "adult-income"


@pytest.fixture(scope="module")
def rows(bundle_folder) -> pl.DataFrame:
    return Bundle.load(bundle_folder).reader.read(ADULT_DIR / "adult.test", (0, 300))


def test_every_input_shape_scores_as_the_reference_scorer(bundle_folder, rows):
    model = snn.load(bundle_folder)
    reference = score_frame(model.bundle, rows)
    expected = reference["score"].to_numpy()
    records = rows.to_dicts()
    np.testing.assert_allclose(model.score(records), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(model.score(rows), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(model.score(rows.to_pandas()), expected, rtol=0, atol=1e-12)
    one = model.score(records[7])
    assert isinstance(one, float) and one == pytest.approx(expected[7], abs=1e-12)
    np.testing.assert_allclose(model.raw(records), reference["raw_score"].to_numpy(), rtol=0, atol=1e-12)
    predicted = model.predict(records)
    assert predicted.columns == ["score", "raw_score"] and predicted.height == rows.height


def test_pandas_missing_values_score_as_missing(bundle_folder, rows):
    """pandas writes a missing text as None and a missing number as NaN: both are scored as polars' null."""
    model = snn.load(bundle_folder)
    frame = rows.head(20).with_columns(pl.lit(None, pl.String).alias("workclass"), pl.lit(None).alias("age"))
    as_pandas = frame.to_pandas()
    assert as_pandas["age"].isna().all()
    np.testing.assert_allclose(model.score(as_pandas), model.score(frame), rtol=0, atol=1e-15)


def test_schema_names_every_column_a_record_is_read_for(bundle_folder):
    model = snn.load(bundle_folder)
    assert model.schema["age"] == "continuous" and model.schema["workclass"] == "categorical"
    assert "income" not in model.schema and "row_id" not in model.schema  # label and key are not read
    assert model.metadata()["outputs"] == ["score", "raw_score"]
    assert model.metadata()["spec_sha256"] == model.bundle.recipe.sha256


def test_drift_is_counted_by_default_and_refused_when_strict(bundle_folder, rows):
    records = [{k: v for k, v in r.items() if k != "age"} | {"agee": 1} for r in rows.head(5).to_dicts()]
    lenient = snn.load(bundle_folder)
    assert len(lenient.score(records)) == 5
    assert lenient.drift == {"missing:age": 5, "unknown:agee": 5}
    strict = snn.load(bundle_folder, strict=True)
    with pytest.raises(InputError, match=r"missing feature\(s\) \['age'\] and unknown feature\(s\) \['agee'\]"):
        strict.score(records)
    assert len(strict.score(rows.head(5))) == 5  # the label and key columns are allowed


@pytest.mark.parametrize(
    "bad, message",
    [
        ("a string", "cannot score a str"),
        ([{"age": 30}, 5], "record 1 is int"),
        ([{"age": [1, 2]}], "feature 'age': a record holds list"),
        ([{"age": "old"}], "feature 'age': value 'old' is not a number"),
    ],
)
def test_bad_records_are_input_errors_naming_the_problem(bundle_folder, bad, message):
    with pytest.raises(InputError, match=re.escape(message)):
        snn.load(bundle_folder).score(bad)


def test_load_refuses_what_is_not_a_model(tmp_path):
    with pytest.raises(ArtifactError, match="no bundle at"):
        snn.load(tmp_path)


def test_load_reads_the_mlflow_model_the_fit_logged(runner, small_run, bundle_folder, rows):
    out = json.loads(invoke(runner, "calibrate", small_run, "--force-step", "calibrate", "--json").stdout)
    tracking = out["tracking_uri"]
    import mlflow

    mlflow.set_tracking_uri(tracking)
    try:
        model = snn.load(out["model_uri"])  # models:/<model id>, fetched from the run's store
    finally:
        mlflow.set_tracking_uri(None)
    np.testing.assert_allclose(model.score(rows), snn.load(bundle_folder).score(rows), rtol=0, atol=0)


def test_readme_example_runs(tmp_path, small_run, monkeypatch):
    """The README's Python API example (the block after '<!-- api-example -->') runs as written."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- api-example -->", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    bundle = small_run.parent / ".snn" / "bundles" / "adult-income"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "specs" / ".snn" / "bundles").mkdir(parents=True)
    (tmp_path / "specs" / ".snn" / "bundles" / "adult-income").symlink_to(bundle)
    namespace: dict = {"pd": pd}
    exec(compile(block, "README.md", "exec"), namespace)
    assert 0 < namespace["score"] < 1


def test_pandas_integer_categories_with_a_missing_value_score_as_integers(runner, tmp_path):
    """pandas holds an integer column with a missing value as floats (7 -> 7.0); the Model reads such a
    categorical column back as integers, so it scores as the polars frame does (not as unseen text)."""
    data, spec = tmp_path / "synth.parquet", tmp_path / "spec.yaml"
    assert invoke(runner, "data", "synth", data, "--rows", "4000", "--spec", spec).exit_code == 0
    text = spec.read_text().replace("epochs: 10", "epochs: 1")
    spec.write_text(text)
    fitted = invoke(runner, "fit", spec, "--json")
    assert fitted.exit_code == 0, fitted.stderr
    model = snn.load(json.loads(fitted.stdout)["bundle"])
    frame = pl.read_parquet(data, n_rows=200).with_columns(
        pl.when(pl.int_range(200) % 7 == 0).then(None).otherwise(pl.col("C2")).alias("C2")
    )
    as_pandas = frame.to_pandas()
    assert as_pandas["C2"].dtype == np.float64 and model.schema["C2"] == "categorical"
    np.testing.assert_array_equal(model.score(as_pandas), model.score(frame))
    shifted = frame.to_pandas().assign(C2=lambda f: f["C2"] + 0.5)  # not whole numbers: read as text
    assert not np.array_equal(model.score(shifted), model.score(frame))


def test_a_multi_task_model_scores_pandas_and_pyfunc_as_polars(runner, tmp_path):
    """A two-task bundle calibrated per C1 (a feature and the break-down column): C1 keeps its kind, a pandas
    frame with a missing C1 (integers held as floats) scores as the polars frame, and so does the logged
    pyfunc model, every task's column."""
    import mlflow
    import yaml

    from snn.pipeline.serving.mlflow_model import log_model

    data = tmp_path / "tasks.parquet"
    assert invoke(runner, "data", "synth", data, "--rows", 30_000, "--seed", 0, "--tasks").exit_code == 0
    spec = yaml.safe_load((ROOT / "specs" / "synthetic_tasks.yaml").read_text())
    spec["data"]["train"].update(path=str(data), rows=[0, 25_000])
    spec["data"]["test"].update(path=str(data), rows=[25_000, 30_000])
    spec["tasks"][0]["breakdown"]["min_positives"] = 20
    spec["train"]["epochs"] = 1
    spec.pop("validation", None)
    path = tmp_path / "tasks.yaml"
    path.write_text(yaml.safe_dump(spec))
    calibrated = invoke(runner, "calibrate", path, "--json")
    assert calibrated.exit_code == 0, calibrated.stderr
    bundle = json.loads(calibrated.stdout)["bundle"]
    model = snn.load(bundle)
    assert model.schema["C1"] == "categorical" and model.bundle.slice_columns == ["C1"]
    frame = pl.read_parquet(data, n_rows=300).with_columns(
        pl.when(pl.int_range(300) % 5 == 0).then(None).otherwise(pl.col("C1")).alias("C1")
    )
    expected = model.predict(frame)
    assert expected.columns == ["score_click", "score_convert", "raw_score_click", "raw_score_convert"]
    np.testing.assert_array_equal(model.predict(frame.to_pandas()).to_numpy(), expected.to_numpy())
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        mlflow.set_experiment("tasks")
        with mlflow.start_run():
            uri = log_model(Path(bundle), frame.head(5))
        served = mlflow.pyfunc.load_model(uri).predict(frame.to_pandas())
    finally:
        mlflow.set_tracking_uri(None)
    np.testing.assert_array_equal(served[expected.columns].to_numpy(), expected.to_numpy())
