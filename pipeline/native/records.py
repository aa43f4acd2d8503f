"""An online request's values as numbers: the C reader (csrc/records.c) or its Python reference."""

from __future__ import annotations

import math

import numpy as np

from .loader import python_library

# the kinds of value met in a feature's column (a bit mask; records.c defines the same)
SEEN_INT, SEEN_FLOAT, SEEN_NONE, SEEN_BOOL, SEEN_BIG, SEEN_OTHER = 1, 2, 4, 8, 16, 32
EXACT = 2**53


def _number(value) -> tuple[float, int]:
    """One raw value as (a double, its kind): None -> NaN, bools -> 0/1, ints (rounded past ±2^53,
    ±inf past the double range), floats as they are, anything else NaN."""
    if value is None:
        return math.nan, SEEN_NONE
    if isinstance(value, float):
        return value, SEEN_FLOAT
    if isinstance(value, bool):
        return float(value), SEEN_BOOL
    if type(value) is int:
        if -EXACT <= value <= EXACT:
            return float(value), SEEN_INT
        try:
            return float(value), SEEN_BIG
        except OverflowError:
            return (math.inf if value > 0 else -math.inf), SEEN_BIG
    return math.nan, SEEN_OTHER


def records_to_numbers_reference(records: list[dict], names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    numbers = np.empty((len(names), len(records)), dtype=np.float64)
    seen = np.zeros(len(names), dtype=np.int32)
    for f, name in enumerate(names):
        for r, record in enumerate(records):
            numbers[f, r], kind = _number(record.get(name))
            seen[f] |= kind
    return numbers, seen


def records_to_numbers(records: list[dict], names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """A request's values as numbers, float64 [F, n] (NaN for None, absent keys and values that are
    not numbers), and the kinds of value met in each feature's column, int32 [F] (SEEN_* bits).
    `records` is a list of dicts."""
    lib = python_library()
    if lib is not None and type(records) is list:
        numbers = np.empty((len(names), len(records)), dtype=np.float64)
        seen = np.empty(len(names), dtype=np.int32)
        if lib.snn_records_to_numbers(records, tuple(names), numbers.ctypes.data, seen.ctypes.data) == 0:
            return numbers, seen
    return records_to_numbers_reference(list(records), tuple(names))
