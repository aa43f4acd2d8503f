"""The prepare step's data passes: stream the sources in chunks, fit on train, encode every split.

Two passes over the train source, one over each other source, each holding one chunk at a time:

1. fit: every train chunk updates the streaming fitters (exact weighted per-value totals for
   percentile bins, counts for vocabularies; see features.py);
2. encode: every chunk of every source is routed to its split (holdout by key hash, negative
   downsampling by key hash), encoded, and appended to that split's CSR files (encoded.py).

Memory is one chunk plus the fitters' tables (distinct values), never the row count.
"""

from __future__ import annotations

import json
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import polars as pl

from .data import Reader, check_sources, holdout_mask, key_column, labels_of, repeated_keys, unit_hash, weights_of
from .encoded import SplitWriter, ids_dtype
from .errors import InputError
from .features import QUANTILE_METHOD, FeatureMap, fitters, update_fitters
from .spec import LoadedSpec

CHUNK_ROWS = 1 << 19
VOCABULARY_METHOD = "exact: counts per value accumulated chunk by chunk; most frequent first, ties by text"


@dataclass
class Part:
    """One chunk's rows for one split, with labels [n] and weights [n]."""

    split: str
    frame: pl.DataFrame
    labels: np.ndarray
    weights: np.ndarray


def needed_columns(loaded: LoadedSpec, extra: list[str] = ()) -> list[str]:
    spec, data = loaded.spec, loaded.spec.data
    return [f.name for f in spec.features] + [data.label.column] + list(extra) + \
        [c for c in (data.key, data.weight) if c]


def stream_parts(loaded: LoadedSpec, columns: list[str], sources: tuple[str, ...],
                 chunk_rows: int = CHUNK_ROWS) -> Iterator[Part]:
    """Chunks of the named sources, routed to splits: the train source yields `train` parts (after
    negative downsampling) and, with a holdout, `validation` parts."""
    data = loaded.spec.data
    reader = Reader.from_spec(data)
    key = key_column(data)
    for name in sources:
        source = getattr(data, name)
        if source is None:
            continue
        path = loaded.resolve(source.path)
        for frame in reader.chunks(path, source.rows, chunk_rows, columns):
            if frame[key].null_count():
                raise InputError(f"key column {key!r} in {path} has missing values; every row needs a key")
            labels, weights = labels_of(frame, data, f"{name} split"), weights_of(frame, data, f"{name} split")
            if name == "train" and data.holdout is not None:
                held = holdout_mask(frame[key], data)
                yield Part("validation", frame.filter(pl.Series(held)), labels[held], weights[held])
                frame, labels, weights = frame.filter(pl.Series(~held)), labels[~held], weights[~held]
            if name == "train" and loaded.spec.train.negative_downsampling is not None:
                down = loaded.spec.train.negative_downsampling
                keep = (labels > 0) | (unit_hash(frame[key], down.seed) < down.rate)
                frame, labels, weights = frame.filter(pl.Series(keep)), labels[keep], weights[keep]
            yield Part(name, frame, labels, weights)


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
        lf = reader.scan_rows(path, source.rows)
        if data.key not in lf.collect_schema():
            continue  # reported with the other missing columns
        key = pl.col(data.key)
        repeated = lf.select(key).filter(key.is_duplicated()).unique().head(3).collect()[data.key].to_list()
        if repeated:
            raise repeated_keys(data.key, path, repeated)


def fit_feature_map(loaded: LoadedSpec, chunk_rows: int = CHUNK_ROWS) -> FeatureMap:
    """Pass 1: stream the train split through the fitters -> the feature map."""
    features = loaded.spec.features
    running = fitters(features)
    rows, low, high = 0, np.inf, -np.inf
    for part in stream_parts(loaded, needed_columns(loaded), ("train",), chunk_rows):
        if part.split != "train" or part.frame.height == 0:
            continue
        update_fitters(features, running, part.frame, part.weights)
        rows += part.frame.height
        low, high = min(low, float(part.labels.min())), max(high, float(part.labels.max()))
    if rows == 0:
        raise InputError("the train split is empty after holdout and downsampling; change holdout.fraction or the rows")
    if low == high:
        raise InputError("the train split has a single label value; a classifier needs both positives and negatives")
    return FeatureMap([fitter.finish() for fitter in running])


def encode_splits(loaded: LoadedSpec, feature_map: FeatureMap, folder: Path,
                  chunk_rows: int = CHUNK_ROWS) -> dict[str, int]:
    """Pass 2: encode every split's chunks into `folder/<split>/` CSR files -> rows per split."""
    data = loaded.spec.data
    names = ["train", "validation"] + (["test"] if data.test is not None else [])
    key, width, id_dtype = key_column(data), len(feature_map.encoders), ids_dtype(feature_map.num_ids)
    with ExitStack() as stack:
        writers = {name: stack.enter_context(SplitWriter(folder / name, id_dtype, feature_map.one_hot)) for name in names}
        # one chunk's feature-major arrays, reused by every chunk (parts are at most chunk_rows rows);
        # one-hot maps store no values, so none are encoded
        buffers = (np.empty((width, chunk_rows), id_dtype),
                   None if feature_map.one_hot else np.empty((width, chunk_rows), np.float32))
        for part in stream_parts(loaded, needed_columns(loaded), ("train", "validation", "test"), chunk_rows):
            if part.frame.height == 0:
                continue
            ids, values = feature_map.encode_columns(part.frame, buffers)
            writers[part.split].append(ids.T, None if values is None else values.T, np.full(part.frame.height, width),
                                       part.labels, part.weights, part.frame[key])
        rows = {name: writer.rows for name, writer in writers.items()}
    if rows["validation"] == 0:
        raise InputError("the validation split is empty; change data.holdout.fraction or data.validation")
    return rows


def prepare(loaded: LoadedSpec, folder: Path, chunk_rows: int = CHUNK_ROWS) -> dict:
    """Fit and encode into `folder` (feature_map.json, splits/<name>/); returns the step's info."""
    check_sources(loaded)
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
