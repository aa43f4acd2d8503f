"""Encoded splits as CSR arrays on disk, memory-mapped back; batches are vectorized slices.

Layout of one split folder: `offsets.npy` int64 [n+1], `ids.npy` int64 [nnz], `values.npy`
float32 [nnz], `labels.npy` float32 [n], `weights.npy` float32 [n], `keys.parquet` (the row key).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from .errors import ArtifactError

ARRAYS = ("offsets", "ids", "values", "labels", "weights")


@dataclass
class CSRBatch:
    """One batch: ids [nnz], values [nnz], offsets [B] (row starts), labels [B], weights [B]."""

    ids: np.ndarray
    values: np.ndarray
    offsets: np.ndarray
    labels: np.ndarray
    weights: np.ndarray


@dataclass
class EncodedSplit:
    offsets: np.ndarray
    ids: np.ndarray
    values: np.ndarray
    labels: np.ndarray
    weights: np.ndarray
    keys: pl.Series

    @classmethod
    def from_dense(cls, ids: np.ndarray, values: np.ndarray, labels, weights, keys: pl.Series) -> "EncodedSplit":
        """From per-feature arrays ids/values [n, F] (one entry per feature and row)."""
        n, width = ids.shape
        offsets = np.arange(n + 1, dtype=np.int64) * width
        return cls(offsets, ids.reshape(-1), values.reshape(-1), np.asarray(labels, np.float32),
                   np.asarray(weights, np.float32), keys)

    @property
    def rows(self) -> int:
        return len(self.offsets) - 1

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for name in ARRAYS:
            np.save(folder / f"{name}.npy", np.ascontiguousarray(getattr(self, name)))
        pl.DataFrame({self.keys.name: self.keys}).write_parquet(folder / "keys.parquet")

    @classmethod
    def load(cls, folder: Path) -> "EncodedSplit":
        try:
            arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="c", allow_pickle=False) for name in ARRAYS}
            keys = pl.read_parquet(folder / "keys.parquet").to_series()
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"encoded data in {folder} is missing or corrupted ({exc}); rerun with --force") from None
        return cls(keys=keys, **arrays)

    def take(self, rows: np.ndarray) -> CSRBatch:
        """Gather rows (any order) into one CSR batch without a per-row Python loop."""
        starts, stops = self.offsets[rows], self.offsets[rows + 1]
        lengths = stops - starts
        batch_offsets = np.zeros(len(rows), dtype=np.int64)
        np.cumsum(lengths[:-1], out=batch_offsets[1:])
        positions = np.repeat(starts - batch_offsets, lengths) + np.arange(lengths.sum(), dtype=np.int64)
        return CSRBatch(self.ids[positions], self.values[positions], batch_offsets,
                        self.labels[rows], self.weights[rows])

    def slice(self, start: int, stop: int) -> CSRBatch:
        """Contiguous rows [start, stop) as zero-copy views."""
        a, b = self.offsets[start], self.offsets[stop]
        return CSRBatch(self.ids[a:b], self.values[a:b], self.offsets[start:stop] - a,
                        self.labels[start:stop], self.weights[start:stop])

    def batches(self, batch_size: int, order: np.ndarray | None = None):
        """Yield CSR batches in `order` (a permutation of rows) or file order."""
        for start in range(0, self.rows, batch_size):
            stop = min(start + batch_size, self.rows)
            yield self.slice(start, stop) if order is None else self.take(order[start:stop])
