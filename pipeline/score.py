"""The batch (offline) scorer: feature map over polars frames, then the torch model in float64.

float64 keeps the offline path numerically equal to the online numpy path (parity to ~1e-15).
"""

from __future__ import annotations

import numpy as np
import polars as pl
import torch

from .bundle import Bundle
from .encoded import EncodedSplit
from .errors import ArtifactError
from .model import SparseNN


def load_model(bundle: Bundle, dtype=torch.float64) -> SparseNN:
    model = SparseNN(bundle.feature_map.num_ids, len(bundle.feature_map.encoders), bundle.spec.model)
    state = {k: torch.from_numpy(np.array(v)) for k, v in bundle.weights.items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ArtifactError(
            f"bundle weights do not fit the model its spec describes ({str(exc).splitlines()[-1].strip()[:160]}); "
            "it was written by another snn version or damaged: rebuild it with `snn fit --force`"
        ) from None
    return model.to(dtype).eval()


@torch.no_grad()
def raw_probabilities(model: SparseNN, split: EncodedSplit, batch_size: int = 4096) -> np.ndarray:
    """σ(logit) for every row of an encoded split, float64 [n]. Batches of 4,096 rows keep the
    interactions' [B, F+1, F+1] Gram matrices in cache-sized pieces."""
    dtype = next(model.parameters()).dtype
    out = np.empty(split.rows, dtype=np.float64)
    row = 0
    for batch in split.batches(batch_size):
        logits = model(
            torch.from_numpy(np.asarray(batch.ids)),
            torch.from_numpy(np.asarray(batch.values)).to(dtype),
            torch.from_numpy(np.asarray(batch.offsets)),
        )
        out[row : row + len(batch.labels)] = torch.sigmoid(logits).numpy()
        row += len(batch.labels)
    return out


def encode(bundle: Bundle, frame: pl.DataFrame, labels=None, weights=None) -> EncodedSplit:
    ids, values = bundle.feature_map.encode_frame(frame)
    n = frame.height
    return EncodedSplit.from_dense(
        ids, values,
        np.zeros(n, np.float32) if labels is None else labels,
        np.ones(n, np.float32) if weights is None else weights,
        frame[bundle.key],
    )


def score_frame(bundle: Bundle, frame: pl.DataFrame, model: SparseNN | None = None) -> pl.DataFrame:
    """Frame of raw rows -> (key, score, raw_score)."""
    model = model or load_model(bundle)
    raw = raw_probabilities(model, encode(bundle, frame))
    return pl.DataFrame({bundle.key: frame[bundle.key], "score": bundle.finish(raw), "raw_score": raw})
