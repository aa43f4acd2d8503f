"""`snn inspect`: a human-readable summary of a bundle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..features.categorical import CategoricalEncoder
from ..features.continuous import ContinuousEncoder
from ..features.feature_map import Encoder
from ..features.id_list import IdListEncoder
from ..features.position import PositionEncoder
from ..features.tree_leaves import TreeLeavesEncoder
from ..store.bundle import Bundle


def _encoding(encoder: Encoder) -> str:
    """How one encoder turns values into ids, in a few words."""
    if isinstance(encoder, ContinuousEncoder):
        if encoder.raw:
            return {"log1p": "sign(x)·log(1 + |x|)", "normal": f"to normal ({len(encoder.edges)} knots)"}.get(
                encoder.transform or "", "raw value"
            )
        what = f"{encoder.n_bins} bins" + (f" hashed into {encoder.buckets}" if encoder.buckets else "")
        return what + (f", range [{encoder.edges[0]:g}, {encoder.edges[-1]:g}]" if encoder.edges else "")
    if isinstance(encoder, PositionEncoder):
        served = "missing" if encoder.serve_as is None else repr(encoder.serve_as)
        return f"position: {len(encoder.vocabulary)} seen in train, served as {served}"
    if isinstance(encoder, TreeLeavesEncoder):
        return (
            f"{encoder.tree_count} trees over {len(encoder.inputs)} columns "
            f"({len(encoder.categories)} text, coded by positive rate), one leaf id per tree"
        )
    if isinstance(encoder, IdListEncoder):
        ids = f"{encoder.buckets} hash buckets" if encoder.buckets else f"vocabulary {len(encoder.vocabulary)}"
        return f"id list of {ids}, at most {encoder.max_length} ({encoder.keep})" + (
            ", weighted" if encoder.weighted else ""
        )
    if isinstance(encoder, CategoricalEncoder):
        if encoder.buckets:
            return f"{encoder.buckets} hash buckets"
        return f"vocabulary {len(encoder.vocabulary)} (min_count {encoder.min_count})"
    return "binary"


def summary(path: Path) -> dict:
    """A bundle as JSON data: key, recipe hash, id space, tasks, features (ids and encoding), blocks,
    weights (shape, mean |w|), calibrators (with the cross-validated log losses that chose them) and
    metrics. `snn inspect --json` prints it; `describe` renders it."""
    bundle = Bundle.load(path)
    calibrate = bundle.metrics.get("calibrate", {})

    def calibrator(fitted, evidence: dict) -> dict:
        return {"calibrator": fitted.describe() if fitted else "none", "cv_logloss": evidence.get("cv_logloss", {})}

    calibrators = {
        task.name: calibrator(bundle.calibrators.get(task.name), calibrate.get("evidence", {}).get(task.name, {}))
        for task in bundle.tasks
    }
    if not bundle.tasks and (bundle.calibrator is not None or calibrate):
        calibrators[""] = calibrator(bundle.calibrator, calibrate.get("evidence", {}))
    return {
        "bundle": str(path),
        "recipe_sha256": bundle.recipe.sha256,
        "key": bundle.key,
        "num_ids": bundle.feature_map.num_ids,
        "negative_rate": bundle.negative_rate,
        "tasks": [
            {
                "name": task.name,
                "weight": task.weight,
                "negative_rate": task.negative_downsampling.rate if task.negative_downsampling else 1.0,
                "given": task.given,
            }
            for task in bundle.tasks
        ],
        "features": [
            {"name": e.name, "kind": e.kind, "ids": [e.offset, e.offset + e.size], "encoding": _encoding(e)}
            for e in bundle.feature_map.encoders
        ],
        "blocks": [
            {"name": block.name, "kind": block.kind, "spec": block.spec.model_dump(mode="json")}
            for block in bundle.plan.blocks
        ],
        "weights": {
            name: {"shape": list(array.shape), "mean_abs": float(np.abs(array).mean())}
            for name, array in bundle.weights.items()
        },
        "calibrators": calibrators,
        "metrics": bundle.metrics,
    }


def describe(path: Path) -> str:
    """`summary` as lines of text."""
    info = summary(path)
    lines = [
        f"bundle {path}",
        f"  recipe sha256 {info['recipe_sha256'][:16]}  key {info['key']}",
        f"  id space {info['num_ids']:,} ids  negative rate {info['negative_rate']}",
    ]
    for task in info["tasks"]:
        given = f", given {task['given']} (served as the product)" if task["given"] else ""
        lines.append(
            f"  task {task['name']}: weight {task['weight']:g}, negative rate {task['negative_rate']:g}{given}"
        )
    lines.append("  features:")
    for f in info["features"]:
        lines.append(f"    {f['name']:<24} {f['kind']:<12} ids [{f['ids'][0]}, {f['ids'][1]})  {f['encoding']}")
    lines.append("  blocks:")
    for block in info["blocks"]:
        lines.append(f"    {block['name']:<14} {block['kind']:<16} {json.dumps(block['spec'])}")
    lines.append("  weights:")
    for name, weight in info["weights"].items():
        lines.append(f"    {name:<28} {tuple(weight['shape'])!s:<16} |w| mean {weight['mean_abs']:.4g}")
    for task, fitted in info["calibrators"].items():
        chosen = ", ".join(f"{kind} {value:.4f}" for kind, value in fitted["cv_logloss"].items())
        lines.append(
            f"  calibrator{' of ' + task if task else ''}: {fitted['calibrator']}"
            + (f" (cross-validated log loss: {chosen})" if chosen else "")
        )
    lines.append("  metrics: " + json.dumps(info["metrics"]))
    return "\n".join(lines)
