"""`snn bench`: speed and quality figures, each snn's value beside a competitor's, same run.

Every timed figure is the median of `repeats` runs, with snn and its competitor interleaved
(snn, competitor, snn, competitor, ...) so machine noise hits both. Figures:

B1  training rows/s (forward + backward + optimizer step), sparse linear 2^22 x 64 + MLP 64-32-1,
    batch 4096, vs nn.EmbeddingBag(sparse=True) + SparseAdam + Adam, and vs torch.sparse.mm + Adam
B2  sparse linear forward (~500 active ids of 2^22 per row, width 50) vs torch.sparse.mm on CSR,
    with the batch's rows cached (hot) and fetched from memory (cold)
B3  fit + encode rows/s and peak RSS (subprocess) on synthetic parquet, vs sklearn
    KBinsDiscretizer + OneHotEncoder on the same columns (1M rows only)
B4  `snn predict` rows/s (batch scorer) and online latency p50/p99 of one 1,000-candidate request
B5  logistic-regression training rows/s vs Vowpal Wabbit (`vowpalwabbit`, one pass, logistic loss)
Q   test AUC after one epoch on synthetic rows with pairwise interactions vs the oracle AUC
"""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..store.encoded import CSRBatch, EncodedSplit
from ..model.blocks import BLOCKS
from ..model.blocks.base import IdSpace, Entries
from ..model.network import Network
from ..model.plan import ModelSpec, plan_for
from ..train.spec import TrainSpec
from ..train.optimizers import Optimizers
from ..train.loop import training_step

SIZES = {
    # rows for B1/B5 training, ids for B1/B2, B3 row counts, repeats, Q rows, online requests
    "full": {"train_rows": 1_000_000, "num_ids": 1 << 22, "b1_batches": 60, "spmm_batches": 2,
             "fit_rows": [1_000_000, 10_000_000], "sklearn_rows": 1_000_000, "quality_rows": 1_000_000,
             "repeats": 3, "b2_repeats": 200, "b2_cold_entries": 400_000, "requests": 200},
    "tiny": {"train_rows": 20_000, "num_ids": 1 << 14, "b1_batches": 3, "spmm_batches": 1,
             "fit_rows": [20_000, 40_000], "sklearn_rows": 20_000, "quality_rows": 30_000,
             "repeats": 2, "b2_repeats": 5, "b2_cold_entries": 2_000, "requests": 5},
}
BATCH = 4096
T = TypeVar("T")


@dataclass
class Figure:
    """One row of the table: snn's value, the competitor's, and ratio = how many times better snn is."""

    id: str
    what: str
    unit: str
    snn: float | None
    competitor: str | None = None
    competitor_value: float | None = None
    higher_is_better: bool = True
    target: str = ""
    note: str = ""
    ratio: float | None = field(default=None)

    def __post_init__(self):
        if self.snn is not None and self.competitor_value:
            self.ratio = self.snn / self.competitor_value if self.higher_is_better else self.competitor_value / self.snn


def interleaved_results(runs: dict[str, Callable[[], T]], repeats: int) -> dict[str, list[T]]:
    """Call each run in turn, `repeats` rounds: every run's results, in order."""
    results = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            results[name].append(run())
    return results


def interleaved(runs: dict[str, Callable[[], float]], repeats: int) -> dict[str, float]:
    """Call each run in turn, `repeats` rounds; median of each run's results."""
    return {name: statistics.median(values) for name, values in interleaved_results(runs, repeats).items()}


# ----------------------------------------------------------------------------- synthetic ids


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


# ----------------------------------------------------------------------------- B1 / B5: training


def mlp_head(width: int, hidden: list[int]) -> nn.Sequential:
    """relu -> (Linear -> relu) per hidden layer -> Linear(., 1): the MLP every B1 model shares."""
    layers, last = [nn.ReLU()], width
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


def plain_step(model: nn.Module, optimizers, batch: CSRBatch, device: torch.device = torch.device("cpu")) -> None:
    """One step of a plain model: tensors to the device, BCE, backward, every optimizer steps."""
    ids, values, offsets, labels = (torch.from_numpy(np.ascontiguousarray(a)).to(device, non_blocking=True)
                                    for a in (batch.ids, batch.values, batch.offsets, batch.labels))
    loss = F.binary_cross_entropy_with_logits(model(ids, values, offsets), labels)
    for optimizer in optimizers:
        optimizer.zero_grad(set_to_none=True)
    loss.backward()
    for optimizer in optimizers:
        optimizer.step()


def rows_per_second(step: Callable[[CSRBatch], None], split: EncodedSplit, batches: int, rng) -> Callable[[], float]:
    """A run timing `batches` shuffled batches of the split through `step`."""
    def run() -> float:
        order = rng.permutation(split.rows)[: batches * BATCH]
        chosen = [split.take(order[i:i + BATCH]) for i in range(0, len(order), BATCH)]
        start = time.perf_counter()
        for batch in chosen:
            step(batch)
        return sum(len(b.labels) for b in chosen) / (time.perf_counter() - start)
    return run


def snn_trainer(num_ids: int, num_fields: int, model_spec: ModelSpec, device: torch.device) -> Callable[[CSRBatch], None]:
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
    snn = snn_trainer(num_ids, ids.shape[1], spec, torch.device("cpu"))
    plain = PlainEmbeddingBagModel(num_ids, 64, [32])
    plain_opts = plain_optimizers(plain)
    spmm = SparseMatmulModel(num_ids, 64, [32])
    spmm_opts = plain_optimizers(spmm)
    # warm-up: one untimed pass each, so every table row has been touched once (first touches of
    # fresh pages cost page faults once per row, not per step: the figure is the steady state)
    for step in (snn, lambda b: plain_step(plain, plain_opts, b)):
        for batch in split.batches(BATCH):
            step(batch)
    medians = interleaved({
        "snn": rows_per_second(snn, split, size["b1_batches"], rng),
        "plain": rows_per_second(lambda b: plain_step(plain, plain_opts, b), split, size["b1_batches"], rng),
        "spmm": rows_per_second(lambda b: plain_step(spmm, spmm_opts, b), split, size["spmm_batches"], rng),
    }, size["repeats"])
    spmm = spmm_opts = plain = plain_opts = None  # free the tables and optimizer state before the GPU run
    figures = [
        Figure("B1.train_vs_embeddingbag", "train rows/s, 2^22x64 + MLP 64-32-1, batch 4096 (CPU)", "rows/s",
               medians["snn"], "EmbeddingBag(sparse)+SparseAdam", medians["plain"], target=">= 2x"),
        Figure("B1.train_vs_sparse_mm", "train rows/s, same model (CPU)", "rows/s", medians["snn"],
               "torch.sparse.mm(CSR)+Adam", medians["spmm"], note="naive dense-weight version"),
    ]
    if torch.cuda.is_available():
        device = torch.device("cuda")
        snn_gpu = snn_trainer(num_ids, ids.shape[1], spec, device)
        plain_gpu = PlainEmbeddingBagModel(num_ids, 64, [32]).to(device)
        opts_gpu = plain_optimizers(plain_gpu)

        def plain_gpu_step(batch: CSRBatch) -> None:
            plain_step(plain_gpu, opts_gpu, batch, device)

        gpu = interleaved({
            "snn": _cuda_timed(rows_per_second(snn_gpu, split, size["b1_batches"] * 4, rng)),
            "plain": _cuda_timed(rows_per_second(plain_gpu_step, split, size["b1_batches"] * 4, rng)),
        }, size["repeats"])
        figures.append(Figure("B1.gpu_train_vs_embeddingbag", f"train rows/s on {torch.cuda.get_device_name()}",
                              "rows/s", gpu["snn"], "EmbeddingBag(sparse)+SparseAdam (GPU)", gpu["plain"],
                              target=">= 2M rows/s on an H100"))
    else:
        notes.append("GPU figures skipped: no CUDA device visible")
    return figures


def _cuda_timed(run: Callable[[], float]) -> Callable[[], float]:
    def timed() -> float:
        torch.cuda.synchronize()
        value = run()
        torch.cuda.synchronize()
        return value
    return timed


# ----------------------------------------------------------------------------- B2: forward


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
        values = torch.rand(batch * active)
        offsets = torch.arange(batch) * active
        crow = torch.cat([offsets, offsets.new_tensor([len(values)])])
        cold_batches = max(2, size["b2_cold_entries"] // (batch * active))
        pool = [torch.from_numpy(np.sort(rng.choice(num_ids, size=(batch, active)), axis=1).reshape(-1))
                for _ in range(cold_batches)]

        def ours(ids: torch.Tensor) -> float:
            start = time.perf_counter()
            with torch.inference_mode():
                block.infer(node, layer, {"entries": Entries(ids, values, offsets)})
            return time.perf_counter() - start

        def sparse_mm(ids: torch.Tensor) -> float:
            start = time.perf_counter()
            with torch.inference_mode():
                csr = torch.sparse_csr_tensor(crow, ids, values, size=(batch, num_ids), check_invariants=False)
                torch.sparse.mm(csr, weight)
            return time.perf_counter() - start

        ours(pool[0]), sparse_mm(pool[0])  # warm-up (the first call builds the native kernel)
        for setting, batches in (("hot", pool[:1]), ("cold", pool)):
            turn = {"snn": 0, "spmm": len(batches) // 2}

            def next_batch(who: str) -> torch.Tensor:
                turn[who] += 1
                return batches[turn[who] % len(batches)]

            medians = interleaved({"snn": lambda: ours(next_batch("snn")),
                                   "spmm": lambda: sparse_mm(next_batch("spmm"))}, size["b2_repeats"])
            figures.append(Figure(f"B2.forward_{setting}_batch_{batch}",
                                  f"sparse linear forward, {setting} rows, batch {batch}, ~500 ids/row, out 50",
                                  "us", medians["snn"] * 1e6, "torch.sparse.mm(CSR)", medians["spmm"] * 1e6,
                                  higher_is_better=False, target=">= 2x",
                                  note="snn includes normalization, bias and activation"))
    return figures


# ----------------------------------------------------------------------------- B3: fit + encode


def synth_file(folder: Path, rows: int) -> Path:
    """A cached synthetic parquet file of `rows` rows (seed 0)."""
    from ..data.synth import SynthConfig, write

    path = folder / f"synth-{rows}.parquet"
    if not path.exists():
        write(path, SynthConfig(rows=rows, seed=0))
    return path


def _worker(kind: str, path: Path, rows: int, workdir: Path) -> dict:
    """Run one fit+encode in a fresh process (peak RSS is the process's own); returns its JSON."""
    out = subprocess.run([sys.executable, "-m", "snn.pipeline.bench.worker", kind, str(path), str(rows), str(workdir)],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"bench worker {kind} failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_fit_encode(size: dict, folder: Path) -> list[Figure]:
    figures = []
    for rows in size["fit_rows"]:
        path = synth_file(folder, rows)
        compare = rows <= size["sklearn_rows"]
        runs = {"snn": lambda p=path, r=rows: _worker("snn", p, r, folder)}
        if compare:
            runs["sklearn"] = lambda p=path, r=rows: _worker("sklearn", p, r, folder)
        results = interleaved_results(runs, size["repeats"] if compare else 1)
        rate = {n: statistics.median(r["rows"] / r["seconds"] for r in rs) for n, rs in results.items()}
        rss = {n: max(r["peak_rss_mb"] for r in rs) for n, rs in results.items()}
        label = f"{rows / 1e6:g}M" if rows >= 1e6 else f"{rows // 1000}k"
        figures.append(Figure(f"B3.fit_encode_{label}", f"fit + encode rows/s, {label} rows, 13 cont + 26 cat", "rows/s",
                              rate["snn"], "sklearn KBins+OneHot" if compare else None, rate.get("sklearn"),
                              target=">= 1M rows/s, >= 5x sklearn"))
        figures.append(Figure(f"B3.peak_rss_{label}", f"peak RSS of fit + encode, {label} rows", "MB", rss["snn"],
                              "sklearn KBins+OneHot" if compare else None, rss.get("sklearn"), higher_is_better=False,
                              target="<= 3000 MB at 10M rows"))
    return figures


# ----------------------------------------------------------------------------- Q, B4, B5


def bench_quality_and_serving(size: dict, folder: Path) -> tuple[list[Figure], Path]:
    """Q (one epoch vs oracle), B4 (predict rows/s, online latency), via the real pipeline; also
    returns the run's prepare folder (B5 trains on its encoded train split)."""
    import polars as pl
    import yaml

    from ..store.bundle import Bundle
    from ..serving.online import OnlineScorer
    from ..serving.predict import predict_file
    from ..data.synth import synth_spec, train_rows

    rows = size["quality_rows"]
    path = synth_file(folder, rows)
    spec_path = folder / f"quality-{rows}.yaml"
    spec_path.write_text(yaml.safe_dump(synth_spec(path.name, rows, name=f"quality-{rows}"), sort_keys=False))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}"}
    out = subprocess.run([sys.executable, "-m", "snn.cli.app", "validate", str(spec_path), "--json"],
                         capture_output=True, text=True, env=env, check=False)
    if out.returncode not in (0, 3):
        raise RuntimeError(f"quality run failed: {out.stderr[-2000:]}")
    result = json.loads(out.stdout)
    test = result["metrics"]["test"]
    history = json.loads((Path(result["steps"]["train"]["path"]) / "history.json").read_text())
    figures = [
        Figure("Q.one_epoch_auc_vs_oracle", f"test AUC after 1 epoch, {rows:,} synthetic rows (interactions)",
               "auc", test["raw"]["auc"], "oracle (true p)", test["oracle"]["auc"],
               target="within 0.01 of oracle", note=f"gap {test['oracle']['auc'] - test['raw']['auc']:.4f}"),
        Figure("Q.train_rows_per_s", "pipeline training rows/s in that run", "rows/s", history[0]["rows_per_s"]),
    ]
    bundle_path = Path(result["bundle"])
    cut = train_rows(rows)
    predict_runs = []
    for _ in range(size["repeats"]):
        start = time.perf_counter()
        count = predict_file(bundle_path, path, folder / "predictions.parquet", rows=(cut, rows))
        predict_runs.append(count / (time.perf_counter() - start))
    figures.append(Figure("B4.predict_rows_per_s", "snn predict (batch scorer) rows/s, read + score + write",
                          "rows/s", statistics.median(predict_runs)))
    bundle = Bundle.load(bundle_path)
    scorer = OnlineScorer(bundle)
    frame = pl.read_parquet(path, n_rows=min(rows, 50_000)).drop("label", "p_true")
    records = frame.to_dicts()
    rng = np.random.default_rng(3)
    latencies = []
    for _ in range(size["requests"] + 3):
        start_row = int(rng.integers(0, max(len(records) - 1000, 1)))
        request = records[start_row:start_row + 1000]
        start = time.perf_counter()
        scorer.score_many(request)
        latencies.append(time.perf_counter() - start)
    latencies = np.array(latencies[3:]) * 1e3
    figures.append(Figure("B4.online_p50_ms", "online scoring, one request of 1,000 candidates, p50", "ms",
                          float(np.percentile(latencies, 50)), higher_is_better=False))
    figures.append(Figure("B4.online_p99_ms", "online scoring, one request of 1,000 candidates, p99", "ms",
                          float(np.percentile(latencies, 99)), higher_is_better=False, target="<= 10 ms"))
    return figures, Path(result["steps"]["prepare"]["path"])


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
        return [Figure("B5.logistic_vs_vw", "logistic regression, one pass, rows/s", "rows/s", value, "Vowpal Wabbit",
                       None, target=">= 1x", note="VW skipped: install the bench extra (pip install -e '.[bench]')")]
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
    return [Figure("B5.logistic_vs_vw", "logistic regression, one pass, rows/s (VW parses text)", "rows/s",
                   medians["snn"], "Vowpal Wabbit", medians["vw"], target=">= 1x")]


def _vw_text(split: EncodedSplit) -> str:
    """The encoded rows in VW's text format: `label |f id id ...` (labels -1/1)."""
    ids = np.asarray(split.ids).reshape(split.rows, -1)
    labels = np.where(np.asarray(split.labels) > 0, "1", "-1")
    return "\n".join(f"{y} |f " + " ".join(map(str, row)) for y, row in zip(labels, ids.tolist())) + "\n"


# ----------------------------------------------------------------------------- driver


def run(size_name: str, folder: Path) -> dict:
    """All figures at `size_name` ("full" or "tiny"), synthetic data cached under `folder`."""
    size = SIZES[size_name]
    folder.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(os.cpu_count() or 1)
    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")  # the competitors
    notes: list[str] = []
    started = time.perf_counter()
    figures = bench_training(size, notes) + bench_forward(size) + bench_fit_encode(size, folder)
    quality, prepared = bench_quality_and_serving(size, folder)
    figures += quality + bench_logistic(size, prepared)
    return {
        "size": size_name, "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                                       "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None},
        "figures": [asdict(f) for f in figures], "notes": notes, "seconds": time.perf_counter() - started,
    }


def table(result: dict) -> str:
    """The figures as a fixed-width text table."""
    lines = [f"{'figure':<28} {'snn':>12} {'competitor':>12} {'ratio':>7}  unit    competitor / target / note"]
    for f in result["figures"]:
        fmt = (lambda v: "-" if v is None else f"{v:,.4f}" if f["unit"] == "auc" else f"{v:,.1f}")
        ratio = "-" if f["ratio"] is None else f"{f['ratio']:.2f}x"
        extra = " / ".join(x for x in (f["competitor"], f["target"], f["note"]) if x)
        lines.append(f"{f['id']:<28} {fmt(f['snn']):>12} {fmt(f['competitor_value']):>12} {ratio:>7}  {f['unit']:<7} {extra}")
    lines += [f"note: {n}" for n in result["notes"]]
    return "\n".join(lines)
