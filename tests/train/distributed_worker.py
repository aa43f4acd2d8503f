"""One rank of tests/train/test_distributed.py, started by torchrun: trains the test's model on its
share of every global batch (train_model with the group) and saves what it ends with, per rank.

    python -m torch.distributed.run --standalone --nproc-per-node 2 distributed_worker.py OUT DEVICE WHAT

DEVICE: cpu or cuda; WHAT: one-task, tasks (train_model) or prepare (the test's prepare cases into
OUT/ranks/<case>/, each rank noting the rows it encoded in OUT/encoded-<case>-rank<r>.json).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from snn.pipeline.train.distributed import Group
from snn.pipeline.train.loop import train_model

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.train.test_distributed import (
    CHUNK_ROWS,
    MODEL,
    SPEC,
    TASK_MODEL,
    TASKS,
    prepare_cases,
    splits,
    task_splits,
)


def main(out: Path, device: str, what: str) -> None:
    group = Group.from_env()
    assert group is not None and group.world == 2, "run under torchrun with two processes"
    spec = SPEC.model_copy(update={"device": device})
    if what == "prepare":
        group.start("cpu")
        prepare_on_ranks(out, group)
        group.stop()
        return
    if what == "tasks":
        train, validation = task_splits()
        result = train_model(TASK_MODEL, spec, train, validation, tasks=TASKS, group=group)
    else:
        train, validation, _ = splits()
        result = train_model(MODEL, spec, train, validation, group=group)
    np.savez(out / f"rank{group.rank}.npz", **result.state)
    summary = {"history": result.history, "bytes": result.exchanged_bytes_per_step, "best": result.best_epoch}
    (out / f"rank{group.rank}.json").write_text(json.dumps(summary))
    group.stop()


def prepare_on_ranks(out: Path, group: Group) -> None:
    """Every prepare case by the two ranks, rank 0 writing into OUT/ranks/<case>/."""
    from snn.pipeline.steps import prepare as step

    encode, case = step.encode_splits, ""

    def noting(*args, **kwargs):  # the rows this rank encodes
        totals = encode(*args, **kwargs)
        rows = {split: count for split, (count, _) in totals.items()}
        (out / f"encoded-{case}-rank{group.rank}.json").write_text(json.dumps(rows))
        return totals

    step.encode_splits = noting
    for case, (files, features, downsampling, slices) in prepare_cases(out).items():
        folder = out / "ranks" / case if group.leader else None
        if folder is not None:
            folder.mkdir(parents=True)
        info = step.prepare(files, features, downsampling, folder, CHUNK_ROWS, slices, group)
        if folder is not None:
            (folder / "info.json").write_text(json.dumps(info))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], sys.argv[3])
