"""Encoded splits: CSR arrays written a chunk at a time, memory-mapped back, gathered in any order."""

import numpy as np

from snn.pipeline.data.encoded import EncodedSplit, SplitWriter, ids_dtype


def test_take_gathers_rows_in_any_order():
    split = EncodedSplit(
        np.array([0, 2, 3, 6]),
        np.arange(6),
        np.arange(6, dtype=np.float32),
        np.array([0, 1, 0], np.float32),
        np.ones(3, np.float32),
    )
    batch = split.take(np.array([2, 0]))
    assert batch.ids.tolist() == [3, 4, 5, 0, 1] and batch.offsets.tolist() == [0, 3]
    assert batch.labels.tolist() == [0, 0]


def test_one_hot_splits_store_int32_ids_and_no_values(tmp_path):
    assert ids_dtype(2**31 - 1) == np.int32 and ids_dtype(2**31) == np.int64
    ids = np.array([[1, 5], [2, 6], [1, 7]])
    values = np.array([[1.0, 1.0], [1.0, 1.0], [1.0, 0.25]], np.float32)
    labels, weights = np.array([1, 0, 1], np.float32), np.ones(3, np.float32)
    for one_hot in (True, False):
        folder = tmp_path / f"one_hot_{one_hot}"
        with SplitWriter(folder, ids_dtype(8), one_hot) as writer:
            writer.append(ids[:2], values[:2], np.full(2, 2), labels[:2], weights[:2])
            writer.append(ids[2:], values[2:], np.full(1, 2), labels[2:], weights[2:])
        split = EncodedSplit.load(folder)
        assert split.ids.dtype == np.int32 and (folder / "ids.bin").stat().st_size == ids.size * 4
        assert (folder / "values.bin").exists() != one_hot
        batch, head = split.take(np.array([2, 0])), split.slice(0, 2)
        assert batch.ids.tolist() == [1, 7, 1, 5] and head.ids.tolist() == [1, 5, 2, 6]
        expected = [1.0, 1.0, 1.0, 1.0] if one_hot else [1.0, 0.25, 1.0, 1.0]
        assert batch.values.tolist() == expected and head.values.tolist() == [1.0] * 4
        assert split.problem(8) is None and split.problem(7) is not None
