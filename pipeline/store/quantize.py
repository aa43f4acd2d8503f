"""Row-wise 8-bit tables (SparseNN's row-wise quantization, FBGEMM's "byte" embedding format): each
row of a per-id table [N, D] is stored as D uint8 codes and its own float32 scale and low end.

    low_r = min_j W[r, j] ;  scale_r = (max_j W[r, j] − low_r) / 255
    q[r, j] = round((W[r, j] − low_r) / scale_r)        (0 where scale_r = 0)
    W'[r, j] = low_r + scale_r · q[r, j]                 |W' − W| ≤ scale_r / 2

A 64-wide row takes 64 + 8 bytes instead of 256. The reference beside it is torch's
`quantized.embedding_bag_byte_prepack`, which tests hold equal to `quantize_rows` code for code.
Bundles store the codes (weights.npz: "<name>.q8", "<name>.scale", "<name>.low") and both scorers
read the dequantized table, so offline and online see the same numbers.
"""

from __future__ import annotations

import numpy as np

MIN_WIDTH = 8  # narrower rows gain at most 2x: they stay float32
SUFFIXES = (".q8", ".scale", ".low")


def quantize_rows(table: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """table float [N, D] -> (codes uint8 [N, D], scale float32 [N], low float32 [N])."""
    table = np.asarray(table, dtype=np.float32)
    low = table.min(axis=1)
    scale = (table.max(axis=1) - low) / np.float32(255)
    safe = np.where(scale > 0, scale, np.float32(1))
    codes = np.rint((table - low[:, None]) / safe[:, None])
    return np.clip(codes, 0, 255).astype(np.uint8), scale.astype(np.float32), low.astype(np.float32)


def dequantize_rows(codes: np.ndarray, scale: np.ndarray, low: np.ndarray) -> np.ndarray:
    """The table the codes stand for, float32 [N, D]."""
    return (low[:, None] + scale[:, None] * codes.astype(np.float32)).astype(np.float32)


def quantizable(name: str, array: np.ndarray, per_id_trainable: set[str]) -> bool:
    """A per-id trained table at least MIN_WIDTH wide."""
    return name in per_id_trainable and array.ndim == 2 and array.shape[1] >= MIN_WIDTH


def pack(weights: dict[str, np.ndarray], per_id_trainable: set[str]) -> dict[str, tuple[np.ndarray, ...]]:
    """The quantizable tables of `weights`, each as (codes, scale, low)."""
    return {name: quantize_rows(a) for name, a in weights.items() if quantizable(name, a, per_id_trainable)}


def unpack(weights: dict[str, np.ndarray], packed: dict[str, tuple[np.ndarray, ...]]) -> dict[str, np.ndarray]:
    """`weights` with each packed table replaced by its dequantized form."""
    return {**weights, **{name: dequantize_rows(*parts) for name, parts in packed.items()}}
