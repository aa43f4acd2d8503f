"""The online scorer's float64 kernels (csrc/online.c), each with its numpy reference beside it.

Shapes: a request of n candidates with F entries each, ids int64 [n, F] and values float64 [n, F];
tables float64 [num_ids, width].
"""

from __future__ import annotations

import numpy as np

from .loader import library

TINY = 1e-12


def _contiguous(*arrays: np.ndarray) -> bool:
    return all(a.flags.c_contiguous for a in arrays)


def _check(status: int, num_ids: int) -> None:
    if status == -1:
        raise IndexError(f"an id outside [0, {num_ids}): the feature map and the weights disagree")
    if status != 0:
        raise MemoryError("the native scoring kernel could not allocate its buffer")


def sparse_sums_reference(ids, values, table, max_abs, id_bias, bias) -> tuple[np.ndarray, np.ndarray]:
    if ids.size and (ids.min() < 0 or ids.max() >= len(table)):
        raise IndexError(f"an id outside [0, {len(table)}): the feature map and the weights disagree")
    scaled = values / np.maximum(np.maximum(np.take(max_abs, ids), np.abs(values)), TINY)
    weights = scaled + np.take(id_bias, ids)
    sums = np.broadcast_to(bias, (len(ids), len(bias))).copy()
    for f in range(ids.shape[1]):  # summed in feature order, as the kernel does
        sums += np.take(table, ids[:, f], axis=0) * weights[:, f, None]
    return scaled, sums


def sparse_sums_rows(
    ids: np.ndarray,
    values: np.ndarray,
    offsets: np.ndarray,
    table: np.ndarray,
    max_abs: np.ndarray,
    id_bias: np.ndarray,
    bias: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """`sparse_sums` of ragged rows (id lists): ids int64 and values float64 [nnz], row offsets
    int64 [n + 1] -> scaled [nnz], sums [n, width]; each row's entries summed in order. numpy only
    (no kernel: the fixed-width kernel's reference formula, per entry)."""
    if ids.size and (ids.min() < 0 or ids.max() >= len(table)):
        raise IndexError(f"an id outside [0, {len(table)}): the feature map and the weights disagree")
    scaled = values / np.maximum(np.maximum(np.take(max_abs, ids), np.abs(values)), TINY)
    terms = np.take(table, ids, axis=0) * (scaled + np.take(id_bias, ids))[:, None]
    sums = np.broadcast_to(bias, (len(offsets) - 1, len(bias))).copy()
    filled = np.flatnonzero(np.diff(offsets) > 0)
    if len(filled):
        sums[filled] += np.add.reduceat(terms, offsets[filled], axis=0)
    return scaled, sums


def sparse_sums(
    ids: np.ndarray, values: np.ndarray, table: np.ndarray, max_abs: np.ndarray, id_bias: np.ndarray, bias: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The sparse linear layer before its activation, on rows of F entries:
    s = v / max(max_abs[id], |v|, 1e-12)  [n, F],   sums = Σ_f W[id] · (s + b[id]) + B  [n, width].
    ids int64, values float64 [n, F]; table [num_ids, width], max_abs and id_bias [num_ids], bias [width]."""
    lib = library()
    (n, fields), (num_ids, width) = ids.shape, table.shape
    if lib is None or not _contiguous(ids, values, table, max_abs, id_bias, bias):
        return sparse_sums_reference(ids, values, table, max_abs, id_bias, bias)
    scaled, out = np.empty((n, fields)), np.empty((n, width))
    _check(
        lib.snn_online_sparse(
            ids.ctypes.data,
            values.ctypes.data,
            n,
            fields,
            table.ctypes.data,
            num_ids,
            width,
            max_abs.ctypes.data,
            id_bias.ctypes.data,
            bias.ctypes.data,
            scaled.ctypes.data,
            out.ctypes.data,
        ),
        num_ids,
    )
    return scaled, out


def dot_pairs_reference(g0, table, ids, scaled) -> np.ndarray:
    n, fields = ids.shape
    if ids.size and (ids.min() < 0 or ids.max() >= len(table)):
        raise IndexError(f"an id outside [0, {len(table)}): the feature map and the weights disagree")
    g = np.empty((n, fields + 1, table.shape[1]))
    g[:, 0] = g0
    np.multiply(np.take(table, ids, axis=0), scaled[:, :, None], out=g[:, 1:])
    upper = np.triu_indices(fields + 1, 1)
    return np.matmul(g, g.transpose(0, 2, 1))[:, upper[0], upper[1]]


def dot_pairs(g0: np.ndarray, table: np.ndarray, ids: np.ndarray, scaled: np.ndarray) -> np.ndarray:
    """DLRM's dot interactions: G = [g0[r], V[id_1]·s_1, …, V[id_F]·s_F] per row [F+1, d], and the
    upper triangle of G Gᵀ, row-major (numpy's triu_indices(F + 1, 1)) -> [n, (F+1)F/2].
    g0 [n, d], table V [num_ids, d], ids int64 and scaled float64 [n, F]."""
    lib = library()
    (n, fields), (num_ids, dim) = ids.shape, table.shape
    if lib is None or not _contiguous(g0, table, ids, scaled):
        return dot_pairs_reference(g0, table, ids, scaled)
    out = np.empty((n, (fields + 1) * fields // 2))
    _check(
        lib.snn_online_pairs(
            g0.ctypes.data,
            table.ctypes.data,
            num_ids,
            dim,
            ids.ctypes.data,
            scaled.ctypes.data,
            n,
            fields,
            out.ctypes.data,
        ),
        num_ids,
    )
    return out
