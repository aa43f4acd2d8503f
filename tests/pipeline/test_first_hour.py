"""A new user's first hour: `snn init` on a fresh CSV, `snn run` with no hand edits, the MLflow
runs read back through MLflow's client, the shorthand a user types, `--no-tracking`, and `--json`
errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from tests.conftest import invoke


def clicks_csv(path: Path, rows: int = 4000, seed: int = 0) -> Path:
    """A click log as a user would have it: an id, numbers, text, a yes/no flag and a 0/1 label
    drawn from a planted logistic model (so a model has something to learn)."""
    rng = np.random.default_rng(seed)
    age = rng.integers(18, 80, rows)
    country = rng.choice(["us", "fr", "de", "jp", "br"], rows)
    device = rng.choice(["mobile", "desktop", "tablet"], rows)
    returning = rng.choice(["yes", "no"], rows)
    logit = 0.04 * (age - 45) + 1.2 * (country == "fr") - 0.8 * (device == "tablet") + 0.5 * (returning == "yes") - 1
    clicked = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    pl.DataFrame(
        {
            "impression_id": np.arange(rows) * 7 + 11,
            "age": age,
            "country": country,
            "device": device,
            "returning": returning,
            "clicked": clicked,
        }
    ).write_csv(path)
    return path


@pytest.fixture(scope="module")
def first_hour(tmp_path_factory):
    """`snn init clicks.csv` then `snn run spec.yaml` (two epochs faster: the walk is the point)."""
    folder = tmp_path_factory.mktemp("first_hour")
    data = clicks_csv(folder / "clicks.csv")
    runner = CliRunner()
    init = invoke(runner, "init", data, "-o", folder / "spec.yaml", "--json")
    assert init.exit_code == 0, init.stderr
    run = invoke(runner, "run", folder / "spec.yaml", "--json")
    assert run.exit_code == 0, run.stderr
    return {
        "folder": folder,
        "runner": runner,
        "init": json.loads(init.stdout),
        "run": json.loads(run.stdout),
    }


def test_init_infers_kinds_label_key_and_a_held_out_test_split(first_hour):
    init = first_hour["init"]
    assert init["label"] == "clicked" and init["key"] == "impression_id" and init["rows"] == 4000
    assert init["features"] == {
        "age": "continuous",
        "country": "categorical",
        "device": "categorical",
        "returning": "binary",
    }
    spec = yaml.safe_load((first_hour["folder"] / "spec.yaml").read_text())
    assert spec["data"]["train"]["rows"] == [0, 3200] and spec["data"]["test"]["rows"] == [3200, 4000]
    assert (first_hour["folder"] / "snn.schema.json").is_file()  # the spec's header points editors at it


def test_the_spec_init_wrote_runs_to_a_held_out_verdict(first_hour):
    run = first_hour["run"]
    assert run["verdict"]["passed"] and run["gated_split"] == "test" and not run["verdict"]["in_sample"]
    assert run["metrics"]["test"]["calibrated"]["auc"] > 0.65  # the planted model is learnable


def test_mlflow_run_read_back_through_the_client(first_hour):
    run = first_hour["run"]
    client = MlflowClient(run["tracking_uri"])
    parent = client.get_run(run["mlflow_run_id"])
    assert parent.info.run_name == "clicks · run" and parent.info.status == "FINISHED"
    tags, metrics = parent.data.tags, parent.data.metrics
    assert tags["snn.command"] == "run" and tags["snn.spec"] == "clicks" and tags["snn.verdict"] == "pass"
    assert len(tags["snn.spec_hash"]) == 64 and tags["snn.version"]
    assert metrics["test_auc"] == pytest.approx(run["metrics"]["test"]["calibrated"]["auc"], abs=1e-12)
    for name in ("test_logloss", "test_calibration_ratio", "test_raw_auc", "verdict_passed"):
        assert name in metrics
    params = parent.data.params
    assert params["train.epochs"] == "4" and "None" not in params.values()  # only what the spec sets
    assert "train.weight_decay" not in params  # a default the spec does not write
    inputs = {(d.dataset.name, d.tags[0].value) for d in parent.inputs.dataset_inputs}
    assert inputs == {("train: clicks.csv", "train"), ("test: clicks.csv", "test")}
    digests = {d.dataset.digest for d in parent.inputs.dataset_inputs}
    assert len(digests) == 2  # one file, two row ranges


def test_a_fully_cached_run_starts_no_run_and_names_the_one_that_built_it(first_hour):
    client = MlflowClient(first_hour["run"]["tracking_uri"])
    experiment = client.get_experiment_by_name("clicks").experiment_id
    before = len(client.search_runs([experiment]))
    again = invoke(first_hour["runner"], "run", first_hour["folder"] / "spec.yaml", "--json")
    assert again.exit_code == 0, again.stderr
    out = json.loads(again.stdout)
    assert set(out["steps"]) == {"prepare", "train", "calibrate", "validate"}
    assert all(step["cached"] for step in out["steps"].values())
    built = json.loads((Path(out["steps"]["validate"]["path"]) / "step.json").read_text())["mlflow_run_id"]
    assert out["mlflow_run_id"] is None and built is not None and out["mlflow_built_by"] == built
    assert len(client.search_runs([experiment])) == before  # nothing ran: nothing new to log
    assert out["metrics"] == first_hour["run"]["metrics"] and out["verdict"] == first_hour["run"]["verdict"]


def test_a_partly_cached_command_logs_only_the_steps_that_ran(first_hour, tmp_path):
    spec = first_hour["folder"] / "spec.yaml"
    again = invoke(first_hour["runner"], "validate", spec, "--force-step", "calibrate", "--json")
    assert again.exit_code == 0, again.stderr
    out = json.loads(again.stdout)
    client = MlflowClient(out["tracking_uri"])
    parent = client.get_run(out["mlflow_run_id"])
    assert parent.info.run_name == "clicks · validate"
    assert parent.data.tags["snn.cached_steps"] == "prepare,train"
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert sorted(run.data.tags["snn.step"] for run in children) == ["calibrate", "validate"]


def test_two_specs_of_one_name_keep_their_own_reports(first_hour):
    folder = first_hour["folder"]
    spec = yaml.safe_load((folder / "spec.yaml").read_text())
    spec["validation"]["gates"] = {"auc": {"min": 0.99}}  # the same name, another spec: its verdict fails
    (folder / "strict.yaml").write_text(yaml.safe_dump(spec))
    strict = invoke(first_hour["runner"], "run", folder / "strict.yaml", "--json")
    assert strict.exit_code == 3
    reports = folder / ".snn" / "reports" / "clicks"
    dated = sorted({p.resolve() for p in reports.iterdir() if p.name != "latest"})
    assert len(dated) == 2  # a report per spec, kept (a link per validate that ran)
    assert (reports / "latest").resolve() == Path(json.loads(strict.stdout)["report"])
    verdicts = {json.loads((p / "verdict.json").read_text())["passed"] for p in dated}
    assert verdicts == {True, False}
    assert Path(first_hour["run"]["report"]).is_dir()  # the first spec's report is still there


def test_no_tracking_writes_no_mlflow_store(tmp_path, runner):
    data = clicks_csv(tmp_path / "clicks.csv", rows=1500, seed=1)
    assert invoke(runner, "init", data, "-o", tmp_path / "spec.yaml").exit_code == 0
    result = invoke(runner, "fit", tmp_path / "spec.yaml", "--no-tracking", "--json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["mlflow_run_id"] is None and out["tracking_uri"] is None
    assert not (tmp_path / ".snn" / "mlflow.db").exists()
    refused = invoke(runner, "fit", tmp_path / "spec.yaml", "--no-tracking", "--register", "m")
    assert refused.exit_code == 2 and "--no-tracking" in refused.stderr


def test_shorthand_a_user_types(tmp_path):
    from snn.pipeline.spec import parse_spec

    spec = parse_spec(
        "version: 1\nname: s\ndata: {format: csv, train: clicks.csv, label: clicked, holdout: 0.1}\n"
        "features: [{name: age, kind: continuous}]\n"
    )
    assert spec.data.train.path == "clicks.csv" and spec.data.label.column == "clicked"
    assert spec.data.holdout.fraction == 0.1


@pytest.mark.parametrize(
    ("yaml_text", "says"),
    [
        ("train: [clicks.csv]", "write `{path: data.csv}` (or the path alone"),
        ("train: clicks.csv\n  holdout: ten", "write `{fraction: 0.1}` (or the fraction alone"),
        ("train: clicks.csv\n  label: [clicked]", "write `{column: clicked}` (or the column name alone"),
    ],
)
def test_type_errors_say_what_to_write(tmp_path, runner, yaml_text, says):
    text = f"version: 1\nname: s\ndata:\n  format: csv\n  {yaml_text}\n"
    text += "  holdout: 0.1\n" if "holdout" not in yaml_text else ""
    text += "  label: clicked\n" if "label" not in yaml_text else ""
    (tmp_path / "spec.yaml").write_text(text + "features: [{name: age, kind: continuous}]\n")
    result = invoke(runner, "fit", tmp_path / "spec.yaml")
    assert result.exit_code == 2
    assert says in result.stderr and "instance of" not in result.stderr


def test_json_errors_are_one_object_on_stdout(tmp_path):
    (tmp_path / "spec.yaml").write_text("version: 1\nname: s\n")
    snn = [sys.executable, "-m", "snn.cli.app"]
    spec_error = subprocess.run([*snn, "fit", str(tmp_path / "spec.yaml"), "--json"], capture_output=True, text=True)
    assert spec_error.returncode == 2
    out = json.loads(spec_error.stdout)
    assert out["exit_code"] == 2 and "data" in out["error"] and "required" in out["error"]
    usage = subprocess.run([*snn, "fit", "--json", "--no-such-option"], capture_output=True, text=True)
    assert usage.returncode == 2 and json.loads(usage.stdout)["exit_code"] == 2


def test_spec_prints_every_default(tmp_path, runner):
    (tmp_path / "spec.yaml").write_text(
        "version: 1\nname: s\ndata: {format: csv, train: clicks.csv, label: clicked, holdout: 0.1}\n"
        "features: [{name: age, kind: continuous}]\n"
    )
    result = invoke(runner, "spec", tmp_path / "spec.yaml")
    assert result.exit_code == 0
    resolved = yaml.safe_load(result.stdout)
    assert resolved["train"]["weight_decay"] == 0.5 and resolved["data"]["train"] == {
        "path": "clicks.csv",
        "rows": None,
        "header": None,
    }


def test_a_failed_run_carries_its_error(tmp_path, runner):
    data = clicks_csv(tmp_path / "clicks.csv", rows=1500, seed=2)
    assert invoke(runner, "init", data, "-o", tmp_path / "spec.yaml").exit_code == 0
    frame = pl.read_csv(data)
    frame.with_columns(clicked=pl.col("clicked") * 2).write_csv(data)  # labels 0/2: not a probability
    failed = invoke(runner, "fit", tmp_path / "spec.yaml", "--json")
    assert failed.exit_code == 2
    error = json.loads(failed.stdout)["error"]
    assert "label.positive" in error
    client = MlflowClient(f"sqlite:///{tmp_path / '.snn' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("clicks").experiment_id])
    parent = next(run for run in runs if run.info.run_name == "clicks · fit")
    assert parent.info.status == "FAILED"
    assert "outside [0, 1]" in parent.data.tags["snn.error"]
    assert parent.data.tags["mlflow.note.content"].startswith("failed: ")


def test_predict_reads_a_parquet_file_with_a_bundle_trained_on_csv(first_hour, tmp_path):
    rows = pl.read_csv(first_hour["folder"] / "clicks.csv").slice(3200, 50).drop("clicked")
    rows.write_parquet(tmp_path / "new.parquet")
    bundle = first_hour["run"]["bundle"]
    result = invoke(first_hour["runner"], "predict", bundle, tmp_path / "new.parquet", "-o", tmp_path / "p.csv")
    assert result.exit_code == 0, result.stderr
    scored = pl.read_csv(tmp_path / "p.csv")
    assert scored.height == 50 and scored.columns[:2] == ["impression_id", "score"]
    as_csv = invoke(
        first_hour["runner"], "predict", bundle, first_hour["folder"] / "clicks.csv", "--rows", "3200:3250", "-o", "-"
    )
    assert as_csv.exit_code == 0, as_csv.stderr
    expected = pl.read_csv(as_csv.stdout.encode())["score"].to_numpy()
    np.testing.assert_allclose(scored["score"].to_numpy(), expected, rtol=0, atol=1e-12)


def test_init_quotes_what_yaml_would_retype_and_keeps_the_positive_values(tmp_path, runner):
    rows = 300
    pl.DataFrame({"x": np.arange(rows) % 7, "true": np.arange(rows) % 2}).write_csv(tmp_path / "2024.csv")
    assert invoke(runner, "init", tmp_path / "2024.csv", "-o", tmp_path / "a.yaml").exit_code == 0
    assert invoke(runner, "spec", tmp_path / "a.yaml").exit_code == 0  # name 2024 and label `true` stay text
    labels = ["+1", "+1", "-1", "1", "+1", "-1", "+1"] * 40  # +1 the majority, written two ways
    lines = [f"{y} {i % 5}:1 {5 + i % 3}:0.5" for i, y in enumerate(labels)]
    (tmp_path / "pm.libsvm").write_text("\n".join(lines) + "\n")
    assert invoke(runner, "init", tmp_path / "pm.libsvm", "-o", tmp_path / "b.yaml").exit_code == 0
    spec = yaml.safe_load((tmp_path / "b.yaml").read_text())
    assert spec["data"]["label"] == {"column": "label", "positive": ["+1", "1"]}
