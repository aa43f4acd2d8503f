"""A figure of the bench (snn's value beside a competitor's), interleaved timing, and the table."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from ..data.encoded import CSRBatch, EncodedSplit

BATCH = 4096
FOUR_DECIMALS = {"auc", "logloss", "ratio", "ece"}  # units shown to 4 decimals
T = TypeVar("T")


@dataclass
class Figure:
    """One row of the table: snn's value, the competitor's, and ratio = how many times better snn is."""

    id: str
    what: str
    unit: str
    snn: float | None
    competitor: str | None = None
    competitor_value: float | None = None
    higher_is_better: bool = True
    target: str = ""
    note: str = ""
    ratio: float | None = field(default=None)

    def __post_init__(self):
        if self.snn is not None and self.competitor_value:
            self.ratio = self.snn / self.competitor_value if self.higher_is_better else self.competitor_value / self.snn


def interleaved_results(runs: Mapping[str, Callable[[], T]], repeats: int) -> dict[str, list[T]]:
    """Call each run in turn, `repeats` rounds: every run's results, in order."""
    results: dict[str, list[T]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            results[name].append(run())
    return results


def interleaved(runs: Mapping[str, Callable[[], float]], repeats: int) -> dict[str, float]:
    """Call each run in turn, `repeats` rounds; median of each run's results."""
    return {name: statistics.median(values) for name, values in interleaved_results(runs, repeats).items()}


def rows_per_second(step: Callable[[CSRBatch], object], split: EncodedSplit, batches: int, rng) -> Callable[[], float]:
    """A run timing `batches` shuffled batches of the split through `step`."""

    def run() -> float:
        order = rng.permutation(split.rows)[: batches * BATCH]
        chosen = [split.take(order[i : i + BATCH]) for i in range(0, len(order), BATCH)]
        start = time.perf_counter()
        for batch in chosen:
            step(batch)
        return sum(len(b.labels) for b in chosen) / (time.perf_counter() - start)

    return run


def table(result: dict) -> str:
    """The figures as a fixed-width text table."""
    lines = [f"{'figure':<28} {'snn':>12} {'competitor':>12} {'ratio':>7}  unit    competitor / target / note"]

    def fmt(value: float | None, unit: str) -> str:
        return "-" if value is None else f"{value:,.4f}" if unit in FOUR_DECIMALS else f"{value:,.1f}"

    for f in result["figures"]:
        ratio = "-" if f["ratio"] is None else f"{f['ratio']:.2f}x"
        extra = " / ".join(x for x in (f["competitor"], f["target"], f["note"]) if x)
        snn, competitor = fmt(f["snn"], f["unit"]), fmt(f["competitor_value"], f["unit"])
        lines.append(f"{f['id']:<28} {snn:>12} {competitor:>12} {ratio:>7}  {f['unit']:<7} {extra}")
    lines += [f"note: {n}" for n in result["notes"]]
    return "\n".join(lines)
