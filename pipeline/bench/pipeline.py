"""Q (one epoch's test AUC against the oracle, 3 seeds; quality.py) and B4 (snn predict rows/s,
online latency), through the real pipeline on synthetic data."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import numpy as np

from .encoding import synth_file
from .figures import Figure


def bench_quality_and_serving(size: dict, folder: Path) -> tuple[list[Figure], Path]:
    """Q (one epoch vs oracle, 3 seeds), B4 (predict rows/s, online latency), B11 (snn serve under load
    beside mlflow models serve), via the real pipeline;
    also returns seed 0's prepare folder (B5 trains on its encoded train split)."""
    import polars as pl

    from ..data.synth import train_rows
    from ..serving.online import OnlineScorer
    from ..serving.predict import predict_file
    from ..store.bundle import Bundle
    from .quality import bench_oracle_gap
    from .serving import bench_serving

    rows = size["quality_rows"]
    figures, result = bench_oracle_gap(size, folder)
    path = synth_file(folder, rows)
    history = json.loads((Path(result["steps"]["train"]["path"]) / "history.json").read_text())
    figures.append(
        Figure("Q.train_rows_per_s", "pipeline training rows/s in seed 0's run", "rows/s", history[0]["rows_per_s"])
    )
    bundle_path = Path(result["bundle"])
    cut = train_rows(rows)
    predict_runs = []
    for _ in range(size["repeats"]):
        start = time.perf_counter()
        count = predict_file(bundle_path, path, folder / "predictions.parquet", rows=(cut, rows))
        predict_runs.append(count / (time.perf_counter() - start))
    figures.append(
        Figure(
            "B4.predict_rows_per_s",
            "snn predict (batch scorer) rows/s, read + score + write",
            "rows/s",
            statistics.median(predict_runs),
        )
    )
    bundle = Bundle.load(bundle_path)
    scorer = OnlineScorer(bundle)
    frame = pl.read_parquet(path, n_rows=min(rows, 50_000)).drop("label", "p_true")
    figures += latency_figures(scorer, frame.to_dicts(), size["requests"], "B4.online", "online scoring")
    figures += bench_serving(size, bundle_path, frame.to_dicts()[:1000], folder)
    return figures, Path(result["steps"]["prepare"]["path"])


def latency_figures(scorer, records: list[dict], requests: int, figure_id: str, what: str) -> list[Figure]:
    """p50 and p99 of `requests` requests of 1,000 candidates each (after 3 untimed ones), cut from
    `records` at random starts, through `scorer.score_many`."""
    rng = np.random.default_rng(3)
    latencies = []
    for _ in range(requests + 3):
        start_row = int(rng.integers(0, max(len(records) - 1000, 1)))
        request = records[start_row : start_row + 1000]
        start = time.perf_counter()
        scorer.score_many(request)
        latencies.append(time.perf_counter() - start)
    milliseconds = np.array(latencies[3:]) * 1e3
    return [
        Figure(
            f"{figure_id}_p{quantile}_ms",
            f"{what}, one request of 1,000 candidates, p{quantile}",
            "ms",
            float(np.percentile(milliseconds, quantile)),
            higher_is_better=False,
            target=target,
        )
        for quantile, target in ((50, ""), (99, "<= 10 ms"))
    ]
