"""SplitJoin: split folders written part by part and joined equal, byte for byte, the folder one
SplitWriter writes from all the rows (the many-process prepare's parts; tests/train/test_distributed.py
runs it across real ranks)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from snn.pipeline.data.encoded import EncodedSplit, SplitJoin, SplitWriter


def _chunks(rng, rows: int, ragged: bool, tasks: int, one_hot: bool, id_dtype):
    """Up to 4 chunks of (ids, values, lengths, labels, weights), row-major CSR, `rows` rows in all."""
    cuts = np.sort(rng.choice(np.arange(1, rows), min(3, rows - 1), replace=False)) if rows > 1 else []
    for count in np.diff(np.r_[0, cuts, rows]).astype(int):
        lengths = rng.integers(0, 5, count) if ragged else np.full(count, 4)
        nnz = int(lengths.sum())
        labels = rng.integers(0, 2, (count, tasks) if tasks > 1 else count).astype(np.float32)
        values = None if one_hot else rng.random(nnz, dtype=np.float32)
        ids = rng.integers(0, 1000, nnz).astype(id_dtype) + (1 << 33 if id_dtype == np.int64 else 0)
        yield ids, values, lengths, labels, rng.random(labels.shape)


def _write(folder: Path, chunks, one_hot: bool, id_dtype) -> None:
    with SplitWriter(folder, id_dtype, one_hot) as writer:
        for chunk in chunks:
            writer.append(*chunk)


@pytest.mark.parametrize(
    ("ragged", "tasks", "one_hot", "id_dtype", "sizes"),
    [
        (False, 1, True, np.int32, (300, 200, 1)),  # fixed width, one-hot, a part of one row
        (True, 2, False, np.int32, (250, 0, 120)),  # ragged, two tasks, an empty part between
        (True, 1, False, np.int64, (0, 90, 0)),  # int64 ids; only the middle part has rows
        (False, 2, False, np.int64, (1, 1)),
    ],
)
def test_parts_joined_are_the_one_writer_bytes(tmp_path, ragged, tasks, one_hot, id_dtype, sizes):
    rng = np.random.default_rng(7)
    per_part = [list(_chunks(rng, n, ragged, tasks, one_hot, id_dtype)) if n else [] for n in sizes]
    _write(tmp_path / "one", [chunk for chunks in per_part for chunk in chunks], one_hot, id_dtype)
    parts = [tmp_path / f"part{k}" for k in range(len(sizes))]
    for part, chunks in zip(parts, per_part):
        _write(part, chunks, one_hot, id_dtype)
    join = SplitJoin([json.loads((part / "meta.json").read_text()) for part in parts])
    join.reserve(tmp_path / "joined")
    for k in reversed(range(len(parts))):  # each part has its place, whatever the order they land in
        join.place(k, parts[k], tmp_path / "joined")
    join.finish(tmp_path / "joined")
    names = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "joined").iterdir())
    for name in names:
        assert (tmp_path / "joined" / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name
    joined = EncodedSplit.load(tmp_path / "joined")
    assert joined.rows == sum(sizes) and joined.problem((1 << 34) + 1000) is None
