"""Block `embedding_bag`: SparseNN's embedding and pooling (E-P) layer, one vector per feature.

    e[r, k] = pool_{entries e of row r with feature f_k} ( V[id_e] · v_e )        [K, dim]

pool: sum, mean (the sum over the bag's entry count; an empty bag gives 0) or max (elementwise
over the bag; an empty bag gives 0). v_e is the entry's value: 1 for ids, the weight of a weighted
id list. The K features are `features` (default: every feature whose entries are ids or id lists;
raw numbers go to `dense_features`), in that order.

reads  entries   the batch's entries
writes out       fields [K, dim]
weights  weight [num_ids, dim] (per id, trained row-wise), V ~ N(0, 0.05²); each feature owns its
         own ids, so the rows of one feature form its own table

torch: when every row holds one entry per feature (no id lists), the bags are the entries
themselves, gathered as [B, K]; otherwise each entry's bag is found from its id's feature
(base.entry_slots) and pooled by index_add / scatter_reduce. numpy mirrors both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field

from ...config import Strict
from .base import (
    Block,
    Entries,
    EntryKind,
    FieldVectors,
    IdSpace,
    Node,
    Port,
    RequestEntries,
    Weight,
    entry_ids,
    entry_slots,
    init_normal,
    request_slots,
)

if TYPE_CHECKING:
    import torch

INIT_STD = 0.05
POOLED: tuple[EntryKind, ...] = ("id", "list")


class EmbeddingBagSpec(Strict):
    features: list[str] | None = Field(
        default=None,
        min_length=1,
        description="The features pooled, one vector each, in this order (default: every id and id-list feature).",
    )
    dim: int = Field(default=16, ge=1, le=1024, description="Size of each feature's vector (this table's width).")
    pooling: Literal["sum", "mean", "max"] = Field(
        default="sum", description="How the vectors of a row's entries of one feature are pooled."
    )


def pool_torch(vectors: torch.Tensor, bags: torch.Tensor, count: int, pooling: str) -> torch.Tensor:
    """vectors [m, dim] pooled into `count` bags by bag index [m] -> [count, dim] (empty bags 0)."""
    import torch

    out = vectors.new_zeros((count, vectors.shape[1]))
    if pooling == "max":
        return out.scatter_reduce(0, bags.unsqueeze(1).expand_as(vectors), vectors, "amax", include_self=False)
    out = out.index_add(0, bags, vectors)
    if pooling == "mean":
        out = out / torch.bincount(bags, minlength=count).clamp_min(1).unsqueeze(1).to(out.dtype)
    return out


def pool_numpy(vectors: np.ndarray, bags: np.ndarray, count: int, pooling: str) -> np.ndarray:
    """numpy twin of `pool_torch`."""
    if pooling == "max":
        out = np.full((count, vectors.shape[1]), -np.inf)
        np.maximum.at(out, bags, vectors)
        out[np.isneginf(out)] = 0.0
        return out
    out = np.zeros((count, vectors.shape[1]))
    np.add.at(out, bags, vectors)
    if pooling == "mean":
        out /= np.maximum(np.bincount(bags, minlength=count), 1)[:, None]
    return out


class EmbeddingBag(Block):
    kind = "embedding_bag"
    Spec = EmbeddingBagSpec
    reads = {"entries": "entries"}

    def outputs(self, spec: EmbeddingBagSpec, inputs: dict[str, Port], space: IdSpace) -> dict[str, Port]:
        return {"out": Port("fields", (len(space.select(spec.features, POOLED)), spec.dim))}

    def weights(self, spec: EmbeddingBagSpec, inputs: dict[str, Port], space: IdSpace) -> dict[str, Weight]:
        return {"weight": Weight((space.num_ids, spec.dim), per_id=True)}

    def init(self, node: Node, weights: dict[str, torch.Tensor]) -> None:
        init_normal(weights["weight"], INIT_STD)

    def forward(
        self, node: Node, weights: dict[str, torch.Tensor], inputs: dict[str, Any], training: bool
    ) -> dict[str, torch.Tensor]:
        entries: Entries = inputs["entries"]
        chosen, table, dim = node.space.select(node.spec.features, POOLED), weights["weight"], node.spec.dim
        batch = len(entries.offsets)
        if not node.space.ragged and entries.width == node.space.num_fields:
            index = entries.index.view(batch, -1)[:, list(chosen)]
            vectors = table.index_select(0, index.reshape(-1)).view(batch, len(chosen), dim)
            if entries.values is not None:
                vectors = vectors * entries.values.view(batch, -1)[:, list(chosen)].unsqueeze(2)
            return {"out": vectors}  # one entry per bag: its sum, mean and max are itself
        read, bags = entry_slots(entry_ids(entries), entries.offsets, entries.width, node.space, chosen)
        vectors = table.index_select(0, entries.index[read])
        if entries.values is not None:
            vectors = vectors * entries.values[read].unsqueeze(1)
        pooled = pool_torch(vectors, bags[read], batch * len(chosen), node.spec.pooling)
        return {"out": pooled.view(batch, len(chosen), dim)}

    def score(self, node: Node, weights: dict[str, np.ndarray], inputs: dict[str, Any]) -> dict[str, Any]:
        entries: RequestEntries = inputs["entries"]
        chosen, table = node.space.select(node.spec.features, POOLED), weights["weight"]
        if entries.offsets is None:
            columns = list(chosen)
            ids, values = (np.ascontiguousarray(a[:, columns]) for a in (entries.ids, entries.values))
            return {"out": FieldVectors(table, ids, values)}
        read, bags = request_slots(entries, node.space, chosen)
        vectors = np.take(table, entries.ids[read], axis=0) * entries.values[read, None]
        pooled = pool_numpy(vectors, bags[read], entries.count * len(chosen), node.spec.pooling)
        return {"out": FieldVectors.of(pooled.reshape(entries.count, len(chosen), node.spec.dim))}


BLOCK = EmbeddingBag()
