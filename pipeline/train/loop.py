"""The training loop: shuffled CSR batches -> the network -> weighted BCE -> optimizer step.

Loss per batch: Σ_r w_r · BCE(σ(logit_r), y_r) / Σ_r w_r; with several tasks, the summed task
losses of tasks.py. Each epoch ends with validation metrics (of the downsampling-corrected
probability when negatives were downsampled; per task, on each task's rows, with several); the
best epoch's weights are kept (by validation log loss, or the early-stopping metric: with tasks,
a named task's or the tasks' weighted by their `weight`), whether or not early stopping ends
training before the last epoch.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from ..data.encoded import CSRBatch, EncodedSplit
from ..errors import InputError, TrainingDiverged
from ..evaluation import metrics
from ..evaluation.calibrate import downsampling_correction
from ..model.inference import raw_probabilities
from ..model.network import Network
from ..model.plan import Plan
from .checkpoints import Checkpoints, restore_rng, rng_state
from .distributed import Group, Shared, denominators, exchange_rows, reduce_dense, share_of_batch
from .optimizers import Optimizers
from .resources import check_model_fits
from .spec import TrainSpec
from .tasks import TaskSpec, multitask_loss, task_masks


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("train.device is cuda but no CUDA GPU is visible; use device: auto or cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def to_device(batch: CSRBatch, device: torch.device):
    """Batch arrays -> tensors on device (pinned, non-blocking copies on CUDA); values are None for a
    one-hot batch (every value 1.0). Stored int32 ids cross to a GPU as they are (half the bytes;
    `deduplicate` takes either) and are widened to int64 on the CPU, by numpy: numpy and torch
    index with int64, and torch's own widening copy is several times slower there."""

    def move(a):
        t = torch.from_numpy(np.ascontiguousarray(a))
        return t.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else t

    ids = batch.ids if device.type == "cuda" else np.asarray(batch.ids, dtype=np.int64)
    values = None if batch.one_hot else move(batch.values)
    return move(ids), values, move(batch.offsets), move(batch.labels), move(batch.weights)


def training_step(
    model: Network,
    optimizers: Optimizers,
    batch: CSRBatch,
    device,
    tasks: Sequence[TaskSpec] | None = None,
    shared: Shared | None = None,
) -> torch.Tensor:
    """Forward on the batch's distinct rows, weighted BCE (summed over `tasks`), backward, row and
    dense updates. `shared`: the batch is this rank's share of a global batch (distributed.py): the
    loss is divided by the global batch's weights, and the dense gradients and the touched table
    rows' gradients are exchanged with the other ranks before the updates (a rank with an empty
    share, in a last batch of fewer rows than ranks, only takes part in the exchanges)."""
    if shared is not None and len(batch.labels) == 0:
        tables = model.row_tables()
        table_rows = [torch.empty(0, dtype=torch.int64, device=device) for _ in tables]
        rows = [table.new_zeros((0, table.shape[1])) for table in tables]
        loss = torch.zeros((), device=device)
        optimizers.dense.zero_grad()
    else:
        ids, values, offsets, labels, weights = to_device(batch, device)
        structure = model.deduplicate(ids, offsets, batch.width)
        table_rows = model.table_rows(structure.unique)
        rows = model.gather_rows(table_rows)
        logits = model.forward_rows(rows, structure, values, offsets, batch.width)
        denominators = None if shared is None else shared.denominators
        if tasks:
            loss = multitask_loss(logits, labels, weights, tasks, denominators)
        else:
            total = weights.sum() if denominators is None else weights.new_tensor(float(denominators[0]))
            bce = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
            loss = (bce * weights).sum() / total.clamp_min(1e-12)
        optimizers.dense.zero_grad()
        loss.backward()
    if shared is None:
        optimizers.rows.step(table_rows, rows)
    else:
        union, grads, sent = exchange_rows(table_rows, rows, shared.world)
        optimizers.rows.apply(union, grads)
        shared.sent += sent + reduce_dense(optimizers.dense_params)
        shared.steps += 1
    optimizers.step_dense()
    return loss.detach()


@dataclass
class TrainResult:
    state: dict[str, np.ndarray]
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    device: str = "cpu"
    seconds: float = 0.0
    resumed_at: int = 0  # the first epoch this process trained (after a checkpoint), 0 when none
    exchanged_bytes_per_step: float = 0.0  # with several ranks: what this rank sent per step


class Progress:
    """A progress bar on a terminal, a plain line per epoch otherwise (both on stderr)."""

    def __init__(self, total_batches: int, quiet: bool = False):
        self.total, self.tty, self.quiet = total_batches, sys.stderr.isatty(), quiet

    def batch(self, epoch: int, done: int):
        if self.tty and not self.quiet and (done % 20 == 0 or done == self.total):
            filled = int(30 * done / self.total)
            sys.stderr.write(f"\r  epoch {epoch} [{'#' * filled}{'.' * (30 - filled)}] {done}/{self.total}")
            sys.stderr.flush()

    def epoch(self, line: str):
        if self.quiet:
            return
        if self.tty:
            sys.stderr.write("\r" + " " * 70 + "\r")
        sys.stderr.write(line + "\n")


def _diverged(epoch: int, what: str, spec: TrainSpec) -> TrainingDiverged:
    return TrainingDiverged(
        f"training diverged in epoch {epoch}: {what} became NaN or infinite, so no bundle was written; lower "
        f"train.lr (now {spec.lr:g}), or look for extreme weights or raw feature values"
    )


DIVERGENCE_CHECK_BATCHES = 256  # how often the running loss is checked for NaN within an epoch


def train_model(
    plan: Plan,
    spec: TrainSpec,
    train: EncodedSplit,
    validation: EncodedSplit,
    on_epoch: Callable[[int, dict], None] | None = None,
    checkpoints: Path | None = None,
    tasks: Sequence[TaskSpec] | None = None,
    group: Group | None = None,
) -> TrainResult:
    """Train from scratch, seeded: same inputs and seed -> bit-identical weights on CPU. With
    `checkpoints`, each finished epoch is saved there and a run finding a checkpoint resumes after
    its epoch. Validation keeps the best epoch (by the early-stopping metric; log loss without it).
    A NaN or infinite loss or prediction stops training with TrainingDiverged. With `group` (many
    ranks, distributed.py), each rank trains on its share of every global batch; rank 0 validates,
    saves the checkpoints and reports."""
    check_model_fits(plan, spec)
    device = pick_device(spec.device)
    if group is not None:  # before seeding: joining the group may draw from torch's generator
        device = group.device(device)
        group.start(device.type)
    torch.manual_seed(spec.seed)
    rng = np.random.default_rng(spec.seed)
    leader = group is None or group.leader
    shared = None if group is None else Shared(group.world)
    if group is not None and any(getattr(block.spec, "norm", None) == "batch" for block in plan.blocks):
        raise InputError(
            "mlp norm: batch normalizes each rank's share by its own statistics, so several processes would not "
            "train the one-process model; use norm: layer (or none) with --procs"
        )
    model = Network(plan).to(device)
    optimizers = Optimizers.for_model(model, spec)
    progress = Progress((train.rows + spec.batch_size - 1) // spec.batch_size, quiet=not leader)
    watched = spec.early_stopping.metric if spec.early_stopping else "logloss"
    higher_is_better = watched == "auc"
    named = spec.early_stopping.task if spec.early_stopping and tasks else None
    watched_key = f"val_{watched}" + (f"_{named}" if named else "")
    best_value, best_state, best_epoch, stale = None, None, 0, 0
    result = TrainResult(state={}, device=str(device))
    saved, first_epoch, elapsed = Checkpoints(checkpoints), 1, 0.0
    resume = saved.load(device)
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizers.load_state_dict(resume["optimizers"])
        restore_rng(rng, resume["rng"], device)
        result.history = list(resume["history"])
        best_value, best_epoch, stale, elapsed = (
            resume["best_value"],
            resume["best_epoch"],
            resume["stale"],
            resume["seconds"],
        )
        best_state = resume["best_state"]
        first_epoch = result.resumed_at = resume["epoch"] + 1
        progress.epoch(f"  resuming at epoch {first_epoch} from {saved.path}")
    if group is not None:  # the same initial weights everywhere; each rank its own dropout masks
        torch.manual_seed(spec.seed + group.rank)
    start = time.perf_counter() - elapsed
    for epoch in range(first_epoch, spec.epochs + 1):
        model.train()
        epoch_start, total_loss, batches = time.perf_counter(), torch.zeros((), device=device), 0
        order = rng.permutation(train.rows)
        for first in range(0, train.rows, spec.batch_size):
            rows = order[first : first + spec.batch_size]
            if spec.lr_schedule == "linear":
                done = (epoch - 1) * progress.total + batches
                optimizers.set_lr(spec.lr * (1 - done / (spec.epochs * progress.total)))
            if group is not None and shared is not None:  # this rank's share of the global batch
                shared.denominators = denominators(train.labels[rows], train.weights[rows], tasks)
                batch = share_of_batch(train, rows, group, model.running_maxima())
            else:
                batch = train.take(rows)
            total_loss += training_step(model, optimizers, batch, device, tasks, shared)
            batches += 1
            progress.batch(epoch, batches)
            if batches % DIVERGENCE_CHECK_BATCHES == 0:
                running = total_loss.clone()
                if group is not None:  # every rank sees a NaN in any share, and stops with the others
                    torch.distributed.all_reduce(running)
                if not torch.isfinite(running):
                    raise _diverged(epoch, "the training loss", spec)
        if group is not None:
            torch.distributed.all_reduce(total_loss)  # the shares' losses add up to the global batches'
        if not torch.isfinite(total_loss):
            raise _diverged(epoch, "the training loss", spec)
        model.eval()
        row: dict | None = None
        if leader:
            eval_model = model if device.type == "cpu" else model.cpu()
            p = raw_probabilities(eval_model, validation, fast=True)
            model.to(device)
            finite = bool(np.isfinite(p).all())
            row = {
                "epoch": epoch,
                "train_loss": float(total_loss) / max(batches, 1),
                **(validation_metrics(p, validation, spec, tasks) if finite else {"diverged": 1.0}),
                "rows_per_s": train.rows / (time.perf_counter() - epoch_start),
            }
            if shared is not None:
                row["exchanged_bytes_per_step"] = shared.sent / max(shared.steps, 1)
        if group is not None:
            row = group.broadcast(row)  # every rank keeps rank 0's figures: one best epoch, one stop
        assert row is not None
        if "diverged" in row:
            raise _diverged(epoch, "the validation predictions", spec)
        result.history.append(row)
        progress.epoch(
            f"  epoch {epoch}: train loss {row['train_loss']:.4f}  val auc {row['val_auc']:.4f}  "
            f"val logloss {row['val_logloss']:.4f}  ({row['rows_per_s']:,.0f} rows/s)"
            + "".join(f"\n    {t.name}: val auc {row[f'val_auc_{t.name}']:.4f}" for t in tasks or ())
        )
        if on_epoch:
            on_epoch(epoch, row)
        value = row[watched_key]
        improved = best_value is None or (value > best_value if higher_is_better else value < best_value)
        if improved:
            best_value, best_epoch, stale = value, epoch, 0
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if spec.early_stopping and stale >= spec.early_stopping.patience:
                progress.epoch(f"  early stop: no {watched} improvement for {stale} epochs; best epoch {best_epoch}")
                break
        if epoch < spec.epochs and leader:  # the last epoch's state goes straight into the bundle
            saved.save(
                {
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "optimizers": optimizers.state_dict(),
                    "rng": rng_state(rng, device),
                    "history": result.history,
                    "best_value": best_value,
                    "best_epoch": best_epoch,
                    "stale": stale,
                    "best_state": best_state,
                    "seconds": time.perf_counter() - start,
                }
            )
    assert best_state is not None  # the first epoch always improves on nothing
    result.state = {k: v.numpy() for k, v in best_state.items()}
    result.best_epoch, result.seconds = best_epoch, time.perf_counter() - start
    if shared is not None:
        result.exchanged_bytes_per_step = shared.sent / max(shared.steps, 1)
    return result


def validation_metrics(
    p: np.ndarray, validation: EncodedSplit, spec: TrainSpec, tasks: Sequence[TaskSpec] | None
) -> dict[str, float]:
    """val_auc and val_logloss of the validation predictions p [n] (downsampling-corrected: the
    validation rows are not downsampled, so what is served is graded). With tasks (p [n, T]): each
    task's, on its rows (tasks.task_masks), as val_auc_<task> and val_logloss_<task>, and
    val_auc / val_logloss their averages weighted by the tasks' `weight`."""
    if not tasks:
        if spec.negative_downsampling is not None:
            p = downsampling_correction(p, spec.negative_downsampling.rate)
        return {
            "val_auc": metrics.auc(validation.labels, p, validation.weights),
            "val_logloss": metrics.logloss(validation.labels, p, validation.weights),
        }
    masks = task_masks(validation.labels, validation.weights, tasks)
    out: dict[str, float] = {}
    for t, task in enumerate(tasks):
        q = p[:, t]
        if task.negative_downsampling is not None:
            q = downsampling_correction(q, task.negative_downsampling.rate)
        chosen = masks[:, t] > 0
        y, w = validation.labels[chosen, t], masks[chosen, t]
        out[f"val_auc_{task.name}"] = metrics.auc(y, q[chosen], w)
        out[f"val_logloss_{task.name}"] = metrics.logloss(y, q[chosen], w)
    total = sum(task.weight for task in tasks)
    for metric in ("auc", "logloss"):
        out[f"val_{metric}"] = sum(task.weight * out[f"val_{metric}_{task.name}"] for task in tasks) / total
    return out
