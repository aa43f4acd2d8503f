"""Per-value totals and integer lookups for the encoders: the native hash table (csrc/hash_table.c)
where it is built, polars and numpy otherwise (same results; tests hold both equal).

- `Totals`: exact per-key totals over chunks (a discretizer's weighted value histogram, a
  vocabulary's counts); memory is the distinct keys, never the rows.
- `IntegerLookup`: int64 keys -> int64 values, vectorized, with a default for absent keys.
- `bin_ids`, `bin_column`: numbers -> percentile bin ids.

Polars columns (`Totals.add_weighted`, `Totals.count`, `IntegerLookup.lookup_column`, `bin_column`)
are read in place by the native kernels, nulls by their validity bitmap (columns.py).

Native keys are int64, or float64 numbers by value (NaN is missing, -0.0 is 0.0); a table of
`capacity` slots (a power of two) holds at most half as many keys and grows 4x when full.
"""

from __future__ import annotations

import ctypes

import numpy as np
import polars as pl

from .columns import pieces
from .loader import library

COMPACT_AT = 2_000_000  # polars path: accumulated (key, total) rows before partial tables are merged


def _pointer(array: np.ndarray | None) -> int | None:
    return None if array is None else array.ctypes.data


def _valid(valid: tuple[int, int] | None) -> tuple[int | None, int]:
    return (None, 0) if valid is None else valid


def _ids_out(out: np.ndarray) -> tuple[int, int]:
    """An id buffer int64 or int32 [n] (contiguous) -> (pointer, is_32)."""
    if out.dtype not in (np.int64, np.int32) or not out.flags.c_contiguous:
        raise ValueError(f"id buffer must be contiguous int64 or int32, got {out.dtype}")
    return out.ctypes.data, int(out.dtype == np.int32)


class HashTable:
    """Native open-addressing table: int64 keys (float64 numbers by value) -> float64 payload."""

    def __init__(self, lib: ctypes.CDLL, capacity: int = 1 << 10):
        self.lib, self.count = lib, ctypes.c_int64(0)
        self.is_float: bool | None = None  # the key type, set by the first add
        self._slots: tuple | None = None  # (keys, the addresses of keys, payload and used) for `find`
        self._allocate(capacity)

    def _allocate(self, capacity: int) -> None:
        self.keys = np.zeros(capacity, dtype=np.int64)
        self.payload = np.zeros(capacity, dtype=np.float64)
        self.used = np.zeros(capacity, dtype=np.uint8)
        self.count.value = 0

    def _add(
        self,
        data: np.ndarray,
        is_float: bool,
        missing: np.ndarray | None,
        valid: tuple[int, int] | None,
        weights: np.ndarray | None,
    ) -> None:
        start = 0
        while start < len(data):
            start = self.lib.snn_table_add(
                self.keys.ctypes.data,
                self.payload.ctypes.data,
                self.used.ctypes.data,
                len(self.keys),
                ctypes.byref(self.count),
                len(self.keys) // 2,
                data.ctypes.data,
                int(is_float),
                _pointer(missing),
                *_valid(valid),
                _pointer(weights),
                start,
                len(data),
            )
            if start < len(data):  # full: rehash into 4x the slots, then go on
                held = self.used.view(bool)
                keys, payload = self.keys[held], self.payload[held]
                self._allocate(4 * len(self.keys))
                self._add(keys, False, None, None, payload)

    def add(
        self,
        data: np.ndarray,
        weights: np.ndarray | None = None,
        missing: np.ndarray | None = None,
        valid: tuple[int, int] | None = None,
    ) -> None:
        """payload[key] += weight (1.0 without weights) for data int64 or float64 [n] (NaN skipped);
        `missing` bool [n] and `valid` (an Arrow validity bitmap: address, bit of row 0) skip entries
        too. A table takes one key type."""
        is_float = bool(data.dtype == np.float64)
        if self.is_float is None:
            self.is_float = is_float
        if is_float != self.is_float or data.dtype not in (np.int64, np.float64):
            raise TypeError(f"hash table keys are {'float64' if self.is_float else 'int64'}, got {data.dtype}")
        data = np.ascontiguousarray(data)
        weights = None if weights is None else np.ascontiguousarray(weights, dtype=np.float64)
        missing = None if missing is None else np.ascontiguousarray(missing, dtype=bool)
        self._add(data, is_float, missing, valid, weights)

    def items(self) -> tuple[np.ndarray, np.ndarray]:
        """(keys int64 or float64 [k], payload float64 [k]) in slot order."""
        held = self.used.view(bool)
        keys = self.keys[held]
        return (keys.view(np.float64) if self.is_float else keys), self.payload[held]

    def find(
        self,
        data: np.ndarray,
        missing: np.ndarray | None,
        default_id: int,
        missing_id: int,
        offset: int,
        out: np.ndarray,
        valid: tuple[int, int] | None = None,
    ) -> None:
        """out[i] = payload[data[i]] (default_id if absent, missing_id if missing: flagged in
        `missing` or clear in the `valid` bitmap) + offset, in place."""
        data = np.ascontiguousarray(data, dtype=np.float64 if self.is_float else np.int64)
        missing = None if missing is None else np.ascontiguousarray(missing, dtype=bool)
        pointer, is_32 = _ids_out(out)
        if self._slots is None or self._slots[0] is not self.keys:  # the arrays' addresses, once per allocation
            self._slots = (self.keys, self.keys.ctypes.data, self.payload.ctypes.data, self.used.ctypes.data)
        self.lib.snn_table_find(
            *self._slots[1:],
            len(self.keys),
            data.ctypes.data,
            int(bool(self.is_float)),
            _pointer(missing),
            *_valid(valid),
            len(data),
            default_id,
            missing_id,
            offset,
            pointer,
            is_32,
        )


def fits_int64(dtype: pl.DataType) -> bool:
    """An integer dtype every value of which fits int64 (all but UInt64): such columns are looked up
    and counted as integers; UInt64 columns go as text."""
    return dtype.is_integer() and dtype != pl.UInt64


class Totals:
    """Per-key totals accumulated chunk by chunk (exact); `result()` -> DataFrame (key, total),
    unordered. `add_weighted`: weight totals of float values (a discretizer's histogram); `count`:
    counts of a column's values (a vocabulary). Numbers and int64-sized integers go to the native
    hash table when it is built (masked rows skipped in place); text, or everything without it, to
    polars tables merged as they grow past COMPACT_AT rows."""

    def __init__(self):
        self.table: HashTable | None = None
        self.parts: list[pl.DataFrame] = []
        self.pending = 0

    @classmethod
    def summed(cls, frames: list[pl.DataFrame]) -> Totals:
        """The totals of several `result()` frames (ranks' shards), summed key by key."""
        totals = cls()
        present = [frame for frame in frames if frame.height]
        if present:
            totals.parts = [pl.concat(present).group_by("key").agg(pl.col("total").sum())]
            totals.pending = totals.parts[0].height
        return totals

    def add_weighted(self, column: pl.Series, weights: np.ndarray, rows: np.ndarray | None = None) -> None:
        """column Float64 [n] (nulls and NaN skipped), weights [n]; only the rows of the bool mask
        `rows` [n] count."""
        lib = library()
        if lib is None:
            values = column.to_numpy()
            present = ~np.isnan(values) if rows is None else ~np.isnan(values) & rows
            return self._add_part(pl.DataFrame({"key": values[present], "total": weights[present].astype(np.float64)}))
        self._add_pieces(self._native(lib), column, weights, rows)

    def count(self, keys: pl.Series, rows: np.ndarray | None = None) -> None:
        """Each value of `keys` [n] counts 1 (nulls skipped); only the rows of the bool mask `rows` [n] count."""
        lib = library()
        if lib is not None and fits_int64(keys.dtype):
            return self._add_pieces(self._native(lib), keys.cast(pl.Int64), None, rows)
        present = (keys if rows is None else keys.filter(pl.Series(rows))).drop_nulls().rename("key")
        self._add_part(pl.DataFrame({"key": present, "total": np.ones(len(present))}))

    @staticmethod
    def _add_pieces(table: HashTable, column: pl.Series, weights: np.ndarray | None, rows: np.ndarray | None) -> None:
        skip = None if rows is None else ~rows
        with pieces(column) as parts:
            for part in parts:
                span = slice(part.start, part.start + len(part.values))
                table.add(
                    part.values,
                    None if weights is None else weights[span],
                    None if skip is None else skip[span],
                    part.valid,
                )

    def _native(self, lib: ctypes.CDLL) -> HashTable:
        if self.table is None:
            self.table = HashTable(lib)
        return self.table

    def _add_part(self, part: pl.DataFrame) -> None:
        self.parts.append(part.group_by("key").agg(pl.col("total").sum()))
        self.pending += self.parts[-1].height
        if self.pending > COMPACT_AT and len(self.parts) > 1:
            self.parts = [self._merged()]
            self.pending = self.parts[0].height

    def _merged(self) -> pl.DataFrame:
        return pl.concat(self.parts).group_by("key").agg(pl.col("total").sum())

    def result(self) -> pl.DataFrame:
        frames = [self._merged()] if self.parts else []
        if self.table is not None:
            keys, totals = self.table.items()
            frames.append(pl.DataFrame({"key": keys, "total": totals}))
        if not frames:
            return pl.DataFrame({"key": [], "total": []}, schema={"key": pl.Float64, "total": pl.Float64})
        return frames[0] if len(frames) == 1 else pl.concat(frames)


class IntegerLookup:
    """A map from distinct int64 keys to int64 values, vectorized: `lookup(x [n]) -> values [n]`, with
    `default` for absent keys. The native hash table where it is built; else keys spanning at most
    max(4 * count, 2^16) integers get a dense table (one gather per value), wider key sets a binary
    search of the sorted queries in the sorted keys."""

    def __init__(self, keys: np.ndarray, values: np.ndarray, default: int):
        self.default = default
        lib = library()
        self.table = None
        if lib is not None:
            self.table = HashTable(lib, capacity=1 << max(10, int(2 * len(keys)).bit_length()))
            self.table.add(keys.astype(np.int64), values.astype(np.float64))
            return
        self.low = int(keys.min()) if len(keys) else 0
        span = int(keys.max()) - self.low + 1 if len(keys) else 0
        self.dense = None
        if span <= max(4 * len(keys), 1 << 16):
            self.dense = np.full(span, default, dtype=np.int64)
            self.dense[keys - self.low] = values
        else:
            order = np.argsort(keys)
            self.keys, self.values = keys[order], values[order]

    def __call__(
        self,
        x: np.ndarray,
        missing: np.ndarray | None = None,
        missing_id: int = 0,
        offset: int = 0,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """values [n] (+ offset; missing_id where `missing` bool [n] is set), into `out` int64 or int32
        [n] when given."""
        out = np.empty(len(x), dtype=np.int64) if out is None else out
        if self.table is not None:
            self.table.find(x, missing, self.default, missing_id, offset, out)
            return out
        found = np.full(len(x), self.default, dtype=np.int64)
        if self.dense is not None:
            at = x - self.low
            inside = (at >= 0) & (at < len(self.dense))
            found[inside] = self.dense[at[inside]]
        elif len(self.keys):
            order = np.argsort(x)  # sorted needles walk the keys in order: about 2x fewer cache misses
            at = np.empty_like(order)
            at[order] = np.minimum(np.searchsorted(self.keys, x[order]), len(self.keys) - 1)
            hit = self.keys[at] == x
            found[hit] = self.values[at[hit]]
        if missing is not None:
            found[missing] = missing_id
        np.add(found, offset, out=out, casting="unsafe")
        return out

    def lookup_column(self, column: pl.Series, missing_id: int, offset: int, out: np.ndarray) -> np.ndarray:
        """`self(...)` of an Int64 column [n] (nulls -> missing_id), into `out` int64 or int32 [n]."""
        if self.table is None:
            missing = column.is_null().to_numpy() if column.null_count() else None
            return self(column.fill_null(0).to_numpy(), missing, missing_id, offset, out)
        with pieces(column) as parts:
            for part in parts:
                self.table.find(
                    part.values,
                    None,
                    self.default,
                    missing_id,
                    offset,
                    out[part.start : part.start + len(part.values)],
                    part.valid,
                )
        return out


def bin_ids(
    x: np.ndarray,
    inner_edges: np.ndarray,
    ids: np.ndarray | None,
    missing_bin: int,
    offset: int,
    out: np.ndarray,
    valid: tuple[int, int] | None = None,
) -> int:
    """Percentile bins: out[i] = ids[#{inner_edges <= x_i}] (the count itself without `ids`; missing_bin
    for NaN, or where the `valid` bitmap's bit is clear) + offset, into out int64 or int32 [n]. x
    float64 [n]. Returns the number of infinite values (the caller rejects them)."""
    lib = library()
    x = np.ascontiguousarray(x, dtype=np.float64)
    if lib is not None:
        pointer, is_32 = _ids_out(out)
        edges = np.ascontiguousarray(inner_edges, dtype=np.float64)
        ids = None if ids is None else np.ascontiguousarray(ids, dtype=np.int64)
        return lib.snn_bin(
            x.ctypes.data,
            *_valid(valid),
            len(x),
            edges.ctypes.data,
            len(edges),
            _pointer(ids),
            missing_bin,
            offset,
            pointer,
            is_32,
        )
    if valid is not None:
        raise ValueError("validity bitmaps are read by the native kernel only")
    missing = np.isnan(x)
    bins = np.searchsorted(inner_edges, x, side="right")
    bins[missing] = missing_bin
    np.add(bins if ids is None else ids[bins], offset, out=out, casting="unsafe")
    return int(np.isinf(x).sum())


def bin_column(
    column: pl.Series, inner_edges: np.ndarray, ids: np.ndarray | None, missing_bin: int, offset: int, out: np.ndarray
) -> int:
    """`bin_ids` of a Float64 column [n] (nulls -> missing_bin) into `out`; the number of infinities."""
    if library() is None:
        return bin_ids(column.to_numpy(), inner_edges, ids, missing_bin, offset, out)
    infinite = 0
    with pieces(column) as parts:
        for part in parts:
            infinite += bin_ids(
                part.values,
                inner_edges,
                ids,
                missing_bin,
                offset,
                out[part.start : part.start + len(part.values)],
                part.valid,
            )
    return infinite
