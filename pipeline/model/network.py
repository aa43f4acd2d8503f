"""The torch network built from a plan: it owns every block's weights and runs the blocks in order.

Shapes: a batch is CSR — `ids` int64 [nnz], `values` float [nnz] (None: one-hot, every value 1),
`offsets` int64 [B] (row starts, the embedding_bag convention) — and the network returns logits [B],
or [B, T] for a plan with T > 1 outputs (one per task).

Three ways through the same blocks:
* `forward` — full tables, plain torch: training by autograd over the whole table (tests), and the
  reference scorer that offline/online parity trusts (float64, no kernels);
* `forward_rows` — row-wise training: the per-id tables' rows the batch touches are gathered into
  leaves (rows.py), so a step costs O(batch ids), not O(num_ids);
* `infer` — inference (no autograd) through a block's native fast path where it has one and only
  its main output is read (the sparse linear layer's float32 kernel), the blocks' forward elsewhere.
Weights are named "<block>.<name>" as the plan declares them: the state dict, the bundle and the
online scorer all use those names.
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import BLOCKS
from .blocks.base import Entries, range_rows
from .plan import FEATURES, Plan
from .rows import IdBitmap, RowBatch, deduplicate

NARROW_ROWS = 4  # per-id tables at most this wide train from scattered batches (no sort) ...
BITMAP_IDS_PER_ENTRY = 16  # ... when scanning the id space's bitmap costs less than sorting the batch


class BlockWeights(nn.Module):
    """One block's weights: parameters (trainable) and buffers (running statistics)."""


class Network(nn.Module):
    def __init__(self, plan: Plan):
        super().__init__()
        self.plan = plan
        self._bitmap: IdBitmap | None = None
        declared = plan.weights
        for block in plan.blocks:
            holder = BlockWeights()
            for full_name, weight in declared.items():
                owner, name = full_name.split(".", 1)
                if owner != block.name:
                    continue
                tensor = torch.empty(weight.shape)
                if weight.trainable:
                    holder.register_parameter(name, nn.Parameter(tensor))
                else:
                    holder.register_buffer(name, tensor)
            self.add_module(block.name, holder)
        for block, node in zip(plan.blocks, plan.nodes):
            BLOCKS[block.kind].init(node, self.block_weights(block.name))
        # each per-id trained table, where it sits in a block's weights, and the ids its rows hold
        self._tables = [
            (name.split(".", 1)[0], name.split(".", 1)[1]) for name, w in declared.items() if w.per_id and w.trainable
        ]
        self._ranges = [
            None if w.first_ids == (0,) and w.shape[0] == plan.space.num_ids else (w.first_ids, w.shape[0])
            for w in declared.values()
            if w.per_id and w.trainable
        ]
        self._fast = {
            block.name
            for block in plan.blocks
            if not any(plan.consumers(f"{block.name}.{out}") for out in self._outputs(block) if out != "out")
        }

    def _outputs(self, block) -> list[str]:
        node = self.plan.nodes[self.plan.blocks.index(block)]
        return list(BLOCKS[block.kind].outputs(block.spec, node.inputs, self.plan.space))

    def block_weights(self, block: str) -> dict[str, torch.Tensor]:
        """Block `block`'s weights by their names within it (the tensors themselves)."""
        holder = getattr(self, block)
        return {**dict(holder.named_parameters(recurse=False)), **dict(holder.named_buffers(recurse=False))}

    def row_tables(self) -> list[nn.Parameter]:
        """The per-id tables, trained row-wise (rows.py) rather than by the dense optimizer."""
        return [getattr(getattr(self, block), name) for block, name in self._tables]

    def running_maxima(self) -> list[torch.Tensor]:
        """The per-id buffers that are not trained but folded by max from the batches (the sparse
        linear layer's max_abs [num_ids], indexed by global id)."""
        return [
            self.block_weights(name.split(".", 1)[0])[name.split(".", 1)[1]]
            for name, w in self.plan.weights.items()
            if w.per_id and not w.trainable
        ]

    @property
    def num_ids(self) -> int:
        return self.plan.space.num_ids

    def deduplicate(self, ids: torch.Tensor, offsets: torch.Tensor, width: int | None = None) -> RowBatch:
        """The batch's id structure for row-wise training: grouped by id (one sort) when any per-id
        table is wider than NARROW_ROWS or the id space exceeds BITMAP_IDS_PER_ENTRY x nnz, else
        scattered through a bitmap of the id space (no sort; see rows.deduplicate). The bitmap is
        scratch, built on first use, not part of the state."""
        num_ids = self.num_ids
        if max(table.shape[1] for table in self.row_tables()) > NARROW_ROWS or num_ids > BITMAP_IDS_PER_ENTRY * len(
            ids
        ):
            return deduplicate(ids, offsets, num_ids, width)
        if self._bitmap is None or self._bitmap.seen.device != ids.device:
            self._bitmap = IdBitmap(num_ids, ids.device)
        return deduplicate(ids, offsets, num_ids, width, self._bitmap)

    def table_rows(self, unique: torch.Tensor) -> list[torch.Tensor]:
        """Each per-id table's rows for the batch's distinct ids `unique` [U] (ascending): `unique`
        itself for a table of every id; for a table of ids [a, a + n), the ids in it (a slice of
        `unique`, found by binary search) minus a; for a shared table, those of each of its ranges,
        merged (base.range_rows)."""
        return [unique if ranges is None else range_rows(unique, *ranges) for ranges in self._ranges]

    def gather_rows(self, rows: list[torch.Tensor]) -> list[torch.Tensor]:
        """Copies of each per-id table's `rows` (`table_rows`), as leaves that take gradients."""
        return [table.detach().index_select(0, r).requires_grad_() for table, r in zip(self.row_tables(), rows)]

    def _run(self, entries: Entries, gathered: list[torch.Tensor] | None = None, fast: bool = False) -> torch.Tensor:
        """The blocks in plan order -> logits [B] (or [B, T]); `gathered` replaces the per-id tables (row-wise)."""
        replaced = {} if gathered is None else dict(zip(self._tables, gathered))
        ports: dict[str, object] = {FEATURES: entries}
        for block, node in zip(self.plan.blocks, self.plan.nodes):
            kind = BLOCKS[block.kind]
            weights = self.block_weights(block.name)
            for (owner, name), rows in replaced.items():
                if owner == block.name:
                    weights[name] = rows
            inputs = {name: ports[ref] for name, ref in block.inputs.items()}
            fast_out = kind.infer(node, weights, inputs) if fast and block.name in self._fast else None
            outputs = {"out": fast_out} if fast_out is not None else kind.forward(node, weights, inputs, self.training)
            for name, value in outputs.items():
                ports[f"{block.name}.{name}"] = value
        logits = torch.cat([ports[output] for output in self.plan.outputs], 1)  # type: ignore[misc]  # dense [B, 1]
        return logits.squeeze(-1) if logits.shape[1] == 1 else logits

    def forward(
        self, ids: torch.Tensor, values: torch.Tensor | None, offsets: torch.Tensor, width: int | None = None
    ) -> torch.Tensor:
        """Full tables, plain torch -> logits [B] (in train mode, differentiable over whole tables)."""
        return self._run(Entries(ids, values, offsets, width))

    def forward_rows(
        self,
        rows: list[torch.Tensor],
        batch: RowBatch,
        values: torch.Tensor | None,
        offsets: torch.Tensor,
        width: int | None = None,
    ) -> torch.Tensor:
        """Training path: gathered rows (`gather_rows`) -> logits [B], equal to `forward` in train mode
        (values None: a one-hot batch, every value 1; `width`: entries per row when every row has
        that many, which lets blocks gather columns instead of finding each entry's feature)."""
        return self._run(Entries(batch.inverse, values, offsets, width, rows=batch), gathered=rows)

    @torch.no_grad()
    def infer(
        self, ids: torch.Tensor, values: torch.Tensor | None, offsets: torch.Tensor, width: int | None = None
    ) -> torch.Tensor:
        """Inference -> logits [B], through the blocks' native fast paths where they have one."""
        return self._run(Entries(ids, values, offsets, width), fast=True)

    def named_weights(self) -> dict[str, torch.Tensor]:
        """Every weight by its plan name "<block>.<name>" (the state dict's names)."""
        return dict(self.state_dict())
