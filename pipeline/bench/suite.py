"""The bench's driver: every figure at a size, and the result as JSON (see the package docstring)."""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import torch

from .distributed import bench_distributed
from .dlrm import bench_dlrm
from .encoding import bench_fit_encode
from .family import bench_id_lists, bench_int8_tables, bench_mixed_dims, bench_tree_library
from .first_hour import bench_first_hour
from .forward import bench_forward
from .pipeline import bench_quality_and_serving
from .quality import bench_shipped_specs
from .tasks import bench_tasks
from .training import bench_logistic, bench_training

SIZES = {
    # rows for B1/B5 training, ids for B1/B2, B3 row counts, repeats, Q rows, online requests, and
    # whether to run the shipped specs (Adult, Criteo, synthetic) over 3 seeds
    "full": {
        "train_rows": 1_000_000,
        "num_ids": 1 << 22,
        "b1_batches": 60,
        "spmm_batches": 2,
        "fit_rows": [1_000_000, 10_000_000],
        "sklearn_rows": 1_000_000,
        "quality_rows": 1_000_000,
        "repeats": 3,
        "b2_repeats": 200,
        "b2_cold_entries": 400_000,
        "requests": 200,
        "serve_seconds": 4.0,
        "soak_requests": 10_000,
        "shipped_specs": True,
        "distributed_rows": 300_000,
    },
    "tiny": {
        "train_rows": 20_000,
        "num_ids": 1 << 14,
        "b1_batches": 3,
        "spmm_batches": 1,
        "fit_rows": [20_000, 40_000],
        "sklearn_rows": 20_000,
        "quality_rows": 30_000,
        "repeats": 2,
        "b2_repeats": 5,
        "b2_cold_entries": 2_000,
        "requests": 5,
        "serve_seconds": 0.5,
        "soak_requests": 300,
        "shipped_specs": False,
        "distributed_rows": 20_000,
    },
}


def run(size_name: str, folder: Path) -> dict:
    """All figures at `size_name` ("full" or "tiny"), synthetic data cached under `folder`."""
    size = SIZES[size_name]
    folder.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(os.cpu_count() or 1)
    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")  # the competitors
    notes: list[str] = []
    started = time.perf_counter()
    figures = bench_training(size, notes) + bench_dlrm(size) + bench_forward(size) + bench_fit_encode(size, folder)
    quality, prepared = bench_quality_and_serving(size, folder)
    figures += quality + bench_logistic(size, prepared) + bench_tasks(size_name, size, folder)
    figures += bench_first_hour(size, folder) + bench_distributed(size, folder)
    if size["shipped_specs"]:
        figures += bench_shipped_specs(folder) + bench_mixed_dims(folder) + bench_int8_tables(folder)
        figures += bench_id_lists(folder) + bench_tree_library()
    return {
        "size": size_name,
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        },
        "figures": [asdict(f) for f in figures],
        "notes": notes,
        "seconds": time.perf_counter() - started,
    }
