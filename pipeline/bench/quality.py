"""Quality figures over seeds: a spec run through the real pipeline (`snn validate`) and judged on
its test split. Q: one epoch on synthetic data of 3 planted models against each one's oracle;
the shipped specs (Adult, Criteo, synthetic with 10x negative downsampling) over 3 training seeds.
Every figure is held out: the model and the calibrator never saw the test rows."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from unittest.mock import patch

import yaml

from ..spec import load_spec
from .figures import Figure

SEEDS = (0, 1, 2)
SHIPPED = Path(__file__).resolve().parents[2] / "specs"


def validate_json(spec_path: Path, folder: Path) -> dict:
    """`snn validate SPEC --json` in a fresh process, tracked into `folder`'s own MLflow store."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}"}
    out = subprocess.run(
        [sys.executable, "-m", "snn.cli.app", "validate", str(spec_path), "--json"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if out.returncode not in (0, 3):  # 3: a gate failed, the figures still stand
        raise RuntimeError(f"{spec_path} failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout)


def test_figures(result: dict) -> dict:
    """A validate result -> its test-split figures and the best epoch's validation log loss."""
    train_folder = Path(result["steps"]["train"]["path"])
    history = json.loads((train_folder / "history.json").read_text())
    best_epoch = json.loads((train_folder / "step.json").read_text())["metrics"]["best_epoch"]
    test = result["metrics"]["test"]
    raw, calibrated = test["raw"], test["calibrated"]
    return {
        "val_logloss": history[int(best_epoch) - 1]["val_logloss"],
        "best_epoch": int(best_epoch),
        "epochs": len(history),
        "rows": raw["rows"],
        "auc": raw["auc"],
        "logloss_raw": raw["logloss"],
        "logloss_calibrated": calibrated["logloss"],
        "ratio_raw": raw["calibration_ratio"],
        "ratio_calibrated": calibrated["calibration_ratio"],
        "ece_calibrated": calibrated["ece"],
        "ctr": raw["ctr"],
        "calibrator": json.loads((Path(result["steps"]["calibrate"]["path"]) / "step.json").read_text())["calibrator"],
        "oracle_auc": test.get("oracle", {}).get("auc"),
        "oracle_logloss": test.get("oracle", {}).get("logloss"),
    }


def run_variant(spec_path: Path, train_options: dict, folder: Path, env: dict | None = None) -> dict:
    """The spec at `spec_path` with absolute data paths and `train_options`, written into `folder`
    (also its workdir: variants of one data set share the prepare step), validated -> test_figures."""
    folder.mkdir(parents=True, exist_ok=True)
    with patch.dict(os.environ, env or {}):  # the spec's ${VAR} paths, restored after
        loaded = load_spec(spec_path)
    spec = loaded.spec.model_dump(mode="json", exclude_none=True)
    for split in ("train", "validation", "test"):
        if split in spec["data"]:
            spec["data"][split]["path"] = str(loaded.resolve(spec["data"][split]["path"]))
    spec["train"].update(train_options)
    spec["workdir"] = str(folder)
    spec.pop("tracking", None)
    path = folder / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return test_figures(validate_json(path, folder))


def ratio_interval(ratio: float, ctr: float, rows: float) -> tuple[float, float]:
    """An approximate 95% interval of a calibration ratio Σp/Σy from the label noise alone: Σy is
    binomial, Σy ≈ E[Σy]·(1 ± h) with h = 1.96·√((1 − ctr)/(rows·ctr)), so ratio/(1 ± h)."""
    half = 1.96 * ((1 - ctr) / (rows * ctr)) ** 0.5
    return ratio / (1 + half), ratio / (1 - half)


def bench_oracle_gap(size: dict, folder: Path) -> tuple[list[Figure], dict]:
    """Q: one epoch on each seed's synthetic data (its own planted model) vs that seed's oracle.
    Returns the figures and seed 0's validate result (B4 and B5 reuse its bundle and splits)."""
    from ..data.synth import synth_spec
    from .encoding import synth_file

    rows, figures, gaps = size["quality_rows"], [], []
    first: dict = {}
    for seed in SEEDS:
        path = synth_file(folder, rows, seed)
        spec_path = folder / f"quality-{rows}-seed{seed}.yaml"
        spec_path.write_text(yaml.safe_dump(synth_spec(path.name, rows, name=spec_path.stem), sort_keys=False))
        result = validate_json(spec_path, folder)
        first = first or result
        q = test_figures(result)
        gaps.append(q["oracle_auc"] - q["auc"])
        figures.append(
            Figure(
                f"Q.seed{seed}.auc",
                f"test AUC after 1 epoch, {rows:,} synthetic rows of planted model {seed}",
                "auc",
                q["auc"],
                "oracle (true p)",
                q["oracle_auc"],
                target="within 0.01 of oracle",
                note=f"gap {gaps[-1]:.4f}; logloss raw {q['logloss_raw']:.4f} calibrated "
                f"{q['logloss_calibrated']:.4f} oracle {q['oracle_logloss']:.4f}; ECE {q['ece_calibrated']:.4f}",
            )
        )
    figures.append(
        Figure(
            "Q.gap_mean",
            f"oracle AUC gap, mean over seeds {SEEDS}",
            "auc",
            statistics.mean(gaps),
            target="each seed < 0.01",
            note=f"spread {min(gaps):.4f}..{max(gaps):.4f}",
            higher_is_better=False,
        )
    )
    return figures, first


SHIPPED_SPECS = ("adult", "criteo", "synthetic")


def _summaries(runs: list[dict]):
    """(mean(key) -> float, spread(key) -> "min..max") over the runs' figures."""

    def mean(key: str) -> float:
        return statistics.mean(r[key] for r in runs)

    def spread(key: str) -> str:
        return f"{min(r[key] for r in runs):.4f}..{max(r[key] for r in runs):.4f}"

    return mean, spread


def bench_shipped_specs(folder: Path) -> list[Figure]:
    """The shipped specs over 3 training seeds each, judged on their test splits: raw and calibrated
    log loss, calibration ratio (with its label-noise interval), ECE (the synthetic spec downsamples
    negatives 10x)."""
    from ..data.synth import SynthConfig, write

    synthetic = folder / "shipped-synthetic.parquet"
    if not synthetic.exists():
        write(synthetic, SynthConfig(rows=300_000, seed=0))
    env = {"SNN_SYNTH_DATA": str(synthetic.resolve())}
    figures = []
    for name in SHIPPED_SPECS:
        spec_path = SHIPPED / f"{name}.yaml"
        base = load_spec(spec_path).spec.train.seed
        runs = [run_variant(spec_path, {"seed": base + k}, folder / f"shipped-{name}", env) for k in range(len(SEEDS))]
        mean, spread = _summaries(runs)
        low, high = ratio_interval(mean("ratio_calibrated"), mean("ctr"), runs[0]["rows"])
        figures += [
            Figure(
                f"Q.{name}.logloss",
                f"{name}: test log loss, calibrated (snn) vs raw, mean of 3 seeds",
                "logloss",
                mean("logloss_calibrated"),
                "raw",
                mean("logloss_raw"),
                higher_is_better=False,
                target="raw within 5%, calibrated <= raw",
                note=f"calibrated {spread('logloss_calibrated')}, raw {spread('logloss_raw')}; chose "
                + ",".join(str(r["calibrator"]) for r in runs),
            ),
            Figure(
                f"Q.{name}.calibration_ratio",
                f"{name}: test calibration ratio, calibrated, mean of 3 seeds",
                "ratio",
                mean("ratio_calibrated"),
                target="within 2%",
                note=f"seeds {spread('ratio_calibrated')}; label-noise 95% interval {low:.3f}..{high:.3f}; "
                f"raw {mean('ratio_raw'):.4f}",
            ),
            Figure(
                f"Q.{name}.ece",
                f"{name}: test ECE (10 bins), calibrated, mean of 3 seeds",
                "ece",
                mean("ece_calibrated"),
                higher_is_better=False,
                target="<= 0.01 (synthetic)" if name == "synthetic" else "",
                note=f"seeds {spread('ece_calibrated')}; test AUC {mean('auc'):.4f}",
            ),
        ]
    return figures
