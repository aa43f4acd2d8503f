"""B3: fit + encode rows/s and peak memory (in a subprocess each) against scikit-learn."""

from __future__ import annotations

import functools
import json
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from .figures import Figure, interleaved_results


def synth_file(folder: Path, rows: int, seed: int = 0) -> Path:
    """A cached synthetic parquet file of `rows` rows drawn from the planted model of `seed`."""
    from ..data.synth import SynthConfig, write

    path = folder / (f"synth-{rows}.parquet" if seed == 0 else f"synth-{rows}-seed{seed}.parquet")
    if not path.exists():
        write(path, SynthConfig(rows=rows, seed=seed))
    return path


def _worker(kind: str, path: Path, rows: int, workdir: Path) -> dict:
    """Run one fit+encode in a fresh process (peak RSS is the process's own); returns its JSON."""
    out = subprocess.run(
        [sys.executable, "-m", "snn.pipeline.bench.worker", kind, str(path), str(rows), str(workdir)],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"bench worker {kind} failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_fit_encode(size: dict, folder: Path) -> list[Figure]:
    figures = []
    for rows in size["fit_rows"]:
        path = synth_file(folder, rows)
        compare = rows <= size["sklearn_rows"]
        runs: dict[str, Callable[[], dict]] = {"snn": functools.partial(_worker, "snn", path, rows, folder)}
        if compare:
            runs["sklearn"] = functools.partial(_worker, "sklearn", path, rows, folder)
        results = interleaved_results(runs, size["repeats"] if compare else 1)
        rate = {n: statistics.median(r["rows"] / r["seconds"] for r in rs) for n, rs in results.items()}
        rss = {n: max(r["peak_rss_mb"] for r in rs) for n, rs in results.items()}
        label = f"{rows / 1e6:g}M" if rows >= 1e6 else f"{rows // 1000}k"
        figures.append(
            Figure(
                f"B3.fit_encode_{label}",
                f"fit + encode rows/s, {label} rows, 13 cont + 26 cat",
                "rows/s",
                rate["snn"],
                "sklearn KBins+OneHot" if compare else None,
                rate.get("sklearn"),
                target=">= 1M rows/s, >= 5x sklearn",
            )
        )
        figures.append(
            Figure(
                f"B3.peak_rss_{label}",
                f"peak RSS of fit + encode, {label} rows",
                "MB",
                rss["snn"],
                "sklearn KBins+OneHot" if compare else None,
                rss.get("sklearn"),
                higher_is_better=False,
                target="<= 3000 MB at 10M rows",
            )
        )
    return figures
