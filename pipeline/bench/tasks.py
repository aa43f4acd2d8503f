"""Figures of multi-task training (specs/synthetic_tasks.yaml: a click, and a conversion given a
click, the clicks' negatives downsampled 10x), on `snn data synth --tasks` rows:

Q.tasks  each task's test AUC against its oracle's (target: within 0.01), and its calibrated
         ratio and ECE (targets: within 2%, <= 0.01), through the real pipeline
B10      training rows/s of the two-task model against the same shared layers with the click's
         tower alone (the overhead of the second tower), one epoch each on the same prepared rows,
         interleaved, medians
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
from pathlib import Path
from unittest.mock import patch

import yaml

from ..data.encoded import EncodedSplit
from ..features.feature_map import FeatureMap
from ..model.plan import plan_for, space_of
from ..spec import load_spec
from ..train.loop import train_model
from ..train.tasks import towers_of
from .figures import Figure, interleaved_results
from .quality import SHIPPED, validate_json

ROWS = {"full": 5_000_000, "tiny": 60_000}  # 5M: ~225k train clicks, each task within 0.01 of its oracle


def bench_tasks(size_name: str, size: dict, folder: Path) -> list[Figure]:
    """Q.tasks and B10 (see the module docstring)."""
    from ..data.synth import SynthConfig, write

    rows = ROWS[size_name]
    data = folder / f"tasks-{rows}.parquet"
    if not data.exists():
        write(data, SynthConfig(rows=rows, seed=0, positive_rate=0.05, tasks=True))
    work = folder / f"tasks-{size_name}"
    work.mkdir(parents=True, exist_ok=True)
    with patch.dict(os.environ, {"SNN_SYNTH_TASKS_DATA": str(data.resolve())}):
        loaded = load_spec(SHIPPED / "synthetic_tasks.yaml")
    spec = loaded.spec.model_dump(mode="json", exclude_none=True)
    cut = rows * 9 // 10
    spec["data"]["train"].update(path=str(data.resolve()), rows=[0, cut])
    spec["data"]["test"].update(path=str(data.resolve()), rows=[cut, rows])
    spec["workdir"] = str(work)
    spec.pop("tracking", None)
    path = work / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    result = validate_json(path, work)
    figures = []
    for task, test in result["metrics"]["test"].items():
        calibrated, oracle = test["calibrated"], test["oracle"]
        figures += [
            Figure(
                f"Q.tasks.{task}.auc",
                f"synthetic_tasks: {task} test AUC ({rows:,} rows, clicks' negatives downsampled 10x)",
                "auc",
                calibrated["auc"],
                "oracle (true p)",
                oracle["auc"],
                target="within 0.01 of oracle",
                note=f"gap {oracle['auc'] - calibrated['auc']:.4f}",
            ),
            Figure(
                f"Q.tasks.{task}.calibration",
                f"synthetic_tasks: {task} calibrated ratio on test",
                "ratio",
                calibrated["calibration_ratio"],
                "oracle (true p)",
                oracle["calibration_ratio"],
                target="within 2% of 1",
                note=f"ECE {calibrated['ece']:.4f} (target <= 0.01); the oracle's ratio is the test rows' label noise",
            ),
        ]
    return figures + [_tower_overhead(Path(result["steps"]["prepare"]["path"]), loaded.spec, size["repeats"])]


def _tower_overhead(prepared: Path, spec, repeats: int) -> Figure:
    """B10: one epoch of the two-task model and of the click-only model on the prepared rows."""
    feature_map = FeatureMap.from_json(json.loads((prepared / "feature_map.json").read_text()))
    train = EncodedSplit.load(prepared / "splits" / "train")
    validation = EncodedSplit.load(prepared / "splits" / "validation")
    space = space_of(feature_map.num_ids, feature_map.layout())
    two = plan_for(spec.model, space, towers=towers_of(spec.tasks))
    first = spec.tasks[0]
    one = plan_for(spec.model, space, towers=towers_of([first]))  # the same shared layers, one tower
    settings = spec.train.model_copy(update={"epochs": 1, "early_stopping": None})

    def first_task(split: EncodedSplit) -> EncodedSplit:  # the click's labels and weights [n], one-task style
        return dataclasses.replace(split, labels=split.labels[:, 0], weights=split.weights[:, 0])

    one_train, one_validation = first_task(train), first_task(validation)
    runs = {
        "two": lambda: train_model(two, settings, train, validation, tasks=spec.tasks).history[0]["rows_per_s"],
        "one": lambda: train_model(one, settings, one_train, one_validation).history[0]["rows_per_s"],
    }
    results = interleaved_results(runs, repeats)
    two_tasks, one_task = statistics.median(results["two"]), statistics.median(results["one"])
    return Figure(
        "B10.tasks.train",
        f"training rows/s, two tasks vs the click tower alone ({train.rows:,} rows, 1 epoch)",
        "rows/s",
        two_tasks,
        "one task",
        one_task,
        target="the second tower's overhead",
        note=f"medians of {repeats} interleaved runs; two-task / one-task = {two_tasks / one_task:.3f}",
    )
