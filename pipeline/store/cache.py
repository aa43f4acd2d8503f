"""Content-addressed step folders with atomic writes.

key = sha256(step name, the spec fields the step reads, upstream keys, input file digests, snn
version, artifact layout). A finished step lives in `<workdir>/steps/<name>-<key[:16]>/` with `step.json` written
last; it is built in the process's scratch folder (files.Scratch) and renamed into place, so a killed
run leaves no half artifact (and the next run removes its scratch), and an unchanged step is a
cache hit. One process builds a step at a time (a lock per step key); another waits, then finds it
done.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..errors import ArtifactError
from ..files import Scratch
from ..spec import canonical_json
from .bundle import FORMAT_VERSION as BUNDLE_FORMAT

# Bump when what a step writes changes shape (e.g. a weight's layout), so old folders stop matching;
# a new bundle format (BUNDLE_FORMAT) does the same by itself.
ARTIFACT_LAYOUT = 5


def step_key(
    name: str, fields: dict, upstream: dict[str, str] | None = None, inputs: dict[str, str] | None = None
) -> str:
    payload = {
        "step": name,
        "fields": fields,
        "upstream": upstream or {},
        "inputs": inputs or {},
        "version": __version__,
        "layout": [ARTIFACT_LAYOUT, BUNDLE_FORMAT],
    }
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


@dataclass(frozen=True)
class StepDir:
    workdir: Path
    name: str
    key: str

    @property
    def path(self) -> Path:
        return self.workdir / "steps" / f"{self.name}-{self.key[:16]}"

    @property
    def lock(self) -> Path:
        """The lock its builder holds: a second process waits, then finds the step done."""
        return self.workdir / "locks" / f"{self.name}-{self.key[:16]}.lock"

    @property
    def done(self) -> bool:
        return (self.path / "step.json").is_file()

    def info(self) -> dict:
        try:
            info = json.loads((self.path / "step.json").read_text())
            if not isinstance(info, dict) or info.get("key") != self.key:
                raise ValueError("step.json does not describe this step")
            return info
        except (OSError, ValueError) as exc:
            raise self.corrupted(exc) from None

    def corrupted(self, exc: Exception) -> ArtifactError:
        return corrupted_cache(self.name, self.path, exc)

    @contextmanager
    def build(self, scratch: Scratch):
        """Yield a fresh folder inside this process's scratch; on success rename it into place
        (replacing an older build of the same key). Call it holding `self.lock`."""
        tmp = scratch.folder(self.name)
        try:
            yield tmp
            final = self.path
            final.parent.mkdir(parents=True, exist_ok=True)
            old = None
            if final.exists():
                old = scratch.folder(self.name + ".old")
                final.rename(old / "replaced")
            tmp.rename(final)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def finish(self, folder: Path, info: dict) -> None:
        (folder / "step.json").write_text(json.dumps({"step": self.name, "key": self.key, **info}, indent=2))


def corrupted_cache(step: str, path: Path, exc: Exception) -> ArtifactError:
    """The error for a damaged cached step folder: what is wrong, and how to rebuild it."""
    return ArtifactError(
        f"corrupted cache: {path} ({type(exc).__name__}: {str(exc)[:160]}); rerun with "
        f"--force-step {step} (or delete the folder)"
    )


def link_latest(workdir: Path, name: str, target: Path) -> Path:
    """Point `<workdir>/bundles/<name>` at `target`; returns the link."""
    return link_to(workdir / "bundles" / name, target)


def link_to(link: Path, target: Path) -> Path:
    """Point `link` at the folder `target` (atomic symlink swap; a relative link, so the work
    directory can move and MLflow logs through it); returns the link."""
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(f".{link.name}.{uuid.uuid4().hex[:8]}")
    tmp.symlink_to(os.path.relpath(target.resolve(), link.parent.resolve()), target_is_directory=True)
    tmp.replace(link)
    return link


def folder_digest(folder: Path) -> str:
    """sha256 over a folder's files (their relative paths and contents' digests), for cache keys."""
    from ..data.sources import file_digest

    h = hashlib.sha256()
    for path in sorted(p for p in folder.resolve().rglob("*") if p.is_file()):
        h.update(f"{path.relative_to(folder.resolve())}\0{file_digest(path)}\n".encode())
    return h.hexdigest()
