"""Building and loading the C kernels: compiled on first use with the system C compiler, loaded
with ctypes.

Three libraries from csrc/*.c:
- `library()`: the encoders' hash tables and binning (hash_table.c) and the online scorer's float64
  sparse sums and dot interactions (online.c); serial, no torch;
- `python_library()`: reads an online request's dicts into numbers (records.c), through the Python
  C API (needs the interpreter's headers);
- `torch_library()`: the sparse linear layer's fused float32 inference (sparse_linear.c), threaded
  with OpenMP and loaded after torch so that both share torch's libgomp.
Each is built once per source version, compiler flags and machine into `$SNN_NATIVE_CACHE`
(default `~/.cache/snn/native`), written to a temporary name and renamed into place, so concurrent
processes never load a half-written file; a compiler without OpenMP builds the torch kernel serial.
Without a compiler, when a build fails, or with `SNN_NATIVE=0`, a library is None: the functions of
this package then run their reference implementations, and no caller can tell but by speed.
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

from .bindings import bind

log = logging.getLogger(__name__)

CSRC = Path(__file__).with_name("csrc")
FLAGS = ["-O3", "-fPIC", "-shared", "-fno-math-errno"]
# the torch-side kernel splits rows over OpenMP threads: built with -fopenmp and loaded after torch,
# so it shares torch's libgomp (dropped where the compiler has no OpenMP: it then runs serial)
OPENMP = "-fopenmp"


def enabled() -> bool:
    """False when `SNN_NATIVE=0` (or `false`, `no`, `off`): every kernel off, the references run."""
    return os.environ.get("SNN_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


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
    """Library `name` built from csrc/`sources`, or None (logged) where it cannot be built or loaded,
    or the kernels are turned off."""
    if not enabled():
        return None
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
    return bind(lib)


@functools.cache
def library() -> ctypes.CDLL | None:
    """The data-path and online kernels (hash tables, binning, float64 scoring): no OpenMP, no torch."""
    return _load("kernels", ("hash_table.c", "online.c"), ())


@functools.cache
def python_library() -> ctypes.PyDLL | None:
    """The kernel that reads a request's dicts through the Python C API (records.c): loaded with
    PyDLL, so the GIL is held while it runs; built against this interpreter's headers."""
    flags: tuple[str, ...] = (f"-I{sysconfig.get_paths()['include']}",)  # its symbols resolve at load time
    if platform.system() == "Darwin":
        flags += ("-undefined", "dynamic_lookup")
    return _load("python_kernels", ("records.c",), flags, ctypes.PyDLL)  # type: ignore[return-value]


def forget_libraries() -> None:
    """Load (or build) the libraries afresh on their next use: after $SNN_NATIVE, $SNN_NATIVE_CACHE
    or $CC change."""
    for loaded in (library, python_library, torch_library):
        loaded.cache_clear()


@functools.cache
def torch_library() -> ctypes.CDLL | None:
    """The sparse linear layer's kernel (OpenMP threads), loaded after torch so it shares torch's libgomp."""
    import torch  # noqa: F401  (torch's libgomp first)

    return _load("torch_kernels", ("sparse_linear.c",), (OPENMP,))
