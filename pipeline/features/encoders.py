"""Feature encoders and the feature map: raw columns -> (id, value) pairs in one id space.

Each encoder owns a contiguous id range [offset, offset + size) and maps one raw value to exactly
one (local id, value) pair. Two paths, held equal by tests:

* `encode_series` — vectorized over a polars Series (the batch/offline path);
* `encode_value`  — one raw Python value (the online path: no polars, no numpy arrays).

Fitting follows scikit-learn's fit/transform shape: `Encoder.fit(series, weights) -> Encoder`.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from itertools import repeat
from operator import itemgetter
from typing import TypeVar

import numpy as np
import polars as pl

from .. import native
from ..store.encoded import unit_values
from ..errors import ArtifactError, InputError
from ..native import IntegerLookup, Totals, bin_column, bin_ids, fits_int64
from ..config import MAX_BUCKETS
from .spec import BinaryFeature, CategoricalFeature, ContinuousFeature, HashingDiscretizer, RawValue

T = TypeVar("T")

QUANTILE_METHOD = (
    "exact: weighted averaged-inverted-CDF quantiles over per-value weight totals accumulated chunk by chunk "
    "(memory grows with distinct values, not rows); values holding >= 1/bins of the weight get their own bin"
)


def stable_bucket(*parts: str, buckets: int) -> int:
    """Stable across processes and versions: BLAKE2b-64 of the parts joined by U+001F, mod buckets."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % buckets


# ----------------------------------------------------------------------------- quantiles


def weighted_quantiles(values: np.ndarray, weights: np.ndarray, qs: np.ndarray) -> np.ndarray:
    """Weighted averaged-inverted-CDF quantiles.

    With unit weights this equals `np.quantile(values, qs, method="averaged_inverted_cdf")`:
    for target mass t = q·W, take the first sorted value whose cumulative weight reaches t, and
    average it with the next value when the cumulative weight equals t exactly.
    """
    order = np.argsort(values, kind="stable")
    xs, cw = values[order], np.cumsum(weights[order], dtype=np.float64)
    total = cw[-1]
    targets = np.asarray(qs, dtype=np.float64) * total
    first = np.minimum(np.searchsorted(cw, targets, side="left"), len(xs) - 1)
    past = np.minimum(np.searchsorted(cw, targets, side="right"), len(xs) - 1)
    exact = np.abs(cw[first] - targets) <= 1e-12 * max(total, 1.0)
    return np.where(exact, (xs[first] + xs[past]) / 2.0, xs[first])


def percentile_edges(values: np.ndarray, weights: np.ndarray, bins: int) -> np.ndarray:
    """Sorted unique bin edges [e_0 .. e_k] for up to `bins` weighted equal-frequency bins.

    Heavy ties are handled explicitly: a value v holding >= 1/bins of the weight (e.g. the 0 of
    capital-gain) gets a bin [v, nextafter(v)) holding exactly v; the remaining weight is split equal-frequency
    over the remaining bins. Without heavy values this is plain quantile edges (sklearn's
    KBinsDiscretizer(strategy="quantile") with averaged_inverted_cdf gives the same edges).
    """
    if len(values) == 0:
        return np.zeros(1)
    uniques, inverse = np.unique(values, return_inverse=True)
    mass = np.bincount(inverse, weights=weights)
    heavy = uniques[mass >= mass.sum() / bins]
    rest = ~np.isin(values, heavy)
    edges = [np.array([values.min(), values.max()])]
    if heavy.size:  # [v, nextafter(v)) holds exactly v
        edges += [heavy, np.nextafter(heavy, np.inf)]
    remaining_bins = bins - heavy.size
    if rest.any() and remaining_bins >= 1:
        qs = np.linspace(0.0, 1.0, remaining_bins + 1)
        edges.append(weighted_quantiles(values[rest], weights[rest], qs))
    return np.unique(np.concatenate(edges))


# ----------------------------------------------------------------------------- encoders


def _to_float(raw) -> float | None:
    """Online twin of the batch numeric cast: None/NaN -> None, numbers and numeric strings -> float."""
    if raw is None:
        return None
    if isinstance(raw, bool):
        return float(raw)
    if isinstance(raw, (int, float)):
        try:
            value = float(raw)
        except OverflowError:  # an int past the float range: infinite, which the encoders reject
            value = math.inf if raw > 0 else -math.inf
    else:
        try:
            value = float(str(raw).strip())
        except ValueError:
            raise InputError(f"value {raw!r} is not a number") from None
    return None if math.isnan(value) else value


def _as_float(series: pl.Series, name: str) -> pl.Series:
    """The column as Float64 (nulls kept; free when it already is); non-numeric text raises InputError."""
    cast = series.cast(pl.Float64, strict=False)
    bad = None if series.dtype.is_numeric() else cast.is_null() & series.is_not_null()  # numbers always cast
    if bad is not None and bad.any():
        examples = series.filter(bad).unique().head(3).to_list()
        raise InputError(
            f"feature {name!r} is continuous but has non-numeric values such as {examples}; "
            "clean the column, add the marker to data.null_values, or declare the feature categorical"
        )
    return cast


def _infinite_values(name: str) -> InputError:
    return InputError(f"feature {name!r} has infinite values; replace them (or mark them missing) before training")


def _numeric(series: pl.Series, name: str) -> np.ndarray:
    """float64 [n] with NaN for missing; non-numeric text or infinities raise InputError."""
    arr = _as_float(series, name).to_numpy()  # nulls -> NaN
    if np.isinf(arr).any():
        raise _infinite_values(name)
    return arr


def _offset_into(encoder, series: pl.Series, out: np.ndarray) -> np.ndarray:
    """`encode_into` by way of `encode_series`: local ids + offset copied into `out`."""
    local, values = encoder.encode_series(series)
    np.add(local, encoder.offset, out=out, casting="unsafe")
    return values


@dataclass
class ContinuousEncoder:
    """Percentile bins [e_i, e_{i+1}); below/above the range -> first/last bin; missing -> own id.

    Local ids: bin b in [0, n_bins) and `n_bins` for missing (size n_bins + 1), or with
    `buckets` set, stable_bucket(name, bin) (size buckets). Value 1.0. With `raw` set, one id
    carrying the raw number (scaled later by the sparse layer's running max |v|), missing -> id 1.
    """

    name: str
    edges: list[float]
    buckets: int | None = None
    raw: bool = False
    method: str = QUANTILE_METHOD
    offset: int = 0

    kind = "continuous"
    # the kinds of raw value (native.SEEN_*) `encode_numbers` takes as read by records_to_numbers
    number_kinds = native.SEEN_INT | native.SEEN_FLOAT | native.SEEN_NONE | native.SEEN_BOOL | native.SEEN_BIG

    @classmethod
    def fit(cls, feature: ContinuousFeature, series: pl.Series, weights: np.ndarray) -> "ContinuousEncoder":
        fitter = ContinuousFitter(feature)
        fitter.update(series, weights)
        return fitter.finish()

    @property
    def n_bins(self) -> int:
        return max(len(self.edges) - 1, 1)

    @property
    def one_hot(self) -> bool:
        """Every value this encoder emits is 1.0 (binned; not raw)."""
        return not self.raw

    @property
    def size(self) -> int:
        if self.raw:
            return 2
        return self.buckets if self.buckets else self.n_bins + 1

    @cached_property
    def _inner_edges(self) -> np.ndarray:
        """The edges between bins, float64 [n_bins - 1] (the outer two only bound the fitted range)."""
        return np.asarray(self.edges[1:-1], dtype=np.float64)

    @cached_property
    def _bin_ids(self) -> np.ndarray:
        """Local id of each bin and of missing (last entry): int64 [n_bins + 1]."""
        if self.buckets:
            labels = [str(b) for b in range(self.n_bins)] + ["missing"]
            return np.array([stable_bucket(self.name, s, buckets=self.buckets) for s in labels], dtype=np.int64)
        return np.arange(self.n_bins + 1, dtype=np.int64)

    def encode_series(self, series: pl.Series) -> tuple[np.ndarray, np.ndarray]:
        if self.raw:
            return self._encode_numbers(_numeric(series, self.name))
        ids = np.empty(len(series), dtype=np.int64)
        return ids, self._bin_into(series, ids, 0)

    def encode_into(self, series: pl.Series, out: np.ndarray) -> np.ndarray:
        """Global ids (local + offset) into `out` int64 or int32 [n]; returns the values float32 [n]."""
        if self.raw:
            return _offset_into(self, series, out)
        return self._bin_into(series, out, self.offset)

    def _bin_into(self, series: pl.Series, out: np.ndarray, offset: int) -> np.ndarray:
        """Bin ids + offset into `out`, the column read in place (no NaN-filled copy); values float32 [n]."""
        if bin_column(_as_float(series, self.name), self._inner_edges, self._bin_ids if self.buckets else None,
                      self.n_bins, offset, out):
            raise _infinite_values(self.name)
        return unit_values(len(series))

    def _encode_numbers(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Finite-or-NaN numbers float64 [n] -> local ids int64 [n], values float32 [n]."""
        if self.raw:
            missing = np.isnan(x)
            return missing.astype(np.int64), np.where(missing, 1.0, x).astype(np.float32)
        ids = np.empty(len(x), dtype=np.int64)
        bin_ids(x, self._inner_edges, self._bin_ids if self.buckets else None, self.n_bins, 0, ids)
        return ids, unit_values(len(x))

    def encode_value(self, raw) -> tuple[int, float]:
        x = _to_float(raw)
        if x is not None and math.isinf(x):
            raise InputError(f"feature {self.name!r} is infinite; send a finite number or null")
        if self.raw:
            # values are stored as float32 in the batch path: round the same way
            return (1, 1.0) if x is None else (0, float(np.float32(x)))
        b = self.n_bins if x is None else bisect.bisect_right(self.edges, x, 1, max(len(self.edges) - 1, 1)) - 1
        if self.buckets:
            return stable_bucket(self.name, "missing" if x is None else str(b), buckets=self.buckets), 1.0
        return b, 1.0

    def encode_values(self, raws: list) -> tuple[np.ndarray, np.ndarray]:
        """Vectorized `encode_value` over a list of raw values: ids int64 [n], values float64 [n]."""
        try:
            x = np.array(raws, dtype=np.float64)  # None -> NaN
        except (TypeError, ValueError, OverflowError):
            x = np.array([np.nan if (v := _to_float(r)) is None else v for r in raws], dtype=np.float64)
        return self.encode_numbers(x)

    def encode_numbers(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`encode_values` of values already read as numbers, float64 [n] (NaN missing); equal to it
        for values of `number_kinds` (ints, floats, None, bools)."""
        if np.isinf(x).any():
            raise InputError(f"feature {self.name!r} is infinite; send a finite number or null")
        ids, values = self._encode_numbers(x)
        return ids, values.astype(np.float64)  # float32-rounded like the batch path

    def to_json(self) -> dict:
        return {"kind": self.kind, "name": self.name, "edges": self.edges, "buckets": self.buckets,
                "raw": self.raw, "method": self.method, "offset": self.offset}


class ContinuousFitter:
    """Streaming, exact fit of a ContinuousEncoder: `update` per chunk, then `finish`.

    Each chunk adds its weight total per distinct value; the edges are computed once on the merged
    (value, total weight) table, which gives the same quantiles as sorting every row.
    """

    def __init__(self, feature: ContinuousFeature):
        self.feature = feature
        self.totals = Totals()

    def update(self, series: pl.Series, weights: np.ndarray, rows: np.ndarray | None = None) -> None:
        """One chunk's column and weights [n]; only the rows of the bool mask `rows` [n] count."""
        column = _as_float(series, self.feature.name)  # every row is checked
        if column.is_infinite().any():
            raise _infinite_values(self.feature.name)
        if isinstance(self.feature.discretizer, RawValue):
            return
        self.totals.add_weighted(column, weights, rows)

    def finish(self) -> ContinuousEncoder:
        disc, name = self.feature.discretizer, self.feature.name
        if isinstance(disc, RawValue):
            return ContinuousEncoder(name, [], raw=True, method="raw value")
        table = self.totals.result()
        if table.height:
            table = table.sort("key")
            edges = percentile_edges(table["key"].to_numpy(), table["total"].to_numpy(), disc.bins)
        else:
            edges = np.zeros(1)
        buckets = disc.buckets if isinstance(disc, HashingDiscretizer) else None
        return ContinuousEncoder(name, [float(e) for e in edges], buckets)


def _category_text(series: pl.Series) -> pl.Series:
    return series.cast(pl.String)


def _category_value(raw) -> str | None:
    """Online twin of `_category_text`: None/NaN -> None; everything else its text."""
    if raw is None or (isinstance(raw, float) and math.isnan(raw)):
        return None
    if isinstance(raw, bool):
        return "true" if raw else "false"
    return raw.strip() if isinstance(raw, str) else str(raw)


@dataclass
class CategoricalEncoder:
    """Vocabulary (values seen >= min_count times, most frequent first) or stable hash buckets.

    Vocabulary local ids: 0..V-1 the values, V out-of-vocabulary, V+1 missing (size V + 2).
    Hashing: stable_bucket(name, value) in [0, buckets), missing -> buckets (size buckets + 1).
    Unseen values never fail: they take the OOV id (or their bucket).
    """

    name: str
    vocabulary: list[str] = field(default_factory=list)
    buckets: int | None = None
    min_count: int = 1
    offset: int = 0

    kind = "categorical"
    one_hot = True  # every value it emits is 1.0

    def __post_init__(self):
        self._index: dict[str, int] | None = None  # built on the first online lookup
        self._text_lookup: tuple[pl.Series, pl.Series] | None = None

    @classmethod
    def fit(cls, feature: CategoricalFeature, series: pl.Series, weights: np.ndarray) -> "CategoricalEncoder":
        fitter = CategoricalFitter(feature)
        fitter.update(series, weights)
        return fitter.finish()

    @property
    def size(self) -> int:
        return self.buckets + 1 if self.buckets else len(self.vocabulary) + 2

    def encode_series(self, series: pl.Series) -> tuple[np.ndarray, np.ndarray]:
        ids = np.empty(len(series), dtype=np.int64)
        return ids, self._ids_into(series, ids, 0)

    def encode_into(self, series: pl.Series, out: np.ndarray) -> np.ndarray:
        """Global ids (local + offset) into `out` int64 or int32 [n]; returns the values float32 [n]."""
        return self._ids_into(series, out, self.offset)

    def _ids_into(self, series: pl.Series, out: np.ndarray, offset: int) -> np.ndarray:
        """Local ids + offset into `out` int64 or int32 [n]; values float32 [n]. Integer columns of a
        vocabulary: one hash lookup of its integer entries, the column read in place; text (or
        buckets): a polars replace."""
        if self.buckets is None and fits_int64(series.dtype):
            self._integer_lookup.lookup_column(series.cast(pl.Int64), len(self.vocabulary) + 1, offset, out)
        else:
            np.add(self._text_ids(series), offset, out=out, casting="unsafe")
        return unit_values(len(series))

    def _text_ids(self, series: pl.Series) -> np.ndarray:
        """Local ids int64 [n] of a column read as text."""
        text = _category_text(series)
        if self.buckets:
            uniques = text.drop_nulls().unique()
            buckets = [stable_bucket(self.name, u, buckets=self.buckets) for u in uniques.to_list()]
            old, new, missing, oov = uniques, pl.Series(buckets, dtype=pl.Int64), self.buckets, self.buckets
        else:
            if self._text_lookup is None:
                self._text_lookup = (pl.Series(self.vocabulary, dtype=pl.String),
                                     pl.Series(np.arange(len(self.vocabulary), dtype=np.int64)))
            (old, new), missing, oov = self._text_lookup, len(self.vocabulary) + 1, len(self.vocabulary)
        ids = text.replace_strict(old, new, default=oov, return_dtype=pl.Int64)
        return np.where(text.is_null().to_numpy(), missing, ids.to_numpy()).astype(np.int64)

    def _integer_keys(self) -> tuple[np.ndarray, np.ndarray]:
        """The vocabulary entries that are integers in canonical text ("7", not "07"): values and local ids."""
        text = pl.Series(self.vocabulary, dtype=pl.String)
        as_int = text.cast(pl.Int64, strict=False)
        canonical = (as_int.cast(pl.String) == text).fill_null(False).to_numpy()
        return as_int.to_numpy()[canonical].astype(np.int64), np.flatnonzero(canonical)

    def encode_value(self, raw) -> tuple[int, float]:
        value = _category_value(raw)
        if self.buckets:
            return (self.buckets if value is None else stable_bucket(self.name, value, buckets=self.buckets)), 1.0
        if value is None:
            return len(self.vocabulary) + 1, 1.0
        if self._index is None:
            self._index = {v: i for i, v in enumerate(self.vocabulary)}
        return self._index.get(value, len(self.vocabulary)), 1.0

    def encode_values(self, raws: list) -> tuple[np.ndarray, np.ndarray]:
        """Vectorized `encode_value` over a list of raw values: ids int64 [n], values float64 [n]."""
        if self.buckets is None and set(map(type, raws)) <= {int, type(None)}:
            x = np.array(raws, dtype=np.float64)  # None -> NaN, in one C pass
            if np.abs(np.nan_to_num(x)).max(initial=0.0) < 2.0 ** 53:  # every int exact in float64
                return self.encode_numbers(x)
        return np.array([self.encode_value(r)[0] for r in raws], dtype=np.int64), np.ones(len(raws))

    @property
    def number_kinds(self) -> int:
        """The kinds of raw value `encode_numbers` takes: ints within ±2^53 and None (vocabularies;
        hashed buckets hash the text, so they take the raw values)."""
        return 0 if self.buckets else native.SEEN_INT | native.SEEN_NONE

    def encode_numbers(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`encode_values` of ints read as numbers, float64 [n] (NaN missing)."""
        missing = np.isnan(x)
        return self._lookup_integers(np.where(missing, 0.0, x).astype(np.int64), missing), np.ones(len(x))

    def _lookup_integers(self, x: np.ndarray, missing: np.ndarray | None) -> np.ndarray:
        """Integers int64 [n] (and which are missing, bool [n] or None) -> local ids int64 [n]: one
        vectorized lookup of the vocabulary's integer entries (batch and online)."""
        return self._integer_lookup(x, missing, missing_id=len(self.vocabulary) + 1)

    @cached_property
    def _integer_lookup(self) -> IntegerLookup:
        return IntegerLookup(*self._integer_keys(), default=len(self.vocabulary))

    def to_json(self) -> dict:
        return {"kind": self.kind, "name": self.name, "vocabulary": self.vocabulary, "buckets": self.buckets,
                "min_count": self.min_count, "offset": self.offset}


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
        self.totals.count(series if fits_int64(series.dtype) else _category_text(series), rows)

    def finish(self) -> CategoricalEncoder:
        feature = self.feature
        if feature.hash_buckets:
            return CategoricalEncoder(feature.name, buckets=feature.hash_buckets)
        table = self.totals.result()
        if table.height == 0:
            return CategoricalEncoder(feature.name, [], min_count=feature.min_count)
        kept = (table.filter(pl.col("total") >= feature.min_count)
                .select(pl.col("key").cast(pl.String), pl.col("total").cast(pl.Int64))
                .sort(["total", "key"], descending=[True, False]))
        return CategoricalEncoder(feature.name, kept["key"].to_list(), min_count=feature.min_count)


_TRUE = {"1", "true", "t", "yes", "y", "1.0"}
_FALSE = {"0", "false", "f", "no", "n", "0.0"}


@dataclass
class BinaryEncoder:
    """Local ids: 0 false, 1 true, 2 missing; value 1.0. Its fitter only checks the values."""

    name: str
    offset: int = 0

    kind = "binary"
    number_kinds = 0  # bools, numbers and text alike go through `encode_value`
    size = 3
    one_hot = True  # every value it emits is 1.0

    @classmethod
    def fit(cls, feature: BinaryFeature, series: pl.Series, weights: np.ndarray) -> "BinaryEncoder":
        encoder = cls(feature.name)
        encoder.encode_series(series)  # validates the values
        return encoder

    @classmethod
    def fitter(cls, feature: BinaryFeature) -> "BinaryEncoder":
        return _BinaryFitter(cls(feature.name))

    def _bad(self, examples) -> InputError:
        return InputError(
            f"feature {self.name!r} is binary but has values such as {examples}; "
            "use 0/1, true/false or yes/no, or declare it categorical"
        )

    def encode_series(self, series: pl.Series) -> tuple[np.ndarray, np.ndarray]:
        text = _category_text(series).str.to_lowercase()
        is_true, is_false = text.is_in(list(_TRUE)), text.is_in(list(_FALSE))
        bad = text.is_not_null() & ~is_true & ~is_false
        if bad.any():
            raise self._bad(text.filter(bad).unique().head(3).to_list())
        ids = np.where(text.is_null().to_numpy(), 2, np.where(is_true.to_numpy(), 1, 0))
        return ids.astype(np.int64), unit_values(len(series))

    def encode_into(self, series: pl.Series, out: np.ndarray) -> np.ndarray:
        """Global ids (local + offset) into `out` int64 or int32 [n]; returns the values float32 [n]."""
        return _offset_into(self, series, out)

    def encode_value(self, raw) -> tuple[int, float]:
        value = _category_value(raw)
        if value is None:
            return 2, 1.0
        value = value.lower()
        if value in _TRUE:
            return 1, 1.0
        if value in _FALSE:
            return 0, 1.0
        raise self._bad([value])

    def encode_values(self, raws: list) -> tuple[np.ndarray, np.ndarray]:
        return np.array([self.encode_value(r)[0] for r in raws], dtype=np.int64), np.ones(len(raws))

    def to_json(self) -> dict:
        return {"kind": self.kind, "name": self.name, "offset": self.offset}


@dataclass
class _BinaryFitter:
    encoder: BinaryEncoder

    def update(self, series: pl.Series, weights: np.ndarray, rows: np.ndarray | None = None) -> None:
        self.encoder.encode_series(series)  # nothing to fit: every row is checked

    def finish(self) -> BinaryEncoder:
        return self.encoder


def _check_encoder_fields(item: dict) -> None:
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


Encoder = ContinuousEncoder | CategoricalEncoder | BinaryEncoder
_ENCODERS = {"continuous": ContinuousEncoder, "categorical": CategoricalEncoder, "binary": BinaryEncoder}
_FITTERS = {ContinuousFeature: ContinuousFitter, CategoricalFeature: CategoricalFitter, BinaryFeature: BinaryEncoder.fitter}


def each_feature(work: Callable[[T], None], items: Iterable[T]) -> None:
    """work(item) for every item, on one thread per core: each feature's numpy and polars work
    releases the GIL, so features encode (or fit) side by side (about 1.6x on 2 cores). Items must
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
    return [_FITTERS[type(f)](f) for f in features]


def finish_fitters(running: list) -> list:
    """Every fitter's encoder, side by side (sorting a vocabulary or a histogram releases the GIL)."""
    encoders = [None] * len(running)

    def finish(j: int) -> None:
        encoders[j] = running[j].finish()

    each_feature(finish, range(len(running)))
    return encoders


def update_fitters(features, running: list, frame: pl.DataFrame, weights: np.ndarray,
                   rows: np.ndarray | None = None) -> None:
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
    def fit(cls, features, frame: pl.DataFrame, weights: np.ndarray) -> "FeatureMap":
        """Fit on one in-memory frame (the streaming path calls the fitters chunk by chunk)."""
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
        return np.ascontiguousarray(ids.T), np.ascontiguousarray(values.T)

    def encode_columns(self, frame: pl.DataFrame, buffers: tuple[np.ndarray, np.ndarray | None] | None = None
                       ) -> tuple[np.ndarray, np.ndarray | None]:
        """Feature-major: global ids int64 [F, n] and values float32 [F, n] (each feature's row
        contiguous), written into the first n columns of `buffers` (ids int64 or int32 when every id
        fits, values float32 or None to skip them (one-hot); [F, >= n]) when given, so a chunked
        caller reuses memory it has already touched."""
        if buffers is None or buffers[0].shape[1] < frame.height:
            buffers = (np.empty((len(self.encoders), frame.height), dtype=np.int64),
                       np.empty((len(self.encoders), frame.height), dtype=np.float32))
        ids = buffers[0][:, :frame.height]
        values = None if buffers[1] is None else buffers[1][:, :frame.height]
        missing = [name for name in self.names if name not in frame.columns]
        if missing:
            raise InputError(f"column {missing[0]!r} is missing from the data; the model needs: {', '.join(self.names)}")

        def encode(j: int) -> None:
            encoder = self.encoders[j]
            encoded = encoder.encode_into(frame[encoder.name], ids[j])
            if values is not None:
                values[j] = encoded

        each_feature(encode, range(len(self.encoders)))
        return ids, values

    def encode_record(self, record: dict) -> tuple[list[int], list[float]]:
        """The online path: one dict of raw values -> global ids [F] and values [F] (plain Python)."""
        ids, values = [], []
        for encoder in self.encoders:
            try:
                local, value = encoder.encode_value(record.get(encoder.name))
            except InputError as exc:
                raise InputError(f"feature {encoder.name!r}: {exc}") from None
            ids.append(local + encoder.offset)
            values.append(value)
        return ids, values

    def encode_records(self, records: list[dict]) -> tuple[np.ndarray, np.ndarray]:
        """The online path for a request of many candidates: global ids int64 [n, F], values float64 [n, F].

        The request's values are read as numbers in one native pass where it is built (records.c);
        a feature whose column holds a kind of value its encoder does not take as a number (text, say)
        is encoded from its raw values instead, as every feature is without the kernel."""
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
    def from_json(cls, obj: dict) -> "FeatureMap":
        try:
            encoders = []
            for item in obj["encoders"]:
                item = dict(item)
                kind = item.pop("kind")
                item.pop("offset", None)
                _check_encoder_fields(item)
                encoders.append(_ENCODERS[kind](**item))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ArtifactError(f"feature map is corrupted ({type(exc).__name__}: {exc}); refit with `snn fit --force`") from None
        fmap = cls(encoders)
        if fmap.num_ids != obj.get("num_ids"):
            raise ArtifactError("feature map is corrupted (id space size mismatch); refit with `snn fit --force`")
        return fmap
