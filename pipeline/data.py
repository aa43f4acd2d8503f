"""Readers and splits: raw files -> polars frames with a row key, labels and weights.

CSV and Criteo TSV are read as strings (stripped, null markers mapped to null) and typed per
feature later, so a stray non-numeric value is reported by column instead of silently inferred.
Every frame carries the row key column (`data.key`, or `row_id` = the row's 0-based index in
its file) so predictions can be joined back.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from .errors import InputError
from .spec import DataSpec, LoadedSpec, Source

ROW_ID = "row_id"
CRITEO_COLUMNS = ["label"] + [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)]


@dataclass(frozen=True)
class Reader:
    """How to read one file format: the data spec's format, columns, separator, null markers."""

    format: str
    columns: tuple[str, ...] | None = None
    separator: str = ","
    null_values: tuple[str, ...] = ("", "?")

    @classmethod
    def from_spec(cls, data: DataSpec) -> "Reader":
        return cls(
            data.format,
            tuple(data.columns) if data.columns else None,
            data.separator,
            tuple(data.null_values),
        )

    def to_json(self) -> dict:
        return {"format": self.format, "columns": self.columns, "separator": self.separator,
                "null_values": self.null_values}

    @classmethod
    def from_json(cls, obj: dict) -> "Reader":
        return cls(obj["format"], tuple(obj["columns"]) if obj["columns"] else None, obj["separator"],
                   tuple(obj["null_values"]))

    def scan(self, path: Path) -> pl.LazyFrame:
        """Lazy frame of the file with a `row_id` column; string columns stripped, nulls mapped."""
        return self._clean(self._source(path))

    def _source(self, path: Path) -> pl.LazyFrame:
        """The file as read, with `row_id` (the row's index in the file)."""
        if not path.is_file():
            raise InputError(f"data file {path} does not exist; fix the path in the spec (paths are relative to the spec file)")
        if path.stat().st_size == 0:
            raise InputError(f"data file {path} is empty; point the spec at a file with rows")
        if self.format == "parquet":
            lf = pl.scan_parquet(path).with_row_index(ROW_ID)
        else:
            if self.format == "criteo":
                names, separator, header = CRITEO_COLUMNS, "\t", False
            else:
                names, separator, header = self.columns, self.separator, self.columns is None
            lf = pl.scan_csv(
                path,
                has_header=header,
                new_columns=list(names) if names else None,
                separator=separator,
                infer_schema=False,
                comment_prefix="|" if self.format == "csv" else None,
                row_index_name=ROW_ID,
                truncate_ragged_lines=False,
            )
        return lf

    def _clean(self, lf: pl.LazyFrame) -> pl.LazyFrame:
        """Strip strings, map null markers to null, drop blank (all-null) rows."""
        schema = lf.collect_schema()
        cleaned = []
        for name, dtype in schema.items():
            if name == ROW_ID:
                continue
            col = pl.col(name)
            if dtype == pl.String:
                col = col.str.strip_chars()
                col = pl.when(col.is_in(list(self.null_values))).then(None).otherwise(col).alias(name)
            cleaned.append(col)
        data_cols = [c for c in schema if c != ROW_ID]
        # blank lines come back as all-null rows
        return lf.with_columns(cleaned).filter(~pl.all_horizontal([pl.col(c).is_null() for c in data_cols]))

    def scan_rows(self, path: Path, rows: tuple[int, int] | None) -> pl.LazyFrame:
        """`scan` restricted to the half-open row range (when given), row_id as Int64."""
        lf = self.scan(path)
        if rows is not None:
            lf = lf.filter(pl.col(ROW_ID).is_between(rows[0], rows[1], closed="left"))
        return lf.with_columns(pl.col(ROW_ID).cast(pl.Int64))

    def _unreadable(self, path: Path, exc: Exception) -> InputError:
        return InputError(f"cannot read {path} as {self.format}: {str(exc).splitlines()[0]}; "
                          f"check data.format, data.separator and data.columns")

    def read(self, path: Path, rows: tuple[int, int] | None = None) -> pl.DataFrame:
        try:
            df = self.scan_rows(path, rows).collect()
        except pl.exceptions.PolarsError as exc:
            raise self._unreadable(path, exc) from None
        if df.height == 0:
            raise _no_rows(path, rows)
        return df

    def chunks(self, path: Path, rows: tuple[int, int] | None, chunk_rows: int, columns: list[str]):
        """Stream `columns` of the file (or its row range) as frames of `chunk_rows` rows, in file order."""
        lf = self.scan_rows(path, rows)
        check_columns(list(lf.collect_schema()), columns, path)
        selected = [ROW_ID, *(c for c in dict.fromkeys(columns) if c != ROW_ID)]
        produced = 0
        try:
            for frame in (self._parquet_slices(path, rows, chunk_rows, selected) if self.format == "parquet"
                          else lf.select(selected).collect_batches(chunk_size=chunk_rows)):
                produced += frame.height
                yield frame
        except pl.exceptions.PolarsError as exc:
            raise self._unreadable(path, exc) from None
        if produced == 0:
            raise _no_rows(path, rows)

    def _parquet_slices(self, path: Path, rows: tuple[int, int] | None, chunk_rows: int, selected: list[str]):
        """Parquet chunks as slices of the file (read row group by row group, one chunk in memory at
        a time; the streaming engine's batches read ahead of a slow consumer)."""
        source = self._source(path)
        total = source.select(pl.len()).collect().item()
        start, stop = (rows[0], min(rows[1], total)) if rows is not None else (0, total)
        for offset in range(start, stop, chunk_rows):
            piece = source.slice(offset, min(chunk_rows, stop - offset))
            yield self._clean(piece).with_columns(pl.col(ROW_ID).cast(pl.Int64)).select(selected).collect()


def _no_rows(path: Path, rows) -> InputError:
    where = f" rows [{rows[0]}, {rows[1]})" if rows else ""
    return InputError(f"{path}{where} holds no data rows; point the spec at rows that exist")


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


def check_columns(available: list[str], needed: list[str], path: Path) -> None:
    missing = [c for c in needed if c not in available]
    if missing:
        have = ", ".join(c for c in available if c != ROW_ID)
        raise InputError(
            f"column(s) {', '.join(missing)} not found in {path}; the file has: {have}. "
            "Fix the names in the spec (features, data.label, data.key, data.weight)."
        )


def _sources_overlap(a: Source, b: Source, loaded: LoadedSpec) -> bool:
    same_file = loaded.resolve(a.path) == loaded.resolve(b.path) or (
        file_digest(loaded.resolve(a.path)) == file_digest(loaded.resolve(b.path))
    )
    if not same_file:
        return False
    if a.rows is None or b.rows is None:
        return True
    return a.rows[0] < b.rows[1] and b.rows[0] < a.rows[1]


_DIGESTS: dict[tuple[str, float, int], str] = {}


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes, memoized per (path, mtime, size) within a process."""
    stat = path.stat()
    memo = (str(path), stat.st_mtime, stat.st_size)
    if memo not in _DIGESTS:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _DIGESTS[memo] = h.hexdigest()
    return _DIGESTS[memo]


def input_fingerprints(loaded: LoadedSpec) -> dict[str, str]:
    """sha256 of every input file the data spec names, for cache keys."""
    data = loaded.spec.data
    sources = [s for s in (data.train, data.validation, data.test) if s is not None]
    return {s.path: file_digest(loaded.resolve(s.path)) for s in sources if loaded.resolve(s.path).is_file()}


def repeated_keys(key: str, path: Path, examples: list) -> InputError:
    return InputError(f"key column {key!r} in {path} repeats keys such as {examples}; parity joins on it, "
                      "so every row needs a unique key (or drop data.key to use row_id)")


def check_sources(loaded: LoadedSpec) -> None:
    """Every named file exists, and train does not overlap validation/test unless allowed."""
    data = loaded.spec.data
    for name, source in (("train", data.train), ("validation", data.validation), ("test", data.test)):
        if source is not None and not loaded.resolve(source.path).is_file():
            raise InputError(f"data.{name} file {loaded.resolve(source.path)} does not exist; fix the path in the "
                             "spec (paths are relative to the spec file)")
    if not data.allow_overlap:
        for name, other in (("validation", data.validation), ("test", data.test)):
            if other is not None and _sources_overlap(data.train, other, loaded):
                raise InputError(
                    f"data.train and data.{name} overlap (same file, overlapping rows); give disjoint `rows` "
                    "ranges or files, or set data.allow_overlap: true if that is intended"
                )


def holdout_mask(keys: pl.Series, data: DataSpec) -> np.ndarray:
    """bool [n]: rows of the train source held out for validation (stable key hash < fraction)."""
    return unit_hash(keys, data.holdout.seed) < data.holdout.fraction


def labels_of(df: pl.DataFrame, data: DataSpec, where: str) -> np.ndarray:
    """Labels as float32 [n] in {0, 1} (or [0, 1]); NaN or unknown values are an InputError."""
    col = df[data.label.column]
    if data.label.positive is not None:
        text = col.cast(pl.String).str.strip_chars().str.strip_chars_end(".")
        if text.null_count():
            raise InputError(f"{where}: label column {data.label.column!r} has {text.null_count()} missing values; drop those rows")
        positive = {p.strip().rstrip(".") for p in data.label.positive}
        return np.asarray(text.is_in(list(positive)).to_numpy(), dtype=np.float32)
    values = col.cast(pl.Float64, strict=False)
    bad = values.is_null() | values.is_nan()
    if bad.any():
        first = df.filter(bad)[data.label.column].head(3).to_list()
        raise InputError(
            f"{where}: label column {data.label.column!r} has {int(bad.sum())} missing or non-numeric values "
            f"(e.g. {first}); labels must be numbers in [0, 1], or set data.label.positive for string labels"
        )
    arr = values.to_numpy().astype(np.float32)
    if arr.min() < 0 or arr.max() > 1:
        raise InputError(f"{where}: label column {data.label.column!r} has values outside [0, 1]; map it to 0/1 first")
    return arr


def weights_of(df: pl.DataFrame, data: DataSpec, where: str) -> np.ndarray:
    """Row weights float32 [n]; ones when data.weight is not set."""
    if data.weight is None:
        return np.ones(df.height, dtype=np.float32)
    values = df[data.weight].cast(pl.Float64, strict=False)
    arr = values.to_numpy()
    if values.null_count() or not np.all(np.isfinite(arr)) or (arr < 0).any():
        raise InputError(f"{where}: weight column {data.weight!r} must hold finite numbers >= 0 in every row")
    return arr.astype(np.float32)
