"""Offline vs online parity: join two prediction files on the row key and compare scores.

A row passes when |offline − online| <= atol + rtol·|offline| (numpy.isclose's rule, written so that
NaN never passes: a NaN or null score on either side is a failing row). Offline rows absent online
fail the check; online rows absent offline are reported only. A key repeated in the online file is
refused: each row must be compared once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from ..data.readers import READ_ERRORS
from ..errors import InputError
from ..files import input_file
from .spec import ParitySpec

_OFFLINE, _ONLINE = "__snn_offline_row__", "__snn_online_row__"


def read_predictions(
    path: Path, key: str, key_dtype: pl.DataType, scores: tuple[str, ...] = ("score",)
) -> pl.DataFrame:
    """The online predictions (key, each of `scores` as Float64: `score`, or `score_<task>` per
    task); the key must have the offline keys' kind (integer or text), the scores must be numeric,
    and no key may repeat."""
    fix = f"write it with `snn predict --online BUNDLE DATA -o {path}`"
    input_file(path, "--compare file", fix)
    try:
        df = pl.read_parquet(path)
    except READ_ERRORS as exc:
        raise InputError(f"--compare file {path} is not a readable parquet file ({str(exc)[:120]}); {fix}") from None
    missing = [c for c in (key, *scores) if c not in df.columns]
    if missing:
        raise InputError(
            f"--compare file {path} lacks column(s) {missing}; it needs the row key {key!r} and {list(scores)}"
        )
    found = df.schema[key]
    if found.is_integer() != key_dtype.is_integer() or not (found.is_integer() or found == pl.String):
        raise InputError(
            f"--compare file {path}: key column {key!r} is {found} but the offline keys are {key_dtype}; "
            "write the keys as they are in the data"
        )
    for score in scores:
        if not df.schema[score].is_numeric():
            raise InputError(
                f"--compare file {path}: column {score!r} is {df.schema[score]}, not numbers; write the scores "
                "as floats"
            )
    repeated = df.filter(pl.col(key).is_duplicated())[key].unique().head(5).to_list()
    if repeated:
        raise InputError(
            f"--compare file {path} repeats keys such as {repeated}; every row must appear once "
            "(was a request sent twice?)"
        )
    return df.select(pl.col(key).cast(key_dtype), *(pl.col(score).cast(pl.Float64) for score in scores))


def compare(offline: pl.DataFrame, online: pl.DataFrame, key: str, spec: ParitySpec) -> dict:
    """Report rows compared, rows missing on either side, NaN rows, max abs/rel difference, worst rows."""
    joined = offline.select(key, pl.col("score").alias("offline"), pl.lit(True).alias(_OFFLINE)).join(
        online.rename({"score": "online"}).with_columns(pl.lit(True).alias(_ONLINE)),
        on=key,
        how="full",
        coalesce=True,
    )
    missing_online = joined.filter(pl.col(_OFFLINE) & pl.col(_ONLINE).is_null()).height
    missing_offline = joined.filter(pl.col(_OFFLINE).is_null()).height
    both = joined.filter(pl.col(_OFFLINE) & pl.col(_ONLINE)).drop(_OFFLINE, _ONLINE)
    off = both["offline"].fill_null(np.nan).to_numpy()
    on = both["online"].fill_null(np.nan).to_numpy()
    with np.errstate(invalid="ignore"):
        abs_diff = np.abs(off - on)
        rel_diff = abs_diff / np.maximum(np.abs(off), 1e-300)
        passing = abs_diff <= spec.atol + spec.rtol * np.abs(off)  # False for NaN
    nan_rows = int(np.isnan(abs_diff).sum())
    both = both.with_columns(pl.Series("abs_diff", abs_diff), pl.Series("rel_diff", rel_diff))
    worst = both.sort("abs_diff", descending=True, nulls_last=False).head(spec.worst_rows)
    failing = ~passing
    report = {
        "rows_compared": both.height,
        "missing_online": missing_online,
        "missing_offline": missing_offline,
        "nan_rows": nan_rows,
        "max_abs_diff": float(np.max(abs_diff)) if len(abs_diff) else 0.0,  # NaN when any row is NaN
        "max_rel_diff": float(np.max(rel_diff)) if len(rel_diff) else 0.0,
        "rows_failing": int(failing.sum()),
        "atol": spec.atol,
        "rtol": spec.rtol,
        "worst_rows": worst.to_dicts(),
        "failing_keys": both.filter(pl.Series(failing))[key].head(spec.worst_rows).to_list(),
    }
    report["passed"] = bool(report["rows_failing"] == 0 and missing_online == 0 and both.height > 0)
    return report
