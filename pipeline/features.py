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
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from .errors import ArtifactError, InputError
from .spec import (
    BinaryFeature,
    CategoricalFeature,
    ContinuousFeature,
    HashingDiscretizer,
    RawValue,
)

QUANTILE_METHOD = "weighted averaged inverted CDF; values holding >= 1/bins of the weight get their own bin"


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
        value = float(raw)
    else:
        try:
            value = float(str(raw).strip())
        except ValueError:
            raise InputError(f"value {raw!r} is not a number") from None
    return None if math.isnan(value) else value


def _numeric(series: pl.Series, name: str) -> np.ndarray:
    """float64 [n] with NaN for missing; non-numeric text or infinities raise InputError."""
    cast = series.cast(pl.Float64, strict=False)
    bad = cast.is_null() & series.is_not_null()
    if bad.any():
        examples = series.filter(bad).unique().head(3).to_list()
        raise InputError(
            f"feature {name!r} is continuous but has non-numeric values such as {examples}; "
            "clean the column, add the marker to data.null_values, or declare the feature categorical"
        )
    arr = cast.fill_null(float("nan")).to_numpy()
    if np.isinf(arr).any():
        raise InputError(f"feature {name!r} has infinite values; replace them (or mark them missing) before training")
    return arr


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

    @classmethod
    def fit(cls, feature: ContinuousFeature, series: pl.Series, weights: np.ndarray) -> "ContinuousEncoder":
        values = _numeric(series, feature.name)
        disc = feature.discretizer
        if isinstance(disc, RawValue):
            return cls(feature.name, [], raw=True, method="raw value")
        present = ~np.isnan(values)
        edges = percentile_edges(values[present], weights[present], disc.bins)
        buckets = disc.buckets if isinstance(disc, HashingDiscretizer) else None
        return cls(feature.name, [float(e) for e in edges], buckets)

    @property
    def n_bins(self) -> int:
        return max(len(self.edges) - 1, 1)

    @property
    def size(self) -> int:
        if self.raw:
            return 2
        return self.buckets if self.buckets else self.n_bins + 1

    def _bin_ids(self) -> np.ndarray:
        """Local id of each bin and of missing (last entry): int64 [n_bins + 1]."""
        if self.buckets:
            labels = [str(b) for b in range(self.n_bins)] + ["missing"]
            return np.array([stable_bucket(self.name, s, buckets=self.buckets) for s in labels], dtype=np.int64)
        return np.arange(self.n_bins + 1, dtype=np.int64)

    def encode_series(self, series: pl.Series) -> tuple[np.ndarray, np.ndarray]:
        x = _numeric(series, self.name)
        missing = np.isnan(x)
        if self.raw:
            return missing.astype(np.int64), np.where(missing, 1.0, x).astype(np.float32)
        bins = np.searchsorted(np.asarray(self.edges[1:-1]), x, side="right")
        bins[missing] = self.n_bins
        return self._bin_ids()[bins], np.ones(len(x), dtype=np.float32)

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

    def to_json(self) -> dict:
        return {"kind": self.kind, "name": self.name, "edges": self.edges, "buckets": self.buckets,
                "raw": self.raw, "method": self.method, "offset": self.offset}


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

    def __post_init__(self):
        self._index = {v: i for i, v in enumerate(self.vocabulary)}

    @classmethod
    def fit(cls, feature: CategoricalFeature, series: pl.Series, weights: np.ndarray) -> "CategoricalEncoder":
        if feature.hash_buckets:
            return cls(feature.name, buckets=feature.hash_buckets)
        counts = _category_text(series).drop_nulls().value_counts(name="count")
        kept = counts.filter(pl.col("count") >= feature.min_count).sort(
            ["count", series.name], descending=[True, False]
        )
        return cls(feature.name, kept[series.name].to_list(), min_count=feature.min_count)

    @property
    def size(self) -> int:
        return self.buckets + 1 if self.buckets else len(self.vocabulary) + 2

    def encode_series(self, series: pl.Series) -> tuple[np.ndarray, np.ndarray]:
        text = _category_text(series)
        if self.buckets:
            uniques = text.drop_nulls().unique().to_list()
            mapping = {u: stable_bucket(self.name, u, buckets=self.buckets) for u in uniques}
            missing, oov = self.buckets, self.buckets
        else:
            mapping, missing, oov = self._index, len(self.vocabulary) + 1, len(self.vocabulary)
        ids = text.replace_strict(mapping, default=oov, return_dtype=pl.Int64).fill_null(missing)
        # replace_strict maps null to the default: restore missing explicitly
        ids = pl.select(pl.when(text.is_null()).then(missing).otherwise(ids)).to_series()
        return ids.to_numpy().astype(np.int64), np.ones(len(series), dtype=np.float32)

    def encode_value(self, raw) -> tuple[int, float]:
        value = _category_value(raw)
        if self.buckets:
            return (self.buckets if value is None else stable_bucket(self.name, value, buckets=self.buckets)), 1.0
        if value is None:
            return len(self.vocabulary) + 1, 1.0
        return self._index.get(value, len(self.vocabulary)), 1.0

    def to_json(self) -> dict:
        return {"kind": self.kind, "name": self.name, "vocabulary": self.vocabulary, "buckets": self.buckets,
                "min_count": self.min_count, "offset": self.offset}


_TRUE = {"1", "true", "t", "yes", "y", "1.0"}
_FALSE = {"0", "false", "f", "no", "n", "0.0"}


@dataclass
class BinaryEncoder:
    """Local ids: 0 false, 1 true, 2 missing; value 1.0."""

    name: str
    offset: int = 0

    kind = "binary"
    size = 3

    @classmethod
    def fit(cls, feature: BinaryFeature, series: pl.Series, weights: np.ndarray) -> "BinaryEncoder":
        encoder = cls(feature.name)
        encoder.encode_series(series)  # validates the values
        return encoder

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
        return ids.astype(np.int64), np.ones(len(series), dtype=np.float32)

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

    def to_json(self) -> dict:
        return {"kind": self.kind, "name": self.name, "offset": self.offset}


Encoder = ContinuousEncoder | CategoricalEncoder | BinaryEncoder
_ENCODERS = {"continuous": ContinuousEncoder, "categorical": CategoricalEncoder, "binary": BinaryEncoder}
_FOR_FEATURE = {ContinuousFeature: ContinuousEncoder, CategoricalFeature: CategoricalEncoder, BinaryFeature: BinaryEncoder}


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
        return cls([_FOR_FEATURE[type(f)].fit(f, frame[f.name], weights) for f in features])

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.encoders]

    def encode_frame(self, frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Global ids int64 [n, F] and values float32 [n, F], one column per feature."""
        ids = np.empty((frame.height, len(self.encoders)), dtype=np.int64)
        values = np.empty((frame.height, len(self.encoders)), dtype=np.float32)
        for j, encoder in enumerate(self.encoders):
            if encoder.name not in frame.columns:
                raise InputError(f"column {encoder.name!r} is missing from the data; the model needs: {', '.join(self.names)}")
            local, vals = encoder.encode_series(frame[encoder.name])
            ids[:, j] = local + encoder.offset
            values[:, j] = vals
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
                encoders.append(_ENCODERS[kind](**item))
        except (KeyError, TypeError) as exc:
            raise ArtifactError(f"feature map is corrupted ({exc}); refit with `snn fit --force`") from None
        fmap = cls(encoders)
        if fmap.num_ids != obj.get("num_ids"):
            raise ArtifactError("feature map is corrupted (id space size mismatch); refit with `snn fit --force`")
        return fmap
