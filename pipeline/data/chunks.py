"""The sources streamed in chunks, each row routed to its split.

Rows of the train source go to `train` or, with a holdout, to `validation` by a stable hash of the
row key; negative downsampling (when given) first drops train negatives by key hash (held-out rows
are never downsampled). Memory is one chunk (plus one read ahead), never the row count.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import polars as pl

from ..errors import InputError
from ..features.spec import Feature, columns_of
from .readers import Reader
from .rows import holdout_mask, key_column, labels_of, unit_hash, weights_of
from .spec import DataFiles, DataSpec, NegativeDownsampling, TaskSampling

CHUNK_ROWS = 1 << 19
T = TypeVar("T")


@dataclass
class Chunk:
    """One chunk of one source, every row read once: labels and weights [n], and `routes`, the split
    each row goes to as (split, rows) pairs, rows a bool mask [n] or None for every row. Splits are
    routed by mask rather than by copying the frame: the fit and encode passes read the masked rows
    in place, and only scoring takes copies (`part`)."""

    frame: pl.DataFrame
    labels: np.ndarray
    weights: np.ndarray
    routes: list[tuple[str, np.ndarray | None]]

    def part(self, rows: np.ndarray | None) -> tuple[pl.DataFrame, np.ndarray, np.ndarray]:
        """(frame, labels, weights) of the masked rows."""
        if rows is None:
            return self.frame, self.labels, self.weights
        return self.frame.filter(pl.Series(rows)), self.labels[rows], self.weights[rows]


def read_ahead(items: Iterator[T]) -> Iterator[T]:
    """The items of `items`, the next one produced on a background thread while the caller works on
    the current one (reading overlaps fitting and encoding; memory: one more chunk)."""
    done = object()
    with ThreadPoolExecutor(max_workers=1) as pool:
        upcoming = pool.submit(next, items, done)
        while (item := upcoming.result()) is not done:
            upcoming = pool.submit(next, items, done)
            yield item  # type: ignore[misc]  # not `done`: an item of `items`


def needed_columns(data: DataSpec, features: list[Feature], extra: Sequence[str] = ()) -> list[str]:
    """The columns the features, the label, the key and the weight (and `extra`) read, each once."""
    read = [c for f in features for c in columns_of(f)] + data.label_columns + list(extra)
    return list(dict.fromkeys(read + [c for c in (data.key, data.weight) if c]))


def stream_chunks(
    files: DataFiles,
    columns: list[str],
    sources: tuple[str, ...],
    downsampling: NegativeDownsampling | Sequence[TaskSampling] | None = None,
    chunk_rows: int = CHUNK_ROWS,
    unread_in_test: Sequence[str] = (),
) -> Iterator[Chunk]:
    """Chunks of the named sources, routed to splits. With `downsampling`, train negatives whose key
    hash falls above the rate are dropped; without it (scoring), held-out rows are routed without
    copying the train rows around them. With several tasks (labels [n, T]), `downsampling` is one
    TaskSampling per task (`task_keeps`): a train row is kept when some task keeps it, and a
    task's weight [n, T] is 0 on the rows it dropped. The test source is read
    without the `unread_in_test` columns (position features: it is scored as served, and need not
    carry them)."""
    data = files.data
    reader = Reader.from_spec(data)
    key = key_column(data)
    for name in sources:
        source = getattr(data, name)
        if source is None:
            continue
        path = files.path(source)
        read = [c for c in columns if c not in unread_in_test] if name == "test" else columns
        frames = reader.chunks(path, source.rows, chunk_rows, read, source.header, may_be_empty=files.share)
        for frame in read_ahead(frames):
            if frame[key].null_count():
                raise InputError(f"key column {key!r} in {path} has missing values; every row needs a key")
            labels, weights = labels_of(frame, data, f"{name} split"), weights_of(frame, data, f"{name} split")
            held = holdout_mask(frame[key], data.holdout) if name == "train" and data.holdout is not None else None
            if labels.ndim == 2:  # a weight per task
                weights = np.repeat(weights[:, None], labels.shape[1], 1)
            if name == "train" and downsampling is not None:  # held-out rows are never downsampled
                kept = task_keeps(labels, frame[key], downsampling)
                if held is not None:
                    kept |= held[:, None]
                keep = kept.any(1)
                if labels.ndim == 2:
                    weights = weights * kept
                frame, labels, weights = frame.filter(pl.Series(keep)), labels[keep], weights[keep]
                held = None if held is None else held[keep]
            routes: list[tuple[str, np.ndarray | None]] = (
                [(name, None)] if held is None else [("validation", held), ("train", ~held)]
            )
            yield Chunk(frame, labels, weights, routes)


def task_keeps(
    labels: np.ndarray, keys: pl.Series, downsampling: NegativeDownsampling | Sequence[TaskSampling]
) -> np.ndarray:
    """Each row's keep decision per task, bool [n, T] (T = 1 for labels [n]): a positive is always
    kept, a negative when its key's hash under the task's seed falls below the task's rate (every
    row without downsampling); a task given another keeps only rows where that one's label is 1."""
    per_task = (
        [TaskSampling(downsampling=downsampling)] if isinstance(downsampling, NegativeDownsampling) else downsampling
    )
    columns = labels.reshape(len(labels), -1)
    kept = np.ones(columns.shape, dtype=bool)
    for t, task in enumerate(per_task):
        rule = task.downsampling
        if rule is not None:
            kept[:, t] = (columns[:, t] > 0) | (unit_hash(keys, rule.seed) < rule.rate)
        if task.given is not None:
            kept[:, t] &= columns[:, task.given] > 0
    return kept
