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


def describe(path: Path) -> str:
    bundle = Bundle.load(path)
    lines = [
        f"bundle {path}",
        f"  recipe sha256 {bundle.recipe.sha256[:16]}  key {bundle.key}",
        f"  id space {bundle.feature_map.num_ids:,} ids  negative rate {bundle.negative_rate}",
    ]
    for task in bundle.tasks:
        rate = task.negative_downsampling.rate if task.negative_downsampling else 1.0
        given = f", given {task.given} (served as the product)" if task.given else ""
        lines.append(f"  task {task.name}: weight {task.weight:g}, negative rate {rate:g}{given}")
    lines.append("  features:")
    for e in bundle.feature_map.encoders:
        lines.append(f"    {e.name:<24} {e.kind:<12} ids [{e.offset}, {e.offset + e.size})  {_encoding(e)}")
    lines.append("  blocks:")
    for block in bundle.plan.blocks:
        lines.append(f"    {block.name:<14} {block.kind:<16} {json.dumps(block.spec.model_dump(mode='json'))}")
    lines.append("  weights:")
    for name, array in bundle.weights.items():
        lines.append(f"    {name:<28} {tuple(array.shape)!s:<16} |w| mean {float(np.abs(array).mean()):.4g}")
    calibrate = bundle.metrics.get("calibrate", {})
    for task in bundle.tasks:
        calibrator = bundle.calibrators.get(task.name)
        losses = calibrate.get("evidence", {}).get(task.name, {}).get("cv_logloss", {})
        chosen = ", ".join(f"{kind} {value:.4f}" for kind, value in losses.items())
        lines.append(
            f"  calibrator of {task.name}: {calibrator.describe() if calibrator else 'none'}"
            + (f" (cross-validated log loss: {chosen})" if chosen else "")
        )
    if not bundle.tasks and (bundle.calibrator is not None or calibrate):
        losses = calibrate.get("evidence", {}).get("cv_logloss", {})
        chosen = ", ".join(f"{kind} {value:.4f}" for kind, value in losses.items())
        lines.append(
            f"  calibrator: {bundle.calibrator.describe() if bundle.calibrator else 'none'}"
            + (f" (cross-validated log loss: {chosen})" if chosen else "")
        )
    lines.append("  metrics: " + json.dumps(bundle.metrics))
    return "\n".join(lines)
