"""Spec validation: paths and YAML lines in errors, env substitution, the JSON schema."""

import json

import pytest
import yaml

from snn.pipeline.errors import SpecError
from snn.pipeline.spec import Spec, json_schema, parse_spec, substitute_env

from ..conftest import ROOT, adult_spec_dict


def _text(spec: dict) -> str:
    return yaml.safe_dump(spec, sort_keys=False)


def test_the_adult_spec_is_valid():
    spec = parse_spec((ROOT / "specs" / "adult.yaml").read_text())
    assert spec.features[3].discretizer.bins == 32
    assert spec.calibration.kind == "auto"


def test_errors_name_the_path_and_the_line():
    text = _text(adult_spec_dict())
    text = text.replace("  lr: 0.003", "  lr: fast\n  lerning_rate: 0.1")
    with pytest.raises(SpecError) as info:
        parse_spec(text, "spec.yaml")
    message = str(info.value)
    lr_line = text.splitlines().index("  lr: fast") + 1
    assert f"spec.yaml:{lr_line}: train.lr: Input should be a valid number" in message
    assert f"spec.yaml:{lr_line + 1}: train.lerning_rate: unknown key" in message


def test_union_errors_skip_the_tag():
    spec = adult_spec_dict()
    spec["features"][1]["discretizer"] = {"kind": "percentile", "bins": 1}
    with pytest.raises(SpecError, match=r"features\.1\.discretizer\.bins: Input should be greater than or equal to 2"):
        parse_spec(_text(spec))
    spec["features"][1] = {"name": "x", "kind": "embedding"}
    with pytest.raises(SpecError, match=r"features\.1: kind 'embedding' is not one of 'continuous', "):
        parse_spec(_text(spec))
    spec["features"][1] = {"name": "x"}
    with pytest.raises(SpecError, match=r"features\.1: `kind` is required; write `\{name: x, kind: continuous\}`"):
        parse_spec(_text(spec))
    spec["features"][1] = {"name": "x", "kind": "continuous", "discretizer": {"bins": 8}}
    with pytest.raises(SpecError, match=r"discretizer: `kind` is required; add it \(`snn schema`"):
        parse_spec(_text(spec))


def test_env_substitution():
    assert substitute_env("a: ${X}\nb: ${Y:-7}", {"X": "1"}) == "a: 1\nb: 7"
    with pytest.raises(SpecError, match="line 2: environment variable MISSING is not set"):
        substitute_env("a: 1\nb: ${MISSING}", {})


def test_validation_source_must_be_given_once():
    spec = adult_spec_dict()
    del spec["data"]["holdout"]
    with pytest.raises(SpecError, match="give either `validation`"):
        parse_spec(_text(spec))


def test_every_schema_field_has_a_description():
    schema = json_schema()
    missing = []
    for name, definition in schema.get("$defs", {}).items():
        for field, prop in definition.get("properties", {}).items():
            if "description" not in prop:
                missing.append(f"{name}.{field}")
    for field, prop in schema["properties"].items():
        if "description" not in prop:
            missing.append(field)
    assert missing == []


def test_committed_schema_is_current():
    committed = json.loads((ROOT / "snn.schema.json").read_text())
    assert committed == json.loads(json.dumps(json_schema())), "run `make schema`"
    assert Spec.model_json_schema()["additionalProperties"] is False


def _tasks_spec() -> dict:
    return yaml.safe_load((ROOT / "specs" / "synthetic_tasks.yaml").read_text())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.pop("tasks"), "`tasks` and `data.labels` go together"),
        (lambda s: s["data"].update(label={"column": "click"}), "give either `label`"),
        (lambda s: s["tasks"].reverse(), "must be those of data.labels, in its order"),
        (lambda s: s["tasks"][1].update(given="convert"), "not a task listed before it"),
        (lambda s: s["train"].update(negative_downsampling={"rate": 0.5}), "downsample per task"),
        (lambda s: s["train"].update(early_stopping={"task": "share"}), "is not one of the tasks"),
        (lambda s: s["data"]["labels"]["click"].update(column="convert"), "each role needs its own column"),
        (lambda s: s["model"].update(blocks=[{"name": "head", "kind": "logit", "inputs": {"x": "x"}}]), ""),
    ],
)
def test_tasks_are_checked_against_their_labels(change, message):
    spec = _tasks_spec()
    del spec["model"]["sparse_linear"], spec["model"]["interactions"], spec["model"]["mlp"]
    change(spec)
    if "blocks" in spec["model"]:  # a written plan ending in a logit head: the towers have their own
        spec["model"]["blocks"] = [
            {"name": "wide", "kind": "sparse_linear", "inputs": {"entries": "features"}, "width": 4},
            {"name": "head", "kind": "logit", "inputs": {"x": "wide.out"}},
        ]
        message = "with tasks, the model is the shared layers"
    with pytest.raises(SpecError, match=message):
        parse_spec(yaml.safe_dump(spec))


def test_a_one_task_spec_keeps_its_one_output():
    base = adult_spec_dict()
    spec = parse_spec(yaml.safe_dump(base))
    assert spec.tasks is None and spec.task_downsampling is None
    assert spec.data.label_columns == [base["data"]["label"]["column"]]
    tasks = parse_spec(yaml.safe_dump(_tasks_spec()))
    assert tasks.data.label_columns == ["click", "convert"] and tasks.data.oracle_columns == ["p_click", "p_convert"]
    assert [s.given for s in tasks.task_downsampling] == [None, 0]
