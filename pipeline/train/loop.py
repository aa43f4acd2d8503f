"""The training loop: shuffled CSR batches -> the network -> weighted BCE -> optimizer step.

Loss per batch: Σ_r w_r · BCE(σ(logit_r), y_r) / Σ_r w_r. Each epoch ends with validation
metrics; early stopping keeps the best epoch's weights.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.nn import functional as F

from ..evaluation import metrics
from ..store.encoded import CSRBatch, EncodedSplit
from ..errors import InputError, TrainingDiverged
from ..config import gigabytes
from ..model.network import Network
from ..model.plan import Plan
from ..model.rows import RowAdagrad, RowAdam, RowOptimizer, fused_adam
from ..evaluation.scoring import raw_probabilities
from .spec import TrainSpec


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


class FusedAdam:
    """torch.optim.Adam (no weight decay, no amsgrad) for the dense parameters: the same update in
    one call of torch's fused kernel per step, without torch.optim's per-step Python bookkeeping
    (about 150 us a step on this CPU, a twentieth of a logistic-regression step). State per
    parameter p: exp_avg and exp_avg_sq [like p], and the step count t (a scalar on p's device)."""

    def __init__(self, params: list[torch.Tensor], lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.params, self.lr, self.betas, self.eps = list(params), lr, betas, eps
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        self.step_count = [torch.zeros((), device=p.device) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def state_dict(self) -> dict:
        return {"exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq, "step_count": self.step_count}

    def load_state_dict(self, state: dict) -> None:
        for name in ("exp_avg", "exp_avg_sq", "step_count"):
            for mine, saved in zip(getattr(self, name), state[name], strict=True):
                mine.copy_(saved)

    @torch.no_grad()
    def step(self) -> None:
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not live:
            return
        steps = [self.step_count[i] for i in live]
        torch._foreach_add_(steps, 1.0)
        fused_adam([self.params[i] for i in live], [self.params[i].grad for i in live], [self.exp_avg[i] for i in live],
                   [self.exp_avg_sq[i] for i in live], steps, self.lr, self.betas, self.eps)


@dataclass
class Optimizers:
    """Row-wise updates for the per-id tables (rows.py), a torch optimizer for the dense rest.

    adam: lazy Adam on touched rows (SparseAdam's update) + Adam (`FusedAdam`); adagrad: Adagrad for
    both (torch's, fused on CPU). Short steps (logistic regression) pay for every bit of per-step
    Python: the fused dense updates took that pass from 1.27M to 1.50M rows/s.
    """

    rows: RowOptimizer
    dense: FusedAdam | torch.optim.Optimizer

    @classmethod
    def for_model(cls, model: Network, spec: TrainSpec) -> "Optimizers":
        tables = model.row_tables()
        dense = [p for p in model.parameters() if all(p is not t for t in tables)]
        if spec.optimizer == "adagrad":
            on_cpu = all(p.device.type == "cpu" for p in dense)
            return cls(RowAdagrad(tables, spec.lr), torch.optim.Adagrad(dense, lr=spec.lr, fused=on_cpu or None))
        return cls(RowAdam(tables, spec.lr), FusedAdam(dense, lr=spec.lr))

    def state_dict(self) -> dict:
        return {"rows": self.rows.state_dict(), "dense": self.dense.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.rows.load_state_dict(state["rows"])
        self.dense.load_state_dict(state["dense"])


def training_step(model: Network, optimizers: Optimizers, batch: CSRBatch, device) -> torch.Tensor:
    """Forward on the batch's distinct rows, weighted BCE, backward, row and dense updates."""
    ids, values, offsets, labels, weights = to_device(batch, device)
    structure = model.deduplicate(ids, offsets, batch.width)
    rows = model.gather_rows(structure.unique)
    logits = model.forward_rows(rows, structure, values, offsets)
    loss = (F.binary_cross_entropy_with_logits(logits, labels, reduction="none") * weights).sum() / weights.sum().clamp_min(1e-12)
    optimizers.dense.zero_grad()
    loss.backward()
    optimizers.rows.step(structure.unique, rows)
    optimizers.dense.step()
    return loss.detach()


@dataclass
class TrainResult:
    state: dict[str, np.ndarray]
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    device: str = "cpu"
    seconds: float = 0.0
    resumed_at: int = 0  # the first epoch this process trained (after a checkpoint), 0 when none


class Progress:
    """A progress bar on a terminal, a plain line per epoch otherwise (both on stderr)."""

    def __init__(self, total_batches: int):
        self.total, self.tty = total_batches, sys.stderr.isatty()

    def batch(self, epoch: int, done: int):
        if self.tty and (done % 20 == 0 or done == self.total):
            filled = int(30 * done / self.total)
            sys.stderr.write(f"\r  epoch {epoch} [{'#' * filled}{'.' * (30 - filled)}] {done}/{self.total}")
            sys.stderr.flush()

    def epoch(self, line: str):
        if self.tty:
            sys.stderr.write("\r" + " " * 70 + "\r")
        sys.stderr.write(line + "\n")


def memory_limit() -> int:
    """Bytes of memory this process may use: the machine's, or its cgroup's limit when lower."""
    limit = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            limit = min(limit, int(text))
    return limit


def check_model_fits(plan: Plan, spec: TrainSpec) -> None:
    """Refuse (InputError) a model whose parameters, optimizer state and best-epoch copy would not fit
    in this machine's memory, before anything is allocated (the plan declares every shape)."""
    shapes = {name: weight.shape for name, weight in plan.weights.items()}
    numbers = sum(math.prod(shape) for shape in shapes.values())
    copies = 1 + (2 if spec.optimizer == "adam" else 1) + 1  # weights, optimizer moments, the best epoch's copy
    needed, limit = numbers * 4 * copies, memory_limit()
    if needed > 0.8 * limit:
        largest = max(shapes.values(), key=math.prod)
        raise InputError(
            f"the model would need about {gigabytes(needed)} ({numbers:,} parameters, {copies} copies: weights, "
            f"optimizer state, best epoch; its largest table is {largest[0]:,} ids x {math.prod(largest[1:]):,}) but "
            f"this machine allows {gigabytes(limit)}; lower model.sparse_linear.width or the features' "
            "hash_buckets / bins"
        )


class Checkpoints:
    """The training state after each finished epoch, in `folder/checkpoint.pt` (written to a
    temporary name and renamed: a kill leaves the previous epoch's). Loaded with weights_only=True.

    Holds everything the next epoch depends on: weights and buffers, optimizer state, the numpy and
    torch generators, the history, the best epoch so far (and its weights) and the patience count,
    so a resumed run ends with the weights an uninterrupted one would have, bit for bit."""

    def __init__(self, folder: Path | None):
        self.folder = folder

    @property
    def path(self) -> Path | None:
        return None if self.folder is None else self.folder / "checkpoint.pt"

    def save(self, state: dict) -> None:
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".checkpoint.{os.getpid()}.tmp"
        torch.save(state, tmp)
        os.replace(tmp, self.path)

    def load(self, device: torch.device) -> dict | None:
        if self.path is None or not self.path.is_file():
            return None
        try:
            return torch.load(self.path, map_location=device, weights_only=True)
        except Exception as exc:  # unreadable: train from the start rather than trust it
            sys.stderr.write(f"  checkpoint {self.path} is unreadable ({type(exc).__name__}); training from epoch 1\n")
            return None


def _rng_state(rng: np.random.Generator, device: torch.device) -> dict:
    state = {"numpy": json.dumps(rng.bit_generator.state), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _restore_rng(rng: np.random.Generator, state: dict, device: torch.device) -> None:
    rng.bit_generator.state = json.loads(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)


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
) -> TrainResult:
    """Train from scratch, seeded: same inputs and seed -> bit-identical weights on CPU. With
    `checkpoints`, each finished epoch is saved there and a run finding a checkpoint resumes after
    its epoch. Validation keeps the best epoch (by the early-stopping metric; the last without it).
    A NaN or infinite loss or prediction stops training with TrainingDiverged."""
    check_model_fits(plan, spec)
    torch.manual_seed(spec.seed)
    rng = np.random.default_rng(spec.seed)
    device = pick_device(spec.device)
    model = Network(plan).to(device)
    optimizers = Optimizers.for_model(model, spec)
    progress = Progress((train.rows + spec.batch_size - 1) // spec.batch_size)
    higher_is_better = spec.early_stopping is None or spec.early_stopping.metric == "auc"
    watched = spec.early_stopping.metric if spec.early_stopping else "auc"
    best_value, best_state, best_epoch, stale = None, None, 0, 0
    result = TrainResult(state={}, device=str(device))
    saved, first_epoch, elapsed = Checkpoints(checkpoints), 1, 0.0
    resume = saved.load(device)
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizers.load_state_dict(resume["optimizers"])
        _restore_rng(rng, resume["rng"], device)
        result.history = list(resume["history"])
        best_value, best_epoch, stale, elapsed = resume["best_value"], resume["best_epoch"], resume["stale"], resume["seconds"]
        best_state = resume["best_state"]
        first_epoch = result.resumed_at = resume["epoch"] + 1
        progress.epoch(f"  resuming at epoch {first_epoch} from {saved.path}")
    start = time.perf_counter() - elapsed
    for epoch in range(first_epoch, spec.epochs + 1):
        model.train()
        epoch_start, total_loss, batches = time.perf_counter(), torch.zeros((), device=device), 0
        for batch in train.batches(spec.batch_size, rng.permutation(train.rows)):
            total_loss += training_step(model, optimizers, batch, device)
            batches += 1
            progress.batch(epoch, batches)
            if batches % DIVERGENCE_CHECK_BATCHES == 0 and not torch.isfinite(total_loss):
                raise _diverged(epoch, "the training loss", spec)
        if not torch.isfinite(total_loss):
            raise _diverged(epoch, "the training loss", spec)
        model.eval()
        eval_model = model if device.type == "cpu" else model.cpu()
        p = raw_probabilities(eval_model, validation, fast=True)
        model.to(device)
        if not np.isfinite(p).all():
            raise _diverged(epoch, "the validation predictions", spec)
        row = {
            "epoch": epoch,
            "train_loss": float(total_loss) / max(batches, 1),
            "val_auc": metrics.auc(validation.labels, p, validation.weights),
            "val_logloss": metrics.logloss(validation.labels, p, validation.weights),
            "rows_per_s": train.rows / (time.perf_counter() - epoch_start),
        }
        result.history.append(row)
        progress.epoch(
            f"  epoch {epoch}: train loss {row['train_loss']:.4f}  val auc {row['val_auc']:.4f}  "
            f"val logloss {row['val_logloss']:.4f}  ({row['rows_per_s']:,.0f} rows/s)"
        )
        if on_epoch:
            on_epoch(epoch, row)
        value = row[f"val_{watched}"]
        improved = spec.early_stopping is None or best_value is None or (value > best_value if higher_is_better else value < best_value)
        if improved:
            best_value, best_epoch, stale = value, epoch, 0
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if spec.early_stopping and stale >= spec.early_stopping.patience:
                progress.epoch(f"  early stop: no {watched} improvement for {stale} epochs; best epoch {best_epoch}")
                break
        if epoch < spec.epochs:  # the last epoch's state goes straight into the bundle
            saved.save({"epoch": epoch, "model": model.state_dict(), "optimizers": optimizers.state_dict(),
                        "rng": _rng_state(rng, device), "history": result.history, "best_value": best_value,
                        "best_epoch": best_epoch, "stale": stale, "best_state": best_state,
                        "seconds": time.perf_counter() - start})
    result.state = {k: v.numpy() for k, v in best_state.items()}
    result.best_epoch, result.seconds = best_epoch, time.perf_counter() - start
    return result
