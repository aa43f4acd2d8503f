"""The spec's `data:` section: where rows come from, how they split, which columns play which role."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from ..config import RowIndex, Seed, Strict


def shorthand(field: str, kinds: tuple[type, ...]):
    """A `mode="before"` validator: a value of one of `kinds` stands for `{field: value}` (a source
    given as its path, a label as its column, a holdout as its fraction)."""

    def expand(cls, value: Any) -> Any:
        return {field: value} if isinstance(value, kinds) and not isinstance(value, bool) else value

    return model_validator(mode="before")(expand)


class Source(Strict):
    """One input file, optionally restricted to a half-open range of its data rows. Shorthand: the path
    alone (`train: data.csv`)."""

    _path_alone = shorthand("path", (str,))

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
    """Carve the validation split out of train by a stable hash of the row key. Shorthand: the
    fraction alone (`holdout: 0.1`)."""

    _fraction_alone = shorthand("fraction", (int, float))

    fraction: float = Field(gt=0, lt=1, description="Share of train rows held out for validation.")
    seed: Seed = Field(default=0, description="Seed of the key hash; change it to draw another holdout.")


class Label(Strict):
    """The label column. Shorthand: the column's name alone (`label: clicked`)."""

    _column_alone = shorthand("column", (str,))
    column: str = Field(description="Column holding the label.")
    positive: list[str] | None = Field(
        default=None,
        description="String values that mean 1 (compared after stripping whitespace and a trailing '.'); "
        "absent: the column is numeric 0/1.",
    )


class TaskLabel(Label):
    """One task's label (`data.labels`), and optionally its oracle."""

    oracle: str | None = Field(
        default=None,
        description="Column holding each row's true probability of this task's event (synthetic data); validate "
        "reports the oracle's metrics next to the task's.",
    )


TASK_NAME = r"^[a-z][a-z0-9_]{0,23}$"  # a task's blocks are named <task>_tower ... (32 at most)


class NegativeDownsampling(Strict):
    rate: float = Field(gt=0, le=1, description="Share of negative training rows kept (positives all kept).")
    seed: Seed = Field(default=0, description="Seed of the per-row keep decision.")


class TaskSampling(Strict):
    """Which train rows one of several tasks keeps (built by snn from `tasks`, never written): its
    negative downsampling, and the index of the task it is given (it learns only where that task's
    label is 1)."""

    downsampling: NegativeDownsampling | None = None
    given: int | None = None


class DataSpec(Strict):
    format: Literal["csv", "parquet", "criteo", "libsvm", "libffm"] = Field(
        description="csv (header or `columns`), parquet, criteo (raw Kaggle TSV: label, I1-I13, C1-C26, no header), "
        "libsvm (`<label> [qid:<q>] <index>:<value> ...` lines, also libFM and SVMlight) or libffm (`<label> "
        "<field>:<index>:<value> ...`). libsvm and libffm files have no header; they read as the columns label, "
        "qid (libsvm files with qids) and features (the items, space-separated: an id_list with separator ' ' "
        "and weighted: true; raise its max_length, 64 by default, for lines with more items)."
    )
    columns: list[str] | None = Field(default=None, description="Column names for a CSV file without a header row.")
    separator: str = Field(default=",", description="CSV field separator (one character).")
    comment_prefix: str | None = Field(
        default=None,
        description="CSV: lines starting with this text are skipped (UCI Adult's test file starts with "
        "'|1x3 Cross validator'); absent: no line is skipped.",
    )
    null_values: list[str] = Field(default=["", "?", "NA", "NaN", "null"], description="Raw strings that mean missing.")
    train: Source = Field(description="Training rows.")
    validation: Source | None = Field(
        default=None, description="Explicit validation rows (early stopping, calibration)."
    )
    holdout: Holdout | None = Field(
        default=None, description="Hold out a hashed share of train as validation instead of `validation`."
    )
    test: Source | None = Field(default=None, description="Test rows that `snn validate` reports on.")
    label: Label | None = Field(default=None, description="The label column and its positive values.")
    labels: dict[str, TaskLabel] | None = Field(
        default=None,
        description="Several tasks instead of `label`: each task's label (and oracle) by the task's name, in the "
        "order of `tasks`, which says how each is learned.",
    )
    key: str | None = Field(
        default=None,
        description="Row key column carried into every prediction file; absent: `row_id`, the row's 0-based "
        "index in its file.",
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
        if len(value) != 1 or value in '\r\n"':
            raise ValueError("separator must be exactly one character, not a quote or a line break")
        return value

    @field_validator("comment_prefix")
    @classmethod
    def _short_prefix(cls, value):
        if (value is not None and not (1 <= len(value) <= 5)) or (
            value is not None and ("\n" in value or "\r" in value)
        ):
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
    def _line_format_columns(self):
        """libsvm and libffm files name their own columns (label, qid, features) and have no header."""
        if self.format in ("libsvm", "libffm"):
            if self.columns is not None:
                raise ValueError(
                    f"data.columns names the columns of a CSV file; a {self.format} file reads as label, "
                    f"{'qid, ' if self.format == 'libsvm' else ''}features: drop data.columns"
                )
            sources = {"train": self.train, "validation": self.validation, "test": self.test}
            headed = [name for name, source in sources.items() if source is not None and source.header]
            if headed:
                raise ValueError(f"a {self.format} file has no header line; drop `header: true` from data.{headed[0]}")
        return self

    @property
    def label_columns(self) -> list[str]:
        """The label column, or each task's, in task order."""
        return [label.column for label in self.label_list]

    @property
    def label_list(self) -> list[Label]:
        """`label`, or each task's label in task order."""
        return [self.label] if self.label is not None else list((self.labels or {}).values())

    @property
    def oracle_columns(self) -> list[str]:
        """The oracle column(s) the spec names: `oracle`, or the tasks' (those given)."""
        tasks = [label.oracle for label in (self.labels or {}).values() if label.oracle is not None]
        return [self.oracle] if self.oracle is not None else tasks

    @model_validator(mode="after")
    def _one_validation_source(self):
        if (self.label is None) == (self.labels is None):
            raise ValueError("give either `label` (one task) or `labels` (several, by task name)")
        if self.labels is not None:
            if len(self.labels) < 2:
                raise ValueError("`labels` names at least two tasks; for one, write `label`")
            bad = [name for name in self.labels if not re.match(TASK_NAME, name)]
            if bad:
                raise ValueError(f"task name(s) {bad} must be lowercase identifiers (a-z, 0-9, _; at most 24)")
            if self.oracle is not None:
                raise ValueError("with `labels`, give each task's oracle in its label (`oracle: <column>`)")
        roles = [
            *((f"the label of {name!r}", label.column) for name, label in (self.labels or {}).items()),
            *((f"the oracle of {name!r}", label.oracle) for name, label in (self.labels or {}).items()),
            *((("data.label.column", self.label.column),) if self.label is not None else ()),
            ("data.weight", self.weight),
            ("data.key", self.key),
            ("data.oracle", self.oracle),
        ]
        named = [(role, column) for role, column in roles if column is not None]
        for i, (role, column) in enumerate(named):
            for other_role, other in named[i + 1 :]:
                if column == other:
                    raise ValueError(f"{role} and {other_role} are both {column!r}; each role needs its own column")
        if self.validation is None and self.holdout is None:
            raise ValueError("give either `validation` (a source) or `holdout` (a fraction of train)")
        if self.validation is not None and self.holdout is not None:
            raise ValueError("give only one of `validation` and `holdout`")
        return self


@dataclass(frozen=True)
class DataFiles:
    """The data section with its paths resolved: relative paths are relative to `base_dir`, the spec
    file's folder (symlinks are not followed, so a broken link or a loop is reported as such)."""

    data: DataSpec
    base_dir: Path
    share: bool = False  # a rank's share of the rows (steps/prepare.shard_of): a range may hold no data rows

    def path(self, source: Source) -> Path:
        path = Path(source.path).expanduser()
        return path if path.is_absolute() else Path(os.path.normpath(self.base_dir / path))

    def sources(self) -> list[tuple[str, Source]]:
        """(name, source) of train, validation and test, those given."""
        data = self.data
        return [
            (name, source)
            for name, source in (("train", data.train), ("validation", data.validation), ("test", data.test))
            if source is not None
        ]
