"""Block `field_embedding`: a vector per feature and row, e[r, f] = V[id_rf] · s_rf.

reads  entries   the batch's entries, one per feature and row, in feature order
       scaled    each entry's scale s (the sparse linear layer's v / max_abs: 1 for one-hot entries)
writes out       fields [F, dim]
weights  weight [num_ids, dim] (per id, trained row-wise), V ~ N(0, 0.05²)

The vectors feed DLRM's dot interactions (dot_interaction.py). Row-wise training gathers the
batch's distinct rows; index_select's backward then adds into those rows only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from ...config import Strict
from .base import Block, Entries, FieldVectors, IdSpace, Node, Port, RequestEntries, Weight, init_normal

if TYPE_CHECKING:
    import torch

INIT_STD = 0.05


class FieldEmbeddingSpec(Strict):
    dim: int = Field(default=16, ge=1, le=256, description="Size of each feature's vector.")


class FieldEmbedding(Block):
    kind = "field_embedding"
    Spec = FieldEmbeddingSpec
    reads = {"entries": "entries", "scaled": "scaled"}

    def outputs(self, spec: FieldEmbeddingSpec, inputs: dict[str, Port], space: IdSpace) -> dict[str, Port]:
        if space.ragged:
            raise ValueError("field_embedding takes one entry per feature; with id lists, use embedding_bag")
        return {"out": Port("fields", (space.num_fields, spec.dim))}

    def weights(self, spec: FieldEmbeddingSpec, inputs: dict[str, Port], space: IdSpace) -> dict[str, Weight]:
        return {"weight": Weight((space.num_ids, spec.dim), per_id=True)}

    def init(self, node: Node, weights: dict[str, torch.Tensor]) -> None:
        init_normal(weights["weight"], INIT_STD)

    def forward(
        self, node: Node, weights: dict[str, torch.Tensor], inputs: dict[str, Any], training: bool
    ) -> dict[str, torch.Tensor]:
        entries: Entries = inputs["entries"]
        fields = node.space.num_fields
        vectors = weights["weight"].index_select(0, entries.index)
        if vectors.shape[0] % fields:
            raise ValueError(f"{vectors.shape[0]} entries do not split into rows of {fields} features")
        return {"out": (vectors * inputs["scaled"].unsqueeze(1)).view(-1, fields, node.spec.dim)}

    def score(self, node: Node, weights: dict[str, np.ndarray], inputs: dict[str, Any]) -> dict[str, Any]:
        entries: RequestEntries = inputs["entries"]
        return {"out": FieldVectors(weights["weight"], entries.ids, inputs["scaled"])}


BLOCK = FieldEmbedding()
