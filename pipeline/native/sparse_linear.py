"""The sparse linear layer's fused float32 inference (csrc/sparse_linear.c), with its torch reference.

Shapes: a CSR batch, ids int64 [nnz], values float32 [nnz], offsets int64 [rows] (row starts);
weight [num_ids, width], max_abs and id_bias [num_ids] (or [num_ids, 1]), bias [width].
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from .loader import torch_library

TINY = 1e-12


def sparse_linear_reference(ids, values, offsets, weight, max_abs, id_bias, bias) -> torch.Tensor:
    scale = torch.maximum(max_abs.view(-1).index_select(0, ids), values.abs()).clamp_min(TINY)
    per_entry = values / scale + id_bias.view(-1).index_select(0, ids)
    return F.embedding_bag(ids, weight, offsets, mode="sum", per_sample_weights=per_entry) + bias


def sparse_linear_f32(
    ids: torch.Tensor,
    values: torch.Tensor,
    offsets: torch.Tensor,
    weight: torch.Tensor,
    max_abs: torch.Tensor,
    id_bias: torch.Tensor,
    bias: torch.Tensor,
) -> torch.Tensor:
    """Σ_i W[id_i] · (v_i / max(max_abs_i, |v_i|, 1e-12) + b_i) + B per CSR row: [rows, width], no
    autograd (inference). The kernel takes int64 ids and offsets and float32 floats, all contiguous
    on the CPU; other tensors (or no kernel) take the reference. Checks stay lean: at batch 1 they
    are a third of the call."""
    int64, float32 = torch.int64, torch.float32
    lib = torch_library()
    tensors = (ids, offsets, values, weight, max_abs, id_bias, bias)
    if (
        lib is None
        or not (
            ids.dtype is int64
            and offsets.dtype is int64
            and values.dtype is float32
            and weight.dtype is float32
            and max_abs.dtype is float32
            and id_bias.dtype is float32
            and bias.dtype is float32
        )
        or not all(t.is_cpu and t.is_contiguous() for t in tensors)
    ):
        return sparse_linear_reference(ids, values, offsets, weight, max_abs, id_bias, bias)
    rows, nnz, (num_ids, width) = offsets.shape[0], ids.shape[0], weight.shape
    out = torch.empty(rows, width, dtype=float32)
    status = lib.snn_sparse_linear_f32(
        ids.data_ptr(),
        values.data_ptr(),
        offsets.data_ptr(),
        rows,
        nnz,
        weight.data_ptr(),
        num_ids,
        width,
        max_abs.data_ptr(),
        id_bias.data_ptr(),
        bias.data_ptr(),
        out.data_ptr(),
        torch.get_num_threads(),
    )
    if status == -2:
        raise MemoryError("sparse linear forward: no memory for the partial sums of a split row")
    if status != 0:
        raise IndexError(
            f"sparse linear forward: an id outside [0, {num_ids}) or offsets that are not "
            f"non-decreasing row starts within [0, {nnz}]"
        )
    return out
