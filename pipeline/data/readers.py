"""Readers: one raw file (CSV, parquet, the raw Criteo TSV, libSVM or libFFM) -> polars frames
with a row key.

CSV and Criteo TSV are read as strings (stripped, null markers mapped to null) and typed per
feature later, so a stray non-numeric value is reported by column instead of silently inferred.
libSVM (also libFM and SVMlight) and libFFM files have no header; each line is read whole and
split into String columns (tokens are separated by any run of spaces and tabs, a '#' starts a
comment to the end of the line):

    libsvm  `<label> [qid:<q>] <index>:<value> ...`  ->  label, qid, features "<index>:<value> ..."
    libffm  `<label> <field>:<index>:<value> ...`    ->  label, features "<field>:<index>:<value> ..."

`features` holds the line's items joined by single spaces, for a weighted id list with separator
" " (id `index` or `field:index`, weighted by the number after the item's last ':'). `qid` is a
column when a data line in the file's first 64 KiB carries one (a qid token is never a feature).
Every frame carries the row key column (`data.key`, or `row_id` = the row's 0-based index in
its file; in libSVM and libFFM files, its line's, blank and comment lines counted) so predictions
can be joined back. Each file is checked before polars opens it: a readable regular file whose
first and last bytes (libSVM and libFFM: its first data line) fit the declared format.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

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
LINE = "__snn_line__"  # a libsvm or libffm line, whole, as read
LINE_FORMATS = ("libsvm", "libffm")
# the separator polars splits a libsvm or libffm line at: no text line holds a NUL byte, so the
# whole line is one field (a line that does is reported as unreadable)
LINE_SEPARATOR = "\x00"
HEAD_BYTES = 1 << 16  # how much of a libsvm or libffm file check_file and the qid detection read
# a line with its comment cut and every run of whitespace one space: the label, an optional qid
# (libsvm), the items
_LINE_PARTS = {
    "libsvm": r"^(?P<label>\S+)(?: qid:(?P<qid>\S*))?(?: (?P<features>.*))?$",
    "libffm": r"^(?P<label>\S+)(?: (?P<features>.*))?$",
}
_ITEM = {"libsvm": re.compile(r"^.+:[^:]+$"), "libffm": re.compile(r"^[^:]+:[^:]+:[^:]+$")}
_QID = re.compile(r"^\S+ qid:")
_ITEM_FORM = {"libsvm": "<index>:<value>", "libffm": "<field>:<index>:<value>"}
_MAGIC = {
    b"\x1f\x8b": "gzip-compressed (decompress it first: gunzip)",
    b"PK\x03\x04": "a zip archive (unzip it first)",
    b"BZh": "bzip2-compressed (decompress it first: bunzip2)",
    b"\x28\xb5\x2f\xfd": "zstd-compressed (decompress it first)",
}


# the format a file's extension names (`snn init`, and `snn predict` on a file of another format)
EXTENSION_FORMATS = {".csv": "csv", ".tsv": "csv", ".parquet": "parquet", ".pq": "parquet"}
EXTENSION_FORMATS |= {".libsvm": "libsvm", ".svm": "libsvm", ".libffm": "libffm", ".ffm": "libffm"}
FORMATS: tuple[str, ...] = get_args(DataSpec.model_fields["format"].annotation)  # the spec's, written once


def format_of(path: Path, given: str | None = None) -> str:
    """A file's data format: `given` (--format), else the one its extension names."""
    if given is not None:
        if given not in FORMATS:
            raise InputError(f"--format {given!r} is not one of: {', '.join(FORMATS)}")
        return given
    found = EXTENSION_FORMATS.get(path.suffix.lower())
    if found is None:
        known = ", ".join(sorted(EXTENSION_FORMATS))
        raise InputError(f"cannot tell {path.name}'s format from its extension (known: {known}); pass --format")
    return found


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
        """`path` is a readable regular file, not empty, whose first and last bytes fit the format (a
        libsvm or libffm file: its first data line reads `<label> <item> ...`)."""
        input_file(path, "data file", "fix the path in the spec (paths are relative to the spec file)")
        size = path.stat().st_size
        if size == 0:
            raise InputError(f"data file {path} is empty; point the spec at a file with rows")
        with open(path, "rb") as f:
            head = f.read(HEAD_BYTES if self.format in LINE_FORMATS else 4)
            f.seek(max(size - 4, 0))
            tail = f.read(4)
        packed = next((what for magic, what in _MAGIC.items() if head.startswith(magic)), None)
        if packed is not None:
            raise InputError(f"data file {path} is {packed}; snn reads plain {self.format} files")
        if self.format == "parquet":
            if head != PARQUET_MAGIC:
                raise InputError(
                    f"data file {path} is not a parquet file (it does not start with PAR1); "
                    "check data.format (csv, parquet, criteo, libsvm or libffm)"
                )
            if tail != PARQUET_MAGIC or size < 12:
                raise InputError(f"data file {path} is a truncated or damaged parquet file (no footer); write it again")
        elif head[:4] == PARQUET_MAGIC:
            raise InputError(
                f"data file {path} is a parquet file but data.format is {self.format}; set data.format: parquet"
            )
        if self.format in LINE_FORMATS:
            lines = _data_lines(head, complete=size <= len(head))
            if lines:
                self._check_line(path, lines[0])
        return path

    def _check_line(self, path: Path, line: str) -> None:
        """A libsvm or libffm data line (comment cut, whitespace runs one space) reads
        `<label> <item> ...`: a numeric label, then items of the format's form."""
        label, *items = line.split(" ")
        form = _ITEM_FORM[self.format]
        shown = line if len(line) <= 60 else line[:57] + "..."
        if "," in label or ";" in label:
            problem = "is separated by commas or semicolons"
            fix = "if it is a CSV file, set data.format: csv"
        elif not _is_number(label):
            problem = f"starts with {label!r}, not a numeric label"
            fix = f"every line must read `<label> {form} ...`; check data.format (csv, criteo, libsvm or libffm)"
        else:
            if self.format == "libsvm" and items and items[0].startswith("qid:"):
                items = items[1:]
            bad = next((item for item in items if not _ITEM[self.format].match(item)), None)
            if bad is None:
                return
            problem = f"has item {bad!r}, not {form}"
            fix = (
                "its items are <index>:<value>: set data.format: libsvm"
                if self.format == "libffm" and all(_ITEM["libsvm"].match(item) for item in items)
                else f"every line must read `<label> {form} ...`; check data.format (csv, criteo, libsvm or libffm)"
            )
        raise InputError(
            f"data file {path} is not a {self.format} file: its first data line {shown!r} {problem}; {fix}"
        )

    def _has_qid(self, path: Path) -> bool:
        """A libsvm file has a `qid` column when a data line in its first HEAD_BYTES carries a qid."""
        with open(path, "rb") as f:
            head = f.read(HEAD_BYTES)
        return any(_QID.match(line) for line in _data_lines(head, complete=len(head) < HEAD_BYTES))

    def has_header(self, header: bool | None) -> bool:
        if self.format in LINE_FORMATS:
            if header:
                raise InputError(
                    f"a {self.format} file has no header line; drop `header: true` from the source (or --header)"
                )
            return False
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
            elif self.format in LINE_FORMATS:
                lf = self._lines(path, header)
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

    def _lines(self, path: Path, header: bool | None) -> pl.LazyFrame:
        """A libsvm or libffm file as ROW_INDEX (the line's index), label, qid (libsvm, when the
        file has one) and features: String columns, null on a blank or comment line."""
        self.has_header(header)  # refuses a header
        lf = pl.scan_csv(
            path,
            has_header=False,
            new_columns=[LINE],
            separator=LINE_SEPARATOR,
            quote_char=None,
            infer_schema=False,
            row_index_name=ROW_INDEX,
            truncate_ragged_lines=False,
        )
        line = pl.col(LINE).str.replace(r"#.*", "").str.replace_all(r"\s+", " ").str.strip_chars(" ")
        parts = line.str.extract_groups(_LINE_PARTS[self.format])
        names = (
            ["label", "qid", "features"] if self.format == "libsvm" and self._has_qid(path) else ["label", "features"]
        )
        return lf.select(ROW_INDEX, *(parts.struct.field(name) for name in names))

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

    def row_count(self, path: Path, header: bool | None = None) -> int:
        """The file's rows as `rows:` ranges index them (blank lines included)."""
        try:
            return int(self._source(path, header).select(pl.len()).collect().item())
        except READ_ERRORS as exc:
            raise self.unreadable(path, exc) from None

    def schema(self, path: Path, header: bool | None = None) -> dict[str, pl.DataType]:
        """The file's columns and their types (as read: text files' columns are all String)."""
        schema = self._source(path, header).collect_schema()
        return {name: dtype for name, dtype in schema.items() if name != ROW_INDEX}

    def scan_rows(self, path: Path, rows: tuple[int, int] | None, header: bool | None = None) -> pl.LazyFrame:
        """The file (restricted to the half-open row range, when given) with strings stripped, nulls
        mapped and `row_id` (Int64, the row's index in the file) unless the file has its own."""
        source = self._source(path, header)
        if rows is not None:  # a slice before any filter: the reader stops at the range's end
            source = source.slice(rows[0], rows[1] - rows[0])
        return self._finish(self._clean(source))

    @staticmethod
    def _finish(lf: pl.LazyFrame) -> pl.LazyFrame:
        if ROW_ID in lf.collect_schema():
            return lf.drop(ROW_INDEX)
        return lf.with_columns(pl.col(ROW_INDEX).cast(pl.Int64)).rename({ROW_INDEX: ROW_ID})

    def unreadable(self, path: Path, exc: BaseException) -> InputError:
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        check = (
            f"a {self.format} file is UTF-8 text, one row per line (no NUL bytes); check data.format"
            if self.format in LINE_FORMATS
            else "check data.format, data.separator and data.columns"
        )
        return InputError(f"cannot read {path} as {self.format}: {detail}; {check}")

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
        self,
        path: Path,
        rows: tuple[int, int] | None,
        chunk_rows: int,
        columns: list[str],
        header: bool | None = None,
        may_be_empty: bool = False,
    ):
        """Stream `columns` of the file (or its row range) as frames of `chunk_rows` rows, in file
        order; no data row in the range is an InputError unless `may_be_empty` (a rank's share of
        the rows, which may hold only blank or comment lines)."""
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
        if produced == 0 and not may_be_empty:
            raise _no_rows(path, rows)

    def _parquet_slices(self, path: Path, rows: tuple[int, int] | None, chunk_rows: int, selected: list[str]):
        """Parquet chunks as slices of the file (read row group by row group, one chunk in memory at
        a time; the streaming engine's batches read ahead of a slow consumer)."""
        source = self._source(path)
        total = source.select(pl.len()).collect().item()
        start, stop = (rows[0], min(rows[1], total)) if rows is not None else (0, total)
        for offset in range(start, stop, chunk_rows):
            piece = source.slice(offset, min(chunk_rows, stop - offset))
            yield self._finish(self._clean(piece)).select(selected).collect()


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


def _data_lines(head: bytes, complete: bool) -> list[str]:
    """The data lines of a libsvm or libffm file's first bytes, each with its comment cut and every
    run of whitespace one space (blank and comment lines left out). Unless `complete` (the bytes are
    the whole file), the last line may be cut short: it is left out, or, the only line, its last
    token is."""
    lines = head.decode("utf-8", errors="replace").split("\n")
    if not complete:
        lines = lines[:-1] if len(lines) > 1 else [" ".join(lines[0].split()[:-1])]
    normalized = (" ".join(line.split("#", 1)[0].split()) for line in lines)
    return [line for line in normalized if line]


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False
