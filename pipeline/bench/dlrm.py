"""B6: the DLRM spec (specs/criteo_dlrm.yaml) — training rows/s against the same architecture in
plain PyTorch, and online latency of one 1,000-candidate request.

The data is Criteo-shaped and synthetic: 13 continuous numbers (log1p of log-normal counts, a
tenth missing) and 26 categorical ids (Zipf within each field, field sizes growing in log scale,
training.field_sizes). The plain version is the same network written the way a PyTorch user
would: nn.EmbeddingBag(sparse=True) over the 26 fields' ids (one bag each, mode sum), the bottom MLP
on the 13 numbers and their missing indicators, the dot interaction by bmm and the upper triangle,
the top MLP; SparseAdam for the table, fused Adam for the rest. snn trains its Network from the
spec's plan, row-wise, with the spec's training step.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import torch
from torch import nn
from torch.nn import functional as F

from ..data.encoded import CSRBatch, EncodedSplit
from ..model.network import Network
from ..model.plan import ModelSpec, Plan, plan_for, space_of
from ..spec import load_spec
from ..train.loop import training_step
from ..train.optimizers import Optimizers
from ..train.spec import TrainSpec
from .figures import BATCH, Figure, interleaved, rows_per_second
from .pipeline import latency_figures
from .quality import SHIPPED
from .training import field_sizes

NUMBERS, IDS = 13, 26


def dlrm_spec() -> ModelSpec:
    """The shipped DLRM spec's `model:` section."""
    return load_spec(SHIPPED / "criteo_dlrm.yaml").spec.model


def criteo_shaped(rows: int, num_ids: int, seed: int = 0) -> tuple[pl.DataFrame, np.ndarray]:
    """A frame of I1..I13 (floats, 10% null) and C1..C26 (ints), and labels float32 [rows]."""
    from ..data.synth import zipf_ranks

    rng = np.random.default_rng(seed)
    columns: dict[str, pl.Series] = {}
    for j in range(1, NUMBERS + 1):
        x = np.floor(rng.lognormal(1.5, 1.5, rows))
        columns[f"I{j}"] = pl.Series(f"I{j}", np.where(rng.random(rows) < 0.1, np.nan, x)).fill_nan(None)
    for k, size in enumerate(field_sizes(num_ids, IDS + 13)[13:], start=1):
        columns[f"C{k}"] = pl.Series(f"C{k}", zipf_ranks(rng, int(size), rows))
    return pl.DataFrame(columns), (rng.random(rows) < 0.25).astype(np.float32)


def _features() -> list:
    from ..features.spec import CategoricalFeature, ContinuousFeature

    numbers = [
        ContinuousFeature(name=f"I{j}", kind="continuous", discretizer={"kind": "log1p"})  # type: ignore[arg-type]
        for j in range(1, NUMBERS + 1)
    ]
    return numbers + [CategoricalFeature(name=f"C{k}", kind="categorical") for k in range(1, IDS + 1)]


class PlainDLRM(nn.Module):
    """DLRM in plain PyTorch with the spec's sizes (see the module docstring)."""

    def __init__(self, plan: Plan):
        super().__init__()
        specs = {block.name: block.spec for block in plan.blocks}
        dim = specs["embeddings"].dim
        self.table = nn.EmbeddingBag(plan.space.num_ids, dim, mode="sum", sparse=True)
        self.bottom = _mlp(2 * NUMBERS, specs["bottom_mlp"].layers)
        bottom_width = specs["bottom_mlp"].layers[-1]
        self.project = nn.Linear(bottom_width, dim)
        vectors = IDS + 1
        self.pairs = torch.triu_indices(vectors, vectors, offset=1)
        self.top = _mlp(bottom_width + vectors * (vectors - 1) // 2, specs["top_mlp"].layers)
        self.head = nn.Linear(specs["top_mlp"].layers[-1], 1)

    def forward(self, numbers: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """numbers [B, 2·13] (values, missing indicators), ids [B, 26] -> logits [B]."""
        batch = ids.shape[0]
        offsets = torch.arange(batch * IDS, dtype=torch.int64) if batch else ids.new_zeros(0)
        embedded = self.table(ids.reshape(-1), offsets).view(batch, IDS, -1)
        h = self.bottom(numbers)
        vectors = torch.cat([self.project(h).unsqueeze(1), embedded], 1)
        gram = torch.bmm(vectors, vectors.transpose(1, 2))
        z = torch.cat([h, gram[:, self.pairs[0], self.pairs[1]]], 1)
        return self.head(self.top(z)).squeeze(-1)


def _mlp(width: int, layers: list[int]) -> nn.Sequential:
    modules: list[nn.Module] = []
    for units in layers:
        modules += [nn.Linear(width, units), nn.ReLU()]
        width = units
    return nn.Sequential(*modules)


def plain_inputs(batch: CSRBatch, fields: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The plain model's inputs read out of a CSR batch of one entry per feature (fields: each
    feature's first id): numbers float32 [B, 2·13] (values, 0 where missing; missing indicators)
    and ids int64 [B, 26]."""
    ids = np.asarray(batch.ids, dtype=np.int64).reshape(len(batch.labels), -1)
    values = np.asarray(batch.values).reshape(len(batch.labels), -1)
    present = ids[:, :NUMBERS] == fields[:NUMBERS]
    numbers = np.concatenate([np.where(present, values[:, :NUMBERS], 0.0), ~present], 1)
    return numbers.astype(np.float32), np.ascontiguousarray(ids[:, NUMBERS:])


def _plain_step(model: PlainDLRM, optimizers: list, batch: CSRBatch, fields: np.ndarray) -> None:
    """One step of the plain model from the same CSR batch."""
    numbers, ids = plain_inputs(batch, fields)
    logits = model(torch.from_numpy(numbers), torch.from_numpy(ids))
    loss = F.binary_cross_entropy_with_logits(logits, torch.from_numpy(np.asarray(batch.labels)))
    for optimizer in optimizers:
        optimizer.zero_grad(set_to_none=True)
    loss.backward()
    for optimizer in optimizers:
        optimizer.step()


def bench_dlrm(size: dict) -> list[Figure]:
    """B6: DLRM training rows/s (snn vs plain PyTorch, interleaved) and online p50/p99."""
    from ..features.feature_map import FeatureMap

    rows = size["train_rows"]
    frame, labels = criteo_shaped(rows, size["num_ids"])
    feature_map = FeatureMap.fit(_features(), frame, np.ones(rows))
    ids, values = feature_map.encode_frame(frame)
    split = EncodedSplit.from_dense(ids, values, labels, np.ones(rows, np.float32))
    plan = plan_for(dlrm_spec(), space_of(feature_map.num_ids, feature_map.layout()))
    torch.manual_seed(0)
    network = Network(plan)
    optimizers = Optimizers.for_model(network, TrainSpec(lr=1e-3, batch_size=BATCH))
    plain = PlainDLRM(plan)
    plain_optimizers = [
        torch.optim.SparseAdam(list(plain.table.parameters()), lr=1e-3),
        torch.optim.Adam([p for n, p in plain.named_parameters() if not n.startswith("table.")], lr=1e-3, fused=True),
    ]
    fields = np.array([e.offset for e in feature_map.encoders], dtype=np.int64)
    snn_step = lambda batch: training_step(network, optimizers, batch, torch.device("cpu"))
    plain_step = lambda batch: _plain_step(plain, plain_optimizers, batch, fields)
    for step in (snn_step, plain_step):  # warm-up: every table row touched once, untimed
        for batch in split.batches(BATCH):
            step(batch)
    rng = np.random.default_rng(2)
    medians = interleaved(
        {
            "snn": rows_per_second(snn_step, split, size["b1_batches"], rng),
            "plain": rows_per_second(plain_step, split, size["b1_batches"], rng),
        },
        size["repeats"],
    )
    figures = [
        Figure(
            "B6.dlrm_train_vs_plain",
            "train rows/s, specs/criteo_dlrm.yaml's model, Criteo-shaped synthetic rows, batch 4096 (CPU)",
            "rows/s",
            medians["snn"],
            "plain PyTorch DLRM (EmbeddingBag sparse + SparseAdam)",
            medians["plain"],
            target=">= 1.5x",
        )
    ]
    return figures + _online_latency(network, plan, feature_map, frame, size["requests"])


def _online_latency(network: Network, plan: Plan, feature_map, frame: pl.DataFrame, requests: int) -> list[Figure]:
    """p50/p99 of one request of 1,000 candidates (dicts) through the online scorer of the DLRM plan."""
    from ..serving.online import OnlineScorer
    from ..store.bundle import Bundle, Recipe

    loaded = load_spec(SHIPPED / "criteo_dlrm.yaml").spec
    recipe = Recipe(data=loaded.data, features=_features(), model=loaded.model, train=loaded.train, calibration=None)
    weights = {name: tensor.detach().numpy().astype(np.float64) for name, tensor in network.named_weights().items()}
    scorer = OnlineScorer(Bundle(recipe, feature_map, plan, weights))
    records = frame.head(min(frame.height, 50_000)).to_dicts()
    return latency_figures(scorer, records, requests, "B6.dlrm_online", "online scoring of the DLRM spec")
