"""The prepare step's data passes: stream the sources in chunks, fit on train, encode every split.

Two passes over the train source, one over each other source, each holding one chunk at a time:

1. fit: every train chunk updates the streaming fitters (exact weighted per-value totals for
   percentile bins, counts for vocabularies; see features.py);
2. encode: every chunk of every source is encoded once, then its rows are routed to their
   splits (holdout by key hash; negative downsampling by key hash drops rows first) and appended
   to each split's CSR files (encoded.py).

Memory is one chunk plus the fitters' tables (distinct values), never the row count.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, TypeVar

import numpy as np
import polars as pl

from ..data.readers import (
    READ_ERRORS,
    Reader,
    check_inputs,
    holdout_mask,
    key_column,
    labels_of,
    repeated_keys,
    unit_hash,
    weights_of,
)
from ..store.encoded import SplitWriter, ids_dtype
from ..errors import InputError
from ..features.encoders import QUANTILE_METHOD, FeatureMap, finish_fitters, fitters, update_fitters
from ..spec import LoadedSpec

CHUNK_ROWS = 1 << 19
T = TypeVar("T")
VOCABULARY_METHOD = "exact: counts per value accumulated chunk by chunk; most frequent first, ties by text"


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
            yield item


def needed_columns(loaded: LoadedSpec, extra: list[str] = ()) -> list[str]:
    spec, data = loaded.spec, loaded.spec.data
    return [f.name for f in spec.features] + [data.label.column] + list(extra) + \
        [c for c in (data.key, data.weight) if c]


def stream_chunks(loaded: LoadedSpec, columns: list[str], sources: tuple[str, ...],
                  chunk_rows: int = CHUNK_ROWS, downsample: bool = True) -> Iterator[Chunk]:
    """Chunks of the named sources, routed to splits: rows of the train source go to `train` (after
    negative downsampling, which drops rows) or, with a holdout, to `validation` by key hash.
    `downsample=False` skips the downsampling for a reader of the other splits alone (scoring):
    held-out rows are never dropped, and the train rows are then routed without being copied."""
    data = loaded.spec.data
    reader = Reader.from_spec(data)
    key = key_column(data)
    for name in sources:
        source = getattr(data, name)
        if source is None:
            continue
        path = loaded.resolve(source.path)
        for frame in read_ahead(reader.chunks(path, source.rows, chunk_rows, columns, source.header)):
            if frame[key].null_count():
                raise InputError(f"key column {key!r} in {path} has missing values; every row needs a key")
            labels, weights = labels_of(frame, data, f"{name} split"), weights_of(frame, data, f"{name} split")
            held = holdout_mask(frame[key], data) if name == "train" and data.holdout is not None else None
            if name == "train" and downsample and loaded.spec.train.negative_downsampling is not None:
                down = loaded.spec.train.negative_downsampling  # held-out rows are never downsampled
                keep = (labels > 0) | (unit_hash(frame[key], down.seed) < down.rate)
                keep = keep if held is None else keep | held
                frame, labels, weights = frame.filter(pl.Series(keep)), labels[keep], weights[keep]
                held = None if held is None else held[keep]
            routes = [(name, None)] if held is None else [("validation", held), ("train", ~held)]
            yield Chunk(frame, labels, weights, routes)


def check_unique_keys(loaded: LoadedSpec) -> None:
    """data.key must be unique within each source (parity joins on it); reads the key column alone."""
    data = loaded.spec.data
    if data.key is None:
        return  # row_id is unique by construction
    reader = Reader.from_spec(data)
    for source in (data.train, data.validation, data.test):
        if source is None:
            continue
        path = loaded.resolve(source.path)
        lf = reader.scan_rows(path, source.rows, source.header)
        key = pl.col(data.key)
        try:
            repeated = lf.select(key).filter(key.is_duplicated()).unique().head(3).collect()[data.key].to_list()
        except READ_ERRORS as exc:
            raise reader._unreadable(path, exc) from None
        if repeated:
            raise repeated_keys(data.key, path, repeated)


def fit_feature_map(loaded: LoadedSpec, chunk_rows: int = CHUNK_ROWS) -> FeatureMap:
    """Pass 1: stream the train split through the fitters -> the feature map."""
    features = loaded.spec.features
    running = fitters(features)
    rows, weight, low, high = 0, 0.0, np.inf, -np.inf
    for chunk in stream_chunks(loaded, needed_columns(loaded), ("train",), chunk_rows):
        for split, selected in chunk.routes:
            if split != "train":
                continue
            labels = chunk.labels if selected is None else chunk.labels[selected]
            if len(labels) == 0:
                continue
            update_fitters(features, running, chunk.frame, chunk.weights, selected)
            rows += len(labels)
            weight += float(chunk.weights.sum() if selected is None else chunk.weights[selected].sum())
            low, high = min(low, float(labels.min())), max(high, float(labels.max()))
    if rows == 0:
        raise InputError("the train split is empty after holdout and downsampling; change holdout.fraction or the rows")
    if low == high:
        raise InputError("the train split has a single label value; a classifier needs both positives and negatives")
    if weight <= 0:
        raise InputError(f"the train split's weights (column {loaded.spec.data.weight!r}) sum to 0; give some rows "
                         "a positive weight")
    return FeatureMap(finish_fitters(running))


def encode_splits(loaded: LoadedSpec, feature_map: FeatureMap, folder: Path,
                  chunk_rows: int = CHUNK_ROWS) -> dict[str, int]:
    """Pass 2: encode every split's chunks into `folder/<split>/` CSR files -> rows per split."""
    data = loaded.spec.data
    names = ["train", "validation"] + (["test"] if data.test is not None else [])
    width, id_dtype = len(feature_map.encoders), ids_dtype(feature_map.num_ids)
    with ExitStack() as stack:
        writers = {name: stack.enter_context(SplitWriter(folder / name, id_dtype, feature_map.one_hot)) for name in names}

        def write(chunk: Chunk, ids: np.ndarray, values: np.ndarray | None) -> None:
            for split, selected in chunk.routes:
                rows = None if selected is None else np.flatnonzero(selected)
                count = chunk.frame.height if rows is None else len(rows)
                writers[split].append(ids.T, None if values is None else values.T, np.full(count, width),
                                      chunk.labels, chunk.weights, rows)

        # a chunk is written on a background thread while the next one is encoded, so two chunks'
        # feature-major arrays take turns (each at most chunk_rows rows; one-hot maps store no values)
        buffers = [(np.empty((width, chunk_rows), id_dtype),
                    None if feature_map.one_hot else np.empty((width, chunk_rows), np.float32)) for _ in range(2)]
        writing = stack.enter_context(ThreadPoolExecutor(max_workers=1))
        pending, turn = None, 0
        for chunk in stream_chunks(loaded, needed_columns(loaded), ("train", "validation", "test"), chunk_rows):
            if chunk.frame.height == 0:
                continue
            ids, values = feature_map.encode_columns(chunk.frame, buffers[turn])  # every row once, then routed
            turn = 1 - turn
            if pending is not None:
                pending.result()  # the previous chunk is written: its buffers are free for the next one
            pending = writing.submit(write, chunk, ids, values)
        if pending is not None:
            pending.result()
        rows = {name: writer.rows for name, writer in writers.items()}
        weights = {name: writer.weight_sum for name, writer in writers.items()}
    if rows["validation"] == 0:
        raise InputError("the validation split is empty; change data.holdout.fraction or data.validation")
    for name, total in weights.items():
        if rows[name] and total <= 0:
            raise InputError(f"the {name} split's weights (column {data.weight!r}) sum to 0; its metrics would be "
                             "undefined: give some rows a positive weight")
    return rows


def prepare(loaded: LoadedSpec, folder: Path, chunk_rows: int = CHUNK_ROWS) -> dict:
    """Fit and encode into `folder` (feature_map.json, splits/<name>/); returns the step's info."""
    check_inputs(loaded)
    check_unique_keys(loaded)
    start = time.perf_counter()
    feature_map = fit_feature_map(loaded, chunk_rows)
    (folder / "feature_map.json").write_text(json.dumps(feature_map.to_json()))
    fitted = time.perf_counter()
    rows = encode_splits(loaded, feature_map, folder / "splits", chunk_rows)
    done = time.perf_counter()
    return {
        "rows": rows, "num_ids": feature_map.num_ids, "bins": {e.name: e.size for e in feature_map.encoders},
        "method": {"continuous": QUANTILE_METHOD, "categorical": VOCABULARY_METHOD, "chunk_rows": chunk_rows},
        "seconds": {"fit": fitted - start, "encode": done - fitted},
    }
