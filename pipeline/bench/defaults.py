"""How the training defaults were chosen: the shipped specs (Adult, Criteo, synthetic), each over
seeds, trained with each setting of a grid of `train` options; each run is judged by its best
validation log loss (what a default may be chosen on) and reported on its test split.

    python -m snn.pipeline.bench.defaults --workdir .snn/defaults -o defaults.json \
        --grid '{"table_l2": [0, 1e-4, 1e-3, 1e-2]}' specs/adult.yaml specs/criteo.yaml specs/synthetic.yaml

Prints a line per data set and setting (the means over seeds of: the best epoch's validation log
loss, test AUC, raw and calibrated log loss, calibration ratio; each seed's best epoch) and writes
every run's figures as JSON.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
from pathlib import Path

from ..spec import load_spec
from .quality import run_variant


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("specs", nargs="+", type=Path)
    parser.add_argument("--grid", required=True, help="JSON: {train option: [values]}")
    parser.add_argument("--seeds", type=int, default=2, help="Seeds per setting (the spec's seed, +1, ...).")
    parser.add_argument("--workdir", type=Path, default=Path(".snn/defaults"))
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args(argv)
    grid = json.loads(args.grid)
    settings = [dict(zip(grid, values)) for values in itertools.product(*grid.values())]
    results = []
    for spec_path in args.specs:
        base_seed = load_spec(spec_path).spec.train.seed
        print(f"\n{spec_path}  (val: best validation log loss; test: raw AUC, raw/calibrated log loss, ratio)")
        for options in settings:
            runs = []
            for seed in range(base_seed, base_seed + args.seeds):
                figures = run_variant(spec_path, {**options, "seed": seed}, args.workdir / spec_path.stem)
                runs.append(figures)
                results.append({"spec": str(spec_path), "options": options, "seed": seed, **figures})
            mean = {k: statistics.mean(r[k] for r in runs) for k in runs[0] if isinstance(runs[0][k], float)}
            print(
                f"  {json.dumps(options):40} val {mean['val_logloss']:.5f}  auc {mean['auc']:.4f}  "
                f"logloss {mean['logloss_raw']:.4f} / {mean['logloss_calibrated']:.4f}  "
                f"ratio {mean['ratio_raw']:.3f} / {mean['ratio_calibrated']:.3f}  "
                f"epochs {[r['best_epoch'] for r in runs]}",
                flush=True,
            )
    if args.output:
        args.output.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
