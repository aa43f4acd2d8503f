"""What a model needs from the machine, checked before anything is allocated."""

from __future__ import annotations

import math
import os
from pathlib import Path

from ..config import gigabytes
from ..errors import InputError
from ..model.plan import Plan
from .spec import TrainSpec


def memory_limit() -> int:
    """Bytes of memory this process may use: the machine's, or its cgroup's limit when lower."""
    limit = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            limit = min(limit, int(text))
    return limit


def check_model_fits(plan: Plan, spec: TrainSpec) -> None:
    """Refuse (InputError) a model whose parameters, optimizer state and best-epoch copy would not fit
    in this machine's memory, before anything is allocated (the plan declares every shape)."""
    shapes = {name: weight.shape for name, weight in plan.weights.items()}
    numbers = sum(math.prod(shape) for shape in shapes.values())
    copies = 1 + (2 if spec.optimizer == "adam" else 1) + 1  # weights, optimizer moments, the best epoch's copy
    needed, limit = numbers * 4 * copies, memory_limit()
    if needed > 0.8 * limit:
        largest = max(shapes.values(), key=math.prod)
        raise InputError(
            f"the model would need about {gigabytes(needed)} ({numbers:,} parameters, {copies} copies: weights, "
            f"optimizer state, best epoch; its largest table is {largest[0]:,} ids x {math.prod(largest[1:]):,}) but "
            f"this machine allows {gigabytes(limit)}; lower model.sparse_linear.width or the features' "
            "hash_buckets / bins"
        )
