"""A polars column's buffers read in place, through the Arrow C stream interface (the public
`__arrow_c_stream__` PyCapsule): the native kernels (csrc/hash_table.c) take a column's values and
its validity bitmap as they are, instead of a numpy copy with nulls filled in (which cost as much
as the kernel's own work).

    with pieces(series) as parts:       # series Float64 or Int64
        for part in parts:              # one per Arrow chunk (a parquet row group, say)
            kernel(part.values, part.valid, out[part.start:part.start + len(part.values)])

Layouts follow the Arrow C data interface (arrow.apache.org/docs/format/CDataInterface.html).
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import polars as pl

_ptr, _i64 = ctypes.c_void_p, ctypes.c_int64


class _Schema(ctypes.Structure):
    _fields_ = [
        ("format", ctypes.c_char_p),
        ("name", ctypes.c_char_p),
        ("metadata", ctypes.c_char_p),
        ("flags", _i64),
        ("n_children", _i64),
        ("children", _ptr),
        ("dictionary", _ptr),
        ("release", _ptr),
        ("private_data", _ptr),
    ]


class _Array(ctypes.Structure):
    pass


_Array._fields_ = [
    ("length", _i64),
    ("null_count", _i64),
    ("offset", _i64),
    ("n_buffers", _i64),
    ("n_children", _i64),
    ("buffers", ctypes.POINTER(_ptr)),
    ("children", _ptr),
    ("dictionary", _ptr),
    ("release", ctypes.CFUNCTYPE(None, ctypes.POINTER(_Array))),
    ("private_data", _ptr),
]


class _Stream(ctypes.Structure):
    pass


_Stream._fields_ = [
    ("get_schema", ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(_Stream), ctypes.POINTER(_Schema))),
    ("get_next", ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(_Stream), ctypes.POINTER(_Array))),
    ("get_last_error", _ptr),
    ("release", _ptr),
    ("private_data", _ptr),
]

_release_schema = ctypes.CFUNCTYPE(None, ctypes.POINTER(_Schema))
_capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_pointer.restype, _capsule_pointer.argtypes = _ptr, [ctypes.py_object, ctypes.c_char_p]
FORMATS = {b"g": np.float64, b"l": np.int64}  # Arrow format strings of the two column types read here


@dataclass
class Piece:
    """Rows [start, start + len(values)) of a column: `values` float64 or int64 (zero-copy; arbitrary
    under nulls) and `valid`, (validity bitmap address, bit of the piece's row 0), or None when the
    piece has no nulls."""

    start: int
    values: np.ndarray
    valid: tuple[int, int] | None


@contextmanager
def pieces(series: pl.Series) -> Iterator[list[Piece]]:
    """The buffers of a Float64 or Int64 series, readable inside the block (released after it)."""
    capsule = series.__arrow_c_stream__()  # held to the end: its destructor releases the stream
    stream = ctypes.cast(_capsule_pointer(capsule, b"arrow_array_stream"), ctypes.POINTER(_Stream))
    schema = _Schema()
    if stream.contents.get_schema(stream, ctypes.byref(schema)) != 0:
        raise RuntimeError(f"column {series.name!r}: the Arrow stream gave no schema")
    dtype = FORMATS.get(schema.format)
    _release_schema(schema.release)(ctypes.byref(schema))
    if dtype is None:
        raise TypeError(f"column {series.name!r} is {series.dtype}; pieces reads Float64 or Int64 columns")
    arrays, parts, start = [], [], 0
    try:
        while True:
            array = _Array()
            if stream.contents.get_next(stream, ctypes.byref(array)) != 0:
                raise RuntimeError(f"column {series.name!r}: the Arrow stream failed")
            if not array.release:
                break  # the end of the stream
            arrays.append(array)
            length, width = array.length, np.dtype(dtype).itemsize
            if length == 0:
                continue
            values = np.frombuffer(
                (ctypes.c_char * (length * width)).from_address(array.buffers[1] + array.offset * width), dtype=dtype
            )
            valid = (array.buffers[0], array.offset) if array.null_count and array.buffers[0] else None
            parts.append(Piece(start, values, valid))
            start += length
        yield parts
    finally:
        for array in arrays:
            array.release(ctypes.byref(array))
