"""B12: how long a new user waits for the commands of the first hour, each a fresh `snn` process
(what a shell runs): `snn --help`, a spec with a typo, `snn init` on a CSV, and a fully cached
`snn run` (tracking on, and --no-tracking).

Each is timed `repeats` times, interleaved, and reported as the median wall-clock seconds beside
its target (lower is better; the ratio is target / measured, above 1 when the target holds)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

from .figures import Figure, interleaved

TARGETS = {"help": 1.0, "spec_error": 1.0, "init": 3.0, "cached_run": 3.0, "cached_run_untracked": 3.0}


def _clicks(path: Path, rows: int) -> None:
    rng = np.random.default_rng(0)
    age = rng.integers(18, 80, rows)
    country = rng.choice(["us", "fr", "de", "jp"], rows)
    clicked = (rng.random(rows) < 1 / (1 + np.exp(-(0.04 * (age - 45) + 1.2 * (country == "fr") - 1)))).astype(int)
    pl.DataFrame({"age": age, "country": country, "clicked": clicked}).write_csv(path)


def _seconds(*args: str | Path, expect: int = 0) -> float:
    command = [sys.executable, "-m", "snn.cli.app", *map(str, args)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != expect:
        raise RuntimeError(f"{' '.join(command[3:])} exited {done.returncode}: {done.stderr[-800:]}")
    return seconds


def bench_first_hour(size: dict, folder: Path) -> list[Figure]:
    """The B12 figures (a CSV of 20,000 rows; `size["repeats"]` interleaved rounds)."""
    work = folder / "first_hour"
    work.mkdir(parents=True, exist_ok=True)
    data = work / "clicks.csv"
    _clicks(data, 20_000)
    spec = work / "spec.yaml"
    spec.unlink(missing_ok=True)
    _seconds("init", data, "-o", spec)
    _seconds("run", spec)  # builds every step once; the runs timed below are cache hits
    typo = work / "typo.yaml"
    typo.write_text(spec.read_text().replace("epochs:", "epoch:"))
    fresh = work / "fresh.yaml"

    def init() -> float:
        fresh.unlink(missing_ok=True)
        return _seconds("init", data, "-o", fresh)

    medians = interleaved(
        {
            "help": lambda: _seconds("--help"),
            "spec_error": lambda: _seconds("fit", typo, expect=2),
            "init": init,
            "cached_run": lambda: _seconds("run", spec),
            "cached_run_untracked": lambda: _seconds("run", spec, "--no-tracking"),
        },
        size["repeats"],
    )
    what = {
        "help": "`snn --help`",
        "spec_error": "a spec with a typo: exit 2 with the line",
        "init": "`snn init` on a 20,000-row CSV",
        "cached_run": "a fully cached `snn run` (tracking on: it starts no MLflow run)",
        "cached_run_untracked": "a fully cached `snn run --no-tracking`",
    }
    return [
        Figure(
            f"B12.{name}",
            what[name],
            "s",
            seconds,
            "target",
            TARGETS[name],
            higher_is_better=False,
            target=f"< {TARGETS[name]:g} s",
        )
        for name, seconds in medians.items()
    ]
