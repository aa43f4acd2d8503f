"""Fitting on many ranks: each rank fits its shard of the train rows, then the ranks' exact totals
(per-value weight totals of the discretizers, per-value counts of the vocabularies) are merged, so
every rank finishes the feature map one process would fit on all the rows.

    merged total(v) = Σ_ranks total_r(v)     (exact for counts and integer weights; with fractional
                                              weights, equal up to the rounding of each sum)

Tree-leaf features fit boosted trees on a sample of the rows drawn in order: they are not merged,
and a spec with one is fitted by rank 0 alone (`mergeable`)."""

from __future__ import annotations

import polars as pl

from ..native.tables import Totals
from .binary import BinaryFitter
from .categorical import CategoricalFitter
from .continuous import ContinuousFitter
from .id_list import IdListFitter
from .position import PositionFitter


def _holders(fitter) -> list:
    """The objects of `fitter` that hold a `totals` (Totals) the ranks merge; raises TypeError for a
    fitter without exact totals."""
    if isinstance(fitter, (ContinuousFitter, CategoricalFitter)):
        return [fitter]
    if isinstance(fitter, IdListFitter):
        return [fitter.counts]
    if isinstance(fitter, PositionFitter):
        return [fitter.positions]
    if isinstance(fitter, BinaryFitter):
        return []
    raise TypeError(f"{type(fitter).__name__} has no totals to merge")


def mergeable(running: list) -> bool:
    """Whether every fitter's state is exact totals (no tree leaves)."""
    try:
        for fitter in running:
            _holders(fitter)
    except TypeError:
        return False
    return True


def partial_totals(running: list) -> list[list[pl.DataFrame]]:
    """This rank's totals: per fitter, each holder's (key, total) frame."""
    return [[holder.totals.result() for holder in _holders(fitter)] for fitter in running]


def merge_totals(running: list, gathered: list[list[list[pl.DataFrame]]]) -> None:
    """Replace each fitter's totals by the sum over ranks of `gathered` (one `partial_totals` per
    rank, in rank order), key by key."""
    for f, fitter in enumerate(running):
        for h, holder in enumerate(_holders(fitter)):
            holder.totals = Totals.summed([ranks[f][h] for ranks in gathered])
