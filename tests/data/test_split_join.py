"""SplitJoin: split folders written part by part and joined equal, byte for byte, the folder one
SplitWriter writes from all the rows (the many-process prepare's parts; tests/train/test_distributed.py
runs it across real ranks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from snn.pipeline.data.encoded import EncodedSplit, SplitJoin, SplitWriter


def _chunks(rng, rows: int, ragged: bool, tasks: int, one_hot: bool):
    """Chunks of (ids, values, lengths, labels, weights), row-major CSR."""
    for count in np.diff(np.r_[0, np.sort(rng.choice(np.arange(1, rows), 3, replace=False)), rows]):
        lengths = rng.integers(0, 5, count) if ragged else np.full(count, 4)
        nnz = int(lengths.sum())
        labels = rng.integers(0, 2, (count, tasks) if tasks > 1 else count).astype(np.float32)
        values = None if one_hot else rng.random(nnz, dtype=np.float32)
        yield rng.integers(0, 1000, nnz).astype(np.int32), values, lengths, labels, rng.random(labels.shape)


def _write(folder: Path, chunks, one_hot: bool) -> None:
    with SplitWriter(folder, np.int32, one_hot) as writer:
        for chunk in chunks:
            writer.append(*chunk)


@pytest.mark.parametrize(
    ("ragged", "tasks", "one_hot", "sizes"),
    [(False, 1, True, (300, 200, 1)), (True, 2, False, (250, 0, 120)), (True, 1, False, (0, 90, 0))],
)
def test_parts_joined_are_the_one_writer_bytes(tmp_path, ragged, tasks, one_hot, sizes):
    rng = np.random.default_rng(7)
    per_part = [list(_chunks(rng, n, ragged, tasks, one_hot)) if n > 1 else [] for n in sizes]
    _write(tmp_path / "one", [chunk for chunks in per_part for chunk in chunks], one_hot)
    parts = [tmp_path / f"part{k}" for k in range(len(sizes))]
    for part, chunks in zip(parts, per_part):
        _write(part, chunks, one_hot)
    join = SplitJoin.of(parts)
    join.reserve(tmp_path / "joined")
    for k in reversed(range(len(parts))):  # each part has its place, whatever the order they land in
        join.place(k, parts[k], tmp_path / "joined")
    join.finish(tmp_path / "joined")
    names = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "joined").iterdir())
    for name in names:
        assert (tmp_path / "joined" / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name
    joined = EncodedSplit.load(tmp_path / "joined")
    assert joined.rows == sum(len(chunk[2]) for chunks in per_part for chunk in chunks)
    assert joined.problem(1000) is None
