"""Per-row values of a frame: stable key hashes (holdout, downsampling), labels and weights."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import polars as pl

from ..errors import InputError
from .readers import ROW_ID
from .spec import DataSpec, Holdout, Label, TaskLabel


def stable_hash64(values: np.ndarray | list, seed: int = 0) -> np.ndarray:
    """Process- and version-stable 64-bit hash of keys (BLAKE2b of the key's text), uint64 [n]."""
    salt = seed.to_bytes(8, "little", signed=True)
    out = np.empty(len(values), dtype=np.uint64)
    for i, value in enumerate(values):
        digest = hashlib.blake2b(str(value).encode(), digest_size=8, salt=salt[:8].ljust(16, b"\0")).digest()
        out[i] = int.from_bytes(digest, "little")
    return out


def splitmix64(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """Vectorized stable 64-bit mix of integer keys (SplitMix64 finalizer), uint64 [n]."""
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15) * np.uint64(seed + 1)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def unit_hash(keys: pl.Series, seed: int) -> np.ndarray:
    """Stable uniform [0, 1) number per key: integer keys via SplitMix64, others via BLAKE2b."""
    if keys.dtype.is_integer():
        h = splitmix64(keys.to_numpy(), seed)
    else:
        h = stable_hash64(keys.cast(pl.String).to_list(), seed)
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def key_column(data: DataSpec) -> str:
    return data.key or ROW_ID


def holdout_mask(keys: pl.Series, holdout: Holdout) -> np.ndarray:
    """bool [n]: rows of the train source held out for validation (stable key hash < fraction)."""
    return unit_hash(keys, holdout.seed) < holdout.fraction


def labels_of(df: pl.DataFrame, data: DataSpec, where: str) -> np.ndarray:
    """Labels as float32 [n] in {0, 1} (or [0, 1]), or [n, T] with several tasks (`data.labels`);
    NaN or unknown values are an InputError."""
    columns = [label_values(df, label, where) for label in data.label_list]
    return columns[0] if data.label is not None else np.stack(columns, 1)


def label_values(df: pl.DataFrame, label: Label, where: str) -> np.ndarray:
    """One label column as float32 [n] in {0, 1} (or [0, 1])."""
    col = df[label.column]
    if label.positive is not None:
        text = col.cast(pl.String).str.strip_chars().str.strip_chars_end(".")
        if text.null_count():
            raise InputError(
                f"{where}: label column {label.column!r} has {text.null_count()} missing values; drop those rows"
            )
        positive = {p.strip().rstrip(".") for p in label.positive}
        return np.asarray(text.is_in(list(positive)).to_numpy(), dtype=np.float32)
    values = col.cast(pl.Float64, strict=False)
    bad = values.is_null() | values.is_nan()
    if bad.any():
        first = df.filter(bad)[label.column].head(3).to_list()
        raise InputError(
            f"{where}: label column {label.column!r} has {int(bad.sum())} missing or non-numeric values "
            f"(e.g. {first}); labels must be numbers in [0, 1], or set the label's `positive` for string labels"
        )
    arr = values.to_numpy().astype(np.float32)
    if arr.min() < 0 or arr.max() > 1:
        raise _outside_0_1(col, values, label, where)
    return arr


def _outside_0_1(col: pl.Series, values: pl.Series, label: Label, where: str) -> InputError:
    """The error of a numeric label column with values outside [0, 1]: the values found (up to 6,
    as written) and a `positive` that would read them (the positive ones, or the largest)."""
    found = (
        pl.DataFrame({"text": col.cast(pl.String).str.strip_chars(), "value": values}).unique().sort("value", "text")
    )
    texts = found["text"].to_list()
    if len(texts) <= 6:
        shown = ", ".join(texts[:-1]) + f" and {texts[-1]}" if len(texts) > 1 else texts[0]
        example = found.filter(pl.col("value") > 0)["text"].to_list() or [texts[-1]]
    else:
        shown = f"{found['value'].n_unique()} distinct values from {texts[0]} to {texts[-1]}"
        example = found.filter(pl.col("value") == pl.col("value").max())["text"].to_list()
    field = "its `positive` in data.labels" if isinstance(label, TaskLabel) else "data.label.positive"
    return InputError(
        f"{where}: label column {label.column!r} has values outside [0, 1] (found {shown}); set {field} to "
        f"the values that mean 1, e.g. positive: {json.dumps(example)}, or map the column to 0/1 first"
    )


def weights_of(df: pl.DataFrame, data: DataSpec, where: str) -> np.ndarray:
    """Row weights float32 [n]; ones when data.weight is not set. Each weight is a finite number
    >= 0 that float32 holds (training sums them in float32)."""
    if data.weight is None:
        return np.ones(df.height, dtype=np.float32)
    values = df[data.weight].cast(pl.Float64, strict=False)
    arr = values.to_numpy()
    if values.null_count() or not np.all(np.isfinite(arr)) or (arr < 0).any():
        raise InputError(f"{where}: weight column {data.weight!r} must hold finite numbers >= 0 in every row")
    if (arr > np.finfo(np.float32).max).any():
        raise InputError(
            f"{where}: weight column {data.weight!r} has weights up to {arr.max():.3g}, beyond float32 "
            f"(3.4e38); rescale the weights (only their ratios matter)"
        )
    return arr.astype(np.float32)
