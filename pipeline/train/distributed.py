"""Training on many processes: `torchrun` (or `snn fit --procs N`) starts one snn per rank; they
train one model as one process would train it on the same global batches.

    global batch     every rank draws the same permutation of the train rows (the seed), so batch b
                     is the same rows G_b on every rank; rank r trains on its share, rows
                     [r·|G_b|/W, (r+1)·|G_b|/W) of G_b (`share_of_batch`), and normalizes its loss
                     by the global batch's weight (`denominators`: every rank reads G_b's labels and
                     weights from the memory-mapped split, no exchange), so Σ_r ∇L_r = ∇L(G_b)
    dense weights    their gradients summed over ranks (one all-reduce of one flat buffer: DDP's
                     exchange, 4·P bytes for P dense parameters), then every rank takes the same step
    per-id tables    each rank's touched rows and their gradients, all-gathered as (row index,
                     gradient row) pairs and summed per row (`exchange_rows`): every rank then updates
                     the union of the rows the global batch touched with the same gradients, so the
                     tables, and the row optimizer's state, stay equal without ever sending a table.
                     A rank sends max_r U_r · (8 + 4·D) bytes per table and step (its rows padded to
                     the most any rank touched, U_r rows of width D on rank r) and receives W times
                     that, independent of the table's size
    running max |v|  (sparse_linear's max_abs) every rank folds the whole global batch G_b into it
                     before its step (`fold_running_max`, read from the memory-mapped split: no
                     exchange), as one process folds the batch before normalizing it
    validation       rank 0 scores the validation split each epoch and broadcasts its metrics: every
                     rank keeps the same best epoch and stops early at the same epoch

The prepare step is sharded the same way (steps/prepare.py): each rank fits its share of the train
rows and the exact totals are summed over ranks (features/shards.py), then each rank encodes its
share of the train and validation rows and writes it into its place in the joined split files
(data/encoded.SplitJoin): the files one process writes, byte for byte.

All-gather was chosen over an all-reduce of dense table gradients because a table's gradient is
sparse: an all-reduce would send the whole table (num_ids · D floats) every step; the gather
sends the touched rows only. Only rank 0 writes (step folders, checkpoints, bundles, MLflow); the
backend is gloo on CPU and NCCL on CUDA (one GPU per rank: `cuda:<local rank>`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

from ..errors import InputError

# the longest a rank may wait in a collective for the others: while rank 0 fits tree-leaf features or
# validates an epoch alone, the other ranks wait (the backends' defaults, 10-30 min, are too short)
COLLECTIVE_TIMEOUT = timedelta(hours=6)


@dataclass(frozen=True)
class Group:
    """This process's place among the ranks torchrun started (RANK, WORLD_SIZE, LOCAL_RANK)."""

    rank: int
    world: int
    local_rank: int

    @classmethod
    def from_env(cls) -> Group | None:
        """The group torchrun's environment describes, or None for one process."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return None
        return cls(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def leader(self) -> bool:
        """Rank 0: the one that logs and writes."""
        return self.rank == 0

    def start(self, device_type: str) -> None:
        """Join the process group (gloo on CPU, NCCL on CUDA), once per process."""
        if device_type == "cuda":
            torch.cuda.set_device(self.device(torch.device("cuda")))  # NCCL's collectives run on the current device
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device_type == "cuda" else "gloo", timeout=COLLECTIVE_TIMEOUT)
        if device_type == "cpu":  # the cores this process may use, shared between the machine's ranks
            local = int(os.environ.get("LOCAL_WORLD_SIZE", str(self.world)))
            torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // local))

    def device(self, device: torch.device) -> torch.device:
        """A CUDA device becomes this rank's GPU (`cuda:<local rank>`: one GPU per process); the
        CPU stays the CPU. More processes on a machine than its GPUs is an InputError."""
        if device.type != "cuda":
            return device
        count = torch.cuda.device_count()
        if self.local_rank >= count:
            raise InputError(
                f"rank {self.rank} is process {self.local_rank + 1} on its machine, which has {count} GPU(s): "
                f"start one process per GPU (--procs {count}, or torchrun --nproc-per-node {count}), "
                "or train on the CPU (train.device: cpu)"
            )
        return torch.device("cuda", self.local_rank)

    def span(self, count: int) -> tuple[int, int]:
        """This rank's contiguous part [start, stop) of `count` items (parts differ by one at most)."""
        return self.rank * count // self.world, (self.rank + 1) * count // self.world

    def barrier(self) -> None:
        dist.barrier()

    def broadcast(self, value):
        """Rank 0's `value` on every rank (any picklable object)."""
        box = [value if self.leader else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value) -> list:
        """Every rank's `value` (any picklable object), in rank order, on every rank."""
        values: list = [None] * self.world
        dist.all_gather_object(values, value)
        return values

    def stop(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


@dataclass
class Shared:
    """A rank's part in the current global batch: the world size, the global batch's loss
    denominators [T] (Σ w, or each task's Σ m: `denominators`), and the bytes this rank has sent in
    exchanges over `steps` steps."""

    world: int
    denominators: np.ndarray = field(default_factory=lambda: np.ones(1))
    sent: int = 0
    steps: int = 0


def denominators(labels: np.ndarray, weights: np.ndarray, tasks) -> np.ndarray:
    """The loss denominators of a global batch: [Σ w] for one task, each task's Σ m (tasks.task_masks)
    for several: every rank divides its share's loss by them, so the shares' gradients sum to the
    global batch's."""
    if not tasks:
        return np.array([weights.sum(dtype=np.float64)])
    from .tasks import task_masks

    return task_masks(labels, weights, tasks).sum(axis=0)


def reduce_dense(params: Sequence[torch.Tensor]) -> int:
    """Sum the dense parameters' gradients over ranks, in place (one all-reduce of one flat buffer; a
    parameter without a gradient on a rank counts as zeros there, and keeps None only where every
    rank had none). Returns the bytes this rank sent."""
    if not params:
        return 0
    flat = torch.cat(
        [p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel(), device=p.device) for p in params]
        + [torch.tensor([float(p.grad is not None) for p in params], device=params[0].device)]
    )
    dist.all_reduce(flat)
    has_grad, start = flat[-len(params) :], 0
    for i, p in enumerate(params):
        size = p.numel()
        if has_grad[i] > 0:
            p.grad = flat[start : start + size].view_as(p).clone()
        start += size
    return flat.numel() * flat.element_size()


def _gather(tensor: torch.Tensor, world: int) -> tuple[list[torch.Tensor], int]:
    """Every rank's `tensor` (first dimensions may differ), in rank order, and the bytes this rank
    contributed (its length, and its tensor padded to the longest)."""
    size = torch.tensor([tensor.shape[0]], device=tensor.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros((longest, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    padded[: tensor.shape[0]] = tensor
    gathered = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(gathered, padded)
    sent = size.numel() * size.element_size() + padded.numel() * padded.element_size()
    return [g[: int(s.item())] for g, s in zip(gathered, sizes)], sent


def exchange_rows(
    table_rows: list[torch.Tensor], gathered: list[torch.Tensor], world: int
) -> tuple[list[torch.Tensor], list[torch.Tensor | None], int]:
    """Each table's rows every rank touched, and their gradients summed over ranks: (rows [U] per
    table, ascending; gradients [U, D], None where no rank's step reached the table, as one
    process's copy has no gradient then; bytes this rank sent)."""
    reached = torch.tensor([float(copy.grad is not None) for copy in gathered], device=gathered[0].device)
    dist.all_reduce(reached)  # a table any rank's step reached takes a step (Adam's t) on every rank
    union_rows, union_grads, sent = [], [], reached.numel() * reached.element_size()
    for index, (rows, copy) in enumerate(zip(table_rows, gathered)):
        width = copy.shape[1]
        grad = copy.grad if copy.grad is not None else copy.new_zeros((0, width))
        rows = rows if copy.grad is not None else rows[:0]
        ids, id_bytes = _gather(rows.to(torch.int64), world)
        grads, grad_bytes = _gather(grad.contiguous(), world)
        sent += id_bytes + grad_bytes
        every_id, every_grad = torch.cat(ids), torch.cat(grads)
        unique, inverse = torch.unique(every_id, sorted=True, return_inverse=True)
        summed = every_grad.new_zeros((len(unique), width)).index_add_(0, inverse, every_grad)
        union_rows.append(unique)
        union_grads.append(summed if reached[index] > 0 else None)
    return union_rows, union_grads, sent


def share_of_batch(train, rows: np.ndarray, group: Group, running: Sequence[torch.Tensor]):
    """This rank's share of the global batch `rows` of the split `train` (rows `group.span` of it),
    as a CSRBatch; with running max buffers, the whole global batch is gathered once, folded into
    them (`fold_running_max`) and the share sliced from it."""
    start, stop = group.span(len(rows))
    if not running:
        return train.take(rows[start:stop])
    batch = train.take(rows)
    fold_running_max(running, batch)
    return batch.rows_between(start, stop)


def fold_running_max(running: Sequence[torch.Tensor], batch) -> None:
    """Fold a global batch's |v| into each running max buffer ([num_ids] each, by global id):
    max_abs[u] ← max(max_abs[u], max |v| of the batch's entries with id u), as one process folds the
    whole batch before normalizing it; every rank folds the same batch, so the buffers stay equal
    with no exchange (a rank's own fold of its share inside the step then changes nothing). A block
    that reads a feature group gets the other ids folded too: entries it never reads."""
    if not running:
        return
    device = running[0].device
    ids = torch.from_numpy(np.asarray(batch.ids, dtype=np.int64)).to(device)
    values = (
        torch.ones(len(ids), device=device)
        if batch.one_hot
        else torch.from_numpy(np.abs(np.asarray(batch.values, dtype=np.float32))).to(device)
    )
    for buffer in running:
        buffer.scatter_reduce_(0, ids, values.to(buffer.dtype), reduce="amax")
