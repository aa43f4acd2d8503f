"""Block `sparse_linear`: Twitter's sparse linear layer with online normalization.

    N_j = F( Σ_i W_ij · (v_i / max_abs_i + b_i) + B_j )          (DESIGN.md)

reads  entries   the batch's (id, value) entries; with `features`, only those features' entries
                 (a split net's sub-net over one feature group)
writes out       dense [width], N
       scaled    the entries' v_i / max_abs_i, for blocks that embed the same entries (every
                 feature's: only when the layer reads them all)
weights  weight [num_ids, width] and id_bias [num_ids, 1] (per id, trained row-wise), bias [width],
         max_abs [num_ids] (per id, the running max |v|, not trained), prelu [width] (PReLU only)

Training folds the whole batch into max_abs before normalizing (order-independent within a batch);
inference uses max(max_abs_i, |v|) with max_abs frozen, so v / max stays in [-1, 1]. The sum is one
fused `embedding_bag` with per-sample weights, never a dense matmul. Fast paths outside this file:
the float32 inference kernel and the float64 serving kernel (native/), each held equal to its
reference there.
"""

from __future__ import annotations

import functools
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from ...config import Activation, Strict, Width
from .base import (
    Block,
    Entries,
    EntryKind,
    IdSpace,
    Node,
    Port,
    RequestEntries,
    Weight,
    activate_numpy,
    activate_torch,
    activation_weights,
    init_prelu,
    select_entries,
    select_request,
)

if TYPE_CHECKING:
    import torch

TINY = 1e-12
INIT_SCALE = 0.1  # W ~ N(0, (0.1 / √width)²)


class SparseLinearSpec(Strict):
    """The sparse linear layer's output units and activation."""

    width: Width = Field(default=64, description="Output units N_j of the sparse linear layer.")
    activation: Activation = Field(default="relu", description="F in N_j = F(sum_i W_ij norm(v_i) + B_j).")
    features: list[str] | None = Field(
        default=None,
        min_length=1,
        description="The feature group this layer reads (a split net's sub-net); default every feature.",
    )


EVERY_KIND: tuple[EntryKind, ...] = ("id", "value", "list")


def scaled_values(max_abs: torch.Tensor, entries: Entries, training: bool) -> torch.Tensor:
    """v / max_abs per entry [nnz]. Training first folds the batch into max_abs (row-wise: one max per
    distinct id, max_abs[u] ← max(max_abs[u], max |v| of the batch's entries with id u); one-hot
    batches, every v = 1: max_abs[u] ← max(max_abs[u], 1) with no per-entry reduction). Inference:
    v / max(max_abs, |v|)."""
    import torch

    ids, values, batch = entries.index, entries.values, entries.rows
    with torch.no_grad():
        if batch is not None:
            scale = max_abs.index_select(0, batch.unique)
            if values is None:
                scale.clamp_min_(1.0)
                max_abs.index_copy_(0, batch.unique, scale)
                return scale.reciprocal_().index_select(0, batch.inverse)
            scale.scatter_reduce_(0, batch.inverse, values.abs(), reduce="amax")
            max_abs.index_copy_(0, batch.unique, scale)
            return values / scale.clamp_min(TINY).index_select(0, batch.inverse)
    if values is None:
        values = torch.ones(ids.shape[0], dtype=max_abs.dtype, device=ids.device)
    if training:
        with torch.no_grad():
            max_abs.scatter_reduce_(0, ids, values.abs(), reduce="amax")
        return values / max_abs.index_select(0, ids).clamp_min(TINY)
    return values / torch.maximum(max_abs.index_select(0, ids), values.abs()).clamp_min(TINY)


@functools.cache
def _native_sparse_linear() -> ModuleType:
    """native.sparse_linear, imported on first use (it imports torch)."""
    from ...native import sparse_linear

    return sparse_linear


class SparseLinear(Block):
    kind = "sparse_linear"
    Spec = SparseLinearSpec
    reads = {"entries": "entries"}

    def outputs(self, spec: SparseLinearSpec, inputs: dict[str, Port], space: IdSpace) -> dict[str, Port]:
        space.select(spec.features, EVERY_KIND)  # the group is checked against the data's features
        if spec.features is not None:
            return {"out": Port("dense", (spec.width,))}
        return {"out": Port("dense", (spec.width,)), "scaled": Port("scaled")}

    def weights(self, spec: SparseLinearSpec, inputs: dict[str, Port], space: IdSpace) -> dict[str, Weight]:
        return {
            "weight": Weight((space.num_ids, spec.width), per_id=True),
            "id_bias": Weight((space.num_ids, 1), per_id=True),
            "bias": Weight((spec.width,)),
            "max_abs": Weight((space.num_ids,), per_id=True, trainable=False),
            **activation_weights(spec.activation, spec.width),
        }

    def init(self, node: Node, weights: dict[str, torch.Tensor]) -> None:
        from torch import nn

        nn.init.normal_(weights["weight"], std=INIT_SCALE / node.spec.width**0.5)
        for name in ("id_bias", "bias", "max_abs"):
            weights[name].data.zero_()
        init_prelu(weights)

    def forward(
        self, node: Node, weights: dict[str, torch.Tensor], inputs: dict[str, Any], training: bool
    ) -> dict[str, torch.Tensor]:
        from ..rows import pool

        entries = self._entries(node, inputs)
        scaled = scaled_values(weights["max_abs"], entries, training)
        pooled = pool(
            weights["weight"], weights["id_bias"].view(-1), scaled, entries.index, entries.offsets, entries.rows
        )
        out = activate_torch(node.spec.activation, pooled + weights["bias"], weights.get("prelu"))
        return {"out": out} if node.spec.features is not None else {"out": out, "scaled": scaled}

    @staticmethod
    def _entries(node: Node, inputs: dict[str, Any]) -> Entries:
        if node.spec.features is None:
            return inputs["entries"]
        return select_entries(inputs["entries"], node.space, node.space.select(node.spec.features, EVERY_KIND))

    def infer(self, node: Node, weights: dict[str, torch.Tensor], inputs: dict[str, Any]) -> torch.Tensor:
        entries = self._entries(node, inputs)
        values = entries.values
        if values is None:
            import torch

            values = torch.ones(entries.index.shape[0], dtype=weights["weight"].dtype)
        pooled = _native_sparse_linear().sparse_linear_f32(
            entries.index,
            values,
            entries.offsets,
            weights["weight"],
            weights["max_abs"],
            weights["id_bias"],
            weights["bias"],
        )
        return activate_torch(node.spec.activation, pooled, weights.get("prelu"))

    def score(self, node: Node, weights: dict[str, np.ndarray], inputs: dict[str, Any]) -> dict[str, Any]:
        entries: RequestEntries = inputs["entries"]
        if node.spec.features is not None:
            entries = select_request(entries, node.space, node.space.select(node.spec.features, EVERY_KIND))
        tables = (weights["weight"], weights["max_abs"], weights["id_bias"].reshape(-1), weights["bias"])
        from ... import native  # the kernels (and polars) load with the first request, not with the spec

        if entries.offsets is None:
            scaled, sums = native.sparse_sums(entries.ids, entries.values, *tables)
        else:
            scaled, sums = native.sparse_sums_rows(entries.ids, entries.values, entries.offsets, *tables)
        out = activate_numpy(node.spec.activation, sums, weights.get("prelu"))
        return {"out": out} if node.spec.features is not None else {"out": out, "scaled": scaled}


BLOCK = SparseLinear()
