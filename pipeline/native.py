"""Native CPU kernels, compiled on first use with the system C compiler and loaded with ctypes.

Three libraries from csrc/*.c:
- `library()`: the encoders' hash tables and binning (hash_table.c, through hash_table.py) and the
  online scorer's float64 sparse sums and dot interactions (online.c); serial, no torch, so the
  data path and the online scorer run without torch;
- `python_library()`: reads an online request's dicts into numbers (records.c), through the Python
  C API (needs the interpreter's headers);
- `torch_library()`: the sparse linear layer's fused inference forward (sparse_linear.c), threaded
  with OpenMP and loaded after torch so that both share torch's libgomp.
Each is built once per source version, compiler flags and machine into `$SNN_NATIVE_CACHE`
(default `~/.cache/snn/native`), written to a temporary name and renamed into place, so concurrent
processes never load a half-written file; a compiler without OpenMP builds the torch kernel serial.
Without a compiler, or when a build fails, the library is None and every caller keeps its numpy,
polars or torch path: the kernels are a speed path, never a requirement, and tests hold both paths
equal.
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
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

CSRC = Path(__file__).with_name("csrc")
FLAGS = ["-O3", "-fPIC", "-shared", "-fno-math-errno"]
# the torch-side kernel splits rows over OpenMP threads: built with -fopenmp and loaded after torch,
# so it shares torch's libgomp (dropped where the compiler has no OpenMP: it then runs serial)
OPENMP = "-fopenmp"
_P, _I64, _INT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
SIGNATURES = {  # name: (return type, argument types), as declared in csrc/*.c
    "snn_sparse_linear_f32": (_INT, [_P, _P, _P, _I64, _I64, _P, _I64, _I64, _P, _P, _P, _P, _INT]),
    "snn_table_add": (_I64, [_P, _P, _P, _I64, _P, _I64, _P, _INT, _P, _P, _I64, _P, _I64, _I64]),
    "snn_table_find": (None, [_P, _P, _P, _I64, _P, _INT, _P, _P, _I64, _I64, _I64, _I64, _I64, _P, _INT]),
    "snn_bin": (_I64, [_P, _P, _I64, _I64, _P, _I64, _P, _I64, _I64, _P, _INT]),
    "snn_online_sparse": (_INT, [_P, _P, _I64, _I64, _P, _I64, _I64, _P, _P, _P, _P, _P]),
    "snn_online_pairs": (_INT, [_P, _P, _I64, _I64, _P, _P, _I64, _I64, _P]),
    "snn_records_to_numbers": (_INT, [ctypes.py_object, ctypes.py_object, _P, _P]),
}


def cache_folder() -> Path:
    return Path(os.environ.get("SNN_NATIVE_CACHE") or Path.home() / ".cache" / "snn" / "native")


def compiler() -> str | None:
    """The C compiler to build with: $CC, else cc or gcc on the PATH (None: there is none)."""
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


def _compile(sources: list[Path], flags: list[str], target: Path) -> None:
    compiler_path = compiler()
    if compiler_path is None:
        raise OSError("no C compiler found (install gcc, or set CC)")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        built = Path(scratch) / target.name
        command = [compiler_path, *FLAGS, *map(str, sources), "-o", str(built)]
        try:
            subprocess.run([*command, *flags], check=True, capture_output=True, text=True)
        except subprocess.CalledProcessError:
            if not flags:
                raise
            subprocess.run(command, check=True, capture_output=True, text=True)  # e.g. Apple clang: no OpenMP
        os.replace(built, target)


def _load(name: str, sources: tuple[str, ...], flags: tuple[str, ...], loader=ctypes.CDLL) -> ctypes.CDLL | None:
    """Library `name` built from csrc/`sources`, or None (logged) where it cannot be built or loaded."""
    paths = [CSRC / source for source in sources]
    headers = sorted(CSRC.glob("*.h"))  # included by the sources: a change rebuilds them too
    text = b"".join(path.read_bytes() for path in paths + headers) + " ".join(FLAGS + list(flags)).encode()
    text += sys.implementation.cache_tag.encode()
    target = cache_folder() / f"snn_{name}_{hashlib.sha256(text + platform.machine().encode()).hexdigest()[:16]}.so"
    try:
        if not target.exists():
            log.info("snn: compiling the native kernels into %s (once per version)", target)
            _compile(paths, list(flags), target)
        lib = loader(str(target))
    except (OSError, subprocess.CalledProcessError) as error:
        detail = getattr(error, "stderr", "") or error
        log.warning("snn native kernels %s unavailable, using the numpy/torch paths: %s", name, detail)
        return None
    for function_name, (restype, argtypes) in SIGNATURES.items():
        if hasattr(lib, function_name):
            function = getattr(lib, function_name)
            function.restype, function.argtypes = restype, argtypes
    return lib


@functools.cache
def library() -> ctypes.CDLL | None:
    """The data-path and online kernels (hash tables, binning, float64 scoring): no OpenMP, no torch."""
    return _load("kernels", ("hash_table.c", "online.c"), ())


@functools.cache
def python_library() -> ctypes.PyDLL | None:
    """The kernel that reads a request's dicts through the Python C API (records.c): loaded with
    PyDLL, so the GIL is held while it runs; built against this interpreter's headers."""
    flags = (f"-I{sysconfig.get_paths()['include']}",)  # the interpreter's symbols resolve at load time
    if platform.system() == "Darwin":
        flags += ("-undefined", "dynamic_lookup")
    return _load("python_kernels", ("records.c",), flags, ctypes.PyDLL)


# the kinds of value records.c reports per feature (a bit mask; see there)
SEEN_INT, SEEN_FLOAT, SEEN_NONE, SEEN_BOOL, SEEN_BIG, SEEN_OTHER = 1, 2, 4, 8, 16, 32


def forget_libraries() -> None:
    """Load (or build) the libraries afresh on their next use: after $SNN_NATIVE_CACHE or $CC change."""
    for loaded in (library, python_library, torch_library):
        loaded.cache_clear()


def records_to_numbers(records: list[dict], names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray] | None:
    """A request's values as numbers, float64 [F, n] (NaN for None, absent keys and non-numbers), and
    the kinds of value met in each feature's column, int32 [F] (SEEN_* bits); None where the kernel
    is not built or `records` is not a list of dicts."""
    lib = python_library()
    if lib is None:
        return None
    numbers = np.empty((len(names), len(records)), dtype=np.float64)
    seen = np.empty(len(names), dtype=np.int32)
    if lib.snn_records_to_numbers(records, names, numbers.ctypes.data, seen.ctypes.data) != 0:
        return None
    return numbers, seen


@functools.cache
def torch_library() -> ctypes.CDLL | None:
    """The sparse linear layer's kernel (OpenMP threads), loaded after torch so it shares torch's libgomp."""
    import torch  # noqa: F401  (torch's libgomp first)

    return _load("torch_kernels", ("sparse_linear.c",), (OPENMP,))


def sparse_linear(ids: torch.Tensor, values: torch.Tensor, offsets: torch.Tensor, weight: torch.Tensor,
                  max_abs: torch.Tensor, id_bias: torch.Tensor, bias: torch.Tensor) -> torch.Tensor | None:
    """Σ_i W[id_i] · (v_i / max(max_abs_i, |v_i|) + b_i) + B per CSR row: [rows, width], or None
    when the kernel cannot take these tensors (not int64 ids and offsets and float32 floats, all
    contiguous on the CPU; or no kernel). Shapes: ids, values [nnz]; offsets [rows] (row starts);
    weight [num_ids, width]; max_abs, id_bias [num_ids] (or [num_ids, 1]); bias [width]. No
    autograd: inference only. Checks stay lean: at batch 1 they are a third of the call."""
    import torch

    int64, float32 = torch.int64, torch.float32
    if not (ids.dtype is int64 and offsets.dtype is int64 and values.dtype is float32 and weight.dtype is float32
            and max_abs.dtype is float32 and id_bias.dtype is float32 and bias.dtype is float32):
        return None
    tensors = (ids, offsets, values, weight, max_abs, id_bias, bias)
    if not all(t.is_cpu and t.is_contiguous() for t in tensors):
        return None
    lib = torch_library()
    if lib is None:
        return None
    rows, nnz, (num_ids, width) = offsets.shape[0], ids.shape[0], weight.shape
    out = torch.empty(rows, width, dtype=float32)
    status = lib.snn_sparse_linear_f32(ids.data_ptr(), values.data_ptr(), offsets.data_ptr(), rows, nnz,
                                       weight.data_ptr(), num_ids, width, max_abs.data_ptr(), id_bias.data_ptr(),
                                       bias.data_ptr(), out.data_ptr(), torch.get_num_threads())
    if status == -2:
        raise MemoryError("sparse linear forward: no memory for the partial sums of a split row")
    if status != 0:
        raise IndexError(f"sparse linear forward: an id outside [0, {num_ids}) or offsets that are not "
                         f"non-decreasing row starts within [0, {nnz}]")
    return out


def _check_online(status: int, num_ids: int) -> None:
    if status == -1:
        raise IndexError(f"an id outside [0, {num_ids}): the feature map and the weights disagree")
    if status != 0:
        raise MemoryError("the native scoring kernel could not allocate its buffer")


def online_sparse(lib: ctypes.CDLL, ids: np.ndarray, values: np.ndarray, table: np.ndarray, max_abs: np.ndarray,
                  id_bias: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The sparse layer before its activation in float64 on rows of F entries (csrc/online.c,
    summed in feature order): ids int64 and values float64 [n, F], all contiguous -> (scaled values
    v / max(max_abs, |v|) [n, F], Σ_f W[id]·(s + b) + B [n, width])."""
    (n, fields), (num_ids, width) = ids.shape, table.shape
    scaled, out = np.empty((n, fields)), np.empty((n, width))
    _check_online(lib.snn_online_sparse(ids.ctypes.data, values.ctypes.data, n, fields, table.ctypes.data, num_ids,
                                        width, max_abs.ctypes.data, id_bias.ctypes.data, bias.ctypes.data,
                                        scaled.ctypes.data, out.ctypes.data), num_ids)
    return scaled, out


def online_pairs(lib: ctypes.CDLL, g0: np.ndarray, table: np.ndarray, ids: np.ndarray, scaled: np.ndarray) -> np.ndarray:
    """DLRM dot interactions in float64 (csrc/online.c): G = [g0[r], V[id_1]·s_1, …, V[id_F]·s_F] per
    row -> the upper triangle of G Gᵀ, row-major, [n, (F+1)F/2]. g0 [n, d], table V [num_ids, d], ids
    int64 and scaled float64 [n, F], all contiguous."""
    (n, fields), (num_ids, dim) = ids.shape, table.shape
    out = np.empty((n, (fields + 1) * fields // 2))
    _check_online(lib.snn_online_pairs(g0.ctypes.data, table.ctypes.data, num_ids, dim, ids.ctypes.data,
                                       scaled.ctypes.data, n, fields, out.ctypes.data), num_ids)
    return out


def _float64_cpu(*tensors: torch.Tensor) -> bool:
    import torch

    return all(t.dtype is torch.float64 and t.is_cpu and t.is_contiguous() for t in tensors)


def _int64_cpu(ids: torch.Tensor) -> bool:
    import torch

    return ids.dtype is torch.int64 and ids.is_cpu and ids.is_contiguous()


def sparse_rows_f64(ids: torch.Tensor, values: torch.Tensor, fields: int, weight: torch.Tensor,
                    max_abs: torch.Tensor, id_bias: torch.Tensor, bias: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """`online_sparse` for torch tensors (batch scoring in float64): ids, values [n·F] ->
    (scaled [n·F], sums [n, width]), or None when the kernel cannot take these tensors (not float64
    contiguous CPU floats and int64 ids; or no kernel). Shapes as `sparse_linear`."""
    import torch

    lib = library()
    if lib is None or not _int64_cpu(ids) or not _float64_cpu(values, weight, max_abs, id_bias, bias):
        return None
    scaled, out = online_sparse(lib, ids.numpy().reshape(-1, fields), values.numpy().reshape(-1, fields),
                                weight.numpy(), max_abs.numpy(), id_bias.numpy(), bias.numpy())
    return torch.from_numpy(scaled.reshape(-1)), torch.from_numpy(out)


def dot_pairs_f64(g0: torch.Tensor, table: torch.Tensor, ids: torch.Tensor, scaled: torch.Tensor) -> torch.Tensor | None:
    """`online_pairs` for torch tensors: g0 [n, d], table [num_ids, d], ids and scaled [n·F] ->
    [n, (F+1)F/2], or None when the kernel cannot take these tensors."""
    import torch

    lib = library()
    if lib is None or not _int64_cpu(ids) or not _float64_cpu(g0, table, scaled):
        return None
    n = g0.shape[0]
    return torch.from_numpy(online_pairs(lib, g0.numpy(), table.numpy(), ids.numpy().reshape(n, -1),
                                         scaled.numpy().reshape(n, -1)))
