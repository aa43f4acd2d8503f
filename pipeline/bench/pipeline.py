"""Q (one epoch's test AUC against the oracle) and B4 (snn predict rows/s, online latency), through
the real pipeline on synthetic data."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .encoding import synth_file
from .figures import Figure


def bench_quality_and_serving(size: dict, folder: Path) -> tuple[list[Figure], Path]:
    """Q (one epoch vs oracle), B4 (predict rows/s, online latency), via the real pipeline; also
    returns the run's prepare folder (B5 trains on its encoded train split)."""
    import polars as pl
    import yaml

    from ..data.synth import synth_spec, train_rows
    from ..serving.online import OnlineScorer
    from ..serving.predict import predict_file
    from ..store.bundle import Bundle

    rows = size["quality_rows"]
    path = synth_file(folder, rows)
    spec_path = folder / f"quality-{rows}.yaml"
    spec_path.write_text(yaml.safe_dump(synth_spec(path.name, rows, name=f"quality-{rows}"), sort_keys=False))
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}"}
    out = subprocess.run(
        [sys.executable, "-m", "snn.cli.app", "validate", str(spec_path), "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if out.returncode not in (0, 3):
        raise RuntimeError(f"quality run failed: {out.stderr[-2000:]}")
    result = json.loads(out.stdout)
    test = result["metrics"]["test"]
    history = json.loads((Path(result["steps"]["train"]["path"]) / "history.json").read_text())
    figures = [
        Figure(
            "Q.one_epoch_auc_vs_oracle",
            f"test AUC after 1 epoch, {rows:,} synthetic rows (interactions)",
            "auc",
            test["raw"]["auc"],
            "oracle (true p)",
            test["oracle"]["auc"],
            target="within 0.01 of oracle",
            note=f"gap {test['oracle']['auc'] - test['raw']['auc']:.4f}",
        ),
        Figure("Q.train_rows_per_s", "pipeline training rows/s in that run", "rows/s", history[0]["rows_per_s"]),
    ]
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
    records = frame.to_dicts()
    rng = np.random.default_rng(3)
    latencies = []
    for _ in range(size["requests"] + 3):
        start_row = int(rng.integers(0, max(len(records) - 1000, 1)))
        request = records[start_row : start_row + 1000]
        start = time.perf_counter()
        scorer.score_many(request)
        latencies.append(time.perf_counter() - start)
    milliseconds = np.array(latencies[3:]) * 1e3
    for quantile, target in ((50, ""), (99, "<= 10 ms")):
        figures.append(
            Figure(
                f"B4.online_p{quantile}_ms",
                f"online scoring, one request of 1,000 candidates, p{quantile}",
                "ms",
                float(np.percentile(milliseconds, quantile)),
                higher_is_better=False,
                target=target,
            )
        )
    return figures, Path(result["steps"]["prepare"]["path"])
