"""Id lists: multi-valued categorical features, each row a list of ids (possibly empty).

    row cell -> items: a list column's elements, or text split at `separator`; each item stripped,
                empty items dropped; lists longer than max_length keep their first (or last) items
    item     -> local id: as a categorical value (categorical.py): the vocabulary's index (V for
                out-of-vocabulary; size V + 2, the categorical's missing id unused) or
                stable_bucket(name, item) (size buckets + 1)
    value    -> 1.0, or with `weighted` the number after the item's last ':' ("id:weight")
A row contributes one entry per kept item (zero for a missing or empty cell), so encoded rows are
ragged. The vocabulary counts items over the train rows (a row's repeated item counts each time).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from ..errors import InputError
from .categorical import CategoricalEncoder, CategoricalFitter
from .spec import CategoricalFeature, IdListFeature
from .values import category_of, number_of

WEIGHTED_ITEM = r"^(.*):([^:]*)$"


@dataclass
class ListItems:
    """One column's kept items, flattened in row order: text [nnz], weights float32 [nnz] (None: 1),
    lengths int64 [n] (items per row)."""

    text: pl.Series
    weights: np.ndarray | None
    lengths: np.ndarray


@dataclass
class IdListEncoder:
    name: str
    vocabulary: list[str] = field(default_factory=list)
    buckets: int | None = None
    min_count: int = 1
    separator: str = ","
    max_length: int = 64
    keep: str = "first"
    weighted: bool = False
    offset: int = 0
    hash_name: str | None = None  # the name items are hashed under (a shared feature's: `shares`)

    kind = "id_list"
    number_kinds = 0  # online values are lists or text: always read through `encode_lists`

    def __post_init__(self) -> None:
        if self.keep not in ("first", "last") or not self.max_length >= 1 or not self.separator:
            raise ValueError(f"id list {self.name!r} has keep={self.keep!r}, max_length={self.max_length!r}")
        self.items = CategoricalEncoder(
            self.name, self.vocabulary, self.buckets, self.min_count, hash_name=self.hash_name
        )

    @property
    def one_hot(self) -> bool:
        return not self.weighted

    @property
    def size(self) -> int:
        return self.items.size

    def split(self, series: pl.Series) -> ListItems:
        """The batch path's items of a column (list, text or scalar cells)."""
        if isinstance(series.dtype, (pl.List, pl.Array)):
            lists = series.cast(pl.List(pl.String))
        else:
            lists = series.cast(pl.String).str.split(self.separator)
        item = pl.element().str.strip_chars()
        lists = lists.list.eval(item.filter(item.is_not_null() & (item != "")))
        lists = lists.list.head(self.max_length) if self.keep == "first" else lists.list.tail(self.max_length)
        lengths = lists.list.len().fill_null(0).to_numpy().astype(np.int64)
        text = lists.explode().drop_nulls()
        if not self.weighted:
            return ListItems(text, None, lengths)
        ids, numbers = text.str.extract(WEIGHTED_ITEM, 1), text.str.extract(WEIGHTED_ITEM, 2)
        if ids.null_count():
            raise self._unweighted(text.filter(ids.is_null())[0])
        weights = numbers.str.strip_chars().cast(pl.Float64, strict=False).to_numpy()  # not a number -> NaN
        if not np.isfinite(weights).all():
            item = text.filter(pl.Series(~np.isfinite(weights)))[0]
            raise InputError(f"id list {self.name!r}: item {item!r} has a weight that is not a finite number")
        return ListItems(ids.str.strip_chars(), weights.astype(np.float32), lengths)

    def encode_lists(self, series: pl.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The batch path: global ids int64 [nnz], values float32 [nnz], lengths int64 [n]."""
        items = self.split(series)
        ids = np.empty(len(items.text), dtype=np.int64)
        self.items.encode_into(items.text, ids)
        ids += self.offset
        values = np.ones(len(ids), np.float32) if items.weights is None else items.weights
        return ids, values, items.lengths

    def encode_values(self, raws: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The online path over a request's raw cells (a list or tuple of ids, text, a dict id ->
        weight for weighted lists, None): local ids int64 [nnz], values float64 [nnz] (rounded to
        float32 like the batch path's), lengths int64 [n]."""
        ids: list[int] = []
        values: list[float] = []
        lengths = np.zeros(len(raws), dtype=np.int64)
        for row, raw in enumerate(raws):
            kept = self._items_of(raw)
            kept = kept[: self.max_length] if self.keep == "first" else kept[-self.max_length :]
            lengths[row] = len(kept)
            for text, weight in kept:
                ids.append(self.items._local_id(text))
                values.append(weight)
        return (
            np.array(ids, dtype=np.int64),
            np.array(values, dtype=np.float32).astype(np.float64),
            lengths,
        )

    def _items_of(self, raw) -> list[tuple[str, float]]:
        """One cell's items (text, weight), stripped, empty ones dropped, before truncation."""
        if raw is None:
            return []
        if isinstance(raw, dict):
            if not self.weighted:
                raise InputError(f"id list {self.name!r} is not weighted; send a list of ids, not a mapping")
            pairs = [(category_of(k), self._weight(v, k)) for k, v in raw.items()]
            return [(text, weight) for text, weight in pairs if text]
        cells: list[str | None]
        if isinstance(raw, str):
            cells = list(raw.split(self.separator))
        elif isinstance(raw, (list, tuple)):
            cells = [category_of(item) for item in raw]
        else:
            cells = [category_of(raw)]
        items = [c.strip() for c in cells if c is not None and c.strip()]
        if not self.weighted:
            return [(text, 1.0) for text in items]
        out = []
        for text in items:
            match = re.match(WEIGHTED_ITEM, text)
            if match is None:
                raise self._unweighted(text)
            out.append((match.group(1).strip(), self._weight(match.group(2), text)))
        return out

    def _weight(self, raw, item) -> float:
        try:
            weight = number_of(raw)
        except InputError:
            weight = None
        if weight is None or not np.isfinite(weight):
            raise InputError(f"id list {self.name!r}: item {item!r} has a weight that is not a finite number")
        return weight

    def _unweighted(self, item: str) -> InputError:
        return InputError(
            f"id list {self.name!r} is weighted but item {item!r} has no ':weight'; write `id:number` "
            "or set weighted: false"
        )

    def to_json(self) -> dict:
        return {
            "kind": self.kind,
            "name": self.name,
            "vocabulary": self.vocabulary,
            "buckets": self.buckets,
            "min_count": self.min_count,
            "separator": self.separator,
            "max_length": self.max_length,
            "keep": self.keep,
            "weighted": self.weighted,
            "offset": self.offset,
            "hash_name": self.hash_name,
        }


class IdListFitter:
    """Streaming, exact fit of an IdListEncoder: the items' counts, chunk by chunk, as a categorical's."""

    def __init__(self, feature: IdListFeature):
        self.feature = feature
        self.encoder = self._encoder([])
        self.counts = CategoricalFitter(
            CategoricalFeature(
                name=feature.name,
                kind="categorical",
                min_count=feature.min_count,
                hash_buckets=feature.hash_buckets,
            )
        )

    def _encoder(self, vocabulary: list[str]) -> IdListEncoder:
        f = self.feature
        return IdListEncoder(
            f.name, vocabulary, f.hash_buckets, f.min_count, f.separator, f.max_length, f.keep, f.weighted
        )

    def update(self, series: pl.Series, weights: np.ndarray, rows: np.ndarray | None = None) -> None:
        """One chunk's column (every cell checked); only the rows of the bool mask `rows` [n] count."""
        items = self.encoder.split(series)
        self.counts.update(items.text, weights, None if rows is None else np.repeat(rows, items.lengths))

    def finish(self) -> IdListEncoder:
        return self._encoder(self.counts.finish().vocabulary)
