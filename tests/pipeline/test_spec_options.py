"""Every spec option runs end to end, and the online scorer equals the batch scorer for each architecture."""

import json

import numpy as np
import polars as pl
import pytest

from ..conftest import invoke, write_spec


def write_data(folder, n, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    flag = rng.uniform(size=n) < 0.5
    city = rng.choice([f"city{i}" for i in range(30)], n)
    logit = 1.5 * x + 1.0 * flag - 1.5 + (np.char.endswith(city.astype(str), "7") * 1.0)
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-logit))).astype(int)
    frame = pl.DataFrame(
        {
            "uid": [f"u{seed}-{i}" for i in range(n)],
            "x": x.round(4),
            "amount": np.abs(x * 100).round(1),
            "flag": np.where(flag, "yes", "no"),
            "city": city,
            "weight": rng.uniform(0.5, 2.0, n).round(3),
            "y": y,
        }
    )
    frame.write_csv(folder / f"part{seed}.csv")


def options_spec(variant: str) -> dict:
    spec = {
        "version": 1,
        "name": f"options-{variant}",
        "data": {
            "format": "csv",
            "train": {"path": "part0.csv"},
            "validation": {"path": "part1.csv"},
            "test": {"path": "part2.csv"},
            "label": {"column": "y"},
            "key": "uid",
            "weight": "weight",
        },
        "features": [
            {"name": "x", "kind": "continuous", "discretizer": {"kind": "hashing", "bins": 16, "buckets": 64}},
            {"name": "amount", "kind": "continuous", "discretizer": {"kind": "none"}},
            {"name": "flag", "kind": "binary"},
            {"name": "city", "kind": "categorical", "hash_buckets": 16},
        ],
        "train": {"epochs": 3, "batch_size": 128, "seed": 1, "device": "cpu"},
    }
    if variant == "a":
        spec["model"] = {
            "sparse_linear": {"width": 8, "activation": "prelu"},
            "mlp": {"layers": [8], "activation": "prelu", "norm": "batch", "dropout": 0.1},
        }
        spec["train"].update(optimizer="adagrad", lr=0.05, negative_downsampling={"rate": 0.5, "seed": 3})
        spec["calibration"] = {"kind": "none"}
    else:
        spec["model"] = {
            "sparse_linear": {"width": 8, "activation": "tanh"},
            "interactions": {"dim": 4},
            "mlp": {"layers": [8, 4], "activation": "sigmoid", "norm": "layer"},
        }
        spec["train"]["early_stopping"] = {"metric": "logloss", "patience": 1}
        spec["calibration"] = {"kind": "isotonic", "interpolation": "block_ends", "pseudo_count": 2.0}
        spec["validation"] = {
            "ece_bins": 5,
            "logloss_eps": 1e-6,
            "gates": {"auc": {"max_drop_vs_baseline": 0.05}, "logloss": {"max_increase_vs_baseline": 0.05}},
        }
        spec["parity"] = {"atol": 1e-9, "rtol": 0.0, "worst_rows": 3}
    return spec


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("options")
    for seed, n in ((0, 3000), (1, 1000), (2, 1000)):
        write_data(folder, n, seed)
    return folder


@pytest.mark.parametrize("variant", ["a", "b"])
def test_options_run_and_online_equals_batch(runner, data_dir, variant):
    spec = write_spec(data_dir, options_spec(variant), f"{variant}.yaml")
    result = invoke(runner, "calibrate", spec, "--json")
    assert result.exit_code == 0, result.stderr
    bundle = json.loads(result.stdout)["steps"]["calibrate"]["bundle"]
    meta = json.loads((data_dir / ".snn" / "bundles" / f"options-{variant}" / "bundle.json").read_text())
    assert meta["sampling"]["negative_rate"] == (0.5 if variant == "a" else 1.0)
    assert meta["calibrated"] is (variant == "b")
    batch, online = data_dir / f"batch-{variant}.parquet", data_dir / f"online-{variant}.parquet"
    assert invoke(runner, "predict", bundle, data_dir / "part2.csv", "-o", batch).exit_code == 0
    assert invoke(runner, "predict", bundle, data_dir / "part2.csv", "-o", online, "--online").exit_code == 0
    b, o = pl.read_parquet(batch), pl.read_parquet(online)
    assert b["uid"].to_list() == o["uid"].to_list()
    np.testing.assert_allclose(b["score"].to_numpy(), o["score"].to_numpy(), rtol=0, atol=1e-12)
    args = ["validate", spec, "--compare", online, "--json"]
    if variant == "b":
        args += ["--baseline", bundle]  # the model against itself: every *_vs_baseline gate passes
    result = invoke(runner, *args)
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["parity"]["passed"] and out["parity"]["rows_compared"] == 1000
    test = out["metrics"]["test"]
    assert test["calibrated"]["auc"] > 0.7
    if variant == "a":  # the analytic correction undoes the 50% negative downsampling
        assert abs(test["calibrated"]["calibration_ratio"] - 1) < 0.15
        assert test["uncorrected"]["calibration_ratio"] > test["calibrated"]["calibration_ratio"] + 0.1
        assert abs(test["raw"]["calibration_ratio"] - 1) < 0.15  # raw: with the analytic correction
    else:
        checks = {(c["metric"], c["rule"]) for c in out["verdict"]["checks"]}
        assert checks == {("auc", "max_drop_vs_baseline"), ("logloss", "max_increase_vs_baseline")}


def test_grading_without_a_test_split_is_flagged_in_sample(runner, data_dir):
    """No test split: the verdict, the report, the run's tags and stderr say the figures are
    in-sample (the validation rows chose the epoch and fit the calibrator); with one they do not."""
    import mlflow

    spec = options_spec("b")
    spec["name"] = "no-test"
    del spec["data"]["test"]
    spec["validation"] = {"gates": {"auc": {"min": 0.5}}}
    result = invoke(runner, "validate", write_spec(data_dir, spec, "no-test.yaml"), "--json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    verdict = out["verdict"]
    assert verdict["split"] == "validation" and verdict["in_sample"] is True
    assert "IN-SAMPLE" in verdict["warning"] and "IN-SAMPLE" in result.stderr
    assert (
        json.loads((data_dir / ".snn" / "reports" / "no-test" / "latest" / "verdict.json").read_text())["in_sample"]
        is True
    )
    mlflow.set_tracking_uri(out["tracking_uri"])
    tags = mlflow.search_runs(experiment_names=["no-test"], filter_string="tags.`snn.step` = 'validate'")
    assert tags["tags.snn.in_sample"].tolist() == ["true"]

    with_test = invoke(runner, "validate", write_spec(data_dir, options_spec("a"), "a.yaml"), "--json")
    assert json.loads(with_test.stdout)["verdict"]["in_sample"] is False and "IN-SAMPLE" not in with_test.stderr


def test_auto_calibration_records_its_choice_and_evidence(runner, data_dir):
    """The default calibration picks by cross-validated log loss and writes down why: in the step's
    output, the bundle (bundle.json, calibrator.json) and the calibrate step's MLflow run."""
    import mlflow

    spec = options_spec("b")
    spec["name"] = "auto-calibration"
    del spec["calibration"]
    result = invoke(runner, "calibrate", write_spec(data_dir, spec, "auto.yaml"), "--json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    losses = out["evidence"]["cv_logloss"]
    assert set(losses) == {"shift", "platt", "isotonic", "none"}
    assert out["calibrator"] == min(["shift", "platt", "isotonic"], key=losses.get)
    shown = invoke(runner, "calibrate", data_dir / "auto.yaml")  # cached: the human output
    assert f"calibrator: {out['calibrator']}  (cross-validated log loss: shift " in shown.stderr
    bundle = data_dir / ".snn" / "bundles" / "auto-calibration"
    recorded = json.loads((bundle / "bundle.json").read_text())["metrics"]["calibrate"]
    assert recorded["calibrator"] == out["calibrator"] and recorded["evidence"]["cv_logloss"] == losses
    assert (bundle / "calibrator.json").is_file()
    mlflow.set_tracking_uri(out["tracking_uri"])
    runs = mlflow.search_runs(
        experiment_names=["auto-calibration"],
        filter_string="tags.`snn.step` = 'calibrate' and tags.`snn.cache_hit` = 'false'",
    )
    assert runs["params.calibrator"].tolist() == [out["calibrator"]]
    assert runs["metrics.cv_logloss_none"].tolist() == [pytest.approx(losses["none"])]
    inspected = invoke(runner, "inspect", bundle)
    assert inspected.exit_code == 0 and "(cross-validated log loss: shift " in inspected.stdout


@pytest.mark.parametrize("kind", ["platt", "shift"])
def test_explicit_logistic_calibrators_keep_the_validation_mean(runner, data_dir, kind):
    spec = options_spec("b")
    spec["name"] = f"calibrated-{kind}"
    spec["calibration"] = {"kind": kind}
    spec["train"]["table_l2"] = 1e-3  # wired through to the row-wise optimizer
    result = invoke(runner, "calibrate", write_spec(data_dir, spec, f"{kind}.yaml"), "--json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["calibrator"] == kind and out["metrics"]["val_calibration_ratio_calibrated"] == pytest.approx(
        1, abs=1e-6
    )
    stored = json.loads((data_dir / ".snn" / "bundles" / f"calibrated-{kind}" / "calibrator.json").read_text())
    assert stored["kind"] == "platt" and (stored["slope"] == 1.0) == (kind == "shift")
    recipe = json.loads((data_dir / ".snn" / "bundles" / f"calibrated-{kind}" / "recipe.json").read_text())
    assert recipe["train"]["table_l2"] == 1e-3 and recipe["calibration"]["kind"] == kind


def test_a_position_feature_is_trained_on_and_served_fixed(runner, tmp_path):
    """Position 1..5 lowers the click rate (planted). Trained with the column, served as position 1:
    the served scores ignore the file's positions (shuffled or absent give the same scores, online
    too), and validate grades the served setting, whose raw scores are those of the top slot
    (above the overall rate, which the calibrator then brings back)."""
    rng = np.random.default_rng(4)
    for name, n in (("train.csv", 6000), ("test.csv", 2000)):
        x = rng.normal(size=n)
        slot = rng.integers(1, 6, n)
        logit = 1.2 * x - 0.6 * (slot - 1)
        y = (rng.uniform(size=n) < 1 / (1 + np.exp(-logit))).astype(int)
        pl.DataFrame({"uid": [f"{name}{i}" for i in range(n)], "x": x.round(4), "slot": slot, "y": y}).write_csv(
            tmp_path / name
        )
    spec = {
        "version": 1,
        "name": "positions",
        "data": {
            "format": "csv",
            "train": {"path": "train.csv"},
            "test": {"path": "test.csv"},
            "holdout": {"fraction": 0.25, "seed": 2},
            "label": {"column": "y"},
            "key": "uid",
        },
        "features": [{"name": "x", "kind": "continuous"}, {"name": "slot", "kind": "position", "serve_as": 1}],
        "model": {"sparse_linear": {"width": 8}, "mlp": {"layers": [8]}},
        "train": {"epochs": 4, "batch_size": 128, "seed": 1, "device": "cpu"},
        "validation": {"gates": {}},
    }
    path = write_spec(tmp_path, spec)
    result = invoke(runner, "validate", path, "--json")
    assert result.exit_code == 0, result.stderr
    test = json.loads(result.stdout)["metrics"]["test"]
    assert test["raw"]["calibration_ratio"] > 1.15  # every row scored as if shown in the top slot
    assert abs(test["calibrated"]["calibration_ratio"] - 1) < 0.1
    bundle = tmp_path / ".snn" / "bundles" / "positions"
    frame = pl.read_csv(tmp_path / "test.csv")
    frame.with_columns(pl.col("slot").shuffle(seed=3)).write_csv(tmp_path / "shuffled.csv")
    frame.drop("slot").write_csv(tmp_path / "no_slot.csv")
    scores = []
    for name, online in (("test.csv", False), ("shuffled.csv", False), ("no_slot.csv", False), ("no_slot.csv", True)):
        out = tmp_path / f"scores-{name}-{online}.parquet"
        args = ["predict", bundle, tmp_path / name, "-o", out] + (["--online"] if online else [])
        result = invoke(runner, *args)
        assert result.exit_code == 0, result.stderr
        scores.append(pl.read_parquet(out)["score"].to_numpy())
    for other in scores[1:]:
        np.testing.assert_allclose(other, scores[0], rtol=0, atol=1e-12)
