"""Native CPU kernels, compiled on first use with the system C compiler and loaded with ctypes.

One kernel today: the sparse linear layer's fused inference forward (csrc/sparse_linear.c). The
shared library is built once per source version, compiler flags and machine into
`$SNN_NATIVE_CACHE` (default `~/.cache/snn/native`), written to a temporary name and renamed into
place, so concurrent processes never load a half-written file. Without a compiler, or when the
build fails, `sparse_linear` returns None and callers keep their torch path: the kernel is a speed
path, never a requirement, and tests hold both paths equal.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("csrc") / "sparse_linear.c"
FLAGS = ["-O3", "-fPIC", "-shared", "-fopenmp", "-fno-math-errno"]  # OpenMP resolves to torch's libgomp


def cache_folder() -> Path:
    return Path(os.environ.get("SNN_NATIVE_CACHE") or Path.home() / ".cache" / "snn" / "native")


def compiler() -> str | None:
    """The C compiler to build with: $CC, else cc or gcc on the PATH (None: there is none)."""
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


def _compile(source: Path, target: Path) -> None:
    compiler_path = compiler()
    if compiler_path is None:
        raise OSError("no C compiler found (install gcc, or set CC)")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        built = Path(scratch) / target.name
        subprocess.run([compiler_path, *FLAGS, str(source), "-o", str(built)], check=True, capture_output=True, text=True)
        os.replace(built, target)


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled kernels, or None (logged once) where they cannot be built or loaded."""
    key = hashlib.sha256(SOURCE.read_bytes() + " ".join(FLAGS).encode() + platform.machine().encode()).hexdigest()[:16]
    target = cache_folder() / f"snn_native_{key}.so"
    try:
        if not target.exists():
            log.info("snn: compiling the native kernels into %s (once per version)", target)
            _compile(SOURCE, target)
        lib = ctypes.CDLL(str(target))
    except (OSError, subprocess.CalledProcessError) as error:
        detail = getattr(error, "stderr", "") or error
        log.warning("snn native kernels unavailable, using the torch path: %s", detail)
        return None
    pointer, int64 = ctypes.c_void_p, ctypes.c_int64
    lib.snn_sparse_linear_f32.argtypes = [pointer, pointer, pointer, int64, int64, pointer, int64, int64,
                                          pointer, pointer, pointer, pointer, ctypes.c_int]
    lib.snn_sparse_linear_f32.restype = ctypes.c_int
    return lib


KERNEL_DTYPES = (torch.int64, torch.int64) + (torch.float32,) * 5  # ids, offsets, then the float tensors


def sparse_linear(ids: torch.Tensor, values: torch.Tensor, offsets: torch.Tensor, weight: torch.Tensor,
                  max_abs: torch.Tensor, id_bias: torch.Tensor, bias: torch.Tensor) -> torch.Tensor | None:
    """Σ_i W[id_i] · (v_i / max(max_abs_i, |v_i|) + b_i) + B per CSR row: [rows, width], or None
    when the kernel cannot take these tensors (not int64 ids and offsets and float32 floats, all
    contiguous on the CPU; or no kernel). Shapes: ids, values [nnz]; offsets [rows] (row starts);
    weight [num_ids, width]; max_abs, id_bias [num_ids] (or [num_ids, 1]); bias [width]. No
    autograd: inference only. Checks stay lean: at batch 1 they are a third of the call."""
    tensors = (ids, offsets, values, weight, max_abs, id_bias, bias)
    if tuple(t.dtype for t in tensors) != KERNEL_DTYPES or not all(t.is_cpu and t.is_contiguous() for t in tensors):
        return None
    lib = library()
    if lib is None:
        return None
    rows, (num_ids, width) = len(offsets), weight.shape
    out = torch.empty(rows, width, dtype=torch.float32)
    status = lib.snn_sparse_linear_f32(ids.data_ptr(), values.data_ptr(), offsets.data_ptr(), rows, len(ids),
                                       weight.data_ptr(), num_ids, width, max_abs.data_ptr(), id_bias.data_ptr(),
                                       bias.data_ptr(), out.data_ptr(), torch.get_num_threads())
    if status != 0:
        raise IndexError(f"sparse linear forward: an id outside [0, {num_ids}) or offsets that are not "
                         f"non-decreasing row starts within [0, {len(ids)}]")
    return out
