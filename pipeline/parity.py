"""Offline vs online parity: join two prediction files on the row key and compare scores.

A row fails when |offline − online| > atol + rtol·|offline| (numpy.isclose's rule). Offline rows
absent online fail the check; online rows absent offline are reported only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from .errors import InputError
from .spec import ParitySpec


def read_predictions(path: Path, key: str) -> pl.DataFrame:
    if not path.is_file():
        raise InputError(f"--compare file {path} does not exist; write it with `snn predict --online BUNDLE DATA -o {path}`")
    try:
        df = pl.read_parquet(path)
    except Exception as exc:
        raise InputError(f"--compare file {path} is not a readable parquet file ({str(exc)[:120]})") from None
    missing = [c for c in (key, "score") if c not in df.columns]
    if missing:
        raise InputError(f"--compare file {path} lacks column(s) {missing}; it needs the row key {key!r} and 'score'")
    return df.select(pl.col(key), pl.col("score").cast(pl.Float64))


def compare(offline: pl.DataFrame, online: pl.DataFrame, key: str, spec: ParitySpec) -> dict:
    """Report rows compared, rows missing on either side, max abs/rel difference, worst rows."""
    joined = offline.select(key, pl.col("score").alias("offline")).join(
        online.rename({"score": "online"}), on=key, how="full", coalesce=True
    )
    both = joined.filter(pl.col("offline").is_not_null() & pl.col("online").is_not_null())
    off, on = both["offline"].to_numpy(), both["online"].to_numpy()
    abs_diff = np.abs(off - on)
    rel_diff = abs_diff / np.maximum(np.abs(off), 1e-300)
    failing = abs_diff > spec.atol + spec.rtol * np.abs(off)
    both = both.with_columns(pl.Series("abs_diff", abs_diff), pl.Series("rel_diff", rel_diff))
    worst = both.sort("abs_diff", descending=True).head(spec.worst_rows)
    missing_online = joined.filter(pl.col("online").is_null()).height
    missing_offline = joined.filter(pl.col("offline").is_null()).height
    report = {
        "rows_compared": both.height,
        "missing_online": missing_online,
        "missing_offline": missing_offline,
        "max_abs_diff": float(abs_diff.max()) if len(abs_diff) else 0.0,
        "max_rel_diff": float(rel_diff.max()) if len(rel_diff) else 0.0,
        "rows_failing": int(failing.sum()),
        "atol": spec.atol,
        "rtol": spec.rtol,
        "worst_rows": worst.to_dicts(),
        "failing_keys": both.filter(pl.Series(failing))[key].head(spec.worst_rows).to_list(),
    }
    report["passed"] = bool(report["rows_failing"] == 0 and missing_online == 0 and both.height > 0)
    return report
