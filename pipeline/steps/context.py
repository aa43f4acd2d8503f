"""What every step shares: the command's context, the result a step hands downstream, and the one
function that runs a cached step.

A step declares the spec fields it reads (`READS`: argument name -> dotted path in the spec) and
receives them, and its upstream steps' results, as arguments; it never sees the rest of the spec.
Its cache key is the sha256 of its name, exactly those values, its upstream keys and its input
files' digests (store/cache.py), so a change to a field it reads reruns it and a change to any
other field does not.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from ..files import Scratch, locked
from ..spec import Spec
from ..store.cache import StepDir, link_latest, step_key
from ..tracking import Tracker

if TYPE_CHECKING:
    from ..train.distributed import Group

STEPS = ("prepare", "train", "calibrate", "validate")
BUNDLE_LINKS = {"train": ".raw", "calibrate": ""}  # <workdir>/bundles/<name><suffix> -> the newest bundle


def log(message: str) -> None:
    """A progress line on stderr (rank 0's only, when torchrun started several)."""
    if os.environ.get("RANK", "0") == "0":
        sys.stderr.write(message + "\n")


@dataclass
class Context:
    """One command's run: the work directory, the spec file's folder (where relative paths start), the
    model's name (bundle links, reports), the tracker, this process's scratch folder, what to
    rerun (`force` every step, `force_step` that step and the ones after it), and the ranks this
    process trains with (None: one process)."""

    workdir: Path
    base_dir: Path
    name: str
    tracker: Tracker
    scratch: Scratch
    force: bool = False
    force_step: str | None = None
    group: Group | None = None

    @property
    def leader(self) -> bool:
        """Whether this process writes: the only one, or rank 0."""
        return self.group is None or self.group.leader

    def forced(self, step: str) -> bool:
        return self.force or (self.force_step is not None and STEPS.index(step) >= STEPS.index(self.force_step))

    def resolve(self, path: str) -> Path:
        """A path from the spec, relative to the spec file's folder."""
        candidate = Path(path).expanduser()
        return candidate if candidate.is_absolute() else self.base_dir / candidate


@dataclass(frozen=True)
class StepResult:
    """What a finished step hands downstream: its folder, key and info, whether it was a cache hit,
    and the bundle link when it wrote a bundle."""

    name: str
    key: str
    path: Path
    info: dict
    cached: bool
    bundle: Path | None = None

    def summary(self) -> dict:
        out = {"path": str(self.path), "cached": self.cached, "key": self.key}
        return out | ({"bundle": str(self.bundle)} if self.bundle is not None else {})


def read(spec: Spec, reads: dict[str, str]) -> dict[str, Any]:
    """The spec values a step reads: argument name -> the value at its dotted path."""
    values = {}
    for argument, path in reads.items():
        value: Any = spec
        for part in path.split("."):
            value = getattr(value, part)
        values[argument] = value
    return values


def dump(value: Any) -> Any:
    """A spec value as JSON data (for cache keys)."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, (list, tuple)):
        return [dump(v) for v in value]
    return value


def key_of(
    name: str, values: dict[str, Any], upstream: tuple[StepResult, ...] = (), inputs: dict[str, str] | None = None
) -> str:
    return step_key(name, {k: dump(v) for k, v in values.items()}, {u.name: u.key for u in upstream}, inputs)


def cached_step(
    ctx: Context,
    name: str,
    values: dict[str, Any],
    build: Callable[[Path], dict],
    upstream: tuple[StepResult, ...] = (),
    inputs: dict[str, str] | None = None,
    together: bool = False,
) -> StepResult:
    """Run step `name` unless its folder is current: holding the step's lock, reuse a finished folder
    of the same key (noted as cached on the command's run) or `build(folder)` into a scratch folder,
    in a run of its own, that is then renamed into place; `build` returns the step's info (step.json).

    With several ranks (ctx.group) every rank calls this: rank 0 decides whether the step is current
    and tells the others; rank 0 builds it, and for a step the ranks build `together` (train) so
    does every other rank (into its scratch, writing nothing: `build` checks ctx.leader); the others
    wait for rank 0's folder before reading it."""
    step = StepDir(ctx.workdir, name, key_of(name, values, upstream, inputs))
    group = ctx.group
    with locked(step.lock) if ctx.leader else nullcontext():
        current = step.done and not ctx.forced(name)
        if group is not None:
            current = group.broadcast(current)
        if current:
            cached = True
            ctx.tracker.cached(name)
        elif ctx.leader:
            with ctx.tracker.step(name), step.build(ctx.scratch) as folder:
                info, cached = build(folder), False
                info["mlflow_run_id"] = ctx.tracker.parent_id  # the command's run that built it (or None)
                step.finish(folder, info)
        else:
            if together:
                build(ctx.scratch.folder(name))
            cached = False
        if group is None:  # read holding the lock: a forced rebuild elsewhere swaps the folder under it
            info = step.info()
    if group is not None:
        group.barrier()  # rank 0's folder is in place
        info = step.info()
    bundle = None
    if (step.path / "bundle").is_dir() and name in BUNDLE_LINKS and ctx.leader:
        bundle = link_latest(ctx.workdir, ctx.name + BUNDLE_LINKS[name], step.path / "bundle")
    log(f"[{name}] {'cache hit' if cached else 'done'}: {step.path}")
    return StepResult(name, step.key, step.path, info, cached, bundle)
