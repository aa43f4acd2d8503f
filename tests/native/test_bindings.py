"""The ctypes bindings (native/bindings.py) match the C prototypes of csrc/*.c, argument by argument."""

import ctypes
import re

from snn.pipeline.native.bindings import SIGNATURES
from snn.pipeline.native.loader import CSRC

C_TYPES = {"void": None, "int": ctypes.c_int, "int64_t": ctypes.c_int64}
PROTOTYPE = re.compile(r"^(?:CLONES\s+)?(int64_t|int|void)\s+(snn_\w+)\(([^)]*)\)\s*\{", re.MULTILINE)


def _ctype(declaration: str):
    """A C parameter declaration -> its ctypes type: pointers to data are c_void_p."""
    text = " ".join(declaration.replace("const ", "").split())
    if text.startswith("PyObject"):
        return ctypes.py_object
    if "*" in text:
        return ctypes.c_void_p
    return C_TYPES[text.rsplit(" ", 1)[0]]


def test_every_exported_function_is_bound_with_its_prototype():
    found = {}
    for source in sorted(CSRC.glob("*.c")):
        for restype, name, params in PROTOTYPE.findall(source.read_text()):
            found[name] = (C_TYPES[restype], [_ctype(p) for p in params.split(",")])
    assert found.keys() == SIGNATURES.keys()
    for name, (restype, argtypes) in SIGNATURES.items():
        assert (restype, argtypes) == found[name], name
