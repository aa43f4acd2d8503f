"""The network: a sparse linear layer with online normalization, optional DLRM dot interactions, an MLP.

Shapes: a batch is CSR — `ids` int64 [nnz], `values` float32 [nnz], `offsets` int64 [B]
(start of each row, the embedding_bag convention) — and the model returns logits [B]. Every
feature emits exactly one entry per row, in feature order, so nnz = B·F for F features.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from . import native
from .bundle import PER_ID_ARRAYS
from .encoded import uniform_width
from .rows import IdBitmap, RowBatch, deduplicate, gather_rows, pool_rows
from .spec import Activation, ModelSpec

TINY = 1e-12
NARROW_ROWS = 4  # per-id tables at most this wide train from scattered batches (no sort) ...
BITMAP_IDS_PER_ENTRY = 16  # ... when scanning the id space's bitmap costs less than sorting the batch


def activation(name: Activation, width: int) -> nn.Module:
    return {
        "relu": nn.ReLU,
        "sigmoid": nn.Sigmoid,
        "tanh": nn.Tanh,
        "none": nn.Identity,
    }.get(name, lambda: nn.PReLU(width))()


def uniform_fields(ids: torch.Tensor, offsets: torch.Tensor) -> int | None:
    """F when every row of a CSR batch on the CPU (row starts `offsets` [B], `ids` [nnz]) has the
    same F > 0 entries, else None: encoded.uniform_width of the row bounds."""
    if not offsets.is_cpu or offsets.shape[0] == 0:
        return None
    return uniform_width(np.append(offsets.numpy(), ids.shape[0])) or None


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

    def scaled(self, ids: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """v / max_abs per entry [nnz] (in train mode, after folding the batch into max_abs)."""
        return values / self.scale(ids, values).clamp_min(TINY)

    def pool(self, ids: torch.Tensor, scaled: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """F(Σ_i W_i · (scaled_i + b_i) + B) over each row: [B, width]."""
        weights = scaled + self.id_bias.view(-1).index_select(0, ids)
        pooled = F.embedding_bag(ids, self.weight, offsets, mode="sum", per_sample_weights=weights)
        return self.act(pooled + self.bias)

    def forward(self, ids: torch.Tensor, values: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """Full-table path (scoring, and differentiable for tests): [nnz] x3 -> [B, width]. Eval
        without autograd on the CPU runs a fused native kernel (native.py) where it can: the float32
        CSR kernel, or in float64 (batch scoring) on rows of equal length the online scorer's."""
        if not (self.training or torch.is_grad_enabled()):
            if values.dtype is torch.float64:
                fields = uniform_fields(ids, offsets)
                fused = None if fields is None else self.rows_f64(ids, values, fields)
                if fused is not None:
                    return self.act(fused[1])
            else:
                params = self._parameters  # the dicts, not Module.__getattr__: 2 µs of a 10 µs batch-1 call
                pooled = native.sparse_linear(ids, values, offsets, params["weight"], self._buffers["max_abs"],
                                              params["id_bias"], params["bias"])
                if pooled is not None:
                    return self.act(pooled)
        return self.pool(ids, self.scaled(ids, values), offsets)

    def rows_f64(self, ids: torch.Tensor, values: torch.Tensor, fields: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Float64 inference on rows of `fields` entries (native.sparse_rows_f64): (scaled [nnz], the
        sums before the activation [B, width]), or None where the kernel cannot run."""
        params = self._parameters
        return native.sparse_rows_f64(ids, values, fields, params["weight"], self._buffers["max_abs"],
                                      params["id_bias"], params["bias"])

    def scaled_rows(self, batch: RowBatch, values: torch.Tensor | None) -> torch.Tensor:
        """Training path's v / max_abs [nnz]: max_abs[u] ← max(max_abs[u], max |v| of the batch's
        entries with id u), then each entry divided by its id's max. values None: a one-hot batch,
        every v = 1, so max_abs[u] ← max(max_abs[u], 1) with no per-entry reduction."""
        with torch.no_grad():
            scale = self.max_abs.index_select(0, batch.unique)
            if values is None:
                scale.clamp_min_(1.0)
                self.max_abs.index_copy_(0, batch.unique, scale)
                return scale.reciprocal_().index_select(0, batch.inverse)
            scale.scatter_reduce_(0, batch.inverse, values.abs(), reduce="amax")
            self.max_abs.index_copy_(0, batch.unique, scale)
            return values / scale.clamp_min(TINY).index_select(0, batch.inverse)

    def pool_rows(self, rows: list[torch.Tensor], batch: RowBatch, scaled: torch.Tensor,
                  offsets: torch.Tensor) -> torch.Tensor:
        """`pool` on the gathered rows (weight [U, width], id_bias [U, 1]; see rows.py): [B, width]."""
        weight, id_bias = rows
        return self.act(pool_rows(weight, id_bias.view(-1), scaled, batch, offsets) + self.bias)

    def forward_rows(self, rows: list[torch.Tensor], batch: RowBatch, values: torch.Tensor | None,
                     offsets: torch.Tensor) -> torch.Tensor:
        """Training path on the gathered rows: same output as `forward` in train mode (values None:
        one-hot, every value 1)."""
        return self.pool_rows(rows, batch, self.scaled_rows(batch, values), offsets)


class FieldEmbeddings(nn.Module):
    """One dim-d vector per feature and row: e[r, f] = V[id_rf] · s_rf, [B, F, d].

    V [num_ids, d] is a per-id table (trained row-wise like the sparse layer's); s = v / max_abs is
    the sparse layer's normalized value, 1 for one-hot (binned or categorical) features.
    """

    sparse_parameters = ("weight",)

    def __init__(self, num_ids: int, num_fields: int, dim: int, init_std: float = 0.05):
        super().__init__()
        self.num_fields, self.dim = num_fields, dim
        self.weight = nn.Parameter(torch.randn(num_ids, dim) * init_std)

    def _shape(self, vectors: torch.Tensor, scaled: torch.Tensor) -> torch.Tensor:
        if vectors.shape[0] % self.num_fields:
            raise ValueError(f"{vectors.shape[0]} entries do not split into rows of {self.num_fields} features")
        return (vectors * scaled.unsqueeze(1)).view(-1, self.num_fields, self.dim)

    def forward(self, ids: torch.Tensor, scaled: torch.Tensor) -> torch.Tensor:
        """ids, scaled [B·F] (row-major, feature order) -> [B, F, d]."""
        return self._shape(self.weight.index_select(0, ids), scaled)

    def forward_rows(self, rows: torch.Tensor, batch: RowBatch, scaled: torch.Tensor) -> torch.Tensor:
        """The same on gathered rows [U, d]: the backward scatter-adds into the U rows only."""
        return self._shape(rows.index_select(0, batch.inverse), scaled)


class DotInteraction(nn.Module):
    """DLRM's interaction: every pairwise dot product of n vectors, z = (g_i · g_j)_{i<j}.

    [B, n, d] -> [B, n(n−1)/2], read off the upper triangle of the Gram matrix G Gᵀ (one bmm).
    """

    def __init__(self, n: int):
        super().__init__()
        upper = torch.triu_indices(n, n, offset=1)
        self.register_buffer("pairs", upper[0] * n + upper[1], persistent=False)

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        gram = torch.bmm(vectors, vectors.transpose(1, 2))
        if gram.requires_grad:  # training: index_select's backward (index_add) is the cheap one
            return gram.flatten(1).index_select(1, self.pairs)
        return gram.flatten(1)[:, self.pairs]  # scoring: advanced indexing reads ~3x faster


class Interactions(nn.Module):
    """DLRM-style dot interactions on top of the sparse layer's output h [B, width]:

    G = [P·h + c ; e_1 … e_F]  [B, F+1, d]  (h projected to d, then the F field embeddings)
    x = [h, (G_i · G_j)_{i<j}]  [B, width + (F+1)F/2]  — the MLP's input.
    """

    def __init__(self, num_ids: int, num_fields: int, width: int, dim: int):
        super().__init__()
        self.embedding = FieldEmbeddings(num_ids, num_fields, dim)
        self.project = nn.Linear(width, dim)
        self.dot = DotInteraction(num_fields + 1)
        self.width = width + (num_fields + 1) * num_fields // 2

    def forward(self, h: torch.Tensor, embedded: torch.Tensor) -> torch.Tensor:
        vectors = torch.cat([self.project(h).unsqueeze(1), embedded], 1)
        return torch.cat([h, self.dot(vectors)], 1)


class SparseNN(nn.Module):
    """SparseLinear -> [Interactions] -> MLP (hidden layers, each Linear -> norm -> activation -> dropout) -> logit [B]."""

    def __init__(self, num_ids: int, num_fields: int, spec: ModelSpec):
        super().__init__()
        self.sparse = SparseLinear(num_ids, spec.sparse_linear.width, spec.sparse_linear.activation)
        self._bitmap: IdBitmap | None = None
        width = spec.sparse_linear.width
        self.interactions = None
        if spec.interactions is not None:
            self.interactions = Interactions(num_ids, num_fields, width, spec.interactions.dim)
            width = self.interactions.width
        layers: list[nn.Module] = []
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

    @staticmethod
    def state_shapes(num_ids: int, num_fields: int, spec: ModelSpec) -> dict[str, tuple[int, ...]]:
        """The state dict's names and shapes, nothing allocated at full size: the model is built over
        a one-id space, then each per-id array (bundle.PER_ID_ARRAYS) gets num_ids rows."""
        small = SparseNN(1, num_fields, spec).state_dict()
        return {name: (num_ids, *t.shape[1:]) if name in PER_ID_ARRAYS else tuple(t.shape) for name, t in small.items()}

    def row_tables(self) -> list[nn.Parameter]:
        """The per-id tables, trained row-wise (rows.py) rather than by the dense optimizer."""
        modules = [self.sparse] + ([self.interactions.embedding] if self.interactions is not None else [])
        return [getattr(m, name) for m in modules for name in m.sparse_parameters]

    def deduplicate(self, ids: torch.Tensor, offsets: torch.Tensor, width: int | None = None) -> RowBatch:
        """The batch's id structure for row-wise training: grouped by id (one sort) when any per-id
        table is wider than NARROW_ROWS or the id space exceeds BITMAP_IDS_PER_ENTRY x nnz, else
        scattered through a bitmap of the id space (no sort; see rows.deduplicate). The bitmap is
        scratch, built on first use, not part of the state."""
        num_ids = self.sparse.weight.shape[0]
        if max(table.shape[1] for table in self.row_tables()) > NARROW_ROWS or num_ids > BITMAP_IDS_PER_ENTRY * len(ids):
            return deduplicate(ids, offsets, num_ids, width)
        if self._bitmap is None or self._bitmap.seen.device != ids.device:
            self._bitmap = IdBitmap(num_ids, ids.device)
        return deduplicate(ids, offsets, num_ids, width, self._bitmap)

    def gather_rows(self, unique: torch.Tensor) -> list[torch.Tensor]:
        """Copies of rows `unique` [U] of every per-id table, as leaves that take gradients."""
        return gather_rows(self.row_tables(), unique)

    def forward(self, ids: torch.Tensor, values: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """Full-table path -> logits [B]. Inference on the CPU runs native kernels where they apply:
        the sparse layer's float32 CSR kernel, or in float64 (batch scoring) the online scorer's
        kernels for the sparse sums and the dot interactions; elsewhere torch, the interactions
        reusing the sparse layer's scaled values."""
        if self.interactions is None:
            return self.mlp(self.sparse(ids, values, offsets)).squeeze(-1)
        if not (self.training or torch.is_grad_enabled()):
            inputs = self._mlp_inputs_f64(ids, values, offsets)
            if inputs is not None:
                return self.mlp(inputs).squeeze(-1)
        scaled = self.sparse.scaled(ids, values)
        h = self.sparse.pool(ids, scaled, offsets)
        h = self.interactions(h, self.interactions.embedding(ids, scaled))
        return self.mlp(h).squeeze(-1)

    def _mlp_inputs_f64(self, ids: torch.Tensor, values: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor | None:
        """Float64 inference (batch scoring) through the online scorer's kernels: the sparse sums and
        the dot interactions in one native pass each (csrc/online.c) -> the MLP's input [B, width +
        pairs], or None where they cannot run (other dtypes or devices, no kernels)."""
        fields = self.interactions.embedding.num_fields
        if values.dtype is not torch.float64 or uniform_fields(ids, offsets) != fields:
            return None
        fused = self.sparse.rows_f64(ids, values, fields)
        if fused is None:
            return None
        scaled, pre = fused
        h = self.sparse.act(pre)
        pairs = native.dot_pairs_f64(self.interactions.project(h), self.interactions.embedding.weight, ids, scaled)
        return None if pairs is None else torch.cat([h, pairs], 1)

    def forward_rows(self, rows: list[torch.Tensor], batch: RowBatch, values: torch.Tensor | None,
                     offsets: torch.Tensor) -> torch.Tensor:
        """Training path: gathered rows (`gather_rows`) -> logits [B], equal to `forward` in train mode
        (values None: a one-hot batch, every value 1)."""
        scaled = self.sparse.scaled_rows(batch, values)
        h = self.sparse.pool_rows(rows[:2], batch, scaled, offsets)
        if self.interactions is not None:
            h = self.interactions(h, self.interactions.embedding.forward_rows(rows[2], batch, scaled))
        return self.mlp(h).squeeze(-1)
