"""Encoded splits as CSR arrays on disk, written a chunk at a time and memory-mapped back.

Layout of one split folder (raw little-endian arrays, described by `meta.json`):
`offsets.bin` int64 [n+1], `ids.bin` int32 [nnz] (int64 when the id space reaches 2^31),
`values.bin` float32 [nnz], `labels.bin` float32 [n] and `weights.bin` float32 [n] (what training
and calibration read; scoring reads the raw rows, which carry the keys). With T > 1 tasks
(`meta.json` "tasks"), labels and weights are [n, T] row-major: each task's label and its weight
for the row (0 where the task's negative downsampling dropped it). `meta.json` holds n, nnz,
the ids' dtype, `width` when every row has the same number of entries (one per feature), which lets a
batch gather be a plain 2-D row gather, and `values: "ones"` when every feature is one-hot
(binned or categorical): then every value is 1.0 and `values.bin` is not written at all.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..errors import ArtifactError
from ..features.feature_map import list_positions
from ..features.values import unit_values

DTYPES = {"offsets": np.int64, "ids": np.int64, "values": np.float32, "labels": np.float32, "weights": np.float32}
ARRAYS = tuple(DTYPES)


def ids_dtype(num_ids: int) -> type:
    """The narrowest id dtype for an id space of num_ids ids: int32 below 2^31 (half the bytes of
    int64 on disk and in every batch gather), else int64."""
    return np.int32 if num_ids <= np.iinfo(np.int32).max else np.int64


@dataclass
class CSRBatch:
    """One batch: ids [nnz], values [nnz], offsets [B] (row starts), labels [B], weights [B];
    width: entries per row when every row has the same count (None: ragged); one_hot: every value
    is 1.0 (training then skips the values altogether)."""

    ids: np.ndarray
    values: np.ndarray
    offsets: np.ndarray
    labels: np.ndarray
    weights: np.ndarray
    width: int | None = None
    one_hot: bool = False

    def rows_between(self, start: int, stop: int) -> CSRBatch:
        """Rows [start, stop) of the batch as views (offsets rebased to 0)."""
        first = int(self.offsets[start]) if start < len(self.offsets) else len(self.ids)
        end = int(self.offsets[stop]) if stop < len(self.offsets) else len(self.ids)
        return CSRBatch(
            self.ids[first:end],
            self.values[first:end],
            self.offsets[start:stop] - first,
            self.labels[start:stop],
            self.weights[start:stop],
            self.width,
            self.one_hot,
        )


@dataclass
class EncodedSplit:
    offsets: np.ndarray
    ids: np.ndarray
    values: np.ndarray
    labels: np.ndarray
    weights: np.ndarray
    folder: Path | None = None
    width: int | None = -1  # entries per row when every row has the same count; -1: work it out
    one_hot: bool = False  # every value is 1.0 (values is a view of ones, nothing stored)

    @classmethod
    def from_dense(cls, ids: np.ndarray, values: np.ndarray, labels, weights) -> EncodedSplit:
        """From per-feature arrays ids/values [n, F] (one entry per feature and row); one-hot when
        every value is 1.0."""
        n, width = ids.shape
        offsets = np.arange(n + 1, dtype=np.int64) * width
        return cls(
            offsets,
            ids.reshape(-1),
            values.reshape(-1),
            np.asarray(labels, np.float32),
            np.asarray(weights, np.float32),
            width=width,
            one_hot=bool((values == 1.0).all()),
        )

    @classmethod
    def from_rows(cls, ids: np.ndarray, values: np.ndarray, lengths: np.ndarray, labels, weights) -> EncodedSplit:
        """From a row-major CSR: ids/values [nnz], entries per row lengths [n]; one-hot when every
        value is 1.0."""
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return cls(
            offsets,
            ids,
            values,
            np.asarray(labels, np.float32),
            np.asarray(weights, np.float32),
            one_hot=bool((values == 1.0).all()),
        )

    @property
    def rows(self) -> int:
        return len(self.offsets) - 1

    def __post_init__(self):
        if self.width == -1:
            self.width = uniform_width(self.offsets)

    @classmethod
    def load(cls, folder: Path) -> EncodedSplit:
        """Memory-map a split folder (copy-on-write: nothing is read until used)."""
        try:
            meta = json.loads((folder / "meta.json").read_text())
            sizes = array_lengths(meta)
            dtypes = {**DTYPES, "ids": np.dtype(meta["ids"])}
            stored = [name for name in ARRAYS if not (name == "values" and meta["values"] == "ones")]
            arrays = {name: _map(folder / f"{name}.bin", dtypes[name], sizes[name]) for name in stored}
            arrays.setdefault("values", unit_values(meta["nnz"]))
            if meta.get("tasks", 1) > 1:
                arrays["labels"] = arrays["labels"].reshape(meta["rows"], meta["tasks"])
                arrays["weights"] = arrays["weights"].reshape(meta["rows"], meta["tasks"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ArtifactError(
                f"encoded data in {folder} is missing or corrupted ({exc}); rerun with --force"
            ) from None
        return cls(**arrays, folder=folder, width=meta["width"], one_hot=meta["values"] == "ones")

    def problem(self, num_ids: int) -> str | None:
        """What makes this split unusable with an id space of `num_ids` ids, or None: offsets that
        do not rise from 0 to nnz, ids outside [0, num_ids), labels outside [0, 1], weights that are
        negative or not finite. One pass over the arrays."""
        if (
            self.rows < 0
            or self.offsets[0] != 0
            or self.offsets[-1] != len(self.ids)
            or (np.diff(self.offsets) < 0).any()
        ):
            return "the row offsets are not ascending from 0 to the number of entries"
        if len(self.ids) and (int(self.ids.min()) < 0 or int(self.ids.max()) >= num_ids):
            return f"ids range over [{int(self.ids.min())}, {int(self.ids.max())}], outside the id space [0, {num_ids})"
        if len(self.labels) and not (
            np.isfinite(self.labels).all() and self.labels.min() >= 0 and self.labels.max() <= 1
        ):
            return "labels outside [0, 1]"
        if len(self.weights) and not (np.isfinite(self.weights).all() and self.weights.min() >= 0):
            return "weights that are negative or not finite"
        if not self.one_hot and len(self.values) and not np.isfinite(self.values).all():
            return "values that are not finite"
        return None

    def take(self, rows: np.ndarray) -> CSRBatch:
        """Gather rows (any order) into one CSR batch without a per-row Python loop."""
        width = self.width
        if width is not None:
            ids = self.ids.reshape(-1, width)[rows].reshape(-1)
            values = self.values.reshape(-1, width)[rows].reshape(-1)
            return CSRBatch(
                ids,
                values,
                np.arange(len(rows), dtype=np.int64) * width,
                self.labels[rows],
                self.weights[rows],
                width,
                self.one_hot,
            )
        positions, batch_offsets = take_positions(self.offsets, rows)
        return CSRBatch(
            self.ids[positions],
            self.values[positions],
            batch_offsets,
            self.labels[rows],
            self.weights[rows],
            one_hot=self.one_hot,
        )

    def slice(self, start: int, stop: int) -> CSRBatch:
        """Contiguous rows [start, stop) as zero-copy views (the split seen as one batch)."""
        whole = CSRBatch(self.ids, self.values, self.offsets[:-1], self.labels, self.weights, self.width, self.one_hot)
        return whole.rows_between(start, stop)

    def batches(self, batch_size: int, order: np.ndarray | None = None):
        """Yield CSR batches in `order` (a permutation of rows) or file order."""
        for start in range(0, self.rows, batch_size):
            stop = min(start + batch_size, self.rows)
            yield self.slice(start, stop) if order is None else self.take(order[start:stop])


def array_lengths(meta: dict) -> dict[str, int]:
    """The elements of each array of a split folder described by `meta` (its meta.json)."""
    rows, entries, labels = meta["rows"], meta["nnz"], meta["rows"] * meta.get("tasks", 1)
    return {"offsets": rows + 1, "ids": entries, "values": entries, "labels": labels, "weights": labels}


def take_positions(offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The entries of `rows` (any order) of a CSR with row offsets [n+1]: their positions int64
    [Σ lengths] and the gathered rows' starts int64 [len(rows)]."""
    starts = offsets[rows]
    lengths = offsets[rows + 1] - starts
    batch_offsets = np.zeros(len(rows), dtype=np.int64)
    np.cumsum(lengths[:-1], out=batch_offsets[1:])
    return list_positions(starts, lengths), batch_offsets


def uniform_width(offsets: np.ndarray) -> int | None:
    """w when offsets == [0, w, 2w, ...] (every row has w entries), else None."""
    if len(offsets) < 2:
        return None
    width = int(offsets[1] - offsets[0])
    return width if np.array_equal(np.diff(offsets), np.full(len(offsets) - 1, width)) else None


def _map(path: Path, dtype, size: int) -> np.ndarray:
    if path.stat().st_size != size * np.dtype(dtype).itemsize:
        raise ValueError(f"{path.name} holds {path.stat().st_size} bytes, expected {size} x {np.dtype(dtype).name}")
    if size == 0:
        return np.zeros(0, dtype)
    return np.memmap(path, dtype=dtype, mode="c", shape=(size,))


BLOCK_ROWS = 1 << 14


class SplitWriter:
    """Append encoded chunks to a split folder; `meta.json` is written last (a folder without it is
    incomplete). Memory stays at one chunk whatever the number of rows.

    ids are stored as `id_dtype` (int32 or int64: see `ids_dtype`); with `one_hot` every value is
    1.0 and the values are not stored."""

    def __init__(self, folder: Path, id_dtype: type = np.int64, one_hot: bool = False):
        self.folder = folder
        self.dtypes = {**DTYPES, "ids": id_dtype}
        self.arrays = tuple(name for name in ARRAYS if not (one_hot and name == "values"))
        self.rows = self.nnz = 0
        self.weight_sum = 0.0
        self.tasks = 1
        self.widths: set[int] = set()
        self.files: dict[str, BinaryIO] = {}
        self.buffers: dict[str, np.ndarray] = {}

    def __enter__(self) -> SplitWriter:
        self.folder.mkdir(parents=True, exist_ok=True)
        # held open across appends and closed by __exit__, the writer's own context
        self.files = {name: open(self.folder / f"{name}.bin", "wb") for name in self.arrays}  # noqa: SIM115
        self.files["offsets"].write(np.zeros(1, np.int64).tobytes())
        return self

    def append(self, ids, values, lengths, labels, weights, rows: np.ndarray | None = None) -> None:
        """One chunk: ids/values [nnz_c] (or [n_c, width] views, written row-major; values None for
        a one-hot writer), labels/weights [n_c]; with `rows` (ascending row indices, int64 [k]) only
        those rows of [n_c, width] ids/values and of labels/weights are written. lengths: entries per
        written row ([n_c], or [k] with rows)."""
        if rows is not None:
            labels, weights = labels[rows], weights[rows]
        self.tasks = 1 if np.ndim(labels) == 1 else int(np.shape(labels)[1])
        self.weight_sum += float(np.sum(weights, dtype=np.float64))
        offsets = self.nnz + np.cumsum(lengths, dtype=np.int64)
        if len(lengths):
            low, high = int(np.min(lengths)), int(np.max(lengths))
            self.widths.update({low, high} if low != high else {low})
        for name, array, selected in (
            ("ids", ids, rows),
            ("values", values, rows),
            ("offsets", offsets, None),
            ("labels", labels, None),
            ("weights", weights, None),
        ):
            if name in self.files:
                self._write(name, array, selected)
        self.rows, self.nnz = self.rows + len(lengths), int(offsets[-1]) if len(offsets) else self.nnz

    def _write(self, name: str, array: np.ndarray, rows: np.ndarray | None = None) -> None:
        """Append `array` row-major (only `rows`, ascending indices, when given); a strided view (a
        transposed feature-major chunk) or a selection is copied in blocks of BLOCK_ROWS rows through
        one reused buffer, never as a whole fresh copy. Selected rows are gathered column by column
        (each a contiguous feature row of a feature-major chunk), then transposed in the block."""
        array = np.asarray(array)
        if rows is None and array.flags.c_contiguous and array.dtype == self.dtypes[name]:
            self.files[name].write(array.data.cast("B"))
            return
        table = array.reshape(len(array), -1)
        buffer = self.buffers.get(name)
        if buffer is None or buffer.shape[1:] != table.shape[1:]:
            buffer = self.buffers[name] = np.empty((BLOCK_ROWS, *table.shape[1:]), self.dtypes[name])
        count = len(table) if rows is None else len(rows)
        for start in range(0, count, BLOCK_ROWS):
            block = buffer[: min(BLOCK_ROWS, count - start)]
            block[...] = (
                table[start : start + BLOCK_ROWS] if rows is None else table.T[:, rows[start : start + BLOCK_ROWS]].T
            )
            self.files[name].write(block.data.cast("B"))

    def __exit__(self, kind, value, traceback) -> None:
        for f in self.files.values():
            f.close()
        if kind is None:
            (self.folder / "meta.json").write_text(
                json.dumps(
                    {
                        "rows": self.rows,
                        "nnz": self.nnz,
                        "width": next(iter(self.widths)) if len(self.widths) == 1 else None,
                        "ids": np.dtype(self.dtypes["ids"]).name,
                        "values": "float32" if "values" in self.arrays else "ones",
                        **({"tasks": self.tasks} if self.tasks > 1 else {}),
                    }
                )
            )


@dataclass(frozen=True)
class SplitJoin:
    """Split folders written by SplitWriters (parts, in order; `metas` their meta.json) joined into
    one folder: the files one SplitWriter fed the parts' rows in that order writes. Every array is
    the parts' bytes end to end, except the offsets: part k's row ends are shifted by the entries of
    parts 0..k-1 (its leading 0 dropped). So each part's bytes have a place known from the metas
    alone, and the parts are placed by their own processes at once (`reserve`, then `place` for
    every part, then `finish`)."""

    metas: list[dict]

    def _bytes(self, meta: dict) -> dict[str, int]:
        """A part's bytes per array, its offsets' leading 0 left out."""
        dtypes = {**DTYPES, "ids": np.dtype(meta["ids"])}
        lengths = array_lengths(meta) | {"offsets": meta["rows"]}
        return {name: lengths[name] * np.dtype(dtypes[name]).itemsize for name in ARRAYS}

    @property
    def arrays(self) -> list[str]:
        return [name for name in ARRAYS if not (name == "values" and self.metas[0]["values"] == "ones")]

    def starts(self, part: int) -> dict[str, int]:
        """Where part `part`'s bytes of each array start in the joined files."""
        before = [self._bytes(meta) for meta in self.metas[:part]]
        return {name: (8 if name == "offsets" else 0) + sum(b[name] for b in before) for name in self.arrays}

    def meta(self) -> dict:
        """The joined meta.json: rows and nnz summed; `width` kept when every part with rows has the
        same one; the tasks, the most any part saw (a part with no chunk never learned them)."""
        widths = {meta["width"] for meta in self.metas if meta["rows"]}
        tasks = max(meta.get("tasks", 1) for meta in self.metas)
        return {
            "rows": sum(meta["rows"] for meta in self.metas),
            "nnz": sum(meta["nnz"] for meta in self.metas),
            "width": widths.pop() if len(widths) == 1 else None,
            "ids": self.metas[0]["ids"],
            "values": self.metas[0]["values"],
            **({"tasks": tasks} if tasks > 1 else {}),
        }

    def reserve(self, folder: Path) -> None:
        """Create the joined files at their final sizes (the offsets' leading 0 written), no
        meta.json. The files are sparse until placed: the disk space is taken by `place`."""
        folder.mkdir(parents=True, exist_ok=True)
        ends = self.starts(len(self.metas))
        for name in self.arrays:
            with open(folder / f"{name}.bin", "wb") as out:
                out.truncate(ends[name])
                if name == "offsets":
                    out.write(np.zeros(1, np.int64).tobytes())

    def place(self, part: int, source: Path, folder: Path) -> None:
        """Write part `part` (its folder `source`) into the reserved files, in blocks: the offsets
        shifted by the entries before it, every other array copied as it is."""
        meta, starts = self.metas[part], self.starts(part)
        entries = sum(m["nnz"] for m in self.metas[:part])
        for name in self.arrays:
            with open(folder / f"{name}.bin", "r+b") as out:
                out.seek(starts[name])
                if name == "offsets":
                    ends = _map(source / "offsets.bin", np.int64, meta["rows"] + 1)[1:]
                    for start in range(0, len(ends), BLOCK_ROWS):
                        out.write((ends[start : start + BLOCK_ROWS] + entries).tobytes())
                else:
                    with open(source / f"{name}.bin", "rb") as data:
                        shutil.copyfileobj(data, out, COPY_BYTES)

    def finish(self, folder: Path) -> None:
        """meta.json, last: the joined folder is complete."""
        (folder / "meta.json").write_text(json.dumps(self.meta()))


COPY_BYTES = 1 << 24
