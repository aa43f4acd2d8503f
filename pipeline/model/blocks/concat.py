"""Block `concat`: its inputs side by side, in the order the plan names them.

    out = [x_1, …, x_m]          [Σ w_i]   (a fields input [K, dim] enters flattened, K·dim wide)

reads  any number of dense or fields ports, named freely (e.g. {deep: mlp.out, bags: bags.out})
writes out       dense [Σ w_i]
no weights

DLRM's concatenation interaction (the embeddings beside the bottom MLP's output, instead of their
dot products) and split nets (003): feature groups, each with its own sub-net (a sparse linear
layer, E-P), concatenated into the deep net.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ...config import Strict
from .base import Block, FieldVectors, IdSpace, Node, Port, PortKind, as_array

if TYPE_CHECKING:
    import torch


class ConcatSpec(Strict):
    """No options: the inputs are the plan's."""


class Concat(Block):
    kind = "concat"
    Spec = ConcatSpec
    reads: ClassVar[dict[str, PortKind]] = {}
    accepts: ClassVar[tuple[PortKind, ...] | None] = ("dense", "fields")

    def outputs(self, spec: ConcatSpec, inputs: dict[str, Port], space: IdSpace) -> dict[str, Port]:
        return {"out": Port("dense", (sum(math.prod(port.shape) for port in inputs.values()),))}

    def forward(
        self, node: Node, weights: dict[str, torch.Tensor], inputs: dict[str, Any], training: bool
    ) -> dict[str, torch.Tensor]:
        import torch

        return {"out": torch.cat([inputs[name].flatten(1) for name in node.inputs], 1)}

    def score(self, node: Node, weights: dict[str, np.ndarray], inputs: dict[str, Any]) -> dict[str, Any]:
        parts = []
        for name in node.inputs:
            value = inputs[name]
            array = value.dense() if isinstance(value, FieldVectors) else as_array(value)
            parts.append(array.reshape(len(array), -1))
        return {"out": np.concatenate(parts, 1)}


BLOCK = Concat()
