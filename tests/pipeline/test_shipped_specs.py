"""Every spec under specs/ runs end to end (Adult's acceptance run is in test_pipeline_adult.py)."""

import json
import shutil

import pytest
import yaml

from ..conftest import CRITEO, ROOT, invoke

SPECS = sorted(p for p in (ROOT / "specs").glob("*.yaml") if p.name not in ("adult.yaml", "synthetic.yaml"))


def test_specs_are_covered():
    assert {p.name for p in SPECS} == {"criteo.yaml"}, "add a run for every new spec"
    assert (ROOT / "specs" / "synthetic.yaml").is_file()  # test_synthetic_spec_runs


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
    declared = yaml.safe_load(spec_path.read_text())["data"]
    assert declared["train"]["rows"] == [0, 8000] and declared["test"]["rows"] == [8000, 10000]


def test_synthetic_spec_runs(runner, tmp_path, monkeypatch):
    """specs/synthetic.yaml on a smaller file (60k rows: its row ranges and gates scaled down; the
    full-size figures are the bench's): 10x negative downsampling undone by the analytic correction,
    the oracle reported, the calibrator never worse than raw on the test rows."""
    data = tmp_path / "synthetic.parquet"
    assert invoke(runner, "data", "synth", data, "--rows", 60_000, "--seed", 0).exit_code == 0
    monkeypatch.setenv("SNN_SYNTH_DATA", str(data))
    spec = yaml.safe_load((ROOT / "specs" / "synthetic.yaml").read_text())
    assert spec["train"]["negative_downsampling"]["rate"] == 0.1
    spec["data"]["train"]["rows"], spec["data"]["test"]["rows"] = [0, 50_000], [50_000, 60_000]
    spec["validation"]["gates"] = {"auc": {"min": 0.7}}
    path = tmp_path / "synthetic.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = invoke(runner, "run", path, "--json")
    assert result.exit_code == 0, result.stderr
    test = json.loads(result.stdout)["metrics"]["test"]
    assert test["raw"]["rows"] == 10_000 and test["oracle"]["auc"] > test["raw"]["auc"] > 0.7
    assert test["uncorrected"]["calibration_ratio"] > 1.5  # trained on 10x fewer negatives
    assert test["raw"]["calibration_ratio"] < test["uncorrected"]["calibration_ratio"] - 0.5  # the correction
    # and the calibrator after it: exact on its ~5k validation rows; label noise alone moves the ratio
    # by ±7% (95%) between those and the 10k test rows at this size
    assert abs(test["calibrated"]["calibration_ratio"] - 1) < 0.1
    assert test["calibrated"]["logloss"] <= test["raw"]["logloss"] + 1e-3
