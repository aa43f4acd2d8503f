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

from ..errors import InputError
from ..store.files import input_file
from .spec import DataSpec, Source
from ..spec import LoadedSpec, Spec

ROW_ID = "row_id"
ROW_INDEX = "__snn_row_index__"  # the reader's own row counter, named apart from the file's columns
CRITEO_COLUMNS = ["label"] + [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)]
PARQUET_MAGIC = b"PAR1"
# what polars raises on a file it cannot read (a panic of its Rust core is a BaseException)
READ_ERRORS = (pl.exceptions.PolarsError, pl.exceptions.PanicException, OSError, UnicodeDecodeError)
_MAGIC = {b"\x1f\x8b": "gzip-compressed (decompress it first: gunzip)", b"PK\x03\x04": "a zip archive (unzip it first)",
          b"BZh": "bzip2-compressed (decompress it first: bunzip2)", b"\x28\xb5\x2f\xfd": "zstd-compressed (decompress it first)"}


@dataclass(frozen=True)
class Reader:
    """How to read one file format: the data spec's format, columns, separator, null markers and
    comment prefix. Each file is checked (a readable regular file whose bytes match the format)
    before polars opens it."""

    format: str
    columns: tuple[str, ...] | None = None
    separator: str = ","
    null_values: tuple[str, ...] = ("", "?")
    comment_prefix: str | None = None

    @classmethod
    def from_spec(cls, data: DataSpec) -> "Reader":
        return cls(
            data.format,
            tuple(data.columns) if data.columns else None,
            data.separator,
            tuple(data.null_values),
            data.comment_prefix,
        )

    def to_json(self) -> dict:
        return {"format": self.format, "columns": self.columns, "separator": self.separator,
                "null_values": self.null_values, "comment_prefix": self.comment_prefix}

    @classmethod
    def from_json(cls, obj: dict) -> "Reader":
        return cls(obj["format"], tuple(obj["columns"]) if obj["columns"] else None, obj["separator"],
                   tuple(obj["null_values"]), obj.get("comment_prefix"))

    def check_file(self, path: Path) -> Path:
        """`path` is a readable regular file, not empty, whose first and last bytes fit the format."""
        input_file(path, "data file", "fix the path in the spec (paths are relative to the spec file)")
        size = path.stat().st_size
        if size == 0:
            raise InputError(f"data file {path} is empty; point the spec at a file with rows")
        with open(path, "rb") as f:
            head = f.read(4)
            f.seek(max(size - 4, 0))
            tail = f.read(4)
        packed = next((what for magic, what in _MAGIC.items() if head.startswith(magic)), None)
        if packed is not None:
            raise InputError(f"data file {path} is {packed}; snn reads plain {self.format} files")
        if self.format == "parquet":
            if head != PARQUET_MAGIC:
                raise InputError(f"data file {path} is not a parquet file (it does not start with PAR1); "
                                 "check data.format (csv, parquet or criteo)")
            if tail != PARQUET_MAGIC or size < 12:
                raise InputError(f"data file {path} is a truncated or damaged parquet file (no footer); "
                                 "write it again")
        elif head == PARQUET_MAGIC:
            raise InputError(f"data file {path} is a parquet file but data.format is {self.format}; "
                             "set data.format: parquet")
        return path

    def has_header(self, header: bool | None) -> bool:
        if self.format == "criteo":
            return bool(header)
        if self.format == "csv" and header is None:
            return self.columns is None
        return bool(header)

    def _source(self, path: Path, header: bool | None = None) -> pl.LazyFrame:
        """The file as read, with ROW_INDEX (the row's index in the file), its schema read."""
        self.check_file(path)
        try:
            if self.format == "parquet":
                lf = pl.scan_parquet(path).with_row_index(ROW_INDEX)
            else:
                if self.format == "criteo":
                    names, separator = CRITEO_COLUMNS, "\t"
                else:
                    names, separator = self.columns, self.separator
                lf = pl.scan_csv(
                    path,
                    has_header=self.has_header(header),
                    new_columns=list(names) if names else None,
                    separator=separator,
                    infer_schema=False,
                    comment_prefix=self.comment_prefix if self.format == "csv" else None,
                    row_index_name=ROW_INDEX,
                    truncate_ragged_lines=False,
                    quote_char='"',
                )
            schema = lf.collect_schema()
        except READ_ERRORS as exc:
            raise self._unreadable(path, exc) from None
        columns = [c for c in schema if c != ROW_INDEX]
        # polars renames a repeated header name to <name>_duplicated_<n>
        repeated = sorted({c.rsplit("_duplicated_", 1)[0] for c in columns if "_duplicated_" in c} & set(columns)
                          | {c for c in columns if columns.count(c) > 1})
        if repeated:
            raise InputError(f"data file {path} names column(s) {repeated} more than once; rename them")
        return lf

    def _clean(self, lf: pl.LazyFrame) -> pl.LazyFrame:
        """Strip strings and map null markers to null; in text files, drop blank lines (all-null rows)."""
        schema = lf.collect_schema()
        cleaned = []
        for name, dtype in schema.items():
            if name == ROW_INDEX:
                continue
            col = pl.col(name)
            if dtype == pl.String:
                col = col.str.strip_chars()
                col = pl.when(col.is_in(list(self.null_values))).then(None).otherwise(col).alias(name)
            cleaned.append(col)
        lf = lf.with_columns(cleaned)
        if self.format == "parquet":
            return lf
        data_cols = [c for c in schema if c != ROW_INDEX]
        return lf.filter(~pl.all_horizontal([pl.col(c).is_null() for c in data_cols]))

    def schema(self, path: Path, header: bool | None = None) -> dict[str, pl.DataType]:
        """The file's columns and their types (as read: text files' columns are all String)."""
        schema = self._source(path, header).collect_schema()
        return {name: dtype for name, dtype in schema.items() if name != ROW_INDEX}

    def scan_rows(self, path: Path, rows: tuple[int, int] | None, header: bool | None = None) -> pl.LazyFrame:
        """The file (restricted to the half-open row range, when given) with strings stripped, nulls
        mapped and `row_id` (Int64, the row's index in the file) unless the file has its own."""
        return self._finish(self._clean(self._source(path, header)), rows)

    @staticmethod
    def _finish(lf: pl.LazyFrame, rows: tuple[int, int] | None) -> pl.LazyFrame:
        if rows is not None:
            lf = lf.filter(pl.col(ROW_INDEX).is_between(rows[0], rows[1], closed="left"))
        if ROW_ID in lf.collect_schema():
            return lf.drop(ROW_INDEX)
        return lf.with_columns(pl.col(ROW_INDEX).cast(pl.Int64)).rename({ROW_INDEX: ROW_ID})

    def _unreadable(self, path: Path, exc: BaseException) -> InputError:
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        return InputError(f"cannot read {path} as {self.format}: {detail}; "
                          f"check data.format, data.separator and data.columns")

    def read(self, path: Path, rows: tuple[int, int] | None = None, header: bool | None = None) -> pl.DataFrame:
        lf = self.scan_rows(path, rows, header)
        try:
            df = lf.collect()
        except READ_ERRORS as exc:
            raise self._unreadable(path, exc) from None
        if df.height == 0:
            raise _no_rows(path, rows)
        return df

    def chunks(self, path: Path, rows: tuple[int, int] | None, chunk_rows: int, columns: list[str],
               header: bool | None = None):
        """Stream `columns` of the file (or its row range) as frames of `chunk_rows` rows, in file order."""
        lf = self.scan_rows(path, rows, header)
        check_columns(list(lf.collect_schema()), columns, path)
        selected = [ROW_ID, *(c for c in dict.fromkeys(columns) if c != ROW_ID)]
        produced = 0
        try:
            for frame in (self._parquet_slices(path, rows, chunk_rows, selected) if self.format == "parquet"
                          else lf.select(selected).collect_batches(chunk_size=chunk_rows)):
                produced += frame.height
                yield frame
        except READ_ERRORS as exc:
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
            yield self._finish(self._clean(piece), None).select(selected).collect()


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


def _scalar(dtype: pl.DataType) -> bool:
    return not (dtype.is_nested() or dtype in (pl.Binary, pl.Object))


def _numberlike(dtype: pl.DataType) -> bool:
    return dtype.is_numeric() or dtype in (pl.String, pl.Boolean, pl.Null)


# what each role accepts: (test, the types it names in the message)
_ACCEPTS = {
    "continuous": (_numberlike, "numbers (or text holding numbers)"),
    "categorical": (_scalar, "text, integers, booleans or numbers"),
    "binary": (_numberlike, "booleans, 0/1 or text such as yes/no"),
    "label": (_numberlike, "0/1 numbers, booleans or text (with data.label.positive)"),
    "weight": (lambda d: d.is_numeric() or d in (pl.String, pl.Null), "numbers"),
    "oracle": (lambda d: d.is_numeric() or d in (pl.String, pl.Null), "probabilities"),
    "key": (lambda d: d.is_integer() or d == pl.String, "integers or text"),
    "slice": (_scalar, "plain values (text, numbers, booleans)"),
}


def check_schema(schema: dict[str, pl.DataType], spec: Spec, path: Path, slices: list[str] = (),
                 with_label: bool = True) -> None:
    """Every column the spec reads is in the file with a type its role can use: features by their
    kind, the label, weight, key, oracle and slice columns by theirs. Nested (list, struct), binary
    and object columns are refused here, before any work, never read as something else."""
    data = spec.data
    if data.key is None and ROW_ID in schema:
        raise InputError(f"{path} has its own {ROW_ID!r} column, the name snn gives each row's index when data.key "
                         f"is absent; set data.key: {ROW_ID} to use that column as the row key, or rename it")
    roles = [(f.name, f.kind, f"feature {f.name!r} ({f.kind})") for f in spec.features]
    roles += [(data.label.column, "label", "label column")] if with_label else []
    roles += [(column, role, f"{role} column") for column, role in
              ((data.weight, "weight"), (data.key, "key"), (data.oracle, "oracle")) if column is not None]
    roles += [(column, "slice", "slice column") for column in slices]
    check_columns(list(schema), list(dict.fromkeys(name for name, _, _ in roles)), path)
    for column, role, what in roles:
        accepts, wanted = _ACCEPTS[role]
        if not accepts(schema[column]):
            raise InputError(f"{what} in {path} is of type {schema[column]}; it must hold {wanted}. "
                             "Flatten or convert the column, or leave it out of the spec")


def check_columns(available: list[str], needed: list[str], path: Path) -> None:
    missing = [c for c in needed if c not in available]
    if missing:
        have = [c for c in available if c != ROW_ID]
        if len(missing) == len(set(needed)) and any(_is_number(c) for c in have):
            raise InputError(f"{path} looks like data from its first line on ({', '.join(have[:5])}, ...), not a "
                             "header; give this source `header: false` and name the columns in data.columns")
        raise InputError(
            f"column(s) {', '.join(missing)} not found in {path}; the file has: {', '.join(have)}. "
            "Fix the names in the spec (features, data.label, data.key, data.weight)."
        )


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


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
    reader = Reader.from_spec(data)
    for source in (data.train, data.validation, data.test):
        if source is not None:
            reader.check_file(loaded.resolve(source.path))
    if not data.allow_overlap:
        for name, other in (("validation", data.validation), ("test", data.test)):
            if other is not None and _sources_overlap(data.train, other, loaded):
                raise InputError(
                    f"data.train and data.{name} overlap (same file, overlapping rows); give disjoint `rows` "
                    "ranges or files, or set data.allow_overlap: true if that is intended"
                )


def check_inputs(loaded: LoadedSpec, slices: list[str] = ()) -> None:
    """Every source exists, is readable in the declared format and holds the columns the spec reads
    with usable types (`check_schema`); train does not overlap validation/test unless allowed."""
    check_sources(loaded)
    spec, data = loaded.spec, loaded.spec.data
    reader = Reader.from_spec(data)
    for source in (data.train, data.validation, data.test):
        if source is not None:
            path = loaded.resolve(source.path)
            check_schema(reader.schema(path, source.header), spec, path, list(slices))


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
    """Row weights float32 [n]; ones when data.weight is not set. Each weight is a finite number
    >= 0 that float32 holds (training sums them in float32)."""
    if data.weight is None:
        return np.ones(df.height, dtype=np.float32)
    values = df[data.weight].cast(pl.Float64, strict=False)
    arr = values.to_numpy()
    if values.null_count() or not np.all(np.isfinite(arr)) or (arr < 0).any():
        raise InputError(f"{where}: weight column {data.weight!r} must hold finite numbers >= 0 in every row")
    if (arr > np.finfo(np.float32).max).any():
        raise InputError(f"{where}: weight column {data.weight!r} has weights up to {arr.max():.3g}, beyond float32 "
                         f"(3.4e38); rescale the weights (only their ratios matter)")
    return arr.astype(np.float32)
