"""`snn inspect`: a human-readable summary of a bundle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..store.bundle import Bundle


def describe(path: Path) -> str:
    bundle = Bundle.load(path)
    lines = [f"bundle {path}", f"  recipe sha256 {bundle.recipe.sha256[:16]}  key {bundle.key}",
             f"  id space {bundle.feature_map.num_ids:,} ids  negative rate {bundle.negative_rate}",
             "  features:"]
    for e in bundle.feature_map.encoders:
        if e.kind == "continuous":
            what = "raw value" if e.raw else f"{e.n_bins} bins" + (f" hashed into {e.buckets}" if e.buckets else "")
            if not e.raw and e.edges:
                what += f", range [{e.edges[0]:g}, {e.edges[-1]:g}]"
        elif e.kind == "categorical":
            what = f"{e.buckets} hash buckets" if e.buckets else f"vocabulary {len(e.vocabulary)} (min_count {e.min_count})"
        else:
            what = "binary"
        lines.append(f"    {e.name:<24} {e.kind:<12} ids [{e.offset}, {e.offset + e.size})  {what}")
    lines.append("  weights:")
    for name, array in bundle.weights.items():
        lines.append(f"    {name:<28} {str(tuple(array.shape)):<16} |w| mean {float(np.abs(array).mean()):.4g}")
    if bundle.calibrator is not None:
        lines.append(f"  calibrator: isotonic, {len(bundle.calibrator.xs)} knots")
    lines.append("  metrics: " + json.dumps(bundle.metrics))
    return "\n".join(lines)
