"""Readers: one raw file (CSV, parquet or the raw Criteo TSV) -> polars frames with a row key.

CSV and Criteo TSV are read as strings (stripped, null markers mapped to null) and typed per
feature later, so a stray non-numeric value is reported by column instead of silently inferred.
Every frame carries the row key column (`data.key`, or `row_id` = the row's 0-based index in
its file) so predictions can be joined back. Each file is checked before polars opens it: a
readable regular file whose first and last bytes fit the declared format.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from ..errors import InputError
from ..files import input_file
from .spec import DataSpec

ROW_ID = "row_id"
ROW_INDEX = "__snn_row_index__"  # the reader's own row counter, named apart from the file's columns
CRITEO_COLUMNS = ["label"] + [f"I{i}" for i in range(1, 14)] + [f"C{i}" for i in range(1, 27)]
PARQUET_MAGIC = b"PAR1"
# what polars raises on a file it cannot read (a panic of its Rust core is a BaseException)
READ_ERRORS = (pl.exceptions.PolarsError, pl.exceptions.PanicException, OSError, UnicodeDecodeError)
_MAGIC = {
    b"\x1f\x8b": "gzip-compressed (decompress it first: gunzip)",
    b"PK\x03\x04": "a zip archive (unzip it first)",
    b"BZh": "bzip2-compressed (decompress it first: bunzip2)",
    b"\x28\xb5\x2f\xfd": "zstd-compressed (decompress it first)",
}


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
    def from_spec(cls, data: DataSpec) -> Reader:
        return cls(
            data.format,
            tuple(data.columns) if data.columns else None,
            data.separator,
            tuple(data.null_values),
            data.comment_prefix,
        )

    def to_json(self) -> dict:
        return {
            "format": self.format,
            "columns": self.columns,
            "separator": self.separator,
            "null_values": self.null_values,
            "comment_prefix": self.comment_prefix,
        }

    @classmethod
    def from_json(cls, obj: dict) -> Reader:
        return cls(
            obj["format"],
            tuple(obj["columns"]) if obj["columns"] else None,
            obj["separator"],
            tuple(obj["null_values"]),
            obj.get("comment_prefix"),
        )

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
                raise InputError(
                    f"data file {path} is not a parquet file (it does not start with PAR1); "
                    "check data.format (csv, parquet or criteo)"
                )
            if tail != PARQUET_MAGIC or size < 12:
                raise InputError(f"data file {path} is a truncated or damaged parquet file (no footer); write it again")
        elif head == PARQUET_MAGIC:
            raise InputError(
                f"data file {path} is a parquet file but data.format is {self.format}; set data.format: parquet"
            )
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
                names: tuple[str, ...] | list[str] | None = self.columns
                separator = self.separator
                if self.format == "criteo":
                    names, separator = CRITEO_COLUMNS, "\t"
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
            raise self.unreadable(path, exc) from None
        columns = [c for c in schema if c != ROW_INDEX]
        # polars renames a repeated header name to <name>_duplicated_<n>
        repeated = sorted(
            {c.rsplit("_duplicated_", 1)[0] for c in columns if "_duplicated_" in c} & set(columns)
            | {c for c in columns if columns.count(c) > 1}
        )
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

    def unreadable(self, path: Path, exc: BaseException) -> InputError:
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        return InputError(
            f"cannot read {path} as {self.format}: {detail}; check data.format, data.separator and data.columns"
        )

    def read(self, path: Path, rows: tuple[int, int] | None = None, header: bool | None = None) -> pl.DataFrame:
        lf = self.scan_rows(path, rows, header)
        try:
            df = lf.collect()
        except READ_ERRORS as exc:
            raise self.unreadable(path, exc) from None
        if df.height == 0:
            raise _no_rows(path, rows)
        return df

    def chunks(
        self, path: Path, rows: tuple[int, int] | None, chunk_rows: int, columns: list[str], header: bool | None = None
    ):
        """Stream `columns` of the file (or its row range) as frames of `chunk_rows` rows, in file order."""
        lf = self.scan_rows(path, rows, header)
        check_columns(list(lf.collect_schema()), columns, path)
        selected = [ROW_ID, *(c for c in dict.fromkeys(columns) if c != ROW_ID)]
        produced = 0
        try:
            for frame in (
                self._parquet_slices(path, rows, chunk_rows, selected)
                if self.format == "parquet"
                else lf.select(selected).collect_batches(chunk_size=chunk_rows)
            ):
                produced += frame.height
                yield frame
        except READ_ERRORS as exc:
            raise self.unreadable(path, exc) from None
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


def check_columns(available: list[str], needed: list[str], path: Path) -> None:
    missing = [c for c in needed if c not in available]
    if missing:
        have = [c for c in available if c != ROW_ID]
        if len(missing) == len(set(needed)) and any(_is_number(c) for c in have):
            raise InputError(
                f"{path} looks like data from its first line on ({', '.join(have[:5])}, ...), not a "
                "header; give this source `header: false` and name the columns in data.columns"
            )
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
