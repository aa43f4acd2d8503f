"""Raw values as encoders read them, the batch (polars column) and online (one Python value) forms
side by side so that they stay alike, and the stable hash of bucketed features."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import polars as pl

from ..errors import InputError


def stable_bucket(*parts: str, buckets: int) -> int:
    """Stable across processes and versions: BLAKE2b-64 of the parts joined by U+001F, mod buckets."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % buckets


def as_float(series: pl.Series, name: str) -> pl.Series:
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


def number_of(raw) -> float | None:
    """Online twin of `as_float`: None/NaN -> None, numbers and numeric strings -> float."""
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


def numbers_of(raws: list) -> np.ndarray:
    """`number_of` over a request's values: float64 [n], NaN for missing."""
    try:
        return np.array(raws, dtype=np.float64)  # None -> NaN, in one C pass
    except (TypeError, ValueError, OverflowError):
        return np.array([np.nan if (v := number_of(r)) is None else v for r in raws], dtype=np.float64)


def infinite_values(name: str) -> InputError:
    return InputError(f"feature {name!r} has infinite values; replace them (or mark them missing)")


def category_text(series: pl.Series) -> pl.Series:
    return series.cast(pl.String)


def category_of(raw) -> str | None:
    """Online twin of `category_text`: None/NaN -> None; everything else its text."""
    if raw is None or (isinstance(raw, float) and math.isnan(raw)):
        return None
    if isinstance(raw, bool):
        return "true" if raw else "false"
    return raw.strip() if isinstance(raw, str) else str(raw)


def unit_values(count: int) -> np.ndarray:
    """float32 [count] of 1.0, the values of one-hot entries, as a read-only broadcast view: no memory
    to allocate or fault in (a 1M-row chunk would be 4 MB per feature; a stored split, its whole nnz)."""
    return np.broadcast_to(np.float32(1.0), (count,))
