"""B13: prepare and training on 1 and 2 processes of this machine, side by side: `snn fit --procs P`
(torchrun, gloo) on the synthetic spec (`snn data synth --spec`: 39 features, sparse linear 64
wide, DLRM embeddings of dim 16, MLP), both steps rebuilt each time (--force-step prepare),
interleaved (1, 2, 1, 2, ...), medians. Figures: prepare rows/s (the train source's rows over the
step's fit + encode wall time on rank 0, which waits for every rank's share and joins the parts),
training rows/s (the epoch's rows over its wall time, as the train step reports it), each of 2
processes against 1, and the bytes one rank sends per training step in the exchanges
(train/distributed.py: the dense gradients' all-reduce and the touched rows' all-gather). On one
machine the ranks share its cores: the figures show what the exchanges and the joining cost, not a
speed-up a second machine would bring."""

from __future__ import annotations

import functools
import json
import statistics
import subprocess
import sys
from pathlib import Path

import yaml

from .figures import Figure, interleaved_results

PROCESSES = (1, 2)


def _fit(spec: Path, procs: int) -> dict:
    """The train step's metrics, with `prepare_rows_per_s` from the prepare step's info."""
    command = [sys.executable, "-m", "snn.cli.app", "fit", str(spec), "--force-step", "prepare", "--no-tracking"]
    command += ["--json", "--procs", str(procs)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"snn fit --procs {procs} exited {done.returncode}: {done.stderr[-1500:]}")
    result = json.loads(done.stdout)
    prepared = json.loads((Path(result["steps"]["prepare"]["path"]) / "step.json").read_text())
    rows = prepared["rows"]["train"] + prepared["rows"]["validation"]  # the train source's rows, held out or not
    seconds = prepared["seconds"]["fit"] + prepared["seconds"]["encode"]
    return result["metrics"] | {"prepare_rows_per_s": rows / seconds}


def bench_distributed(size: dict, folder: Path) -> list[Figure]:
    """The B13 figures on `size["distributed_rows"]` synthetic rows."""
    from ..data.synth import SynthConfig, synth_spec, write

    rows = size["distributed_rows"]
    work = folder / "distributed"
    work.mkdir(parents=True, exist_ok=True)
    data = work / f"synth_{rows}.parquet"
    if not data.exists():
        write(data, SynthConfig(rows=rows, seed=0))
    spec = work / "spec.yaml"
    spec.write_text(yaml.safe_dump(synth_spec(data.name, rows, name="distributed"), sort_keys=False))
    fits = {str(procs): functools.partial(_fit, spec, procs) for procs in PROCESSES}
    runs = interleaved_results(fits, size["repeats"])
    speed = {int(procs): statistics.median(r["rows_per_s"] for r in results) for procs, results in runs.items()}
    prepare = {int(p): statistics.median(r["prepare_rows_per_s"] for r in results) for p, results in runs.items()}
    sent = statistics.median(r["exchanged_bytes_per_step"] for r in runs["2"])
    batch = synth_spec(data.name, rows)["train"]["batch_size"]
    return [
        Figure(
            "B13.prepare_2_vs_1_processes",
            f"prepare rows/s (sharded fit, each rank encoding its share), 2 processes vs 1 ({rows:,} rows)",
            "rows/s",
            prepare[2],
            "1 process",
            prepare[1],
            note="the split files are the one-process bytes (tests/train/test_distributed.py)",
        ),
        Figure(
            "B13.train_2_vs_1_processes",
            f"training rows/s, 2 processes vs 1 (gloo, this machine's cores shared; {rows:,} rows)",
            "rows/s",
            speed[2],
            "1 process",
            speed[1],
            note=f"batch {batch} (each rank {batch // 2})",
        ),
        Figure(
            "B13.exchanged_bytes_per_step",
            "bytes one rank sends per step (dense all-reduce + touched rows all-gather), 2 processes",
            "bytes",
            sent,
            note="the tables themselves are never sent",
        ),
    ]
