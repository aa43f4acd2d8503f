"""Continuous features: percentile (or hashed percentile) bins, or one id carrying a number.

bins [e_i, e_{i+1}); below/above the fitted range -> the first/last bin; missing -> its own id
local ids: bin b in [0, n_bins) and n_bins for missing (size n_bins + 1); with `buckets`,
stable_bucket(name, bin) (size buckets), so ids survive refits; value 1.0
numbers: id 0 carrying t(x), missing -> id 1 with value 1.0 (size 2), where t is
    none    x itself (scaled later by the sparse layer's running max |v|)
    log1p   sign(x)·log(1 + |x|)
    normal  z(x) = the piecewise-linear map through (q_k, mean Φ⁻¹(p_k) over equal q_k), q_k the
            weighted quantiles of train at p_k = (k + ½)/K, k < K; constant beyond q_0 and q_K-1:
            a value's percentile rank sent to its Gaussian quantile (statistics.NormalDist)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from statistics import NormalDist

import numpy as np
import polars as pl

from .. import native
from ..errors import InputError
from ..native import Totals, bin_column, bin_ids
from .quantiles import QUANTILE_METHOD, percentile_edges, weighted_quantiles
from .spec import ContinuousFeature, HashingDiscretizer, Log1pTransform, NormalTransform, RawValue
from .values import as_float, infinite_values, numbers_of, stable_bucket, unit_values


@dataclass
class ContinuousEncoder:
    name: str
    edges: list[float]
    buckets: int | None = None
    raw: bool = False
    method: str = QUANTILE_METHOD
    transform: str | None = None  # with raw: "log1p" or "normal" (edges: the knots q_k)
    scores: list[float] | None = None  # normal: the Gaussian score at each knot
    offset: int = 0

    kind = "continuous"
    # the kinds of raw value (native.SEEN_*) `encode_numbers` takes as native.records_to_numbers read them
    number_kinds = native.SEEN_INT | native.SEEN_FLOAT | native.SEEN_NONE | native.SEEN_BOOL | native.SEEN_BIG

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
    def _bin_ids(self) -> np.ndarray | None:
        """Local id of each bin and of missing (last entry), int64 [n_bins + 1]; None: the bin itself."""
        if not self.buckets:
            return None
        labels = [str(b) for b in range(self.n_bins)] + ["missing"]
        return np.array([stable_bucket(self.name, s, buckets=self.buckets) for s in labels], dtype=np.int64)

    def encode_into(self, series: pl.Series, out: np.ndarray) -> np.ndarray:
        """The batch path: global ids (local + offset) into `out` int64 or int32 [n], the column read in
        place (no NaN-filled copy); returns the values float32 [n]."""
        column = as_float(series, self.name)
        if self.raw:
            x = column.to_numpy()  # nulls -> NaN
            if np.isinf(x).any():
                raise infinite_values(self.name)
            missing = np.isnan(x)
            np.add(missing, self.offset, out=out, casting="unsafe")
            return np.where(missing, 1.0, self.transformed(x)).astype(np.float32)
        if bin_column(column, self._inner_edges, self._bin_ids, self.n_bins, self.offset, out):
            raise infinite_values(self.name)
        return unit_values(len(series))

    def encode_values(self, raws: list) -> tuple[np.ndarray, np.ndarray]:
        """The online path over a request's raw values: local ids int64 [n], values float64 [n]."""
        return self.encode_numbers(numbers_of(raws))

    def encode_numbers(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`encode_values` of values already read as numbers, float64 [n] (NaN missing): ids int64 [n]
        and values float64 [n], rounded to float32 like the batch path's."""
        if np.isinf(x).any():
            raise InputError(f"feature {self.name!r} is infinite; send a finite number or null")
        if self.raw:
            missing = np.isnan(x)
            values = np.where(missing, 1.0, self.transformed(x))
            return missing.astype(np.int64), values.astype(np.float32).astype(np.float64)
        ids = np.empty(len(x), dtype=np.int64)
        bin_ids(x, self._inner_edges, self._bin_ids, self.n_bins, 0, ids)
        return ids, np.ones(len(x))

    def transformed(self, x: np.ndarray) -> np.ndarray:
        """t(x) of the numbers float64 [n] (see the module docstring; NaN stays NaN)."""
        if self.transform == "log1p":
            return np.sign(x) * np.log1p(np.abs(x))
        if self.transform == "normal":
            assert self.scores is not None
            return np.interp(x, self.edges, self.scores)
        return x

    def to_json(self) -> dict:
        return {
            "kind": self.kind,
            "name": self.name,
            "edges": self.edges,
            "buckets": self.buckets,
            "raw": self.raw,
            "method": self.method,
            "transform": self.transform,
            "scores": self.scores,
            "offset": self.offset,
        }


NORMAL_METHOD = "to normal: Φ⁻¹ of the weighted percentile rank, interpolated between fitted quantiles"


def normal_scores(table, quantiles: int) -> tuple[list[float], list[float]]:
    """The to-normal map's knots q_k (ascending, distinct) and scores from a (key, total) weight
    table; no train values: one knot at 0 with score 0."""
    if table.height == 0:
        return [0.0], [0.0]
    levels = (np.arange(quantiles) + 0.5) / quantiles
    knots = weighted_quantiles(table["key"].to_numpy(), table["total"].to_numpy(), levels)
    gaussian = np.array([NormalDist().inv_cdf(p) for p in levels])
    unique, inverse = np.unique(knots, return_inverse=True)
    scores = np.bincount(inverse, weights=gaussian) / np.bincount(inverse)
    return [float(k) for k in unique], [float(s) for s in scores]


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
        column = as_float(series, self.feature.name)  # every row is checked
        if column.is_infinite().any():
            raise infinite_values(self.feature.name)
        if isinstance(self.feature.discretizer, (RawValue, Log1pTransform)):
            return
        self.totals.add_weighted(column, weights, rows)

    def finish(self) -> ContinuousEncoder:
        disc, name = self.feature.discretizer, self.feature.name
        if isinstance(disc, RawValue):
            return ContinuousEncoder(name, [], raw=True, method="raw value")
        if isinstance(disc, Log1pTransform):
            return ContinuousEncoder(name, [], raw=True, method="sign(x)·log(1 + |x|)", transform="log1p")
        if isinstance(disc, NormalTransform):
            knots, scores = normal_scores(self.totals.result(), disc.quantiles)
            return ContinuousEncoder(name, knots, raw=True, method=NORMAL_METHOD, transform="normal", scores=scores)
        table = self.totals.result()
        if table.height:
            table = table.sort("key")
            edges = percentile_edges(table["key"].to_numpy(), table["total"].to_numpy(), disc.bins)
        else:
            edges = np.zeros(1)
        buckets = disc.buckets if isinstance(disc, HashingDiscretizer) else None
        return ContinuousEncoder(name, [float(e) for e in edges], buckets)
