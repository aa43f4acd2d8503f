"""Row-wise training of the per-id tables: deduplicate a batch's ids, pool, update touched rows only.

A batch of nnz entries touches U <= nnz distinct ids. Training works on those U rows alone:

1. `deduplicate` sorts the ids once (stable) and derives the distinct ids, each entry's position
   among them, and the entries grouped by id (the transposed batch) — or, for narrow tables over a
   small id space, takes the distinct ids from a bitmap (`IdBitmap`) with no sort at all;
2. the rows are gathered into small leaf tensors [U, D] that take part in autograd;
3. `pool` pools them with one `embedding_bag`, and its backward is two more `embedding_bag`
   calls over the transposed batch (or per-entry scatter-adds for narrow rows) — no sparse-gradient
   coalescing;
4. the row optimizers (train/optimizers.py) update the U rows and their optimizer state in place,
   exactly as torch's `SparseAdam` and `Adagrad` would from a sparse gradient, never built.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch.nn import functional as F


@dataclass
class RowBatch:
    """The id structure of one CSR batch (nnz entries in B rows, U distinct ids).

    unique       int64 [U]    distinct ids, ascending
    inverse      int64 [nnz]  unique[inverse[e]] == ids[e]
    row_of_entry int64 [nnz]  batch row of entry e
    and, for a grouped batch (the transposed batch; None when scattered):
    order        int64 [nnz]  entries sorted by id (stable): ids[order] is ascending
    entry_rows   int64 [nnz]  batch row of entry order[k]
    starts       int64 [U]    where each distinct id's run of entries begins in `order`
    """

    unique: torch.Tensor
    inverse: torch.Tensor
    row_of_entry: torch.Tensor
    order: torch.Tensor | None = None
    entry_rows: torch.Tensor | None = None
    starts: torch.Tensor | None = None


def rows_of_entries(offsets: torch.Tensor, nnz: int, width: int | None) -> torch.Tensor:
    """The batch row of each of nnz entries [nnz] (read-only: fixed-width results are shared): each
    row index repeated `width` times when every row has `width` entries (known where the batch was
    cut, so no device sync), else from the row lengths."""
    if width:
        return _repeated_rows(len(offsets), width, offsets.device)
    lengths = torch.diff(offsets, append=offsets.new_tensor([nnz]))
    return torch.repeat_interleave(torch.arange(len(offsets), device=offsets.device), lengths)


@lru_cache(maxsize=8)
def _repeated_rows(rows: int, width: int, device: torch.device) -> torch.Tensor:
    """[0]*width + [1]*width + ... [rows*width], built once per batch shape: every full batch of a
    split has the same one (position // width would pay for torch's int64 division)."""
    return torch.arange(rows, device=device).unsqueeze(1).expand(-1, width).reshape(-1)


class IdBitmap:
    """Reusable scratch for sort-free deduplication over an id space of num_ids ids: a bitmap of
    the ids seen and each seen id's slot. Allocated once; cleared in O(U) after each use."""

    def __init__(self, num_ids: int, device: torch.device):
        self.seen = torch.zeros(num_ids, dtype=torch.bool, device=device)
        self.slot = torch.empty(num_ids, dtype=torch.int64, device=device)

    def distinct(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ids [nnz] -> (distinct ids ascending [U], inverse [nnz]) in O(nnz + num_ids), no sort."""
        if ids.device.type == "cpu":
            return self._distinct_numpy(ids)
        ids = ids.long()
        self.seen.index_fill_(0, ids, True)
        unique = torch.nonzero(self.seen).squeeze(1)
        self.seen.index_fill_(0, unique, False)
        self.slot.index_copy_(0, unique, torch.arange(len(unique), device=ids.device))
        return unique, self.slot.index_select(0, ids)

    def _distinct_numpy(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`distinct` on one CPU thread. torch's parallel index_fill_ / index_copy_ make the cores fight
        over the cache lines of frequent (Zipf) ids, and reading back `slot` right after another core
        wrote it misses too: a single thread is faster."""
        seen, slot, keys = self.seen.numpy(), self.slot.numpy(), ids.numpy()
        seen[keys] = True
        unique = np.flatnonzero(seen)
        seen[unique] = False
        slot[unique] = np.arange(len(unique))
        return torch.from_numpy(unique), torch.from_numpy(slot[keys])


def deduplicate(
    ids: torch.Tensor, offsets: torch.Tensor, num_ids: int, width: int | None = None, bitmap: IdBitmap | None = None
) -> RowBatch:
    """ids int32 or int64 [nnz] in [0, num_ids) (rows start at offsets [B]; `width` entries per row,
    or None) -> RowBatch (its index tensors int64).

    With a bitmap: scattered (the distinct ids alone, no sort). Else grouped: one stable sort of
    the ids gives the transposed batch too (an id space below 2^31 is sorted as int32, about
    twice as fast as int64 on CPU).
    """
    row_of_entry = rows_of_entries(offsets, len(ids), width)
    if bitmap is not None:
        return RowBatch(*bitmap.distinct(ids), row_of_entry)
    keys = ids.to(torch.int32) if num_ids <= 2**31 else ids
    sorted_ids, order = torch.sort(keys, stable=True)
    first = torch.ones_like(sorted_ids, dtype=torch.bool)
    first[1:] = sorted_ids[1:] != sorted_ids[:-1]
    run = torch.cumsum(first, 0) - 1
    inverse = torch.empty_like(run)
    inverse[order] = run
    entry_rows = row_of_entry.index_select(0, order)
    return RowBatch(sorted_ids[first].long(), inverse, row_of_entry, order, entry_rows, torch.nonzero(first).squeeze(1))


class _PoolRows(torch.autograd.Function):
    """pooled[r] = Σ_{e in row r} rows[inverse_e] · (scaled_e + bias[inverse_e]); [B, D].

    Backward, per distinct id u:
      ∂L/∂rows[u] = Σ_{e: id u} w_e · G[row_e]
      ∂L/∂bias[u] = rows[u] · Σ_{e: id u} G[row_e]
    over the transposed batch when grouped (two embedding_bag calls), else by scatter-adding the
    [nnz, D] per-entry terms (cheap only for narrow rows: the logistic-regression tables).
    """

    @staticmethod
    def forward(ctx, rows, bias, scaled, batch: RowBatch, offsets):
        weights = scaled + bias.index_select(0, batch.inverse)
        ctx.batch = batch
        ctx.save_for_backward(rows, weights)
        return F.embedding_bag(batch.inverse, rows, offsets, mode="sum", per_sample_weights=weights)

    @staticmethod
    def backward(ctx, grad):
        rows, weights = ctx.saved_tensors
        batch: RowBatch = ctx.batch
        grad = grad.contiguous()
        if batch.order is None and rows.shape[1] == 1:  # 1-D: torch's 2-D [n, 1] gathers and adds are slower
            per_entry = grad.view(-1).index_select(0, batch.row_of_entry)
            grad_rows = rows.new_zeros(len(rows)).scatter_add_(0, batch.inverse, per_entry * weights).unsqueeze(1)
            summed = rows.new_zeros(len(rows)).scatter_add_(0, batch.inverse, per_entry).unsqueeze(1)
        elif batch.order is None:
            per_entry = grad.index_select(0, batch.row_of_entry)
            grad_rows = torch.zeros_like(rows).index_add_(0, batch.inverse, per_entry * weights.unsqueeze(1))
            summed = torch.zeros_like(rows).index_add_(0, batch.inverse, per_entry)
        else:
            assert batch.entry_rows is not None and batch.starts is not None  # grouped: the transposed batch
            grad_rows = F.embedding_bag(
                batch.entry_rows,
                grad,
                batch.starts,
                mode="sum",
                per_sample_weights=weights.index_select(0, batch.order),
            )
            summed = F.embedding_bag(batch.entry_rows, grad, batch.starts, mode="sum")
        grad_bias = (rows * summed).sum(1)
        return grad_rows, grad_bias, None, None, None


def pool(
    rows: torch.Tensor,
    bias: torch.Tensor,
    scaled: torch.Tensor,
    index: torch.Tensor,
    offsets: torch.Tensor,
    batch: RowBatch | None,
) -> torch.Tensor:
    """Σ_e rows[index_e] · (scaled_e + bias[index_e]) over each batch row (`offsets` [B], row starts)
    -> [B, D]: the full tables (rows [num_ids, D], bias [num_ids]; index the ids) through one
    `embedding_bag`, or the gathered rows of row-wise training (rows [U, D], bias [U]; `batch` the
    batch's distinct ids, index its inverse) through `_PoolRows`, whose backward is written out."""
    if batch is None:
        weights = scaled + bias.index_select(0, index)
        return F.embedding_bag(index, rows, offsets, mode="sum", per_sample_weights=weights)
    return _PoolRows.apply(rows, bias, scaled, batch, offsets)
