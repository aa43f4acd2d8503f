"""The ctypes signature of every exported C function, declared once (tests/native checks them
against the prototypes in csrc/*.c, so the two cannot drift apart)."""

from __future__ import annotations

import ctypes

_P, _I64, _INT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int

# name: (return type, argument types), in the order of the C prototype
SIGNATURES: dict[str, tuple[type | None, list[type]]] = {
    "snn_sparse_linear_f32": (_INT, [_P, _P, _P, _I64, _I64, _P, _I64, _I64, _P, _P, _P, _P, _INT]),
    "snn_table_add": (_I64, [_P, _P, _P, _I64, _P, _I64, _P, _INT, _P, _P, _I64, _P, _I64, _I64]),
    "snn_table_find": (None, [_P, _P, _P, _I64, _P, _INT, _P, _P, _I64, _I64, _I64, _I64, _I64, _P, _INT]),
    "snn_bin": (_I64, [_P, _P, _I64, _I64, _P, _I64, _P, _I64, _I64, _P, _INT]),
    "snn_online_sparse": (_INT, [_P, _P, _I64, _I64, _P, _I64, _I64, _P, _P, _P, _P, _P]),
    "snn_online_pairs": (_INT, [_P, _P, _I64, _I64, _P, _P, _I64, _I64, _P]),
    "snn_records_to_numbers": (_INT, [ctypes.py_object, ctypes.py_object, _P, _P]),
}


def bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    """Set the declared restype and argtypes of each function `lib` exports."""
    for name, (restype, argtypes) in SIGNATURES.items():
        if hasattr(lib, name):
            function = getattr(lib, name)
            function.restype, function.argtypes = restype, argtypes
    return lib
