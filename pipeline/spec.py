"""The YAML spec: pydantic v2 models, `${VAR}` substitution, and errors with YAML line numbers.

Every model forbids unknown keys, every field carries a description, and tagged unions use a
`Literal` `kind`. An option exists here only if the pipeline implements it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Union

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from .config import INT64_MAX, Buckets, RowIndex, Seed, Strict, at_most, gigabytes
from .errors import SnnError, SpecError
from .model.plan import ModelSpec

Metric = Literal["auc", "logloss", "rce", "calibration_ratio", "ece", "brier"]

SPEC_MAX_BYTES = 1 << 20  # a spec is a small YAML file
SPEC_MAX_NODES = 100_000  # YAML nodes after aliases are expanded (anchors cannot blow up validation)
MAX_ECE_BINS = 10_000


# ----------------------------------------------------------------------------- data


class Source(Strict):
    """One input file, optionally restricted to a half-open range of its data rows."""

    path: str = Field(description="File path, relative to the spec file's folder.")
    rows: tuple[RowIndex, RowIndex] | None = Field(
        default=None,
        description="Half-open range [start, stop) of 0-based data rows to use; all rows when absent.",
    )
    header: bool | None = Field(
        default=None,
        description="CSV: whether this file's first line is a header. Absent: a header unless `data.columns` "
        "names the columns. With `data.columns` and `header: true`, the header line is skipped.",
    )

    @field_validator("rows")
    @classmethod
    def _ordered(cls, rows):
        if rows is not None and not (0 <= rows[0] < rows[1]):
            raise ValueError("rows must be [start, stop) with 0 <= start < stop")
        return rows


class Holdout(Strict):
    """Carve the validation split out of train by a stable hash of the row key."""

    fraction: float = Field(gt=0, lt=1, description="Share of train rows held out for validation.")
    seed: Seed = Field(default=0, description="Seed of the key hash; change it to draw another holdout.")


class Label(Strict):
    column: str = Field(description="Column holding the label.")
    positive: list[str] | None = Field(
        default=None,
        description="String values that mean 1 (compared after stripping whitespace and a trailing '.'); "
        "absent: the column is numeric 0/1.",
    )


class DataSpec(Strict):
    format: Literal["csv", "parquet", "criteo"] = Field(
        description="csv (header or `columns`), parquet, or criteo (raw Kaggle TSV: label, I1-I13, C1-C26, no header)."
    )
    columns: list[str] | None = Field(
        default=None, description="Column names for a CSV file without a header row."
    )
    separator: str = Field(default=",", description="CSV field separator (one character).")
    comment_prefix: str | None = Field(
        default=None,
        description="CSV: lines starting with this text are skipped (UCI Adult's test file starts with "
        "'|1x3 Cross validator'); absent: no line is skipped.",
    )
    null_values: list[str] = Field(
        default=["", "?", "NA", "NaN", "null"], description="Raw strings that mean missing."
    )
    train: Source = Field(description="Training rows.")
    validation: Source | None = Field(
        default=None, description="Explicit validation rows (early stopping, calibration)."
    )
    holdout: Holdout | None = Field(
        default=None, description="Hold out a hashed share of train as validation instead of `validation`."
    )
    test: Source | None = Field(default=None, description="Test rows that `snn validate` reports on.")
    label: Label = Field(description="The label column and its positive values.")
    key: str | None = Field(
        default=None,
        description="Row key column carried into every prediction file; absent: `row_id`, the row's 0-based index in its file.",
    )
    weight: str | None = Field(default=None, description="Optional per-row weight column (>= 0).")
    oracle: str | None = Field(
        default=None,
        description="Column holding each row's true probability (synthetic data, `snn data synth` writes "
        "`p_true`); validate then reports the oracle's metrics next to the model's.",
    )
    allow_overlap: bool = Field(
        default=False, description="Allow train rows to also appear in validation or test (normally refused)."
    )

    @field_validator("separator")
    @classmethod
    def _one_char(cls, value):
        if len(value) != 1 or value in "\r\n\"":
            raise ValueError("separator must be exactly one character, not a quote or a line break")
        return value

    @field_validator("comment_prefix")
    @classmethod
    def _short_prefix(cls, value):
        if value is not None and not (1 <= len(value) <= 5) or value is not None and ("\n" in value or "\r" in value):
            raise ValueError("comment_prefix must be 1 to 5 characters on one line")
        return value

    @field_validator("columns")
    @classmethod
    def _unique_columns(cls, columns):
        if columns is not None:
            repeated = sorted({c for c in columns if columns.count(c) > 1})
            if repeated:
                raise ValueError(f"column name(s) {repeated} appear more than once; every column needs its own name")
            if not columns:
                raise ValueError("columns must name at least one column")
        return columns

    @model_validator(mode="after")
    def _one_validation_source(self):
        roles = [("data.label.column", self.label.column), ("data.weight", self.weight), ("data.key", self.key),
                 ("data.oracle", self.oracle)]
        named = [(role, column) for role, column in roles if column is not None]
        for i, (role, column) in enumerate(named):
            for other_role, other in named[i + 1:]:
                if column == other:
                    raise ValueError(f"{role} and {other_role} are both {column!r}; each role needs its own column")
        if self.validation is None and self.holdout is None:
            raise ValueError("give either `validation` (a source) or `holdout` (a fraction of train)")
        if self.validation is not None and self.holdout is not None:
            raise ValueError("give only one of `validation` and `holdout`")
        return self


# ----------------------------------------------------------------------------- features


class PercentileDiscretizer(Strict):
    """Weighted equal-frequency bins; id = feature offset + bin."""

    kind: Literal["percentile"] = Field(default="percentile", description="Discretizer tag.")
    bins: int = Field(default=32, ge=2, le=65536, description="Target number of bins (duplicates are merged).")


class HashingDiscretizer(Strict):
    """Percentile bins whose ids are a stable hash of (feature, bin), so ids survive refits."""

    kind: Literal["hashing"] = Field(description="Discretizer tag.")
    bins: int = Field(default=32, ge=2, le=65536, description="Target number of bins.")
    buckets: Buckets = Field(default=1024, description="Hash buckets reserved for this feature.")


class RawValue(Strict):
    """No discretization: one id whose value is the raw number, scaled by the running max |v|."""

    kind: Literal["none"] = Field(description="Discretizer tag.")


Discretizer = Annotated[
    Union[PercentileDiscretizer, HashingDiscretizer, RawValue], Field(discriminator="kind")
]


class ContinuousFeature(Strict):
    name: str = Field(description="Column name.")
    kind: Literal["continuous"] = Field(description="Feature kind tag.")
    discretizer: Discretizer = Field(
        default_factory=PercentileDiscretizer, description="How numbers become sparse ids."
    )


class CategoricalFeature(Strict):
    name: str = Field(description="Column name.")
    kind: Literal["categorical"] = Field(description="Feature kind tag.")
    min_count: int = Field(
        default=1, ge=1, le=INT64_MAX, description="Values seen fewer times in train share the out-of-vocabulary id."
    )
    hash_buckets: Buckets | None = Field(
        default=None,
        description="Hash values into this many buckets (stable BLAKE2b) instead of a vocabulary.",
    )


class BinaryFeature(Strict):
    name: str = Field(description="Column name (values 0/1, true/false, yes/no).")
    kind: Literal["binary"] = Field(description="Feature kind tag.")


Feature = Annotated[
    Union[ContinuousFeature, CategoricalFeature, BinaryFeature], Field(discriminator="kind")
]


# ----------------------------------------------------------------------------- model and training


class EarlyStopping(Strict):
    metric: Literal["auc", "logloss"] = Field(default="auc", description="Validation metric watched.")
    patience: int = Field(default=3, ge=1, le=INT64_MAX, description="Epochs without improvement before stopping.")


class NegativeDownsampling(Strict):
    rate: float = Field(gt=0, le=1, description="Share of negative training rows kept (positives all kept).")
    seed: Seed = Field(default=0, description="Seed of the per-row keep decision.")


class TrainSpec(Strict):
    optimizer: Literal["adam", "adagrad"] = Field(default="adam", description="Optimizer for all parameters.")
    lr: float = Field(default=0.003, gt=0, le=1e3, description="Learning rate (finite, > 0).")
    batch_size: int = Field(default=512, ge=1, le=1 << 24, description="Rows per step (at most 2^24).")
    epochs: int = Field(default=10, ge=1, le=100_000, description="Maximum passes over the training rows.")
    early_stopping: EarlyStopping | None = Field(default=None, description="Stop when validation stops improving.")
    seed: Seed = Field(default=0, description="Seed of initialization and shuffling.")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="auto picks cuda when available.")
    negative_downsampling: NegativeDownsampling | None = Field(
        default=None, description="Keep only a share of negatives; calibration undoes it analytically."
    )


# ----------------------------------------------------------------------------- calibration, validation


class IsotonicCalibration(Strict):
    kind: Literal["isotonic"] = Field(description="Calibrator tag.")
    interpolation: Literal["centered", "block_ends"] = Field(
        default="centered",
        description="centered: interpolate between block centroids (strictly increasing, keeps ranking); "
        "block_ends: sklearn IsotonicRegression's step-with-ramps knots.",
    )
    pseudo_count: float = Field(
        default=1.0, ge=0, description="Prior weight added to each block: y = (sum wy + c/2) / (sum w + c)."
    )


class NoCalibration(Strict):
    kind: Literal["none"] = Field(description="Calibrator tag: only the analytic downsampling correction.")


Calibration = Annotated[Union[IsotonicCalibration, NoCalibration], Field(discriminator="kind")]


class Gate(Strict):
    min: float | None = Field(default=None, description="Fail when the metric is below this.")
    max: float | None = Field(default=None, description="Fail when the metric is above this.")
    max_drop_vs_baseline: float | None = Field(
        default=None, ge=0, description="Fail when the metric falls more than this below the baseline's."
    )
    max_increase_vs_baseline: float | None = Field(
        default=None, ge=0, description="Fail when the metric rises more than this above the baseline's."
    )


class ValidationSpec(Strict):
    slices: list[str] = Field(default=[], description="Columns to report metrics per value of.")
    gates: dict[Metric, Gate] = Field(default={}, description="Thresholds on calibrated test metrics.")
    baseline: str | None = Field(default=None, description="Bundle to compare against for *_vs_baseline gates.")
    ece_bins: Annotated[int, Field(ge=2), at_most(
        MAX_ECE_BINS, lambda v: f"{gigabytes(v * 24.0)} of bin totals for no finer a picture")] = Field(
        default=10, description="Equal-width bins of the ECE and reliability diagram.")
    logloss_eps: float = Field(default=1e-7, gt=0, lt=0.5, description="Probabilities are clipped to [eps, 1-eps].")


class ParitySpec(Strict):
    atol: float = Field(default=1e-6, ge=0, description="Absolute tolerance of offline vs online scores.")
    rtol: float = Field(default=1e-5, ge=0, description="Relative tolerance of offline vs online scores.")
    worst_rows: int = Field(default=10, ge=1, le=10_000, description="How many of the worst rows to report.")


class TrackingSpec(Strict):
    uri: str | None = Field(
        default=None, description="MLflow tracking URI; --tracking-uri and MLFLOW_TRACKING_URI take precedence."
    )
    experiment: str | None = Field(default=None, description="Experiment name; the spec's name when absent.")


class Spec(Strict):
    version: Literal[1] = Field(description="Spec format version.")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$",
                      description="Model name: letters, digits, _ . -, starting with a letter or digit (at most 100).")
    data: DataSpec = Field(description="Where rows come from and how they split.")
    features: list[Feature] = Field(min_length=1, description="Input features.")
    model: ModelSpec = Field(default_factory=ModelSpec, description="Architecture.")
    train: TrainSpec = Field(default_factory=TrainSpec, description="Training loop.")
    calibration: Calibration = Field(
        default_factory=lambda: IsotonicCalibration(kind="isotonic"), description="Score calibration."
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
    def _features_are_not_targets(self):
        data = self.data
        for role, column in (("the label (data.label.column)", data.label.column), ("the weight (data.weight)", data.weight),
                             ("the oracle (data.oracle)", data.oracle)):
            if column is not None and any(f.name == column for f in self.features):
                raise ValueError(f"feature {column!r} is {role}: a model that reads its own target learns nothing "
                                 "usable; remove it from features")
        if data.columns is not None:
            missing = [f.name for f in self.features if f.name not in data.columns]
            if missing:
                raise ValueError(f"feature(s) {missing} are not among data.columns {data.columns}")
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


def _yaml_line(node, loc) -> int | None:
    """1-based line of the YAML node at path `loc` (deepest existing node)."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            child = next((v for k, v in node.value if k.value == str(part)), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            child = node.value[part]
        else:
            child = None
        if child is None:
            break
        node, line = child, child.start_mark.line + 1
    return line


def _format_errors(error: ValidationError, root_node, source: str) -> str:
    lines = []
    for item in error.errors():
        loc = [p for p in item["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        path_parts = []
        node_path = []
        for part in loc:
            if isinstance(part, str) and node_path and part in _TAGS:
                continue  # pydantic puts the union tag in loc; it is not a YAML key
            path_parts.append(str(part))
            node_path.append(part)
        path = ".".join(path_parts) or "(top level)"
        line = _yaml_line(root_node, node_path)
        where = f"{source}:{line}" if line else source
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key; remove it or check its spelling (see `snn schema`)"
        lines.append(f"{where}: {path}: {message}")
    return "invalid spec:\n  " + "\n  ".join(lines)


_TAGS = {"continuous", "categorical", "binary", "percentile", "hashing", "none", "isotonic"}


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
                            raise SpecError(f"invalid spec:\n  {source}:{line}: key {key.value!r} is given twice in one "
                                            f"mapping (first on line {seen[key.value]}); YAML would silently keep "
                                            "the last: keep one")
                        seen[key.value] = line
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in sizes)
            continue
        sizes[id(node)] = 1 + sum(sizes.get(id(child), 0) for child in children)
        if sizes[id(node)] > SPEC_MAX_NODES:
            raise SpecError(f"invalid spec: {source} expands to more than {SPEC_MAX_NODES:,} YAML values (through "
                            "anchors and aliases); a spec is a small file: write it out plainly")


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
        raise SpecError(f"invalid spec: {source} nests brackets or blocks too deeply to read; a spec is a few "
                        "levels deep") from None
    if not isinstance(raw, dict):
        raise SpecError(f"invalid spec: {source} must be a YAML mapping with keys such as version, name, data, features")
    try:
        return Spec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(_format_errors(exc, root_node, source)) from None
    except RecursionError:
        raise SpecError(f"invalid spec: {source} nests values too deeply to validate") from None


def read_spec_text(path: Path) -> str:
    """The spec file's text: a readable regular file of at most SPEC_MAX_BYTES, in UTF-8."""
    from .store.files import input_file

    try:
        input_file(path, "spec file", "pass the path of a YAML spec (see specs/)", max_bytes=SPEC_MAX_BYTES)
    except SnnError as exc:
        raise SpecError(str(exc)) from None
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"invalid spec: {path} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                        "save it as UTF-8") from None


def load_spec(path: str | Path) -> LoadedSpec:
    path = Path(path)
    text = read_spec_text(path)
    return LoadedSpec(spec=parse_spec(text, str(path)), path=path.resolve(), text=text)


def json_schema() -> dict:
    schema = Spec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "snn spec"
    return schema
