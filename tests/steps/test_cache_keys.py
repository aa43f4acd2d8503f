"""Each step's cache key covers exactly the spec fields it declares (READS): changing one of them
is a cache miss, changing anything else is a hit. Checked on the keys for every field of the spec
below, and on a real run for two of them."""

from __future__ import annotations

import json

import pytest
import yaml

from snn.pipeline.spec import Spec, parse_spec
from snn.pipeline.steps import calibrate, prepare, train, validate
from snn.pipeline.steps.context import key_of, read

from ..conftest import adult_spec_dict, invoke, write_spec
from ..hostile.corpus import Workspace, base_spec, write_base

STEPS = {"prepare": prepare.READS, "train": train.READS, "calibrate": calibrate.READS}

# (dotted path, a new value): one change inside every section and sub-section of the spec
CHANGES = [
    ("name", "another-name"),
    ("workdir", "elsewhere"),
    ("data.holdout.seed", 99),
    ("data.train.rows", [0, 100]),
    ("data.label.positive", [">50K", "yes"]),
    ("data.null_values", ["?"]),
    ("data.separator", ";"),
    ("data.key", "fnlwgt"),
    ("features", [{"name": "age", "kind": "continuous"}]),
    ("model.sparse_linear.width", 32),
    ("model.mlp.layers", [8]),
    ("model.interactions", {"dim": 4}),
    ("train.lr", 0.01),
    ("train.table_l2", 0.01),
    ("train.lr_schedule", "constant"),
    ("train.weight_decay", 0.0),
    ("train.epochs", 3),
    ("train.seed", 8),
    ("train.early_stopping", None),
    ("train.negative_downsampling", {"rate": 0.5, "seed": 1}),
    ("calibration", {"kind": "none"}),
    ("calibration", {"kind": "isotonic", "pseudo_count": 2.0}),
    ("calibration", {"kind": "auto", "folds": 3}),
    ("calibration", {"kind": "platt"}),
    ("calibration", {"kind": "shift"}),
    ("validation.gates", {"auc": {"min": 0.5}}),
    ("validation.slices", ["race"]),
    ("validation.ece_bins", 20),
    ("parity.atol", 0.001),
    ("tracking.experiment", "elsewhere"),
]


def _changed(spec_dict: dict, path: str, value) -> Spec:
    spec_dict = json.loads(json.dumps(spec_dict))
    node, parts = spec_dict, path.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    assert node.get(parts[-1], object()) != value, f"{path}: the change must differ from the base spec"
    node[parts[-1]] = value
    return parse_spec(yaml.safe_dump(spec_dict))


def _reads(path: str, declared: dict[str, str]) -> bool:
    """Whether a change at `path` touches a declared read (one is inside the other)."""
    return any(path == d or path.startswith(d + ".") or d.startswith(path + ".") for d in declared.values())


@pytest.mark.parametrize("step", list(STEPS))
def test_a_changed_field_misses_exactly_when_the_step_reads_it(step):
    base = adult_spec_dict()
    spec = parse_spec(yaml.safe_dump(base))
    key = key_of(step, read(spec, STEPS[step]))
    for path, value in CHANGES:
        changed = key_of(step, read(_changed(base, path, value), STEPS[step]))
        if _reads(path, STEPS[step]):
            assert changed != key, f"{step}: changing {path}, which it reads, kept the key"
        else:
            assert changed == key, f"{step}: changing {path}, which it does not read, changed the key"


# the multi-task reads, changed on specs/synthetic_tasks.yaml: (path, how to change the spec dict, the steps
# whose own key changes; those downstream follow through their upstream keys)
TASK_CHANGES = [
    ("tasks", lambda spec: spec["tasks"][1]["tower"].update(layers=[4]), {"train"}),
    (
        "task_downsampling",
        lambda spec: spec["tasks"][0]["negative_downsampling"].update(rate=0.5),
        {"prepare", "train"},
    ),
    ("tasks", lambda spec: spec["tasks"][1].update(given=None), {"prepare", "train"}),  # its rows change too
    # prepare keeps the validation rows' values of the break-down column
    ("breakdown_columns", lambda spec: spec["tasks"][0]["breakdown"].update(column="C2"), {"prepare", "train"}),
]


@pytest.mark.parametrize("step", [*STEPS, "validate"])
def test_every_declared_read_is_changed_by_the_list(step):
    declared = {**STEPS, "validate": validate.READS}[step]
    changed = [c for c, _ in CHANGES] + [c for c, _, _ in TASK_CHANGES]
    for path in declared.values():
        assert any(c == path or c.startswith(path + ".") or path.startswith(c + ".") for c in changed), path


def test_a_changed_task_misses_exactly_the_steps_that_read_it():
    from ..conftest import ROOT

    base = yaml.safe_load((ROOT / "specs" / "synthetic_tasks.yaml").read_text())
    keys = {step: key_of(step, read(parse_spec(yaml.safe_dump(base)), reads)) for step, reads in STEPS.items()}
    for path, change, missing in TASK_CHANGES:
        spec_dict = json.loads(json.dumps(base))
        change(spec_dict)
        spec = parse_spec(yaml.safe_dump(spec_dict))
        for step, reads in STEPS.items():
            same = key_of(step, read(spec, reads)) == keys[step]
            assert same is (step not in missing), f"{step}: changing {path}"


def test_a_real_run_reuses_what_a_change_does_not_touch(runner, tmp_path):
    ws = Workspace(tmp_path)
    write_base(ws)
    spec = base_spec()
    path = write_spec(tmp_path, spec)
    assert invoke(runner, "calibrate", path).exit_code == 0
    spec["validation"]["gates"] = {"auc": {"min": 0.1}}  # read by validate only
    write_spec(tmp_path, spec)
    result = invoke(runner, "calibrate", path, "--json")
    assert all(step["cached"] for step in json.loads(result.stdout)["steps"].values())
    spec["train"]["lr"] = 0.01  # read by train (and so calibrate, downstream), not prepare
    write_spec(tmp_path, spec)
    steps = json.loads(invoke(runner, "calibrate", path, "--json").stdout)["steps"]
    assert (steps["prepare"]["cached"], steps["train"]["cached"], steps["calibrate"]["cached"]) == (True, False, False)


def test_a_new_bundle_format_misses_every_cached_step(monkeypatch):
    """Folders written with an older bundle format are never reused (a cached calibrate step would
    otherwise hand validate a bundle this snn refuses)."""
    from snn.pipeline.store import cache

    key = cache.step_key("calibrate", {"calibration": {"kind": "auto"}})
    monkeypatch.setattr(cache, "BUNDLE_FORMAT", cache.BUNDLE_FORMAT + 1)
    assert cache.step_key("calibrate", {"calibration": {"kind": "auto"}}) != key
