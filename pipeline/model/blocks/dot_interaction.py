"""Block `dot_interaction`: DLRM's pairwise dot products between the feature vectors and the dense
layer's output.

    G = [P·h + c ; e_1 … e_F]                    [F+1, dim]  (h projected to dim, then F vectors)
    out = [h, (G_a · G_b) for a < b]               [width + (F+1)F/2]  (the upper triangle, row-major)

reads  dense     h [width]
       fields    e [F, dim]
writes out       dense [width + (F+1)F/2]
weights  project_weight [dim, width], project_bias [dim] (torch.nn.Linear's start)

The products of two features' effects are what a sum of per-feature weights cannot express (the
synthetic data's planted interactions). Serving computes the pairs in one native pass per
candidate (native.dot_pairs) without building G.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from ...config import Strict
from .base import Block, DenseParts, IdSpace, Node, Port, Weight, as_array, init_linear

if TYPE_CHECKING:
    import torch


class DotInteractionSpec(Strict):
    """No options: the dim comes from the feature vectors it reads."""


@lru_cache(maxsize=16)
def _pair_index(vectors: int, device: str) -> torch.Tensor:
    """Positions of the upper triangle's pairs (a < b) in a flattened [vectors, vectors] Gram matrix."""
    import torch

    upper = torch.triu_indices(vectors, vectors, offset=1)
    return (upper[0] * vectors + upper[1]).to(device)


class DotInteraction(Block):
    kind = "dot_interaction"
    Spec = DotInteractionSpec
    reads = {"dense": "dense", "fields": "fields"}

    def outputs(self, spec: DotInteractionSpec, inputs: dict[str, Port], space: IdSpace) -> dict[str, Port]:
        (width,), (fields, _) = inputs["dense"].shape, inputs["fields"].shape
        return {"out": Port("dense", (width + (fields + 1) * fields // 2,))}

    def weights(self, spec: DotInteractionSpec, inputs: dict[str, Port], space: IdSpace) -> dict[str, Weight]:
        (width,), (_, dim) = inputs["dense"].shape, inputs["fields"].shape
        return {"project_weight": Weight((dim, width)), "project_bias": Weight((dim,))}

    def init(self, node: Node, weights: dict[str, torch.Tensor]) -> None:
        init_linear(weights["project_weight"], weights["project_bias"])

    def forward(
        self, node: Node, weights: dict[str, torch.Tensor], inputs: dict[str, Any], training: bool
    ) -> dict[str, torch.Tensor]:
        import torch
        from torch.nn import functional as F

        h, fields = inputs["dense"], inputs["fields"]
        projected = F.linear(h, weights["project_weight"], weights["project_bias"])
        vectors = torch.cat([projected.unsqueeze(1), fields], 1)
        gram = torch.bmm(vectors, vectors.transpose(1, 2)).flatten(1)
        pairs_index = _pair_index(vectors.shape[1], str(gram.device))
        # training: index_select's backward (index_add) is the cheap one; scoring: advanced indexing reads faster
        pairs = gram.index_select(1, pairs_index) if gram.requires_grad else gram[:, pairs_index]
        return {"out": torch.cat([h, pairs], 1)}

    def serving_weights(self, node: Node, weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {**weights, "project_weight": np.ascontiguousarray(weights["project_weight"].T)}

    def score(self, node: Node, weights: dict[str, np.ndarray], inputs: dict[str, Any]) -> dict[str, Any]:
        h, fields = as_array(inputs["dense"]), inputs["fields"]
        g0 = h @ weights["project_weight"] + weights["project_bias"]  # project_weight [width, dim] here
        from ... import native  # the kernels (and polars) load with the first request, not with the spec

        pairs = native.dot_pairs(np.ascontiguousarray(g0), fields.table, fields.ids, fields.scaled)
        return {"out": DenseParts([h, pairs])}


BLOCK = DotInteraction()
