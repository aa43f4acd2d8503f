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
from .spec import BinaryFeature, CategoricalFeature, ContinuousFeature

T = TypeVar("T")
Encoder = ContinuousEncoder | CategoricalEncoder | BinaryEncoder
Fitter = ContinuousFitter | CategoricalFitter | BinaryFitter
ENCODERS: dict[str, type[Encoder]] = {
    "continuous": ContinuousEncoder,
    "categorical": CategoricalEncoder,
    "binary": BinaryEncoder,
}
FITTERS: dict[type, type[Fitter]] = {
    ContinuousFeature: ContinuousFitter,
    CategoricalFeature: CategoricalFitter,
    BinaryFeature: BinaryFitter,
}


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
    """Every fitter's encoder, side by side (sorting a vocabulary or a histogram releases the GIL)."""
    encoders = [None] * len(running)

    def finish(j: int) -> None:
        encoders[j] = running[j].finish()

    each_feature(finish, range(len(running)))
    return encoders


def update_fitters(
    features, running: list, frame: pl.DataFrame, weights: np.ndarray, rows: np.ndarray | None = None
) -> None:
    """Every fitter takes its feature's column of one chunk (weights [n]; only the rows of the bool
    mask `rows` [n] count, every row without it), side by side."""

    def update(j: int) -> None:
        running[j].update(frame[features[j].name], weights, rows)

    each_feature(update, range(len(features)))


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
    def fit(cls, features, frame: pl.DataFrame, weights: np.ndarray) -> FeatureMap:
        """The streaming fit (`fitters`) over one in-memory frame as its only chunk."""
        running = fitters(features)
        update_fitters(features, running, frame, weights)
        return cls(finish_fitters(running))

    @property
    def one_hot(self) -> bool:
        """Every encoded value is 1.0 (no raw continuous feature): the values need not be stored."""
        return all(encoder.one_hot for encoder in self.encoders)

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.encoders]

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
        missing = [name for name in self.names if name not in frame.columns]
        if missing:
            raise InputError(
                f"column {missing[0]!r} is missing from the data; the model needs: {', '.join(self.names)}"
            )

        def encode(j: int) -> None:
            encoder = self.encoders[j]
            encoded = encoder.encode_into(frame[encoder.name], ids[j])
            if values is not None:
                values[j] = encoded

        each_feature(encode, range(len(self.encoders)))
        return ids, values

    def encode_records(self, records: list[dict]) -> tuple[np.ndarray, np.ndarray]:
        """The online path for a request of many candidates: global ids int64 [n, F], values float64 [n, F].

        The request's values are read as numbers in one pass (native.records_to_numbers); a feature
        whose column holds a kind of value its encoder does not take as a number (text, say) is
        encoded from its raw values instead."""
        ids = np.empty((len(records), len(self.encoders)), dtype=np.int64)
        values = np.empty((len(records), len(self.encoders)), dtype=np.float64)
        numbers = native.records_to_numbers(records, tuple(self.names))
        columns = None
        for j, encoder in enumerate(self.encoders):
            try:
                if encoder.number_kinds and not numbers[1][j] & ~encoder.number_kinds:
                    local, vals = encoder.encode_numbers(numbers[0][j])
                else:
                    columns = self._columns(records) if columns is None else columns
                    local, vals = encoder.encode_values(columns[j])
            except InputError as exc:
                raise InputError(f"feature {encoder.name!r}: {exc}") from None
            ids[:, j], values[:, j] = local + encoder.offset, vals
        return ids, values

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
