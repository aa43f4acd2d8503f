"""Bad specs and bad inputs: one clear message each, the right exit code, no traceback."""

import json

import numpy as np
import polars as pl
import pytest
import yaml

from .conftest import ROOT, invoke, write_spec


def tiny_spec(folder, train="train.csv", test="test.csv", **data_overrides) -> dict:
    spec = {
        "version": 1,
        "name": "tiny",
        "data": {
            "format": "csv",
            "train": {"path": train},
            "test": {"path": test},
            "holdout": {"fraction": 0.2, "seed": 1},
            "label": {"column": "y"},
            **data_overrides,
        },
        "features": [
            {"name": "x", "kind": "continuous", "discretizer": {"kind": "percentile", "bins": 4}},
            {"name": "c", "kind": "categorical"},
        ],
        "model": {"sparse_linear": {"width": 4}, "mlp": {"layers": []}},
        "train": {"epochs": 1, "batch_size": 64, "device": "cpu"},
    }
    return spec


def write_frames(folder, n=300, seed=0, **edits):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    frame = pl.DataFrame(
        {
            "x": x.round(3).astype(str),
            "c": rng.choice(["a", "b", "c"], n),
            "y": (x + rng.normal(size=n) > 0).astype(int).astype(str),
        }
    )
    for column, (row, value) in edits.items():
        frame = frame.with_columns(
            pl.when(pl.int_range(pl.len()) == row).then(pl.lit(value)).otherwise(pl.col(column)).alias(column)
        )
    folder.mkdir(parents=True, exist_ok=True)
    frame.write_csv(folder / "train.csv")
    frame.head(100).write_csv(folder / "test.csv")


@pytest.fixture
def tiny(tmp_path):
    write_frames(tmp_path)
    return tmp_path


def run_fit(runner, folder, spec):
    return invoke(runner, "fit", write_spec(folder, spec))


def assert_clean_error(result, code, *fragments):
    assert result.exit_code == code, (result.exit_code, result.stderr)
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def test_unknown_key(runner, tiny):
    spec = tiny_spec(tiny)
    spec["train"]["epochz"] = 3
    assert_clean_error(run_fit(runner, tiny, spec), 2, "train.epochz: unknown key", "spec.yaml:")


def test_wrong_type(runner, tiny):
    spec = tiny_spec(tiny)
    spec["train"]["batch_size"] = "big"
    assert_clean_error(run_fit(runner, tiny, spec), 2, "train.batch_size: Input should be a valid integer")


def test_invalid_yaml(runner, tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text("version: 1\nname: [unclosed\n")
    assert_clean_error(invoke(runner, "fit", path), 2, "is not valid YAML")


def test_missing_spec_file(runner, tmp_path):
    assert_clean_error(invoke(runner, "fit", tmp_path / "nope.yaml"), 2, "does not exist")


def test_missing_environment_variable(runner, tiny):
    spec = tiny_spec(tiny, train="${SNN_TEST_UNSET_VARIABLE}/train.csv")
    assert_clean_error(run_fit(runner, tiny, spec), 2, "environment variable SNN_TEST_UNSET_VARIABLE is not set")


def test_missing_column(runner, tiny):
    spec = tiny_spec(tiny)
    spec["features"][0]["name"] = "xx"
    assert_clean_error(run_fit(runner, tiny, spec), 2, "column(s) xx not found", "the file has: x, c, y")


def test_missing_data_file(runner, tiny):
    assert_clean_error(run_fit(runner, tiny, tiny_spec(tiny, train="nope.csv")), 2, "nope.csv does not exist")


def test_empty_file(runner, tiny):
    (tiny / "empty.csv").write_text("")
    assert_clean_error(run_fit(runner, tiny, tiny_spec(tiny, train="empty.csv")), 2, "is empty")


def test_nan_labels(runner, tmp_path):
    write_frames(tmp_path, y=(17, "nan"))
    assert_clean_error(
        run_fit(runner, tmp_path, tiny_spec(tmp_path)), 2, "label column 'y' has 1 missing or non-numeric"
    )


def test_non_numeric_and_infinite_features(runner, tmp_path):
    write_frames(tmp_path, x=(5, "twelve"))
    assert_clean_error(
        run_fit(runner, tmp_path, tiny_spec(tmp_path)),
        2,
        "'x' is continuous but has non-numeric values such as ['twelve']",
    )
    write_frames(tmp_path, x=(5, "inf"))
    assert_clean_error(run_fit(runner, tmp_path, tiny_spec(tmp_path)), 2, "'x' has infinite values")


def test_overlapping_splits_are_refused(runner, tiny):
    spec = tiny_spec(tiny, test="train.csv")
    assert_clean_error(run_fit(runner, tiny, spec), 2, "data.train and data.test overlap")
    spec["data"]["allow_overlap"] = True
    assert run_fit(runner, tiny, spec).exit_code == 0


def test_unreachable_tracking_server_fails_before_any_work(runner, tiny):
    result = invoke(runner, "fit", write_spec(tiny, tiny_spec(tiny)), "--tracking-uri", "http://127.0.0.1:9")
    assert_clean_error(result, 1, "MLflow tracking server http://127.0.0.1:9 is unreachable")
    assert not (tiny / ".snn" / "steps").exists()


def test_missing_and_corrupted_bundles(runner, tiny, small_run):
    out = tiny / "p.parquet"
    assert_clean_error(invoke(runner, "predict", tiny / "nobundle", tiny / "test.csv", "-o", out), 2, "no bundle at")
    assert_clean_error(invoke(runner, "inspect", tiny / "nobundle"), 2, "no bundle at")
    bundle = small_run.parent / ".snn" / "bundles" / "adult-income"
    broken = tiny / "broken"
    import shutil

    shutil.copytree(bundle, broken)
    (broken / "weights.npz").write_bytes(b"not a zip")
    assert_clean_error(invoke(runner, "predict", broken, ROOT / "data/adult/adult.test", "-o", out), 2, "is corrupted")
    assert not out.exists()
    with np.load(bundle / "weights.npz") as npz:  # weights of another architecture
        weights = {k: npz[k] for k in npz.files}
    weights["sparse.id_bias"] = weights["sparse.id_bias"].reshape(-1)
    np.savez(broken / "weights.npz", **weights)
    assert_clean_error(
        invoke(runner, "predict", broken, ROOT / "data/adult/adult.test", "-o", out),
        2,
        "weight sparse.id_bias is (254,), the plan declares (254, 1)",
        "snn fit --force",
    )


def test_unseen_categories_at_predict_time_use_the_oov_id(runner, tiny, small_run):
    bundle = small_run.parent / ".snn" / "bundles" / "adult-income"
    rows = (ROOT / "data/adult/adult.test").read_text().splitlines()[1:6]
    rows = [r.replace("Private", "Space-agency").replace("United-States", "Atlantis") for r in rows]
    data = tiny / "unseen.csv"
    data.write_text("\n".join(rows) + "\n")
    for flag in ([], ["--online"]):
        out = tiny / f"unseen{len(flag)}.parquet"
        result = invoke(runner, "predict", bundle, data, "-o", out, *flag)
        assert result.exit_code == 0, result.stderr
        scores = pl.read_parquet(out)["score"].to_numpy()
        assert len(scores) == 5 and np.all((scores > 0) & (scores < 1))


def test_bad_rows_option_and_missing_compare_file(runner, tiny, small_run):
    bundle = small_run.parent / ".snn" / "bundles" / "adult-income"
    result = invoke(runner, "predict", bundle, tiny / "test.csv", "-o", tiny / "o.parquet", "--rows", "9:3")
    assert_clean_error(result, 2, "--rows '9:3' is not START:STOP")
    result = invoke(runner, "validate", small_run, "--compare", tiny / "missing.parquet")
    assert_clean_error(result, 2, "missing.parquet does not exist")


def test_failed_gate_exits_3_with_a_verdict(runner, small_run):
    spec = yaml.safe_load(small_run.read_text())
    spec["validation"]["gates"] = {"auc": {"min": 0.999}}
    path = small_run.parent / "gated.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = invoke(runner, "validate", path, "--json")
    assert result.exit_code == 3
    verdict = json.loads(result.stdout)["verdict"]
    assert not verdict["passed"] and "auc" in verdict["failures"][0] and "violates min 0.999" in verdict["failures"][0]
    assert "gate failed" in result.stderr
