"""A network's probabilities over an encoded split, in batches."""

from __future__ import annotations

import numpy as np
import torch

from ..data.encoded import EncodedSplit
from .network import Network


@torch.no_grad()
def raw_probabilities(model: Network, split: EncodedSplit, batch_size: int = 1024, fast: bool = False) -> np.ndarray:
    """σ(logit) for every row of an encoded split, float64 [n] (or [n, T] for T tasks), in batches
    of 1,024 rows (the MLP's input and the interactions' Gram matrices stay cache-sized). `fast`:
    through the blocks' native fast paths (float32 validation during training); else plain torch,
    the reference scorer."""
    dtype = next(model.parameters()).dtype
    tasks = len(model.plan.outputs)
    out = np.empty(split.rows if tasks == 1 else (split.rows, tasks), dtype=np.float64)
    row = 0
    for batch in split.batches(batch_size):
        ids = torch.from_numpy(np.asarray(batch.ids, dtype=np.int64))
        values = torch.from_numpy(np.ascontiguousarray(batch.values)).to(dtype)
        offsets = torch.from_numpy(np.asarray(batch.offsets))
        logits = (model.infer if fast else model)(ids, values, offsets, batch.width)
        out[row : row + len(batch.labels)] = torch.sigmoid(logits).numpy()
        row += len(batch.labels)
    return out
