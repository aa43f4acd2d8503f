"""The YAML spec: the root model, `${VAR}` substitution, and errors with YAML line numbers.

Each section's pydantic model lives beside the code it configures (data/spec.py, features/spec.py,
model/plan.py and its blocks, train/spec.py, evaluation/spec.py, steps/tracking.py); this module
composes them and loads the YAML. Every model forbids unknown keys, every field carries a
description, and tagged unions use a `Literal` `kind`. An option exists only if the pipeline
implements it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from .config import Strict
from .data.spec import DataFiles, DataSpec, TaskSampling
from .errors import SnnError, SpecError
from .evaluation.spec import AutoCalibration, Calibration, ParitySpec, ValidationSpec
from .features.spec import Feature, columns_of, entry_kind_of
from .model.blocks import BLOCKS
from .model.plan import ModelSpec, plan_for, space_of
from .tracking import TrackingSpec
from .train.spec import TrainSpec
from .train.tasks import TaskSpec, towers_of

SPEC_MAX_BYTES = 1 << 20  # a spec is a small YAML file
SPEC_MAX_NODES = 100_000  # YAML nodes after aliases are expanded (anchors cannot blow up validation)


class Spec(Strict):
    version: Literal[1] = Field(description="Spec format version.")
    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$",
        description="Model name: letters, digits, _ . -, starting with a letter or digit (at most 100).",
    )
    data: DataSpec = Field(description="Where rows come from and how they split.")
    features: list[Feature] = Field(min_length=1, description="Input features.")
    model: ModelSpec = Field(default_factory=ModelSpec, description="Architecture.")
    train: TrainSpec = Field(default_factory=TrainSpec, description="Training loop.")
    tasks: list[TaskSpec] | None = Field(
        default=None,
        min_length=2,
        max_length=64,
        description="Several labels learned at once (with `data.labels`): shared layers (the model), a tower, loss "
        "and downsampling per task. Absent: one task, `data.label`.",
    )
    calibration: Calibration = Field(
        default_factory=lambda: AutoCalibration(kind="auto"),
        description="Score calibration, fit on the validation split (auto: chosen by cross-validated log loss).",
    )
    validation: ValidationSpec = Field(default_factory=ValidationSpec, description="Offline validation.")
    parity: ParitySpec = Field(default_factory=ParitySpec, description="Offline vs online parity tolerances.")
    tracking: TrackingSpec = Field(default_factory=TrackingSpec, description="MLflow tracking.")
    workdir: str | None = Field(default=None, description="Work directory; `.snn` beside the spec when absent.")

    @field_validator("features")
    @classmethod
    def _unique_names(cls, features):
        seen = set()
        for feature in features:
            if feature.name in seen:
                raise ValueError(f"feature {feature.name!r} is listed twice")
            seen.add(feature.name)
        return features

    @model_validator(mode="after")
    def _shared_encodings_exist(self):
        """`shares` names another categorical or id-list feature that shares nothing itself."""
        kinds = {f.name: f for f in self.features}
        for feature in self.features:
            shared = getattr(feature, "shares", None)
            if shared is None:
                continue
            source = kinds.get(shared)
            if source is None or shared == feature.name or source.kind not in ("categorical", "id_list"):
                raise ValueError(
                    f"feature {feature.name!r} shares {shared!r}, which is not another categorical or id-list feature"
                )
            if getattr(source, "shares", None) is not None:
                raise ValueError(
                    f"feature {feature.name!r} shares {shared!r}, which shares {source.shares!r} itself; "
                    f"name {source.shares!r} directly"
                )
        return self

    @model_validator(mode="after")
    def _features_are_not_targets(self):
        data = self.data
        for role, column in (
            *((("the label (data.label.column)", data.label.column),) if data.label is not None else ()),
            *(
                (f"the label of task {name!r} (data.labels)", label.column)
                for name, label in (data.labels or {}).items()
            ),
            ("the weight (data.weight)", data.weight),
            ("the oracle (data.oracle)", data.oracle),
            *((f"the oracle of task {name!r}", label.oracle) for name, label in (data.labels or {}).items()),
        ):
            if column is not None and any(column in (f.name, *columns_of(f)) for f in self.features):
                raise ValueError(
                    f"feature {column!r} is {role}: a model that reads its own target learns nothing "
                    "usable; remove it from features"
                )
        if data.columns is not None:
            missing = [c for f in self.features for c in columns_of(f) if c not in data.columns]
            if missing:
                raise ValueError(f"feature(s) {missing} are not among data.columns {data.columns}")
        return self

    @model_validator(mode="after")
    def _tasks_match_their_labels(self):
        """`tasks` goes with `data.labels`, in the same order; `given` names an earlier task; the
        per-task options replace their one-task forms."""
        labels, tasks = self.data.labels, self.tasks
        if (labels is None) != (tasks is None):
            raise ValueError(
                "`tasks` and `data.labels` go together: one label per task, by name"
                if tasks is None
                else "with `tasks`, name each task's label in `data.labels` (instead of `data.label`)"
            )
        if tasks is None or labels is None:
            stopping = self.train.early_stopping
            if stopping is not None and stopping.task is not None:
                raise ValueError("train.early_stopping.task names a task; it goes with `tasks`")
            return self
        names = [task.name for task in tasks]
        if names != list(labels):
            raise ValueError(f"tasks {names} must be those of data.labels, in its order: {list(labels)}")
        for t, task in enumerate(tasks):
            if task.given is not None and task.given not in names[:t]:
                raise ValueError(f"task {task.name!r} is given {task.given!r}, which is not a task listed before it")
        if self.train.negative_downsampling is not None:
            raise ValueError("with `tasks`, downsample per task (tasks[].negative_downsampling), not in train")
        stopping = self.train.early_stopping
        if stopping is not None and stopping.task is not None and stopping.task not in names:
            raise ValueError(f"train.early_stopping.task {stopping.task!r} is not one of the tasks {names}")
        return self

    @property
    def breakdown_columns(self) -> list[str]:
        """The columns some task is calibrated per value of (prepare keeps the validation rows' values)."""
        return sorted({task.breakdown.column for task in self.tasks or () if task.breakdown is not None})

    @property
    def task_downsampling(self) -> list[TaskSampling] | None:
        """Which train rows each task keeps (data/chunks.task_keeps), or None with one task."""
        if self.tasks is None:
            return None
        names = [task.name for task in self.tasks]
        return [
            TaskSampling(
                downsampling=task.negative_downsampling,
                given=None if task.given is None else names.index(task.given),
            )
            for task in self.tasks
        ]

    @model_validator(mode="after")
    def _model_reads_these_features(self):
        """The model's blocks over the features' layout (names and entry kinds; one id each, as the
        sizes are not known before the data): a block naming an unknown feature, or reading features
        of a kind it cannot take, is refused here, before any data is read."""
        layout = [(f.name, j, 1, entry_kind_of(f)) for j, f in enumerate(self.features)]
        try:
            plan_for(self.model, space_of(len(layout), layout), towers=towers_of(self.tasks))
        except ValueError as exc:
            raise ValueError(f"model: {exc}") from None
        return self


# ----------------------------------------------------------------------------- loading

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def substitute_env(text: str, environ=os.environ) -> str:
    """Replace `${VAR}` and `${VAR:-default}`; an unset VAR without default is an error."""
    problems = []

    def replace(match):
        name, default = match.group(1), match.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        line = text.count("\n", 0, match.start()) + 1
        problems.append(f"line {line}: environment variable {name} is not set; set it or write ${{{name}:-default}}")
        return ""

    out = _ENV.sub(replace, text)
    if problems:
        raise SpecError("invalid spec:\n  " + "\n  ".join(problems))
    return out


def _walk(node, path) -> list:
    """The YAML nodes along `path` from `node` (as far as they exist), `node` first."""
    nodes = [node]
    for part in path:
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == str(part)), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            node = None
        if node is None:
            break
        nodes.append(node)
    return nodes


def _yaml_line(root_node, path) -> int | None:
    """1-based line of the YAML node at `path` (the deepest that exists)."""
    node = _walk(root_node, path)[-1]
    return node.start_mark.line + 1 if node is not None else None


def _has_key(root_node, path: list[str | int], key: str) -> bool:
    """Whether the YAML mapping at `path` has `key` (a field named like a union tag, `mlp` say)."""
    nodes = _walk(root_node, path)
    node = nodes[-1] if len(nodes) == len(path) + 1 else None
    return isinstance(node, yaml.MappingNode) and any(k.value == key for k, _ in node.value)


def _format_errors(error: ValidationError, root_node, source: str) -> str:
    lines = []
    for item in error.errors():
        loc = [p for p in item["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        path_parts: list[str] = []
        node_path: list[str | int] = []
        for part in loc:
            if isinstance(part, str) and node_path and part in _TAGS and not _has_key(root_node, node_path, part):
                continue  # pydantic puts the union tag in loc; it is not a YAML key
            path_parts.append(str(part))
            node_path.append(part)
        path = ".".join(path_parts) or "(top level)"
        line = _yaml_line(root_node, node_path)
        where = f"{source}:{line}" if line else source
        lines.append(f"{where}: {path}: {_message(item, path_parts)}")
    return "invalid spec:\n  " + "\n  ".join(lines)


# what to write where a mapping was expected, by the model's class (pydantic's ctx.class_name)
_WRITE = {
    "Source": "`{path: data.csv}` (or the path alone: `data.csv`)",
    "Label": "`{column: clicked}` (or the column name alone: `clicked`)",
    "TaskLabel": "`{column: clicked}` (or the column name alone: `clicked`)",
    "Holdout": "`{fraction: 0.1}` (or the fraction alone: `0.1`)",
    "ModelSpec": "`{sparse_linear: {width: 64}, mlp: {layers: [64, 32]}}`",
    "TrainSpec": "`{epochs: 4, batch_size: 256, lr: 0.003}`",
    "ValidationSpec": "`{slices: [country], gates: {auc: {min: 0.7}}}`",
    "TrackingSpec": "`{experiment: my-model}` or `{enabled: false}`",
}
_FEATURE_KINDS = "continuous, categorical, binary, id_list, tree_leaves, position"


def _message(item: Any, path: list[str]) -> str:
    """pydantic's error as what to write instead, never naming an internal class."""
    kind, given = item["type"], item.get("input")
    shown = repr(given) if isinstance(given, (str, int, float, bool)) or given is None else type(given).__name__
    if kind == "extra_forbidden":
        return "unknown key; remove it or check its spelling (`snn spec SPEC` prints every key; `snn schema`)"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        if len(path) == 2 and path[0] == "features":
            name = given if isinstance(given, str) else "age"
            return f"a feature is a mapping; write `{{name: {name}, kind: categorical}}` (kinds: {_FEATURE_KINDS})"
        example = _WRITE.get((item.get("ctx") or {}).get("class_name", ""))
        return f"expected a mapping, got {shown}; write " + (example or "its keys (`snn spec SPEC` prints them)")
    if kind == "list_type":
        item_text = json.dumps(given) if isinstance(given, (str, int, float)) else "…"
        return f"expected a list, got {shown}; write `[{item_text}]`"
    if kind == "union_tag_invalid":
        ctx = item.get("ctx") or {}
        tag = str(ctx.get("discriminator", "kind")).strip("'")
        return f"{tag} {ctx.get('tag')!r} is not one of {ctx.get('expected_tags')}; check its spelling"
    if kind == "union_tag_not_found":  # a mapping without its `kind`
        tag = str((item.get("ctx") or {}).get("discriminator", "kind")).strip("'")
        if len(path) == 2 and path[0] == "features":
            name = given.get("name", "age") if isinstance(given, dict) else "age"
            return f"`{tag}` is required; write `{{name: {name}, {tag}: continuous}}` (kinds: {_FEATURE_KINDS})"
        return f"`{tag}` is required; add it (`snn schema` lists its values)"
    if kind == "missing":
        return "required; add it (`snn spec SPEC` prints the spec with every default, `snn init DATA` writes one)"
    if kind.endswith(("_type", "_parsing")):
        return f"{item['msg']} (got {shown})"
    return item["msg"]


_TAGS = {"continuous", "categorical", "binary", "percentile", "hashing", "none", "isotonic", *BLOCKS}


@dataclass(frozen=True)
class LoadedSpec:
    """A validated spec plus where it came from."""

    spec: Spec
    path: Path
    text: str

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def resolve(self, relative: str) -> Path:
        """A path from the spec, made absolute against the spec file's folder (symlinks are not
        followed, so a broken link or a loop is reported as what it is)."""
        p = Path(relative).expanduser()
        return p if p.is_absolute() else Path(os.path.normpath(self.base_dir / p))

    @property
    def data_files(self) -> DataFiles:
        """The data section with its paths resolved against the spec file's folder."""
        return DataFiles(self.spec.data, self.base_dir)

    @property
    def workdir(self) -> Path:
        return self.resolve(self.spec.workdir) if self.spec.workdir else self.base_dir / ".snn"

    @property
    def spec_hash(self) -> str:
        return hashlib.sha256(canonical_json(self.spec.model_dump(mode="json")).encode()).hexdigest()


def canonical_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def _check_yaml_tree(root, source: str) -> None:
    """Refuse a key given twice in one mapping (YAML would keep the last silently) and trees that
    expand past SPEC_MAX_NODES nodes through aliases."""
    sizes: dict[int, int] = {}
    stack = [(root, False)]
    while stack:  # iterative post-order: a node's size is 1 + its children's (aliases share nodes)
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        if isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        else:
            children = []
        if not children_done:
            if isinstance(node, yaml.MappingNode):
                seen: dict[str, int] = {}
                for key, _ in node.value:
                    if isinstance(key, yaml.ScalarNode) and key.value != "<<":
                        line = key.start_mark.line + 1
                        if key.value in seen:
                            raise SpecError(
                                f"invalid spec:\n  {source}:{line}: key {key.value!r} is given twice in one "
                                f"mapping (first on line {seen[key.value]}); YAML would silently keep "
                                "the last: keep one"
                            )
                        seen[key.value] = line
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in sizes)
            continue
        sizes[id(node)] = 1 + sum(sizes.get(id(child), 0) for child in children)
        if sizes[id(node)] > SPEC_MAX_NODES:
            raise SpecError(
                f"invalid spec: {source} expands to more than {SPEC_MAX_NODES:,} YAML values (through "
                "anchors and aliases); a spec is a small file: write it out plainly"
            )


def parse_spec(text: str, source: str = "<spec>") -> Spec:
    """Validate spec text; raise SpecError listing every problem with its path and line."""
    text = substitute_env(text)
    try:
        root_node = yaml.compose(text, Loader=yaml.SafeLoader)
        if root_node is not None:
            _check_yaml_tree(root_node, source)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"invalid spec: {source} is not valid YAML: {exc}") from None
    except RecursionError:
        raise SpecError(
            f"invalid spec: {source} nests brackets or blocks too deeply to read; a spec is a few levels deep"
        ) from None
    if not isinstance(raw, dict):
        raise SpecError(
            f"invalid spec: {source} must be a YAML mapping with keys such as version, name, data, features"
        )
    try:
        return Spec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(_format_errors(exc, root_node, source)) from None
    except RecursionError:
        raise SpecError(f"invalid spec: {source} nests values too deeply to validate") from None


def read_spec_text(path: Path) -> str:
    """The spec file's text: a readable regular file of at most SPEC_MAX_BYTES, in UTF-8."""
    from .files import input_file

    try:
        input_file(path, "spec file", "pass the path of a YAML spec (see specs/)", max_bytes=SPEC_MAX_BYTES)
    except SnnError as exc:
        raise SpecError(str(exc)) from None
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(
            f"invalid spec: {path} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "save it as UTF-8"
        ) from None


def load_spec(path: str | Path) -> LoadedSpec:
    path = Path(path)
    text = read_spec_text(path)
    return LoadedSpec(spec=parse_spec(text, str(path)), path=path.resolve(), text=text)


# the shorthand a spec may write for these models (data/spec.py), as JSON schema, for editors
_SHORTHAND_SCHEMA = {
    "Source": {"type": "string", "description": "The file's path alone."},
    "Label": {"type": "string", "description": "The label column's name alone."},
    "TaskLabel": {"type": "string", "description": "The label column's name alone."},
    "Holdout": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1, "description": "The fraction alone."},
}


def json_schema() -> dict:
    schema = Spec.model_json_schema()
    for name, alone in _SHORTHAND_SCHEMA.items():
        full = schema["$defs"][name]
        schema["$defs"][name] = {"anyOf": [full, alone], "description": full.get("description", "")}
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "snn spec"
    return schema
