"""The feature map: every encoder laid out in one id space, fitted chunk by chunk, encoding a frame
(batch) or a request of dicts (online).

Encoder i owns ids [offset_i, offset_i + size_i). Each encoder has one fitter (`update` per chunk,
then `finish`) and three ways to encode, held equal by tests: `encode_into` (a polars column, the
batch path), `encode_values` (a request's raw values) and `encode_numbers` (the same values already
read as numbers, the online fast path).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter
from typing import TypeVar

import numpy as np
import polars as pl

from .. import native
from ..config import MAX_BUCKETS
from ..errors import ArtifactError, InputError
from .binary import BinaryEncoder, BinaryFitter
from .categorical import CategoricalEncoder, CategoricalFitter
from .continuous import ContinuousEncoder, ContinuousFitter
from .id_list import IdListEncoder, IdListFitter
from .position import PositionEncoder, PositionFitter
from .spec import (
    BinaryFeature,
    CategoricalFeature,
    ContinuousFeature,
    IdListFeature,
    PositionFeature,
    TreeLeavesFeature,
)
from .tree_leaves import TreeLeavesEncoder, TreeLeavesFitter

T = TypeVar("T")
Encoder = ContinuousEncoder | CategoricalEncoder | BinaryEncoder | IdListEncoder | TreeLeavesEncoder | PositionEncoder
Fitter = ContinuousFitter | CategoricalFitter | BinaryFitter | IdListFitter | TreeLeavesFitter | PositionFitter
ENCODERS: dict[str, type[Encoder]] = {
    "continuous": ContinuousEncoder,
    "categorical": CategoricalEncoder,
    "binary": BinaryEncoder,
    "id_list": IdListEncoder,
    "tree_leaves": TreeLeavesEncoder,
    "position": PositionEncoder,
}
FITTERS: dict[type, type[Fitter]] = {
    ContinuousFeature: ContinuousFitter,
    CategoricalFeature: CategoricalFitter,
    BinaryFeature: BinaryFitter,
    IdListFeature: IdListFitter,
    TreeLeavesFeature: TreeLeavesFitter,
    PositionFeature: PositionFitter,
}


def entry_kind(encoder: Encoder) -> str:
    """How a feature's entries look to the blocks: "id" (one entry, value 1), "value" (one entry
    carrying a number: a raw or transformed continuous value) or "list" (any number of entries)."""
    if isinstance(encoder, (IdListEncoder, TreeLeavesEncoder)):
        return "list"
    if isinstance(encoder, PositionEncoder):
        return "id"  # a dropped position's served value 0 only silences the entry
    return "id" if encoder.one_hot else "value"


def place_entries(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each (row, feature)'s entries start in a row-major CSR of ragged rows, features in
    order within a row: counts int64 [n, F] -> (starts int64 [n, F], row lengths int64 [n])."""
    lengths = counts.sum(axis=1)
    within = np.cumsum(counts, axis=1) - counts
    row_starts = np.cumsum(lengths) - lengths
    return row_starts[:, None] + within, lengths


def list_positions(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Each entry's position when row r's `lengths[r]` entries start at `starts[r]`: int64 [Σ lengths]."""
    total = int(lengths.sum())
    first = np.cumsum(lengths) - lengths
    return np.repeat(starts - first, lengths) + np.arange(total, dtype=np.int64)


def _reads(encoder: Encoder) -> bool:
    """The encoder reads its data (a served position reads nothing)."""
    return not (isinstance(encoder, PositionEncoder) and not encoder.training)


def _column(frame: pl.DataFrame, encoder: Encoder) -> pl.Series:
    """The encoder's column of the frame (nulls for an encoder that reads nothing: the frame may
    lack the column)."""
    return frame[encoder.name] if _reads(encoder) else pl.repeat(None, frame.height, eager=True)


def check_encoder_fields(item: dict) -> None:
    """Raise ValueError unless a stored encoder's fields have the types and ranges fitting produces."""
    if not isinstance(item.get("name"), str):
        raise ValueError("an encoder has no name")
    buckets = item.get("buckets")
    if buckets is not None and not (isinstance(buckets, int) and 2 <= buckets <= MAX_BUCKETS):
        raise ValueError(f"encoder {item['name']!r} declares {buckets!r} buckets")
    edges = item.get("edges")
    if edges is not None:
        array = np.asarray(edges, dtype=np.float64)
        if array.ndim != 1 or not np.isfinite(array).all() or (np.diff(array) <= 0).any():
            raise ValueError(f"encoder {item['name']!r} has edges that are not finite and ascending")
    transform = item.get("transform")
    if transform not in (None, "log1p", "normal"):
        raise ValueError(f"encoder {item['name']!r} has an unknown transform {transform!r}")
    if transform == "normal" and (
        not isinstance(item.get("scores"), list)
        or len(item["scores"]) != len(edges or [])
        or not np.isfinite(np.asarray(item["scores"], dtype=np.float64)).all()
    ):
        raise ValueError(f"encoder {item['name']!r} has a to-normal map whose scores do not match its knots")
    vocabulary = item.get("vocabulary")
    if vocabulary is not None and not all(isinstance(v, str) for v in vocabulary):
        raise ValueError(f"encoder {item['name']!r} has a vocabulary entry that is not text")


def each_feature(work: Callable[[T], None], items: Iterable[T]) -> None:
    """work(item) for every item, on one thread per core: each feature's numpy and polars work
    releases the GIL, so features encode (or fit) side by side. Items must
    touch disjoint state (one encoder or fitter each); the first error is raised here."""
    items = list(items)
    if len(items) < 2 or (os.cpu_count() or 1) < 2:
        for item in items:
            work(item)
        return
    with ThreadPoolExecutor(max_workers=min(os.cpu_count() or 1, len(items))) as pool:
        for _ in pool.map(work, items):
            pass


def fitters(features) -> list:
    """One streaming fitter per feature: `update(series, weights)` per chunk, then `finish()`."""
    return [FITTERS[type(f)](f) for f in features]


def finish_fitters(running: list) -> list:
    """Every fitter's encoder, side by side (sorting a vocabulary or a histogram releases the GIL);
    a feature that `shares` another's encoding takes that one's vocabulary or hash buckets."""
    encoders: list = [None] * len(running)

    def finish(j: int) -> None:
        encoders[j] = running[j].finish()

    each_feature(finish, range(len(running)))
    by_name = {e.name: e for e in encoders}
    for j, fitter in enumerate(running):
        shared = getattr(getattr(fitter, "feature", None), "shares", None)
        if shared is not None:
            encoders[j] = sharing(encoders[j], by_name[shared])
    return encoders


def sharing(encoder: CategoricalEncoder | IdListEncoder, source: CategoricalEncoder | IdListEncoder) -> Encoder:
    """`encoder` encoding with `source`'s vocabulary, or its hash buckets under its name: an id then
    means the same value in both, and both have the same size."""
    fields = {**encoder.to_json(), "vocabulary": list(source.vocabulary), "buckets": source.buckets}
    fields.update(min_count=source.min_count, hash_name=source.name)
    fields.pop("kind"), fields.pop("offset")
    return type(encoder)(**fields)


def update_fitters(
    features,
    running: list,
    frame: pl.DataFrame,
    weights: np.ndarray,
    rows: np.ndarray | None = None,
    labels: np.ndarray | None = None,
) -> None:
    """Every fitter takes its feature's column of one chunk (weights [n]; only the rows of the bool
    mask `rows` [n] count, every row without it), side by side; a tree feature's fitter takes the
    frame and the labels [n]."""

    def update(j: int) -> None:
        if isinstance(running[j], TreeLeavesFitter):
            if labels is None:
                raise ValueError("tree features are fitted with the labels")
            running[j].update_frame(frame, labels, weights, rows)
        else:
            running[j].update(frame[features[j].name], weights, rows)

    each_feature(update, range(len(features)))


NESTED = (list, tuple, dict, set)  # values a one-value feature refuses in a request


@dataclass
class FeatureMap:
    """All encoders, laid out in one id space of `num_ids` ids (encoder i owns [offset_i, offset_i + size_i))."""

    encoders: list[Encoder]

    def __post_init__(self):
        offset = 0
        for encoder in self.encoders:
            encoder.offset = offset
            offset += encoder.size
        self.num_ids = offset

    @classmethod
    def fit(cls, features, frame: pl.DataFrame, weights: np.ndarray, labels: np.ndarray | None = None) -> FeatureMap:
        """The streaming fit (`fitters`) over one in-memory frame as its only chunk (labels [n]: for
        tree features)."""
        running = fitters(features)
        update_fitters(features, running, frame, weights, labels=labels)
        return cls(finish_fitters(running))

    @property
    def one_hot(self) -> bool:
        """Every encoded value is 1.0 (no raw continuous feature): the values need not be stored."""
        return all(encoder.one_hot for encoder in self.encoders)

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.encoders]

    @property
    def ragged(self) -> bool:
        """Some feature is an id list or tree leaves: a row's entries are not one per feature."""
        return any(entry_kind(e) == "list" for e in self.encoders)

    @property
    def columns(self) -> list[str]:
        """The data columns the features read, in order, each once (a served position reads none)."""
        read = [e.inputs if isinstance(e, TreeLeavesEncoder) else [e.name] for e in self.encoders if _reads(e)]
        return list(dict.fromkeys(column for columns in read for column in columns))

    def for_training(self) -> FeatureMap:
        """This map reading the train split: position features read their column instead of
        taking their served position (position.py). Same ids, same layout."""
        return FeatureMap(
            [
                PositionEncoder(e.name, e.vocabulary, e.serve_as, training=True)
                if isinstance(e, PositionEncoder)
                else e
                for e in self.encoders
            ]
        )

    def served_ids(self) -> list[tuple[int, int, float]]:
        """(feature index, global id, value) of each position feature as served."""
        return [
            (j, e.offset + e.served_id, e.served_value)
            for j, e in enumerate(self.encoders)
            if isinstance(e, PositionEncoder)
        ]

    def layout(self) -> list[tuple[str, int, int, str]]:
        """Each feature's (name, first id, number of ids, entry kind: see `entry_kind`)."""
        return [(e.name, e.offset, e.size, entry_kind(e)) for e in self.encoders]

    def encode_rows(self, frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Row-major CSR of any feature map: global ids int64 [nnz], values float32 [nnz], entries
        per row int64 [n]; within a row, each feature's entries in feature order."""
        lists = [j for j, e in enumerate(self.encoders) if entry_kind(e) == "list"]
        if not lists:
            ids, values = self.encode_frame(frame)
            return ids.reshape(-1), values.reshape(-1), np.full(frame.height, len(self.encoders), np.int64)
        self._check_columns(frame)
        encoded: list = [None] * len(self.encoders)

        def encode(j: int) -> None:
            encoder = self.encoders[j]
            if isinstance(encoder, TreeLeavesEncoder):
                encoded[j] = encoder.encode_frame(frame)
            elif isinstance(encoder, IdListEncoder):
                encoded[j] = encoder.encode_lists(frame[encoder.name])
            else:
                ids = np.empty(frame.height, dtype=np.int64)
                encoded[j] = (ids, encoder.encode_into(_column(frame, encoder), ids), None)

        each_feature(encode, range(len(self.encoders)))
        counts = np.ones((frame.height, len(self.encoders)), dtype=np.int64)
        for j in lists:
            counts[:, j] = encoded[j][2]
        starts, lengths = place_entries(counts)
        ids = np.empty(int(lengths.sum()), dtype=np.int64)
        values = np.empty(len(ids), dtype=np.float32)
        for j, (feature_ids, feature_values, _) in enumerate(encoded):
            positions = starts[:, j] if j not in lists else list_positions(starts[:, j], counts[:, j])
            ids[positions], values[positions] = feature_ids, feature_values
        return ids, values, lengths

    def _check_columns(self, frame: pl.DataFrame) -> None:
        missing = [name for name in self.columns if name not in frame.columns]
        if missing:
            raise InputError(
                f"column {missing[0]!r} is missing from the data; the model needs: {', '.join(self.columns)}"
            )

    def encode_frame(self, frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Global ids int64 [n, F] and values float32 [n, F], one column per feature."""
        ids, values = self.encode_columns(frame)
        assert values is not None  # no buffers given: values are returned
        return np.ascontiguousarray(ids.T), np.ascontiguousarray(values.T)

    def encode_columns(
        self, frame: pl.DataFrame, buffers: tuple[np.ndarray, np.ndarray | None] | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Feature-major: global ids int64 [F, n] and values float32 [F, n] (each feature's row
        contiguous), written into the first n columns of `buffers` (ids int64 or int32 when every id
        fits, values float32 or None to skip them (one-hot); [F, >= n]) when given, so a chunked
        caller reuses memory it has already touched."""
        if buffers is None or buffers[0].shape[1] < frame.height:
            buffers = (
                np.empty((len(self.encoders), frame.height), dtype=np.int64),
                np.empty((len(self.encoders), frame.height), dtype=np.float32),
            )
        ids = buffers[0][:, : frame.height]
        values = None if buffers[1] is None else buffers[1][:, : frame.height]
        if self.ragged:
            raise ValueError("a feature map with id lists encodes rows (encode_rows), not columns")
        self._check_columns(frame)

        def encode(j: int) -> None:
            encoder = self.encoders[j]
            assert not isinstance(encoder, (IdListEncoder, TreeLeavesEncoder))  # ragged maps were refused above
            encoded = encoder.encode_into(_column(frame, encoder), ids[j])
            if values is not None:
                values[j] = encoded

        each_feature(encode, range(len(self.encoders)))
        return ids, values

    def encode_records(self, records: list[dict]) -> tuple[np.ndarray, np.ndarray]:
        """The online path for a request of many candidates: global ids int64 [n, F], values float64 [n, F].

        The request's values are read as numbers in one pass (native.records_to_numbers); a feature
        whose column holds a kind of value its encoder does not take as a number (text, say) is
        encoded from its raw values instead."""
        if self.ragged:
            raise ValueError("a feature map with id lists encodes a request's rows (encode_records_rows)")
        ids = np.empty((len(records), len(self.encoders)), dtype=np.int64)
        values = np.empty((len(records), len(self.encoders)), dtype=np.float64)
        for j, (local, vals, _) in enumerate(self._encode_request(records)):
            ids[:, j], values[:, j] = local + self.encoders[j].offset, vals
        return ids, values

    def encode_records_rows(self, records: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The online path of any feature map, as `encode_rows`: global ids int64 [nnz], values
        float64 [nnz], entries per candidate int64 [n]."""
        encoded = self._encode_request(records)
        counts = np.ones((len(records), len(self.encoders)), dtype=np.int64)
        for j, (_, _, lengths) in enumerate(encoded):
            if lengths is not None:
                counts[:, j] = lengths
        starts, lengths = place_entries(counts)
        ids = np.empty(int(lengths.sum()), dtype=np.int64)
        values = np.empty(len(ids), dtype=np.float64)
        for j, (local, vals, feature_lengths) in enumerate(encoded):
            positions = starts[:, j] if feature_lengths is None else list_positions(starts[:, j], feature_lengths)
            ids[positions], values[positions] = local + self.encoders[j].offset, vals
        return ids, values, lengths

    def _encode_request(self, records: list[dict]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
        """Each feature's (local ids, values float64, entries per candidate or None for one each)."""
        numbers = native.records_to_numbers(records, tuple(self.names))
        columns = None
        out: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []
        for j, encoder in enumerate(self.encoders):
            try:
                if isinstance(encoder, TreeLeavesEncoder):
                    out.append(encoder.encode_records(records))
                elif isinstance(encoder, IdListEncoder):
                    columns = self._columns(records) if columns is None else columns
                    out.append(encoder.encode_values(columns[j]))
                elif encoder.number_kinds and not numbers[1][j] & ~encoder.number_kinds:
                    out.append((*encoder.encode_numbers(numbers[0][j]), None))
                else:
                    columns = self._columns(records) if columns is None else columns
                    nested = next((v for v in columns[j] if type(v) in NESTED), None)
                    if nested is not None:
                        raise InputError(
                            f"a record holds {type(nested).__name__} {str(nested)[:60]}; this {encoder.kind} "
                            "feature takes one value per record (a number, text or null)"
                        )
                    out.append((*encoder.encode_values(columns[j]), None))
            except InputError as exc:
                raise InputError(f"feature {encoder.name!r}: {exc}") from None
        return out

    def _columns(self, records: list[dict]) -> list:
        """Each feature's raw values across the records (None where a record lacks the key)."""
        if len(self.encoders) > 1 and records:
            try:  # every key present: one C-level getter per record, then a transpose
                return list(zip(*map(itemgetter(*self.names), records)))
            except KeyError:
                pass
        return [list(map(dict.get, records, repeat(name))) for name in self.names]

    def to_json(self) -> dict:
        return {"num_ids": self.num_ids, "encoders": [e.to_json() for e in self.encoders]}

    @classmethod
    def from_json(cls, obj: dict) -> FeatureMap:
        try:
            encoders = []
            for item in obj["encoders"]:
                item = dict(item)
                kind = item.pop("kind")
                item.pop("offset", None)
                check_encoder_fields(item)
                encoders.append(ENCODERS[kind](**item))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ArtifactError(
                f"feature map is corrupted ({type(exc).__name__}: {exc}); refit with `snn fit --force`"
            ) from None
        fmap = cls(encoders)
        if fmap.num_ids != obj.get("num_ids"):
            raise ArtifactError("feature map is corrupted (id space size mismatch); refit with `snn fit --force`")
        return fmap
