"""Block `mlp`: hidden layers, each Linear -> [norm] -> activation -> [dropout].

    x_{k+1} = dropout(act(norm(W_k x_k + b_k)))        for each width in `layers`

reads  x         dense [in]
writes out       dense [layers[-1]] (x itself when `layers` is empty)
weights  per layer k: weight_k [width_k, in_k], bias_k [width_k] (torch.nn.Linear's start);
         norm "batch": norm_weight_k, norm_bias_k (1, 0), running_mean_k, running_var_k (0, 1; not
         trained, updated with momentum 0.1); norm "layer": norm_weight_k, norm_bias_k (1, 0);
         prelu_k [width_k] (PReLU only). Norms use eps 1e-5, as torch's do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field

from ...config import Activation, Strict, Width
from .base import (
    Block,
    IdSpace,
    Node,
    Port,
    Weight,
    activate_numpy,
    activate_torch,
    activation_weights,
    init_linear,
    matmul,
)

if TYPE_CHECKING:
    import torch

EPS = 1e-5
MOMENTUM = 0.1


class MLPSpec(Strict):
    layers: list[Width] = Field(
        default=[64, 32], max_length=64, description="Hidden widths after the sparse layer (each >= 1); [] for none."
    )
    activation: Activation = Field(default="relu", description="Hidden activation.")
    dropout: float = Field(default=0.0, ge=0, lt=1, description="Dropout after each hidden layer.")
    norm: Literal["none", "batch", "layer"] = Field(
        default="none", description="Normalization after each hidden layer."
    )


class MLP(Block):
    kind = "mlp"
    Spec = MLPSpec
    reads = {"x": "dense"}

    def outputs(self, spec: MLPSpec, inputs: dict[str, Port], space: IdSpace) -> dict[str, Port]:
        return {"out": Port("dense", (spec.layers[-1],) if spec.layers else inputs["x"].shape)}

    def weights(self, spec: MLPSpec, inputs: dict[str, Port], space: IdSpace) -> dict[str, Weight]:
        weights: dict[str, Weight] = {}
        (width,) = inputs["x"].shape
        for k, hidden in enumerate(spec.layers):
            weights |= {f"weight_{k}": Weight((hidden, width)), f"bias_{k}": Weight((hidden,))}
            if spec.norm != "none":
                weights |= {f"norm_weight_{k}": Weight((hidden,)), f"norm_bias_{k}": Weight((hidden,))}
            if spec.norm == "batch":
                weights |= {
                    f"running_mean_{k}": Weight((hidden,), trainable=False),
                    f"running_var_{k}": Weight((hidden,), trainable=False),
                }
            weights |= {f"{name}_{k}": w for name, w in activation_weights(spec.activation, hidden).items()}
            width = hidden
        return weights

    def init(self, node: Node, weights: dict[str, torch.Tensor]) -> None:
        for k in range(len(node.spec.layers)):
            init_linear(weights[f"weight_{k}"], weights[f"bias_{k}"])
            for name, value in (
                ("norm_weight", 1.0),
                ("norm_bias", 0.0),
                ("running_mean", 0.0),
                ("running_var", 1.0),
                ("prelu", 0.25),
            ):
                if f"{name}_{k}" in weights:
                    weights[f"{name}_{k}"].data.fill_(value)

    def forward(
        self, node: Node, weights: dict[str, torch.Tensor], inputs: dict[str, Any], training: bool
    ) -> dict[str, torch.Tensor]:
        from torch.nn import functional as F

        spec, x = node.spec, inputs["x"]
        for k, hidden in enumerate(spec.layers):
            x = F.linear(x, weights[f"weight_{k}"], weights[f"bias_{k}"])
            if spec.norm == "batch":
                x = F.batch_norm(
                    x,
                    weights[f"running_mean_{k}"],
                    weights[f"running_var_{k}"],
                    weights[f"norm_weight_{k}"],
                    weights[f"norm_bias_{k}"],
                    training,
                    MOMENTUM,
                    EPS,
                )
            elif spec.norm == "layer":
                x = F.layer_norm(x, (hidden,), weights[f"norm_weight_{k}"], weights[f"norm_bias_{k}"], EPS)
            x = activate_torch(spec.activation, x, weights.get(f"prelu_{k}"))
            if spec.dropout:
                x = F.dropout(x, spec.dropout, training)
        return {"out": x}

    def serving_weights(self, node: Node, weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {name: np.ascontiguousarray(w.T) if name.startswith("weight_") else w for name, w in weights.items()}

    def score(self, node: Node, weights: dict[str, np.ndarray], inputs: dict[str, Any]) -> dict[str, Any]:
        spec, x = node.spec, inputs["x"]
        for k in range(len(spec.layers)):
            x = matmul(x, weights[f"weight_{k}"]) + weights[f"bias_{k}"]  # weight_k [in, out] here
            if spec.norm == "batch":
                scale = weights[f"norm_weight_{k}"] / np.sqrt(weights[f"running_var_{k}"] + EPS)
                x = x * scale + (weights[f"norm_bias_{k}"] - weights[f"running_mean_{k}"] * scale)
            elif spec.norm == "layer":
                mean, var = x.mean(axis=1, keepdims=True), x.var(axis=1, keepdims=True)
                x = (x - mean) / np.sqrt(var + EPS) * weights[f"norm_weight_{k}"] + weights[f"norm_bias_{k}"]
            x = activate_numpy(spec.activation, x, weights.get(f"prelu_{k}"))
        return {"out": x}


BLOCK = MLP()
