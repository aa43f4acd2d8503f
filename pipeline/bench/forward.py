"""B2: the sparse linear layer's inference forward against torch.sparse.mm."""

from __future__ import annotations

import time

import numpy as np
import torch

from ..model.blocks import BLOCKS
from ..model.blocks.base import Entries, IdSpace
from ..model.network import Network
from ..model.plan import ModelSpec, plan_for
from .figures import Figure, interleaved


def bench_forward(size: dict) -> list[Figure]:
    """Two figures per batch size. `hot`: the same batch every call, its rows cached (the Twitter
    slide's setting). `cold`: each call takes the next batch of a pool whose rows (~80 MB) exceed the
    caches, snn and sparse.mm half a pool apart so neither finds rows the other just read: a serving
    request's rows come from DRAM."""
    num_ids, width, active = size["num_ids"], 50, min(500, size["num_ids"])
    torch.manual_seed(0)
    spec = ModelSpec.model_validate({"sparse_linear": {"width": width, "activation": "none"}, "mlp": {"layers": []}})
    network = Network(plan_for(spec, IdSpace(num_ids, active))).eval()
    block, node, layer = BLOCKS["sparse_linear"], network.plan.nodes[0], network.block_weights("sparse")
    with torch.no_grad():
        layer["max_abs"].uniform_(0.5, 1.5)
        layer["id_bias"].normal_(std=0.01)
    weight = layer["weight"].detach()
    rng = np.random.default_rng(2)
    figures = []
    for batch in (1, 16, 64, 256):
        pool = [
            torch.from_numpy(np.sort(rng.choice(num_ids, size=(batch, active)), axis=1).reshape(-1))
            for _ in range(max(2, size["b2_cold_entries"] // (batch * active)))
        ]
        figures += _batch_figures(
            batch, active, pool, lambda entries: block.infer(node, layer, entries), weight, size["b2_repeats"]
        )
    return figures


def _batch_figures(
    batch: int, active: int, pool: list[torch.Tensor], infer, weight: torch.Tensor, repeats: int
) -> list[Figure]:
    """The hot and cold figures of one batch size: `pool` holds the batches' ids [batch·active] each."""
    num_ids = weight.shape[0]
    values = torch.rand(batch * active)
    offsets = torch.arange(batch) * active
    crow = torch.cat([offsets, offsets.new_tensor([len(values)])])

    def ours(ids: torch.Tensor) -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            infer({"entries": Entries(ids, values, offsets)})
        return time.perf_counter() - start

    def sparse_mm(ids: torch.Tensor) -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            csr = torch.sparse_csr_tensor(crow, ids, values, size=(batch, num_ids), check_invariants=False)
            torch.sparse.mm(csr, weight)
        return time.perf_counter() - start

    ours(pool[0]), sparse_mm(pool[0])  # warm-up (the first call builds the native kernel)
    figures = []
    for setting, batches in (("hot", pool[:1]), ("cold", pool)):
        medians = interleaved(_turns(batches, {"snn": ours, "spmm": sparse_mm}), repeats)
        figures.append(
            Figure(
                f"B2.forward_{setting}_batch_{batch}",
                f"sparse linear forward, {setting} rows, batch {batch}, ~500 ids/row, out 50",
                "us",
                medians["snn"] * 1e6,
                "torch.sparse.mm(CSR)",
                medians["spmm"] * 1e6,
                higher_is_better=False,
                target=">= 2x",
                note="snn includes normalization, bias and activation",
            )
        )
    return figures


def _turns(batches: list[torch.Tensor], timers: dict) -> dict:
    """Each timer fed the next batch of its own turn through `batches`, the two half the pool apart
    so that neither finds rows the other just read."""
    turn = {name: k * len(batches) // 2 for k, name in enumerate(timers)}

    def run(name: str) -> float:
        turn[name] += 1
        return timers[name](batches[turn[name] % len(batches)])

    return {name: (lambda name=name: run(name)) for name in timers}
