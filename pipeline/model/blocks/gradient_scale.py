"""Block `gradient_scale`: the identity forward, its gradient scaled on the way back.

    out = x                      (forward, exactly: the same tensor's values)
    ∂L/∂x = scale · ∂L/∂out      (backward)

A task's tower reads the shared layers through one (multi-task `gradient_scale`): 0 leaves the
shared layers untouched by that task's loss (its gradient stops here, exactly), 1 is a plain
connection, in between damps how much the task moves them. Scoring is the identity.

reads  x         dense [in]
writes out       dense [in]
no weights
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from pydantic import Field

from ...config import Strict
from .base import Block, IdSpace, Node, Port, Weight

if TYPE_CHECKING:
    import torch


class GradientScaleSpec(Strict):
    scale: float = Field(ge=0, le=1, description="Factor on the gradient flowing back through (0: none, 1: all).")


def scaled_gradient(x: torch.Tensor, scale: float) -> torch.Tensor:
    """x itself forward; the gradient times `scale` backward (0: detached, 1: x unchanged)."""
    if scale == 1.0:
        return x
    if scale == 0.0:
        return x.detach()
    return _scale_function().apply(x, scale)


@functools.cache
def _scale_function() -> Any:
    """The autograd function of `scaled_gradient` (built once, on first use: torch loads lazily)."""
    import torch

    class ScaleGradient(torch.autograd.Function):
        @staticmethod
        def forward(ctx, value, scale):  # torch's Function protocol
            ctx.scale = scale
            return value.view_as(value)

        @staticmethod
        def backward(ctx, grad):
            return grad * ctx.scale, None

    return ScaleGradient


class GradientScale(Block):
    kind = "gradient_scale"
    Spec = GradientScaleSpec
    reads = {"x": "dense"}

    def outputs(self, spec: GradientScaleSpec, inputs: dict[str, Port], space: IdSpace) -> dict[str, Port]:
        return {"out": inputs["x"]}

    def weights(self, spec: GradientScaleSpec, inputs: dict[str, Port], space: IdSpace) -> dict[str, Weight]:
        return {}

    def init(self, node: Node, weights: dict[str, torch.Tensor]) -> None:
        return None

    def forward(
        self, node: Node, weights: dict[str, torch.Tensor], inputs: dict[str, Any], training: bool
    ) -> dict[str, torch.Tensor]:
        return {"out": scaled_gradient(inputs["x"], node.spec.scale)}

    def score(self, node: Node, weights: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
        return {"out": inputs["x"]}


BLOCK = GradientScale()
