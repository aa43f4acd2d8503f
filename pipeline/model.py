"""The network: a sparse linear layer with online normalization, then an MLP.

Shapes: a batch is CSR — `ids` int64 [nnz], `values` float32 [nnz], `offsets` int64 [B]
(start of each row, the embedding_bag convention) — and the model returns logits [B].
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .rows import RowBatch, pool_rows
from .spec import Activation, ModelSpec

TINY = 1e-12


def activation(name: Activation, width: int) -> nn.Module:
    return {
        "relu": nn.ReLU,
        "sigmoid": nn.Sigmoid,
        "tanh": nn.Tanh,
        "none": nn.Identity,
    }.get(name, lambda: nn.PReLU(width))()


def normalize(values: torch.Tensor, max_abs: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """norm(v_i) = v_i / max_abs_i + b_i (max_abs_i = 0 only where every v_i seen was 0)."""
    return values / max_abs.clamp_min(TINY) + bias


class SparseLinear(nn.Module):
    """N_j = F( Σ_i W_ij · norm(v_i) + B_j ), norm(v_i) = v_i / max_abs_i + b_i (DESIGN.md).

    `max_abs` [num_ids] is a non-trainable running max of |v| per id; `id_bias` [num_ids, 1] is the
    trainable b_i telling presence from absence. Training (`forward_rows`) touches only the rows a
    batch uses, so a step costs O(batch ids), not O(num_ids); it folds the whole batch into max_abs
    before normalizing (order-independent within a batch). Eval uses max(max_abs_i, |v|) with the
    buffer frozen, so v / max stays in [-1, 1]. The sum is one fused `embedding_bag` with
    per-sample weights, never a dense matmul.
    """

    sparse_parameters = ("weight", "id_bias")  # trained row-wise (rows.py), not by the dense optimizer

    def __init__(self, num_ids: int, width: int, act: Activation = "relu"):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_ids, width))
        self.id_bias = nn.Parameter(torch.zeros(num_ids, 1))
        self.bias = nn.Parameter(torch.zeros(width))
        self.register_buffer("max_abs", torch.zeros(num_ids))
        self.act = activation(act, width)
        nn.init.normal_(self.weight, std=1.0 / width**0.5 * 0.1)

    def scale(self, ids: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """The per-entry max |v| used to normalize: [nnz]."""
        if self.training:
            with torch.no_grad():
                self.max_abs.scatter_reduce_(0, ids, values.abs(), reduce="amax")
            return self.max_abs.index_select(0, ids)
        return torch.maximum(self.max_abs.index_select(0, ids), values.abs())

    def forward(self, ids: torch.Tensor, values: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """Full-table path (scoring, and differentiable for tests): [nnz] x3 -> [B, width]."""
        id_bias = self.id_bias.view(-1).index_select(0, ids)
        weights = torch.addcdiv(id_bias, values, self.scale(ids, values).clamp_min(TINY))
        pooled = F.embedding_bag(ids, self.weight, offsets, mode="sum", per_sample_weights=weights)
        return self.act(pooled + self.bias)

    def gather_rows(self, unique: torch.Tensor) -> list[torch.Tensor]:
        """Copies of the touched rows of (weight [U, width], id_bias [U, 1]) as leaves that take gradients."""
        return [getattr(self, name).detach().index_select(0, unique).requires_grad_()
                for name in self.sparse_parameters]

    def forward_rows(self, rows: list[torch.Tensor], batch: RowBatch, values: torch.Tensor,
                     offsets: torch.Tensor) -> torch.Tensor:
        """Training path on the gathered rows (see rows.py): same output as `forward` in train mode.

        max_abs[u] ← max(max_abs[u], max |v| of the batch's entries with id u), then pooled with
        norm_e = v_e / max_abs[u_e] + b[u_e].
        """
        with torch.no_grad():
            scale = self.max_abs.index_select(0, batch.unique)
            scale.scatter_reduce_(0, batch.inverse, values.abs(), reduce="amax")
            self.max_abs.index_copy_(0, batch.unique, scale)
            scaled = values / scale.clamp_min(TINY)[batch.inverse]
        weight, id_bias = rows
        return self.act(pool_rows(weight, id_bias.view(-1), scaled, batch, offsets) + self.bias)


class SparseNN(nn.Module):
    """SparseLinear -> MLP (hidden layers, each Linear -> norm -> activation -> dropout) -> logit [B]."""

    def __init__(self, num_ids: int, spec: ModelSpec):
        super().__init__()
        self.sparse = SparseLinear(num_ids, spec.sparse_linear.width, spec.sparse_linear.activation)
        layers: list[nn.Module] = []
        width = spec.sparse_linear.width
        for hidden in spec.mlp.layers:
            layers.append(nn.Linear(width, hidden))
            if spec.mlp.norm == "batch":
                layers.append(nn.BatchNorm1d(hidden))
            elif spec.mlp.norm == "layer":
                layers.append(nn.LayerNorm(hidden))
            layers.append(activation(spec.mlp.activation, hidden))
            if spec.mlp.dropout:
                layers.append(nn.Dropout(spec.mlp.dropout))
            width = hidden
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, ids: torch.Tensor, values: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.sparse(ids, values, offsets)).squeeze(-1)

    def forward_rows(self, rows: list[torch.Tensor], batch: RowBatch, values: torch.Tensor,
                     offsets: torch.Tensor) -> torch.Tensor:
        """Training path: gathered rows (SparseLinear.gather_rows) -> logits [B]."""
        return self.mlp(self.sparse.forward_rows(rows, batch, values, offsets)).squeeze(-1)
