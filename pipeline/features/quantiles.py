"""Weighted equal-frequency bin edges (the percentile discretizer's fit).

Cross-checked against sklearn's KBinsDiscretizer(strategy="quantile", quantile_method=
"averaged_inverted_cdf") in tests/features.
"""

from __future__ import annotations

import numpy as np

QUANTILE_METHOD = (
    "exact: weighted averaged-inverted-CDF quantiles over per-value weight totals accumulated chunk by chunk "
    "(memory grows with distinct values, not rows); values holding >= 1/bins of the weight get their own bin"
)


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
    capital-gain) gets a bin [v, nextafter(v)) holding exactly v; the remaining weight is split
    equal-frequency over the remaining bins. Without heavy values these are plain quantile edges.
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
