"""Block `logit`: the head, one linear unit: logit = w · x + b.

reads  x         dense [in]
writes out       dense [1]
weights  weight [1, in], bias [1] (torch.nn.Linear's start)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ...config import Strict
from .base import Block, IdSpace, Node, Port, Weight, init_linear, matmul

if TYPE_CHECKING:
    import torch


class LogitSpec(Strict):
    """No options."""


class Logit(Block):
    kind = "logit"
    Spec = LogitSpec
    reads = {"x": "dense"}

    def outputs(self, spec: LogitSpec, inputs: dict[str, Port], space: IdSpace) -> dict[str, Port]:
        return {"out": Port("dense", (1,))}

    def weights(self, spec: LogitSpec, inputs: dict[str, Port], space: IdSpace) -> dict[str, Weight]:
        (width,) = inputs["x"].shape
        return {"weight": Weight((1, width)), "bias": Weight((1,))}

    def init(self, node: Node, weights: dict[str, torch.Tensor]) -> None:
        init_linear(weights["weight"], weights["bias"])

    def forward(
        self, node: Node, weights: dict[str, torch.Tensor], inputs: dict[str, Any], training: bool
    ) -> dict[str, torch.Tensor]:
        from torch.nn import functional as F

        return {"out": F.linear(inputs["x"], weights["weight"], weights["bias"])}

    def serving_weights(self, node: Node, weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"weight": np.ascontiguousarray(weights["weight"].T), "bias": weights["bias"]}

    def score(self, node: Node, weights: dict[str, np.ndarray], inputs: dict[str, Any]) -> dict[str, Any]:
        return {"out": matmul(inputs["x"], weights["weight"]) + weights["bias"]}  # weight [in, 1] here


BLOCK = Logit()
