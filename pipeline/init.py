"""`snn init DATA`: a complete, commented spec from a data file's columns.

The file's format comes from its extension (or `--format`: data/readers.format_of). A sample of
its rows (SAMPLE_ROWS) is read to infer each column's kind:

    the label      --label, else the first column named like one (LABEL_NAMES), else the last
                   column with exactly two values; 0/1 numbers are written as the column alone,
                   anything else with `positive:` naming the rarer value
    the row key    a column named like an id (`id`, `*_id`, `key`) whose sampled values are unique
    skipped        a column with one value, or text unique on most rows (an id or free text)
    binary         two values among 0/1, true/false, yes/no
    continuous     numbers
    categorical    text
    id_list        list columns (parquet), and libsvm's `features` (weighted ids)

The rows split in file order: the last TEST_SHARE of the file is the test split (held out, never
seen in training: for time-ordered logs, the future), and a hashed HOLDOUT of the rest validates
(early stopping, calibration). The spec's header points editors at `snn.schema.json`, written
beside it when absent.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from .data.readers import ROW_ID, Reader, format_of
from .errors import InputError
from .files import output_file
from .spec import json_schema, parse_spec

SAMPLE_ROWS = 100_000
TEST_SHARE = 0.2
HOLDOUT = 0.1
LABEL_NAMES = ("label", "target", "y", "click", "clicked", "is_click", "converted", "conversion", "outcome")
BINARY_VALUES = {"0", "1", "true", "false", "yes", "no"}
SCHEMA_FILE = "snn.schema.json"


@dataclass(frozen=True)
class Column:
    """What the sample says about one column: its kind (or why it is skipped) and a comment."""

    name: str
    kind: str | None  # None: skipped
    note: str


def infer_columns(sample: pl.DataFrame, label: str, key: str | None) -> list[Column]:
    """Each column but the label and the key as a feature kind, or skipped with the reason."""
    columns = []
    for name in sample.columns:
        if name in (label, key):
            continue
        series = sample[name]
        present = series.drop_nulls()
        distinct = present.n_unique() if present.len() else 0
        if isinstance(series.dtype, pl.List):
            columns.append(Column(name, "id_list", "a list column: its items are ids"))
        elif name == "features" and isinstance(series.dtype, pl.String) and _weighted_items(present):
            columns.append(Column(name, "weighted_id_list", "id:value items (libsvm): a weighted id list"))
        elif distinct <= 1:
            columns.append(Column(name, None, "skipped: one value in the sampled rows"))
        elif distinct == 2 and {str(v).lower() for v in present.unique().to_list()} <= BINARY_VALUES:
            columns.append(Column(name, "binary", "two values"))
        elif series.dtype.is_numeric() or (series.dtype == pl.String and _numbers(present)):
            columns.append(Column(name, "continuous", f"numbers, {distinct:,} distinct"))
        elif distinct > 0.5 * present.len() and present.len() > 100:
            columns.append(Column(name, None, f"skipped: {distinct:,} distinct texts in {present.len():,} rows"))
        else:
            columns.append(Column(name, "categorical", f"text, {distinct:,} distinct"))
    return columns


def _numbers(texts: pl.Series) -> bool:
    return texts.len() > 0 and texts.cast(pl.Float64, strict=False).null_count() == 0


def _weighted_items(texts: pl.Series) -> bool:
    return texts.len() > 0 and bool(texts.head(100).str.contains(r"^\S+:\S+(\s+\S+:\S+)*$").all())


def guess_label(sample: pl.DataFrame, given: str | None) -> str:
    """The label column: `given`, a column named like a label, or the last two-valued column."""
    if given is not None:
        if given not in sample.columns:
            raise InputError(f"--label {given!r} is not a column; the file has: {', '.join(sample.columns)}")
        return given
    lowered = {name.lower(): name for name in sample.columns}
    for candidate in LABEL_NAMES:
        if candidate in lowered:
            return lowered[candidate]
    two_valued = [name for name in sample.columns if sample[name].drop_nulls().n_unique() == 2]
    if not two_valued:
        raise InputError("no column looks like a label (two values); name it with --label COLUMN")
    return two_valued[-1]


POSITIVE_WORDS = {"1", "+1", "1.0", "true", "yes", "y", "t"}  # values that say "positive" whatever their share


def label_entry(sample: pl.DataFrame, label: str) -> str:
    """The spec's `label:` value: the column alone for 0/1 numbers, else `{column, positive}`: the
    values that say positive (1, +1, true, yes: `+1` and `1` together for a ±1 label), or, when none
    does, the rarer value (the event a click log records)."""
    values = sample[label].drop_nulls()
    numbers = values.cast(pl.Float64, strict=False)
    if numbers.null_count() == 0 and set(numbers.unique().to_list()) <= {0.0, 1.0}:
        return json.dumps(label)
    texts = values.cast(pl.String).str.strip_chars()
    counts = texts.value_counts(sort=True)
    found = [str(v) for v in counts[label].to_list()]
    positive = [v for v in found if v.lower() in POSITIVE_WORDS]
    negative = [v for v in found if v not in positive]
    if not (positive and len(negative) == 1) and len(found) != 2:
        shown = ", ".join(found[:5])
        raise InputError(
            f"label {label!r} has {len(found)} values ({shown}, ...); a label has two: pick another with --label"
        )
    if not positive or not negative:
        positive = [found[1]]  # the rarer of two values
    return "{column: " + json.dumps(label) + ", positive: " + json.dumps(positive) + "}"


def guess_key(sample: pl.DataFrame) -> str | None:
    """A column named like an id whose sampled values are unique, or None."""
    for name in sample.columns:
        lowered = name.lower()
        if lowered in ("id", "key", "row_key") or lowered.endswith("_id"):
            values = sample[name]
            if values.null_count() == 0 and values.n_unique() == values.len():
                return name
    return None


def read_sample(path: Path, data_format: str, separator: str) -> tuple[pl.DataFrame, int]:
    """The first SAMPLE_ROWS rows as the spec would read them, and the file's row count."""
    reader = Reader(data_format, separator=separator, null_values=("", "?", "NA", "NaN", "null"))
    rows = reader.scan_rows(path, None)
    try:
        count = int(rows.select(pl.len()).collect().item())
        sample = rows.head(SAMPLE_ROWS).collect().drop(ROW_ID, strict=False)  # the reader's row counter
    except Exception as exc:
        raise reader.unreadable(path, exc) from None
    if count < 10:
        raise InputError(f"{path} has {count} rows; a model needs more (hundreds at least)")
    return sample, count


def init_spec(data: Path, spec_path: Path, label: str | None, data_format: str | None, name: str | None) -> dict:
    """Write a complete spec for `data` at `spec_path` (and snn.schema.json beside it when absent);
    returns {spec, label, features, skipped, rows, ...} for the command's summary."""
    data_format = format_of(data, data_format)
    separator = "\t" if data.suffix.lower() == ".tsv" else ","
    output_file(spec_path, "spec", inputs=(data,))
    if spec_path.exists():
        raise InputError(f"{spec_path} exists; pass another -o path, or delete it to start over")
    sample, count = read_sample(data, data_format, separator)
    label = guess_label(sample, label)
    key = guess_key(sample)
    columns = infer_columns(sample, label, key)
    features = [c for c in columns if c.kind is not None]
    if not features:
        raise InputError(f"{data} has no column to learn from besides the label {label!r}")
    name = name or (re.sub(r"[^A-Za-z0-9_.-]", "-", data.stem).lstrip("._-")[:100] or "model")
    relative = os.path.relpath(data.resolve(), spec_path.resolve().parent)
    text = spec_text(name, data_format, separator, relative, count, label_entry(sample, label), key, columns)
    parse_spec(text, str(spec_path))  # what init writes is a valid spec
    spec_path.parent.mkdir(parents=True, exist_ok=True)
    spec_path.write_text(text)
    schema = spec_path.parent / SCHEMA_FILE
    if not schema.exists():
        schema.write_text(json.dumps(json_schema(), indent=2) + "\n")
    return {
        "spec": str(spec_path),
        "data": str(data),
        "format": data_format,
        "rows": count,
        "label": label,
        "key": key,
        "features": {c.name: "id_list (weighted)" if c.kind == "weighted_id_list" else c.kind for c in features},
        "skipped": {c.name: c.note for c in columns if c.kind is None},
    }


def _feature_line(column: Column) -> str:
    quoted = json.dumps(column.name)
    if column.kind == "weighted_id_list":
        body = f'{{name: {quoted}, kind: id_list, separator: " ", weighted: true}}'
    elif column.kind is None:
        return f"  # - {{name: {quoted}}}  # {column.note}"
    else:
        body = f"{{name: {quoted}, kind: {column.kind}}}"
    return f"  - {body}  # {column.note}"


def spec_text(
    name: str,
    data_format: str,
    separator: str,
    data: str,
    rows: int,
    label: str,
    key: str | None,
    columns: list[Column],
) -> str:
    """The spec as commented YAML (every section present, the defaults written out)."""
    split = int(rows * (1 - TEST_SHARE))
    lines = [
        f"# yaml-language-server: $schema={SCHEMA_FILE}",
        f"# Written by `snn init` from {data} ({rows:,} rows). Check the feature kinds, then: snn run <this file>",
        "# `snn spec <this file>` prints it with every default; `snn schema` documents every key.",
        "version: 1",
        f"name: {json.dumps(name)}",
        "data:",
        f"  format: {data_format}",
        *([f"  separator: {json.dumps(separator)}"] if separator != "," else []),
        f"  train: {{path: {json.dumps(data)}, rows: [0, {split}]}}    # the first {1 - TEST_SHARE:.0%} of the rows",
        f"  test: {{path: {json.dumps(data)}, rows: [{split}, {rows}]}}  # the last {TEST_SHARE:.0%}: "
        "graded, never trained on",
        f"  holdout: {HOLDOUT}   # a hashed {HOLDOUT:.0%} of train validates (early stopping, calibration)",
        f"  label: {label}",
        *([f"  key: {json.dumps(key)}   # carried into every prediction file"] if key else []),
        "features:",
        *(_feature_line(c) for c in columns),
        "model:",
        "  sparse_linear: {width: 64}        # the sparse linear layer over every feature's ids",
        "  mlp: {layers: [64, 32]}           # then this MLP",
        "train:",
        "  epochs: 4",
        "  batch_size: 512",
        "  lr: 0.003",
        "  early_stopping: {metric: logloss, patience: 2}   # the best epoch is kept either way",
        "calibration: {kind: auto}           # shift, platt or isotonic, chosen by cross-validated log loss",
        "validation:",
        "  slices: []                        # columns to report metrics by, e.g. [country]",
        "  gates: {}                         # e.g. {auc: {min: 0.75}}: exit 3 when a gate fails",
        f"tracking: {{experiment: {json.dumps(name)}}}   # MLflow; {{enabled: false}} or --no-tracking: off",
        "",
    ]
    return "\n".join(lines)
