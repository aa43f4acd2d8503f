"""One fit + encode run for `snn bench` B3, in its own process so its peak RSS is its own.

    python -m snn.pipeline.bench.worker {snn|sklearn} DATA.parquet ROWS WORKDIR

prints one JSON line: rows, seconds, peak_rss_mb. Both paths fit on the train rows of the
synthetic spec (the first 90%) and encode every row of the file. Each path's modules are imported
before the clock starts (about 0.5 s for either), so the figure is the fit and encode work.
"""

from __future__ import annotations

import importlib
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import yaml


def run_snn(path: Path, rows: int, workdir: Path) -> None:
    from ..data.synth import synth_spec
    from ..spec import load_spec
    from ..steps.prepare import prepare

    spec = synth_spec(str(path.resolve()), rows)
    spec["data"]["train"]["rows"] = [0, rows]  # every row fitted (less the holdout) and encoded, as sklearn's
    del spec["data"]["test"]
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        spec_path = Path(tmp) / "spec.yaml"
        spec_path.write_text(yaml.safe_dump(spec))
        (Path(tmp) / "out").mkdir()
        loaded = load_spec(spec_path)
        prepare(loaded.data_files, loaded.spec.features, None, Path(tmp) / "out")


def run_sklearn(path: Path, rows: int, workdir: Path) -> None:
    from sklearn.preprocessing import KBinsDiscretizer, OneHotEncoder

    from ..data.synth import CATEGORICAL, CONTINUOUS, train_rows

    frame = pl.read_parquet(path, columns=CONTINUOUS + CATEGORICAL)
    continuous = frame.select(CONTINUOUS).fill_null(-1.0).to_numpy()
    categorical = frame.select(CATEGORICAL).fill_null(-1).to_numpy()
    cut = train_rows(rows)
    bins = KBinsDiscretizer(
        n_bins=32, encode="onehot", strategy="quantile", quantile_method="averaged_inverted_cdf", subsample=None
    ).fit(continuous[:cut])
    onehot = OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=2).fit(categorical[:cut])
    bins.transform(continuous), onehot.transform(categorical)


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM; unlike ru_maxrss it does not inherit the parent's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


IMPORTS = {
    "snn": ("snn.pipeline.steps.prepare", "snn.pipeline.spec", "snn.pipeline.data.synth"),
    "sklearn": ("sklearn.preprocessing", "snn.pipeline.data.synth"),
}


def main() -> None:
    kind, path, rows, workdir = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
    for module in IMPORTS[kind]:
        importlib.import_module(module)
    start = time.perf_counter()
    {"snn": run_snn, "sklearn": run_sklearn}[kind](path, rows, workdir)
    seconds = time.perf_counter() - start
    peak = peak_rss_mb()
    print(json.dumps({"rows": rows, "seconds": seconds, "peak_rss_mb": peak}))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
