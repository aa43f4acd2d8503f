"""Paths the user names, checked in one place; scratch space owned by a live process; file locks.

* `input_file(path, what, fix)`: a regular, readable file, or an InputError that says what the path
  is instead (missing, a folder, a FIFO or device, a symlink loop, unreadable) and how to fix it.
* `output_file(path, inputs)`: a path that may be written: not a folder, not one of the inputs.
* `Scratch`: a process's own folder under `<workdir>/tmp/`, locked (flock) for the life of the
  process. Step folders and reports are built inside it and renamed into place; `sweep` removes the
  scratch of dead processes (the kernel drops a dead process's lock, so a lock that can be taken
  marks an orphan, unless its pid still runs) and hands back what they recorded (their MLflow runs).
* `owned_temp(target)`: a temporary file beside `target` for an atomic write, locked while
  written; leftovers of killed writers are removed by the next writer of the same target.
* `locked(path)`: an exclusive flock held inside a `with` block (first-time creation of the
  MLflow store, one builder per step folder).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import stat
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from .errors import InputError

LOCK_NAME = ".lock"


def describe_problem(path: Path) -> str | None:
    """What is wrong with `path` as a file to read, or None when it is a readable regular file."""
    try:
        info = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "is a symlink loop"
        if exc.errno == errno.ENAMETOOLONG:
            return "is a path too long for this system"
        if exc.errno == errno.ENOTDIR:
            return "does not exist (a part of the path is a file, not a folder)"
        if exc.errno == errno.EACCES:
            return "cannot be reached (permission denied on a folder of the path)"
        if os.path.islink(path):
            return f"is a broken symlink (to {os.readlink(path)})"
        return "does not exist"
    if stat.S_ISDIR(info.st_mode):
        return "is a folder, not a file"
    if not stat.S_ISREG(info.st_mode):
        kind = (
            "a FIFO (named pipe)"
            if stat.S_ISFIFO(info.st_mode)
            else "a device"
            if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode)
            else "a socket"
            if stat.S_ISSOCK(info.st_mode)
            else "not a regular file"
        )
        return f"is {kind}, not a regular file"
    if not os.access(path, os.R_OK):
        return "is not readable (permission denied)"
    return None


def input_file(path: str | Path, what: str, fix: str, max_bytes: int | None = None) -> Path:
    """`path` as a readable regular file (at most `max_bytes` long when given), else an InputError
    "`what` `path` <problem>; `fix`"."""
    path = Path(path)
    problem = describe_problem(path)
    if problem is None and max_bytes is not None and path.stat().st_size > max_bytes:
        problem = f"is {path.stat().st_size:,} bytes, over the limit of {max_bytes:,}"
    if problem is not None:
        raise InputError(f"{what} {path} {problem}; {fix}")
    return path


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file (through links too); False when either cannot be reached."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


def output_file(path: str | Path, what: str, inputs: tuple[Path, ...] = ()) -> Path:
    """`path` as a file snn may (over)write: not a folder, not one of `inputs`, its folder creatable."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{what} {path} is a folder; give a file name such as {path / 'predictions.parquet'}")
    for source in inputs:
        if same_file(path, source):
            raise InputError(
                f"{what} {path} is also an input ({source}); writing it would destroy the input: "
                "give another output path"
            )
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"{what} {path} cannot be created: {parent} is a file, not a folder")  # or a device
    return path


def ensure_folder(path: Path, what: str) -> Path:
    """Create `path` (and its parents) as a folder; an InputError naming it when a file is in the way."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise InputError(f"{what} {path} is (or lies under) a file, not a folder; point it at a folder") from None
    return path


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def orphaned(fd: int, name: str) -> bool:
    """Whether the scratch or temporary file `name` ("<pid>-..." after its prefix), whose lock file is
    open as `fd`, belongs to a dead process: its lock can be taken and its pid is gone (a live owner
    may hold its folder unlocked for the instant between creating and locking it)."""
    if not try_lock(fd):
        return False
    pid = name.split("-", 1)[0]
    return not (pid.isdigit() and pid_alive(int(pid)))


def try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        raise


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on `path` (created if absent) inside the block; waits for other holders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the lock


class Scratch:
    """A process's own folder `<workdir>/tmp/<pid>-<random>/`, flock-ed until `close` (or death).

    `folder(name)` gives a fresh sub-folder to build into; `record(key, value)` keeps a small JSON
    note (the MLflow runs this process opened) that `sweep` hands back if the process dies."""

    def __init__(self, workdir: Path):
        self.root = ensure_folder(workdir / "tmp", "workdir") / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.root.mkdir()
        self._fd: int | None = os.open(self.root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        self.notes: dict = {}

    def folder(self, name: str) -> Path:
        path = self.root / f"{name}-{uuid.uuid4().hex[:8]}"
        path.mkdir()
        return path

    def record(self, key: str, value) -> None:
        self.notes[key] = value
        tmp = self.root / "notes.json.tmp"
        tmp.write_text(json.dumps(self.notes))
        tmp.replace(self.root / "notes.json")

    def close(self) -> None:
        if self._fd is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            os.close(self._fd)
            self._fd = None


def sweep(workdir: Path) -> list[dict]:
    """Remove the scratch folders of dead processes under `<workdir>/tmp/`; returns their notes."""
    notes: list[dict] = []
    tmp = workdir / "tmp"
    if not tmp.is_dir():
        return notes
    for folder in tmp.iterdir():
        if not folder.is_dir():
            continue
        try:
            fd = os.open(folder / LOCK_NAME, os.O_RDWR)
        except FileNotFoundError:  # an older layout, or a folder being created this instant: leave it
            continue
        try:
            if not orphaned(fd, folder.name):
                continue  # its owner is alive
            with suppress(OSError, ValueError):  # a dead process that noted nothing (or half a note)
                notes.append(json.loads((folder / "notes.json").read_text()))
            shutil.rmtree(folder, ignore_errors=True)
        finally:
            os.close(fd)
    return notes


@contextmanager
def owned_temp(target: Path) -> Iterator[Path]:
    """A temporary path beside `target`, locked while the block runs; on success it replaces
    `target` atomically, on failure it is removed. Leftovers of killed writers (unlocked) go first."""
    prefix = f".{target.name}.snn-"
    for stale in target.parent.glob(prefix + "*.tmp"):
        try:
            fd = os.open(stale, os.O_RDWR)
        except OSError:
            continue
        try:
            if orphaned(fd, stale.name[len(prefix) :]):
                stale.unlink(missing_ok=True)
        finally:
            os.close(fd)
    tmp = target.with_name(f"{prefix}{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield tmp
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
        os.close(fd)
