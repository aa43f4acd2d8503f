"""B1 (training rows/s against plain PyTorch) and B5 (logistic regression against Vowpal Wabbit)."""

from __future__ import annotations

import importlib.util
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..data.encoded import CSRBatch, EncodedSplit
from ..model.blocks.base import IdSpace
from ..model.network import Network
from ..model.plan import ModelSpec, plan_for
from ..train.loop import training_step
from ..train.optimizers import Optimizers
from ..train.spec import TrainSpec
from .figures import BATCH, Figure, interleaved, rows_per_second

CPU = torch.device("cpu")


def field_sizes(num_ids: int, fields: int = 39) -> np.ndarray:
    """Id ranges per field summing to num_ids: 13 small (binned) fields, 26 growing in log scale."""
    small = [max(num_ids // 2**17, 8)] * 13
    weights = np.logspace(0, 4, fields - 13)
    rest = num_ids - sum(small)
    large = np.maximum((weights / weights.sum() * rest).astype(np.int64), 2)
    large[-1] += rest - large.sum()
    return np.array(small + list(large), dtype=np.int64)


def synthetic_ids(rows: int, num_ids: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """ids int64 [rows, 39] (Zipf within each field's range) and labels float32 [rows]."""
    from ..data.synth import zipf_ranks

    rng = np.random.default_rng(seed)
    sizes = field_sizes(num_ids)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    ids = np.stack([start + zipf_ranks(rng, int(size), rows) for start, size in zip(starts, sizes)], axis=1)
    return ids, (rng.random(rows) < 0.25).astype(np.float32)


def mlp_head(width: int, hidden: list[int]) -> nn.Sequential:
    """relu -> (Linear -> relu) per hidden layer -> Linear(., 1): the MLP every B1 model shares."""
    layers: list[nn.Module] = [nn.ReLU()]
    last = width
    for h in hidden:
        layers += [nn.Linear(last, h), nn.ReLU()]
        last = h
    return nn.Sequential(*layers, nn.Linear(last, 1))


class PlainEmbeddingBagModel(nn.Module):
    """The best plain PyTorch version: nn.EmbeddingBag(sparse=True) -> relu -> MLP."""

    def __init__(self, num_ids: int, width: int, hidden: list[int]):
        super().__init__()
        self.bag = nn.EmbeddingBag(num_ids, width, mode="sum", sparse=True)
        self.mlp = mlp_head(width, hidden)

    def forward(self, ids, values, offsets):
        return self.mlp(self.bag(ids, offsets, per_sample_weights=values)).squeeze(-1)


class SparseMatmulModel(nn.Module):
    """The naive version: a dense [num_ids, width] weight, torch.sparse.mm with a CSR batch, dense Adam."""

    def __init__(self, num_ids: int, width: int, hidden: list[int]):
        super().__init__()
        self.num_ids = num_ids
        self.weight = nn.Parameter(torch.randn(num_ids, width) * 0.01)
        self.head = mlp_head(width, hidden)

    def forward(self, ids, values, offsets):
        crow = torch.cat([offsets, offsets.new_tensor([len(ids)])])
        batch = torch.sparse_csr_tensor(crow, ids, values, size=(len(offsets), self.num_ids), check_invariants=False)
        return self.head(torch.sparse.mm(batch, self.weight)).squeeze(-1)


def plain_optimizers(model: nn.Module, lr: float = 1e-3) -> list[torch.optim.Optimizer]:
    sparse = [p for n, p in model.named_parameters() if n.startswith("bag.")]
    dense = [p for n, p in model.named_parameters() if not n.startswith("bag.")]
    return ([torch.optim.SparseAdam(sparse, lr=lr)] if sparse else []) + [torch.optim.Adam(dense, lr=lr, fused=True)]


def plain_step(model: nn.Module, optimizers, batch: CSRBatch, device: torch.device = CPU) -> None:
    """One step of a plain model: tensors to the device, BCE, backward, every optimizer steps."""
    ids, values, offsets, labels = (
        torch.from_numpy(np.ascontiguousarray(a)).to(device, non_blocking=True)
        for a in (batch.ids, batch.values, batch.offsets, batch.labels)
    )
    loss = F.binary_cross_entropy_with_logits(model(ids, values, offsets), labels)
    for optimizer in optimizers:
        optimizer.zero_grad(set_to_none=True)
    loss.backward()
    for optimizer in optimizers:
        optimizer.step()


def snn_trainer(
    num_ids: int, num_fields: int, model_spec: ModelSpec, device: torch.device
) -> Callable[[CSRBatch], object]:
    torch.manual_seed(0)
    model = Network(plan_for(model_spec, IdSpace(num_ids, num_fields))).to(device)
    optimizers = Optimizers.for_model(model, TrainSpec(lr=1e-3, batch_size=BATCH))
    return lambda batch: training_step(model, optimizers, batch, device)


def bench_training(size: dict, notes: list[str]) -> list[Figure]:
    """B1 (and its GPU twin when CUDA is visible)."""
    num_ids = size["num_ids"]
    ids, labels = synthetic_ids(size["train_rows"], num_ids)
    split = EncodedSplit.from_dense(ids, np.ones(ids.shape, np.float32), labels, np.ones(len(labels), np.float32))
    rng = np.random.default_rng(1)
    spec = ModelSpec.model_validate({"sparse_linear": {"width": 64}, "mlp": {"layers": [32]}})
    medians = _cpu_medians(size, split, spec, rng)  # its models and optimizer state are freed on return
    figures = [
        Figure(
            "B1.train_vs_embeddingbag",
            "train rows/s, 2^22x64 + MLP 64-32-1, batch 4096 (CPU)",
            "rows/s",
            medians["snn"],
            "EmbeddingBag(sparse)+SparseAdam",
            medians["plain"],
            target=">= 2x",
        ),
        Figure(
            "B1.train_vs_sparse_mm",
            "train rows/s, same model (CPU)",
            "rows/s",
            medians["snn"],
            "torch.sparse.mm(CSR)+Adam",
            medians["spmm"],
            note="naive dense-weight version",
        ),
    ]
    if torch.cuda.is_available():
        device = torch.device("cuda")
        snn_gpu = snn_trainer(num_ids, ids.shape[1], spec, device)
        plain_gpu = PlainEmbeddingBagModel(num_ids, 64, [32]).to(device)
        opts_gpu = plain_optimizers(plain_gpu)

        def plain_gpu_step(batch: CSRBatch) -> None:
            plain_step(plain_gpu, opts_gpu, batch, device)

        gpu = interleaved(
            {
                "snn": _cuda_timed(rows_per_second(snn_gpu, split, size["b1_batches"] * 4, rng)),
                "plain": _cuda_timed(rows_per_second(plain_gpu_step, split, size["b1_batches"] * 4, rng)),
            },
            size["repeats"],
        )
        figures.append(
            Figure(
                "B1.gpu_train_vs_embeddingbag",
                f"train rows/s on {torch.cuda.get_device_name()}",
                "rows/s",
                gpu["snn"],
                "EmbeddingBag(sparse)+SparseAdam (GPU)",
                gpu["plain"],
                target=">= 2M rows/s on an H100",
            )
        )
    else:
        notes.append("GPU figures skipped: no CUDA device visible")
    return figures


def _cpu_medians(size: dict, split: EncodedSplit, spec: ModelSpec, rng) -> dict[str, float]:
    """B1's CPU runs: snn, EmbeddingBag + SparseAdam, sparse.mm, interleaved -> median rows/s each."""
    num_ids, fields = size["num_ids"], split.width or 0
    snn = snn_trainer(num_ids, fields, spec, torch.device("cpu"))
    plain = PlainEmbeddingBagModel(num_ids, 64, [32])
    plain_opts = plain_optimizers(plain)
    spmm = SparseMatmulModel(num_ids, 64, [32])
    spmm_opts = plain_optimizers(spmm)
    # warm-up: one untimed pass each, so every table row has been touched once (first touches of
    # fresh pages cost page faults once per row, not per step: the figure is the steady state)
    for step in (snn, lambda b: plain_step(plain, plain_opts, b)):
        for batch in split.batches(BATCH):
            step(batch)
    return interleaved(
        {
            "snn": rows_per_second(snn, split, size["b1_batches"], rng),
            "plain": rows_per_second(lambda b: plain_step(plain, plain_opts, b), split, size["b1_batches"], rng),
            "spmm": rows_per_second(lambda b: plain_step(spmm, spmm_opts, b), split, size["spmm_batches"], rng),
        },
        size["repeats"],
    )


def _cuda_timed(run: Callable[[], float]) -> Callable[[], float]:
    def timed() -> float:
        torch.cuda.synchronize()
        value = run()
        torch.cuda.synchronize()
        return value

    return timed


def bench_logistic(size: dict, prepared: Path) -> list[Figure]:
    """B5: the LR-only model (width 1, no MLP) on the encoded synthetic train split vs VW, one pass each."""
    from ..features.feature_map import FeatureMap

    split = EncodedSplit.load(prepared / "splits" / "train")
    feature_map = FeatureMap.from_json(json.loads((prepared / "feature_map.json").read_text()))
    spec = ModelSpec.model_validate({"sparse_linear": {"width": 1, "activation": "none"}, "mlp": {"layers": []}})
    rng = np.random.default_rng(4)

    def snn_pass() -> float:  # a fresh model, one pass over every row
        step = snn_trainer(feature_map.num_ids, len(feature_map.encoders), spec, torch.device("cpu"))
        return rows_per_second(step, split, -(-split.rows // BATCH), rng)()

    if importlib.util.find_spec("vowpalwabbit") is None:
        value = interleaved({"snn": snn_pass}, size["repeats"])["snn"]
        return [
            Figure(
                "B5.logistic_vs_vw",
                "logistic regression, one pass, rows/s",
                "rows/s",
                value,
                "Vowpal Wabbit",
                None,
                target=">= 1x",
                note="VW skipped: install the bench extra (pip install -e '.[bench]')",
            )
        ]
    text = _vw_text(split)

    def vw_pass() -> float:
        from vowpalwabbit import Workspace

        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "train.vw"
            data.write_text(text)
            start = time.perf_counter()
            workspace = Workspace(f"-d {data} --loss_function logistic -b 22 --quiet --no_stdin")
            workspace.run_parser()
            seconds = time.perf_counter() - start
            workspace.finish()
        return split.rows / seconds

    medians = interleaved({"snn": snn_pass, "vw": vw_pass}, size["repeats"])
    return [
        Figure(
            "B5.logistic_vs_vw",
            "logistic regression, one pass, rows/s (VW parses text)",
            "rows/s",
            medians["snn"],
            "Vowpal Wabbit",
            medians["vw"],
            target=">= 1x",
        )
    ]


def _vw_text(split: EncodedSplit) -> str:
    """The encoded rows in VW's text format: `label |f id id ...` (labels -1/1)."""
    ids = np.asarray(split.ids).reshape(split.rows, -1)
    labels = np.where(np.asarray(split.labels) > 0, "1", "-1")
    return "\n".join(f"{y} |f " + " ".join(map(str, row)) for y, row in zip(labels, ids.tolist())) + "\n"
