"""Row-wise 8-bit tables: the codes equal torch's byte prepacking (FBGEMM's format) code for code,
dequantized rows are within half a step of the float rows, and a bundle stores the codes and reads
back the same dequantized tables."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from snn.pipeline.store.quantize import MIN_WIDTH, dequantize_rows, pack, quantize_rows, unpack


@pytest.mark.parametrize("width", [8, 16, 64])
def test_codes_scales_and_lows_equal_torchs_byte_prepack(width):
    rng = np.random.default_rng(width)
    table = (rng.normal(size=(500, width)) * rng.uniform(0.01, 3, (500, 1))).astype(np.float32)
    table[3] = 0.7  # a constant row: scale 0
    codes, scale, low = quantize_rows(table)
    reference = torch.ops.quantized.embedding_bag_byte_prepack(torch.from_numpy(table)).numpy()
    np.testing.assert_array_equal(scale, reference[:, width : width + 4].copy().view(np.float32).ravel())
    np.testing.assert_array_equal(low, reference[:, width + 4 :].copy().view(np.float32).ravel())
    differ = codes.astype(int) - reference[:, :width].astype(int)
    assert np.abs(differ).max() <= 1 and (differ != 0).mean() < 1e-3  # ties at .5 may round either way
    back = dequantize_rows(codes, scale, low)
    assert np.all(np.abs(back - table) <= scale[:, None] / 2 + 1e-6)
    unpacked = torch.ops.quantized.embedding_bag_byte_unpack(torch.from_numpy(reference)).numpy()
    assert np.abs(back - unpacked).max() <= scale.max() + 1e-6
    assert codes.nbytes + scale.nbytes + low.nbytes == 500 * (width + 8)


def test_only_per_id_tables_at_least_min_width_are_packed():
    weights = {
        "sparse.weight": np.ones((10, 64), np.float32),
        "sparse.id_bias": np.ones((10, 1), np.float32),
        "bags.weight": np.ones((10, MIN_WIDTH - 1), np.float32),
        "mlp.weight_0": np.ones((64, 64), np.float32),
    }
    packed = pack(weights, {"sparse.weight", "sparse.id_bias", "bags.weight"})
    assert set(packed) == {"sparse.weight"}
    assert set(unpack(weights, packed)) == set(weights)


def test_a_damaged_8_bit_table_is_refused():
    """Scales of another type, or a table stored twice (codes and numbers), are refused naming the
    table (Bundle.load reports them as a corrupted bundle)."""
    from snn.pipeline.store.bundle import unpacked

    codes, scale, low = quantize_rows(np.random.default_rng(0).normal(size=(6, 16)).astype(np.float32))
    stored = {"t.q8": codes, "t.scale": scale.astype(np.int64), "t.low": low}
    with pytest.raises(ValueError, match="scales int64"):
        unpacked(dict(stored))
    stored["t.scale"], stored["t"] = scale, np.zeros((6, 16), np.float32)
    with pytest.raises(ValueError, match="both as 8-bit codes and as numbers"):
        unpacked(dict(stored))
