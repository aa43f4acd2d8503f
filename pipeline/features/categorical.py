"""Categorical features: a vocabulary (values seen >= min_count times, most frequent first) or
stable hash buckets.

    vocabulary: local ids 0..V-1 the values, V out-of-vocabulary, V+1 missing (size V + 2)
    hashing:    stable_bucket(name, value) in [0, buckets), missing -> buckets (size buckets + 1)
Unseen values never fail: they take the OOV id (or their bucket). Value 1.0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import polars as pl

from .. import native
from ..native import IntegerLookup, Totals, fits_int64
from .spec import CategoricalFeature
from .values import category_of, category_text, stable_bucket, unit_values

VOCABULARY_METHOD = "exact: counts per value accumulated chunk by chunk; most frequent first, ties by text"


@dataclass
class CategoricalEncoder:
    name: str
    vocabulary: list[str] = field(default_factory=list)
    buckets: int | None = None
    min_count: int = 1
    offset: int = 0
    hash_name: str | None = None  # the name values are hashed under (a shared feature's: `shares`)

    kind = "categorical"
    one_hot = True  # every value it emits is 1.0

    def __post_init__(self) -> None:
        self._index: dict[str, int] | None = None  # built on the first online lookup of text
        self._text_lookup: tuple[pl.Series, pl.Series] | None = None

    @property
    def size(self) -> int:
        return self.buckets + 1 if self.buckets else len(self.vocabulary) + 2

    @property
    def hash_key(self) -> str:
        return self.hash_name or self.name

    @property
    def number_kinds(self) -> int:
        """The kinds of raw value `encode_numbers` takes: ints within ±2^53 and None (vocabularies;
        hashed buckets hash the text, so they take the raw values)."""
        return 0 if self.buckets else native.SEEN_INT | native.SEEN_NONE

    def encode_into(self, series: pl.Series, out: np.ndarray) -> np.ndarray:
        """The batch path: global ids (local + offset) into `out` int64 or int32 [n]; values float32 [n].
        Integer columns of a vocabulary: one hash lookup of its integer entries, the column read in
        place; text (or buckets): a polars replace."""
        if self.buckets is None and fits_int64(series.dtype):
            self._integer_lookup.lookup_column(series.cast(pl.Int64), len(self.vocabulary) + 1, self.offset, out)
        else:
            np.add(self._text_ids(series), self.offset, out=out, casting="unsafe")
        return unit_values(len(series))

    def _text_ids(self, series: pl.Series) -> np.ndarray:
        """Local ids int64 [n] of a column read as text."""
        text = category_text(series)
        if self.buckets:
            uniques = text.drop_nulls().unique()
            buckets = [stable_bucket(self.hash_key, u, buckets=self.buckets) for u in uniques.to_list()]
            old, new, missing, oov = uniques, pl.Series(buckets, dtype=pl.Int64), self.buckets, self.buckets
        else:
            if self._text_lookup is None:
                self._text_lookup = (
                    pl.Series(self.vocabulary, dtype=pl.String),
                    pl.Series(np.arange(len(self.vocabulary), dtype=np.int64)),
                )
            (old, new), missing, oov = self._text_lookup, len(self.vocabulary) + 1, len(self.vocabulary)
        ids = text.replace_strict(old, new, default=oov, return_dtype=pl.Int64)
        return np.where(text.is_null().to_numpy(), missing, ids.to_numpy()).astype(np.int64)

    def _local_id(self, raw) -> int:
        """One raw value's local id (the online path's text form)."""
        value = category_of(raw)
        if self.buckets:
            return self.buckets if value is None else stable_bucket(self.hash_key, value, buckets=self.buckets)
        if value is None:
            return len(self.vocabulary) + 1
        if self._index is None:
            self._index = {v: i for i, v in enumerate(self.vocabulary)}
        return self._index.get(value, len(self.vocabulary))

    def encode_values(self, raws: list) -> tuple[np.ndarray, np.ndarray]:
        """The online path over a request's raw values: local ids int64 [n], values float64 [n]."""
        if self.buckets is None and set(map(type, raws)) <= {int, type(None)}:
            x = np.array(raws, dtype=np.float64)  # None -> NaN, in one C pass
            if np.abs(np.nan_to_num(x)).max(initial=0.0) < 2.0**53:  # every int exact in float64
                return self.encode_numbers(x)
        return np.array([self._local_id(r) for r in raws], dtype=np.int64), np.ones(len(raws))

    def encode_numbers(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`encode_values` of ints read as numbers, float64 [n] (NaN missing): one vectorized lookup of
        the vocabulary's integer entries, as the batch path's."""
        missing = np.isnan(x)
        ids = self._integer_lookup(
            np.where(missing, 0.0, x).astype(np.int64), missing, missing_id=len(self.vocabulary) + 1
        )
        return ids, np.ones(len(x))

    @cached_property
    def _integer_lookup(self) -> IntegerLookup:
        """The vocabulary entries that are integers in canonical text ("7", not "07") -> their ids."""
        text = pl.Series(self.vocabulary, dtype=pl.String)
        as_int = text.cast(pl.Int64, strict=False)
        canonical = (as_int.cast(pl.String) == text).fill_null(False).to_numpy()
        return IntegerLookup(
            as_int.to_numpy()[canonical].astype(np.int64), np.flatnonzero(canonical), default=len(self.vocabulary)
        )

    def to_json(self) -> dict:
        return {
            "kind": self.kind,
            "name": self.name,
            "vocabulary": self.vocabulary,
            "buckets": self.buckets,
            "min_count": self.min_count,
            "offset": self.offset,
            "hash_name": self.hash_name,
        }


class CategoricalFitter:
    """Streaming fit of a CategoricalEncoder: counts per value accumulated chunk by chunk (exact).

    Integer columns are counted as integers and turned to text once at the end, so the vocabulary
    (most frequent first, ties by text) is the same as counting the text of every row.
    """

    def __init__(self, feature: CategoricalFeature):
        self.feature = feature
        self.totals = Totals()

    def update(self, series: pl.Series, weights: np.ndarray, rows: np.ndarray | None = None) -> None:
        """One chunk's column (counts ignore the weights); only the rows of the bool mask `rows` [n] count."""
        if self.feature.hash_buckets:
            return
        self.totals.count(series if fits_int64(series.dtype) else category_text(series), rows)

    def finish(self) -> CategoricalEncoder:
        feature = self.feature
        if feature.hash_buckets:
            return CategoricalEncoder(feature.name, buckets=feature.hash_buckets)
        table = self.totals.result()
        if table.height == 0:
            return CategoricalEncoder(feature.name, [], min_count=feature.min_count)
        kept = (
            table.filter(pl.col("total") >= feature.min_count)
            .select(pl.col("key").cast(pl.String), pl.col("total").cast(pl.Int64))
            .sort(["total", "key"], descending=[True, False])
        )
        return CategoricalEncoder(feature.name, kept["key"].to_list(), min_count=feature.min_count)
