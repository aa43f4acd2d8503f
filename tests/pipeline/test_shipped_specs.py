"""Every spec under specs/ runs end to end (Adult's acceptance run is in test_pipeline_adult.py)."""

import json
import shutil

import pytest
import yaml

from ..conftest import CRITEO, ROOT, invoke

SPECS = sorted(p for p in (ROOT / "specs").glob("*.yaml") if p.name != "adult.yaml")


def test_specs_are_covered():
    assert {p.name for p in SPECS} == {"criteo.yaml"}, "add a run for every new spec"


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
    assert out["verdict"]["passed"]
    declared = yaml.safe_load(spec_path.read_text())["data"]
    assert declared["train"]["rows"] == [0, 8000] and declared["test"]["rows"] == [8000, 10000]
