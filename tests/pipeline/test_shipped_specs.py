"""Every spec under specs/ runs end to end (Adult's acceptance run is in test_pipeline_adult.py)."""

import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from snn.pipeline.serving.online import OnlineScorer
from snn.pipeline.store.bundle import Bundle

from ..conftest import ADULT_DIR, CRITEO, ROOT, invoke

RUN_ELSEWHERE = (
    "adult.yaml",
    "adult_trees.yaml",
    "synthetic.yaml",
    "synthetic_lists.yaml",
    "synthetic_positions.yaml",
    "synthetic_variants.yaml",
    "synthetic_tasks.yaml",
)
SPECS = sorted(p for p in (ROOT / "specs").glob("*.yaml") if p.name not in RUN_ELSEWHERE)


def test_specs_are_covered():
    assert {p.name for p in SPECS} == {"criteo.yaml", "criteo_dlrm.yaml", "criteo_mixed.yaml"}, (
        "add a run for every spec"
    )
    assert all((ROOT / "specs" / name).is_file() for name in RUN_ELSEWHERE)  # test_synthetic_*


@pytest.mark.parametrize("spec_path", SPECS, ids=lambda p: p.stem)
def test_spec_runs(runner, tmp_path, monkeypatch, spec_path):
    if not CRITEO.is_file():
        pytest.skip(f"Criteo sample not found at {CRITEO} (set SNN_SHARED_DATA)")
    monkeypatch.setenv("SNN_SHARED_DATA", str(CRITEO.parent.parent))
    spec = tmp_path / spec_path.name
    shutil.copy(spec_path, spec)
    result = invoke(runner, "run", spec, "--json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    test = out["metrics"]["test"]
    assert test["raw"]["rows"] == 2000 and out["metrics"]["validation"]["raw"]["rows"] > 1000
    for kind in ("raw", "calibrated"):
        assert 0.70 <= test[kind]["auc"] <= 0.80
        assert 0 < test[kind]["rce"] < 30
    assert test["calibrated"]["logloss"] <= test["raw"]["logloss"] <= 1.05 * test["calibrated"]["logloss"]
    assert out["verdict"]["passed"]
    declared = yaml.safe_load(spec_path.read_text())
    assert declared["data"]["train"]["rows"] == [0, 8000] and declared["data"]["test"]["rows"] == [8000, 10000]
    table = {"criteo_mixed": "embeddings.table_0"}.get(spec_path.stem)  # the block the spec shows
    _holds_parity(runner, spec, tmp_path / ".snn" / "bundles" / declared["name"], CRITEO, "8000:10000", table)


def _holds_parity(runner, spec: Path, bundle: Path, data: Path, rows: str, table: str | None = None) -> None:
    """The online scorer equals the reference on the test rows (exit 0), and a bundle whose per-id
    `table` (default: the first) is moved by 1e-3 fails parity (exit 3)."""
    online = spec.parent / "online.parquet"
    assert invoke(runner, "predict", bundle, data, "-o", online, "--online", "--rows", rows).exit_code == 0
    result = invoke(runner, "validate", spec, "--compare", online)
    assert result.exit_code == 0, result.stderr
    plan = json.loads((bundle / "plan.json").read_text())
    table = table or next(name for name, weight in plan["weights"].items() if weight["per_id"] and weight["trainable"])
    assert plan["weights"][table]["per_id"]
    broken = _perturbed_copy(bundle, spec.parent, table)
    assert invoke(runner, "predict", broken, data, "-o", online, "--online", "--rows", rows).exit_code == 0
    result = invoke(runner, "validate", spec, "--compare", online)
    assert result.exit_code == 3 and "parity: " in result.stderr, result.stderr


def _run_synthetic(runner, tmp_path, monkeypatch, spec_file: str, env: str, *flags: str, auc_gate: float):
    """specs/<spec_file> on a 60k-row synthetic file written with `flags` (rows 0-50k train, 50-60k
    test, the gates scaled down to `auc_gate`; the full-size figures are the bench's) ->
    (the spec as run, its path, the data file, the `snn run --json` output)."""
    data = tmp_path / f"{env.lower()}.parquet"
    assert invoke(runner, "data", "synth", data, "--rows", 60_000, "--seed", 0, *flags).exit_code == 0
    monkeypatch.setenv(env, str(data))
    spec = yaml.safe_load((ROOT / "specs" / spec_file).read_text())
    spec["data"]["train"]["rows"], spec["data"]["test"]["rows"] = [0, 50_000], [50_000, 60_000]
    spec["validation"]["gates"] = {"auc": {"min": auc_gate}}
    path = tmp_path / spec_file
    path.write_text(yaml.safe_dump(spec))
    result = invoke(runner, "run", path, "--json")
    assert result.exit_code == 0, result.stderr
    return spec, path, data, json.loads(result.stdout)


def test_synthetic_spec_runs(runner, tmp_path, monkeypatch):
    """specs/synthetic.yaml on a smaller file (60k rows: its row ranges and gates scaled down; the
    full-size figures are the bench's): 10x negative downsampling undone by the analytic correction,
    the oracle reported, the calibrator never worse than raw on the test rows."""
    spec, _, _, out = _run_synthetic(runner, tmp_path, monkeypatch, "synthetic.yaml", "SNN_SYNTH_DATA", auc_gate=0.7)
    assert spec["train"]["negative_downsampling"]["rate"] == 0.1
    test = out["metrics"]["test"]
    assert test["raw"]["rows"] == 10_000 and test["oracle"]["auc"] > test["raw"]["auc"] > 0.7
    assert test["uncorrected"]["calibration_ratio"] > 1.5  # trained on 10x fewer negatives
    assert test["raw"]["calibration_ratio"] < test["uncorrected"]["calibration_ratio"] - 0.5  # the correction
    # and the calibrator after it: exact on its ~5k validation rows; label noise alone moves the ratio
    # by ±7% (95%) between those and the 10k test rows at this size
    assert abs(test["calibrated"]["calibration_ratio"] - 1) < 0.1
    assert test["calibrated"]["logloss"] <= test["raw"]["logloss"] + 1e-3


def _perturbed_copy(bundle: Path, folder: Path, weight: str) -> Path:
    """A copy of the bundle with one weight moved by 1e-3 (a row the data uses: all of them)."""
    copy = folder / "perturbed"
    shutil.copytree(bundle.resolve(), copy)
    with np.load(copy / "weights.npz") as stored:
        weights = dict(stored)
    key = weight if weight in weights else weight + ".low"  # an 8-bit table: move its rows' low ends
    weights[key] = weights[key] + np.float32(1e-3)
    np.savez(copy / "weights.npz", **weights)
    return copy


def test_synthetic_lists_spec_runs_and_holds_parity(runner, tmp_path, monkeypatch):
    """specs/synthetic_lists.yaml (id lists: a parquet list column and "|"-separated text) on a 60k-row
    file: the E-P model beats a model without the lists' vectors, the online scorer equals the
    reference on ragged rows (exit 0), and a perturbed embedding table fails parity (exit 3)."""
    spec, path, data, out = _run_synthetic(
        runner, tmp_path, monkeypatch, "synthetic_lists.yaml", "SNN_SYNTH_LISTS_DATA", "--lists", auc_gate=0.75
    )
    assert [b["kind"] for b in spec["model"]["blocks"]][:2] == ["sparse_linear", "embedding_bag"]
    test = out["metrics"]["test"]
    assert test["raw"]["rows"] == 10_000 and test["oracle"]["auc"] > test["raw"]["auc"] > 0.8
    bundle = tmp_path / ".snn" / "bundles" / "synthetic-lists"
    _holds_parity(runner, path, bundle, data, "50000:60000", "bags.table_0")  # the table L1 and L3 share


def test_adult_trees_spec_runs_with_8_bit_tables_and_holds_parity(runner, tmp_path):
    """specs/adult_trees.yaml: boosted-tree leaves as features and 8-bit tables. The tables shrink
    at least 3.5x for a validation AUC change of at most 0.001, the model is at least as good as
    the plain Adult spec's bar, and parity holds on the dequantized tables (a moved table fails)."""
    spec = yaml.safe_load((ROOT / "specs" / "adult_trees.yaml").read_text())
    spec["data"]["train"]["path"] = str(ADULT_DIR / "adult.data")
    spec["data"]["test"]["path"] = str(ADULT_DIR / "adult.test")
    path = tmp_path / "adult_trees.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = invoke(runner, "run", path, "--json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    test = out["metrics"]["test"]
    assert test["raw"]["auc"] >= 0.924 and test["calibrated"]["logloss"] <= test["raw"]["logloss"]
    train = json.loads((Path(out["steps"]["train"]["path"]) / "step.json").read_text())["metrics"]
    assert train["int8_table_compression"] >= 3.5 and abs(train["int8_val_auc_change"]) <= 0.001
    bundle = tmp_path / ".snn" / "bundles" / "adult-trees"
    with np.load(bundle / "weights.npz") as stored:
        assert stored["sparse.weight.q8"].dtype == np.uint8 and "sparse.weight" not in stored.files
    _holds_parity(runner, path, bundle, ADULT_DIR / "adult.test", "0:16281")


def test_synthetic_positions_spec_serves_the_top_slot(runner, tmp_path, monkeypatch):
    """specs/synthetic_positions.yaml on 60k rows: trained on the slot, served in slot 1. The raw
    served scores are those of the top slot (above the overall rate: every row scored as if shown
    first), the calibrator brings them to the rate, the ranking is close to the slot-1 oracle's,
    and parity holds on the served setting (exit 0; a moved table: exit 3)."""
    spec, path, data, out = _run_synthetic(
        runner,
        tmp_path,
        monkeypatch,
        "synthetic_positions.yaml",
        "SNN_SYNTH_POSITIONS_DATA",
        "--positions",
        auc_gate=0.7,
    )
    assert spec["features"][-1] == {"name": "position", "kind": "position", "serve_as": 1}
    test = out["metrics"]["test"]
    assert test["raw"]["calibration_ratio"] > 1.2 and abs(test["calibrated"]["calibration_ratio"] - 1) < 0.1
    assert test["oracle"]["auc"] > test["raw"]["auc"] > test["oracle"]["auc"] - 0.05
    _holds_parity(runner, path, tmp_path / ".snn" / "bundles" / "synthetic-positions", data, "50000:60000")
    # the test split is scored as served: a test file without the slots grades the same
    bare = tmp_path / "test_without_slots.parquet"
    pl.read_parquet(data).slice(50_000).drop("position").write_parquet(bare)
    spec["data"]["test"] = {"path": str(bare)}
    path.write_text(yaml.safe_dump(spec))
    result = invoke(runner, "validate", path, "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["metrics"]["test"]["raw"] == test["raw"]


def test_synthetic_variants_spec_runs_and_holds_parity(runner, tmp_path, monkeypatch):
    """specs/synthetic_variants.yaml (the options other specs leave at their defaults: weighted tags,
    keep last, hashed lists, max pooling, mixed dims off powers of 2, a position served as null,
    dense features without missing indicators) on 60k rows: it learns (well above chance, below the
    oracle), the served scores carry no slot's effect, and parity holds (a moved table: exit 3)."""
    spec, path, data, out = _run_synthetic(
        runner,
        tmp_path,
        monkeypatch,
        "synthetic_variants.yaml",
        "SNN_SYNTH_VARIANTS_DATA",
        "--lists",
        "--weighted",
        "--positions",
        auc_gate=0.75,
    )
    features = {f["name"]: f for f in spec["features"]}
    assert features["W"]["weighted"] and features["L1"]["keep"] == "last" and "hash_buckets" in features["L1"]
    assert features["position"]["serve_as"] is None
    test = out["metrics"]["test"]
    assert test["oracle"]["auc"] > test["raw"]["auc"] > 0.8
    # served as null: no slot's effect, so the raw scores sit near the overall rate (served in slot 1
    # they would be 1.5x it, the p_top oracle's ratio), and the calibrator keeps them there
    assert test["oracle"]["calibration_ratio"] > 1.3 and abs(test["raw"]["calibration_ratio"] - 1) < 0.15
    assert abs(test["calibrated"]["calibration_ratio"] - 1) < 0.1
    plan = json.loads((tmp_path / ".snn" / "bundles" / "synthetic-variants" / "plan.json").read_text())
    (items,) = (block for block in plan["blocks"] if block["kind"] == "mixed_embedding")
    dims = [table["dim"] for table in items["spec"]["tables"]]
    assert any(dim & (dim - 1) for dim in dims), dims  # a dim that is not a power of 2
    bundle = tmp_path / ".snn" / "bundles" / "synthetic-variants"
    _holds_parity(runner, path, bundle, data, "50000:60000", "items.table_0")


def test_synthetic_tasks_spec_runs_per_task_and_holds_parity_per_task(runner, tmp_path, monkeypatch):
    """specs/synthetic_tasks.yaml (a click, a conversion given a click) on 60k rows: both towers
    train on the shared layers (the click task on 10x fewer negatives), each task is calibrated,
    graded and reported on its own, predictions carry a score per task (the conversion's the
    product P(click) · P(convert | click)), and parity holds per task: exit 0, and exit 3 naming
    the task whose tower was moved."""
    data = tmp_path / "tasks.parquet"
    assert invoke(runner, "data", "synth", data, "--rows", 60_000, "--seed", 0, "--tasks").exit_code == 0
    monkeypatch.setenv("SNN_SYNTH_TASKS_DATA", str(data))
    spec = yaml.safe_load((ROOT / "specs" / "synthetic_tasks.yaml").read_text())
    spec["data"]["train"]["rows"], spec["data"]["test"]["rows"] = [0, 50_000], [50_000, 60_000]
    spec.setdefault("validation", {})["gates"] = {"auc": {"min": 0.6}}
    spec["tasks"][0]["value_weight"], spec["tasks"][1]["value_weight"] = 1.0, 20.0  # a value model
    spec["tasks"][0]["breakdown"]["min_positives"] = 40  # ~250 validation clicks at this size
    path = tmp_path / "synthetic_tasks.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = invoke(runner, "run", path, "--json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    prepared = json.loads((Path(out["steps"]["prepare"]["path"]) / "step.json").read_text())["rows"]
    assert prepared["train"] < 0.3 * 50_000  # the clicks' negatives downsampled 10x, every click kept
    test = out["metrics"]["test"]
    assert set(test) == {"click", "convert"}
    for task in ("click", "convert"):
        assert test[task]["oracle"]["auc"] > test[task]["calibrated"]["auc"] > 0.6
    # the click's raw scores are corrected for the downsampling; the calibrator then meets the rate
    # (~500 test clicks: label noise alone moves the ratio by ±9%, 95%)
    assert abs(test["click"]["calibrated"]["calibration_ratio"] - 1) < 0.15
    calibrated = json.loads((Path(out["steps"]["calibrate"]["path"]) / "step.json").read_text())["metrics"]
    assert calibrated["val_slices_calibrated_click"] >= 1  # the commonest C1 values have their own calibrator
    sliced = json.loads((tmp_path / ".snn" / "bundles" / "synthetic-tasks" / "breakdown.json").read_text())
    assert set(sliced) == {"click"} and len(sliced["click"]) == calibrated["val_slices_calibrated_click"]
    checks = out["verdict"]["checks"]
    assert {check["task"] for check in checks} == {"click", "convert"}
    bundle = tmp_path / ".snn" / "bundles" / "synthetic-tasks"
    plan = json.loads((bundle / "plan.json").read_text())
    assert plan["outputs"] == ["click_head.out", "convert_head.out"]
    online = tmp_path / "online.parquet"
    assert invoke(runner, "predict", bundle, data, "-o", online, "--online", "--rows", "50000:60000").exit_code == 0
    scores = pl.read_parquet(online)
    assert {"score_click", "score_convert", "raw_score_click", "raw_score_convert"} <= set(scores.columns)
    assert (scores["score_convert"] <= scores["score_click"] + 1e-9).mean() > 0.99  # P(click and convert) <= P(click)
    np.testing.assert_allclose(scores["value"], scores["score_click"] + 20 * scores["score_convert"], rtol=1e-12)
    one = OnlineScorer(Bundle.load(bundle)).score(pl.read_parquet(data).row(50_000, named=True))
    np.testing.assert_allclose(one, scores.select("score_click", "score_convert").row(0), rtol=1e-12)
    shown = invoke(runner, "inspect", bundle)
    assert "task convert: weight 1, negative rate 1, given click" in shown.stdout + shown.stderr
    assert "calibrator of convert:" in shown.stdout + shown.stderr
    assert invoke(runner, "validate", path, "--compare", online).exit_code == 0
    broken = _perturbed_copy(bundle, tmp_path, "convert_head.bias")
    assert invoke(runner, "predict", broken, data, "-o", online, "--online", "--rows", "50000:60000").exit_code == 0
    result = invoke(runner, "validate", path, "--compare", online)
    assert result.exit_code == 3 and "parity (task convert)" in result.stderr, result.stderr
    assert "parity (task click)" not in result.stderr
    # a gate is checked per task, and the verdict names the task that fails it (here the click's
    # test AUC is ~0.75, the conversion's ~0.85)
    spec["validation"]["gates"] = {"auc": {"min": 0.8}}
    path.write_text(yaml.safe_dump(spec))
    result = invoke(runner, "validate", path)
    assert result.exit_code == 3 and "task click: auc" in result.stderr, result.stderr
    assert "task convert" not in result.stderr
