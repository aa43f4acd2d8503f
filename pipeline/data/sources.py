"""The sources a spec names, checked before any work: readable files in the declared format, the
columns each role reads with a type it can use, no overlap between train and evaluation rows; and
their digests, for cache keys."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from ..errors import InputError
from ..features.spec import Feature, PositionFeature, TreeLeavesFeature
from .readers import READ_ERRORS, ROW_ID, Reader, check_columns
from .spec import DataFiles, DataSpec, Source


def _scalar(dtype: pl.DataType) -> bool:
    return not (dtype.is_nested() or dtype in (pl.Binary, pl.Object))


def _numberlike(dtype: pl.DataType) -> bool:
    return dtype.is_numeric() or dtype in (pl.String, pl.Boolean, pl.Null)


# what each role accepts: (test, the types it names in the message)
_ACCEPTS = {
    "continuous": (_numberlike, "numbers (or text holding numbers)"),
    "categorical": (_scalar, "text, integers, booleans or numbers"),
    "binary": (_numberlike, "booleans, 0/1 or text such as yes/no"),
    "id_list": (
        lambda d: _scalar(d) or (isinstance(d, (pl.List, pl.Array)) and _scalar(d.inner)),  # type: ignore[arg-type]
        "lists of ids, or text such as 'a,b,c'",
    ),
    "position": (_scalar, "positions: integers or text"),
    "tree_input": (_scalar, "numbers, text or booleans"),
    "label": (_numberlike, "0/1 numbers, booleans or text (with data.label.positive)"),
    "weight": (lambda d: d.is_numeric() or d in (pl.String, pl.Null), "numbers"),
    "oracle": (lambda d: d.is_numeric() or d in (pl.String, pl.Null), "probabilities"),
    "key": (lambda d: d.is_integer() or d == pl.String, "integers or text"),
    "slice": (_scalar, "plain values (text, numbers, booleans)"),
}


def check_schema(
    schema: dict[str, pl.DataType],
    data: DataSpec,
    features: list[Feature],
    path: Path,
    slices: Sequence[str] = (),
    with_label: bool = True,
    served: bool = False,
) -> None:
    """Every column the spec reads is in the file with a type its role can use: features by their
    kind, the label, weight, key, oracle and slice columns by theirs. Nested (list, struct), binary
    and object columns are refused here, before any work, never read as something else."""
    if data.key is None and ROW_ID in schema:
        raise InputError(
            f"{path} has its own {ROW_ID!r} column, the name snn gives each row's index when data.key "
            f"is absent; set data.key: {ROW_ID} to use that column as the row key, or rename it"
        )
    roles: list[tuple[str, str, str]] = [
        (column, "tree_input", f"column {column!r} (an input of tree feature {f.name!r})")
        if isinstance(f, TreeLeavesFeature)
        else (column, f.kind, f"feature {f.name!r} ({f.kind})")
        for f in features
        if not (served and isinstance(f, PositionFeature))  # served: its column is not read
        for column in (f.inputs if isinstance(f, TreeLeavesFeature) else [f.name])
    ]
    roles += [(column, "label", "label column") for column in data.label_columns] if with_label else []
    roles += [
        (column, role, f"{role} column")
        for column, role in ((data.weight, "weight"), (data.key, "key"))
        if column is not None
    ]
    roles += [(column, "oracle", "oracle column") for column in data.oracle_columns]
    roles += [(column, "slice", "slice column") for column in slices]
    check_columns(list(schema), list(dict.fromkeys(name for name, _, _ in roles)), path)
    for column, role, what in roles:
        accepts, wanted = _ACCEPTS[role]
        if not accepts(schema[column]):
            raise InputError(
                f"{what} in {path} is of type {schema[column]}; it must hold {wanted}. "
                "Flatten or convert the column, or leave it out of the spec"
            )


def _overlap(a: Source, b: Source, files: DataFiles) -> bool:
    same_file = files.path(a) == files.path(b) or file_digest(files.path(a)) == file_digest(files.path(b))
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


def input_fingerprints(files: DataFiles) -> dict[str, str]:
    """sha256 of every input file the data spec names, for cache keys."""
    return {
        source.path: file_digest(files.path(source)) for _, source in files.sources() if files.path(source).is_file()
    }


def check_sources(files: DataFiles) -> None:
    """Every named file is readable in the declared format, and train does not overlap validation or
    test unless allowed."""
    data = files.data
    reader = Reader.from_spec(data)
    for _, source in files.sources():
        reader.check_file(files.path(source))
    if not data.allow_overlap:
        for name, other in (("validation", data.validation), ("test", data.test)):
            if other is not None and _overlap(data.train, other, files):
                raise InputError(
                    f"data.train and data.{name} overlap (same file, overlapping rows); give disjoint `rows` "
                    "ranges or files, or set data.allow_overlap: true if that is intended"
                )


def check_inputs(files: DataFiles, features: list[Feature], slices: Sequence[str] = ()) -> None:
    """`check_sources`, then every source's columns against the roles the spec gives them
    (`check_schema`; the test source is scored as served: position columns are not read)."""
    check_sources(files)
    reader = Reader.from_spec(files.data)
    for name, source in files.sources():
        path = files.path(source)
        schema = reader.schema(path, source.header)
        check_schema(schema, files.data, features, path, list(slices), served=name == "test")


def check_unique_keys(files: DataFiles) -> None:
    """data.key must be unique within each source (parity joins on it); reads the key column alone."""
    data = files.data
    if data.key is None:
        return  # row_id is unique by construction
    reader = Reader.from_spec(data)
    for _, source in files.sources():
        path = files.path(source)
        key = pl.col(data.key)
        try:
            repeated = (
                reader.scan_rows(path, source.rows, source.header)
                .select(key)
                .filter(key.is_duplicated())
                .unique()
                .head(3)
                .collect()[data.key]
                .to_list()
            )
        except READ_ERRORS as exc:
            raise reader.unreadable(path, exc) from None
        if repeated:
            raise InputError(
                f"key column {data.key!r} in {path} repeats keys such as {repeated}; parity joins on "
                "it, so every row needs a unique key (or drop data.key to use row_id)"
            )
