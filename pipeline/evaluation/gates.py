"""Validation helpers: per-slice metrics and gates -> an explicit verdict."""

from __future__ import annotations

import math

import numpy as np
import polars as pl

from . import metrics
from .spec import Gate


def slice_metrics(frame: pl.DataFrame, columns: list[str], y, p, w, **kw) -> dict:
    """{column: {value: metrics}} for each slice column; missing values form the slice 'null'."""
    out: dict[str, dict] = {}
    for column in columns:
        values = frame[column].cast(pl.String).fill_null("null").to_numpy()
        out[column] = {}
        for value in sorted(set(values)):
            mask = values == value
            out[column][value] = metrics.all_metrics(
                np.asarray(y)[mask], np.asarray(p)[mask], np.asarray(w)[mask], **kw
            )
    return out


def evaluate_gates(
    gates: dict[str, Gate],
    current: dict,
    baseline: dict | None,
    split: str,
    bundle_path: str,
    baseline_path: str | None,
) -> dict:
    """Check every gate; the verdict always says pass/fail and why."""
    checks, failures = [], []

    def check(name, rule, value, limit, ok):
        checks.append({"metric": name, "rule": rule, "value": value, "limit": limit, "passed": bool(ok)})
        if not ok:
            failures.append(f"{name} = {value:.6g} violates {rule} {limit:.6g} on {split}")

    for name, gate in gates.items():
        value = current[name]
        if math.isnan(value):
            failures.append(f"{name} is undefined on {split} (one label class only?)")
            continue
        if gate.min is not None:
            check(name, "min", value, gate.min, value >= gate.min)
        if gate.max is not None:
            check(name, "max", value, gate.max, value <= gate.max)
        wants_baseline = gate.max_drop_vs_baseline is not None or gate.max_increase_vs_baseline is not None
        if wants_baseline and baseline is None:
            failures.append(f"{name}: a *_vs_baseline gate needs a baseline bundle (validation.baseline or --baseline)")
            continue
        baseline = baseline or {}
        if gate.max_drop_vs_baseline is not None:
            limit = baseline[name] - gate.max_drop_vs_baseline
            check(name, "max_drop_vs_baseline", value, limit, value >= limit)
        if gate.max_increase_vs_baseline is not None:
            limit = baseline[name] + gate.max_increase_vs_baseline
            check(name, "max_increase_vs_baseline", value, limit, value <= limit)
    return {
        "passed": not failures,
        "split": split,
        "failures": failures,
        "checks": checks,
        "bundle": bundle_path,
        "baseline": baseline_path,
    }
