"""The batch (offline) scorer: feature map over polars frames, then the torch network in float64.

This is the reference that `validate --compare` trusts: plain torch, no native kernels, so that it
and the online scorer (numpy and the native kernels) are independent implementations; float64 keeps
them numerically equal (parity to ~1e-15).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import torch

from ..data.chunks import needed_columns, stream_chunks
from ..data.encoded import EncodedSplit
from ..data.sources import check_inputs
from ..data.spec import DataFiles, DataSpec
from ..errors import InputError
from ..features.spec import PositionFeature
from ..model.inference import raw_probabilities
from ..model.network import Network
from ..store.bundle import Bundle


def load_model(bundle: Bundle, dtype=torch.float64) -> Network:
    """The bundle's torch network in `dtype`, eval mode (Bundle.load has checked every weight's name
    and shape against the plan, so nothing is allocated before that)."""
    model = Network(bundle.plan)
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in bundle.weights.items()})
    return model.to(dtype).eval()


def encode(bundle: Bundle, frame: pl.DataFrame, labels=None, weights=None) -> EncodedSplit:
    """Raw rows -> an encoded split (labels 0 and weights 1 unless given: scoring needs neither)."""
    n = frame.height
    labels = np.zeros(n, np.float32) if labels is None else labels
    weights = np.ones(n, np.float32) if weights is None else weights
    if bundle.feature_map.ragged:
        return EncodedSplit.from_rows(*bundle.feature_map.encode_rows(frame), labels, weights)
    ids, values = bundle.feature_map.encode_frame(frame)
    return EncodedSplit.from_dense(ids, values, labels, weights)


def score_frame(bundle: Bundle, frame: pl.DataFrame, model: Network | None = None) -> pl.DataFrame:
    """Frame of raw rows -> (key, score, raw_score), or per task (Bundle.score_columns)."""
    model = model or load_model(bundle)
    raw = raw_probabilities(model, encode(bundle, frame))
    return pl.DataFrame({bundle.key: frame[bundle.key], **bundle.score_columns(raw, bundle.slice_values(frame))})


def oracles_of(frame: pl.DataFrame, data: DataSpec) -> np.ndarray | None:
    """The data's true probabilities: [n] for `data.oracle`, [n, T] with several tasks (NaN for a
    task without one), None when the spec names none."""
    if data.labels is None:
        return oracle_probabilities(frame, data.oracle) if data.oracle else None
    if not data.oracle_columns:
        return None
    return np.stack(
        [
            oracle_probabilities(frame, label.oracle, f"task {name!r}'s oracle")
            if label.oracle
            else np.full(frame.height, np.nan)
            for name, label in data.labels.items()
        ],
        1,
    )


def oracle_probabilities(frame: pl.DataFrame, column: str, role: str = "data.oracle") -> np.ndarray:
    """The data's true probabilities float64 [n], checked to lie in [0, 1]."""
    p = frame[column].cast(pl.Float64, strict=False)
    if p.null_count() or not ((p >= 0) & (p <= 1)).all():
        raise InputError(f"{role} column {column!r} must hold probabilities in [0, 1] in every row")
    return p.to_numpy()


@dataclass
class ScoredSplit:
    """One evaluation split, scored chunk by chunk: per-row results [n], never the raw rows.

    scored: (key, score, raw_score); labels, weights; oracle (the data's true p) and baseline (a
    baseline bundle's scores) when asked for; slices: the validation slice columns.
    """

    scored: pl.DataFrame
    labels: np.ndarray
    weights: np.ndarray
    oracle: np.ndarray | None
    baseline: np.ndarray | None
    slices: pl.DataFrame

    @classmethod
    def concat(cls, parts: list[ScoredSplit]) -> ScoredSplit:
        """The chunks of one split, in order, as one."""

        def arrays(name: str) -> np.ndarray | None:
            first = getattr(parts[0], name)
            return None if first is None else np.concatenate([getattr(p, name) for p in parts])

        return cls(
            pl.concat([p.scored for p in parts]),
            np.concatenate([p.labels for p in parts]),
            np.concatenate([p.weights for p in parts]),
            arrays("oracle"),
            arrays("baseline"),
            pl.concat([p.slices for p in parts]),
        )


def score_splits(
    files: DataFiles, slices: list[str], bundle: Bundle, model: Network, baseline: Bundle | None = None
) -> dict[str, ScoredSplit]:
    """Stream the validation split (the holdout of the train source, or its own source) and the test
    split through the batch scorer. Memory: one chunk plus the per-row results."""
    data, features = files.data, list(bundle.recipe.features)
    read = list(dict.fromkeys(slices + bundle.slice_columns))  # the report's slices, the calibrators'
    check_inputs(files, features, read)
    columns = needed_columns(data, features, read + data.oracle_columns)
    sources = ("train",) if data.holdout is not None else ("validation",)
    baseline_model = load_model(baseline) if baseline is not None else None
    chunks: dict[str, list[ScoredSplit]] = {}
    served_only = [f.name for f in features if isinstance(f, PositionFeature)]  # the test split needs no slot
    splits = sources + (("test",) if data.test is not None else ())
    for chunk in stream_chunks(files, columns, splits, unread_in_test=served_only):
        for split, selected in chunk.routes:
            if split == "train":
                continue
            frame, labels, weights = chunk.part(selected)
            if frame.height == 0:
                continue
            chunks.setdefault(split, []).append(
                ScoredSplit(
                    score_frame(bundle, frame, model),
                    labels,
                    weights,
                    oracles_of(frame, data),
                    score_frame(baseline, frame, baseline_model)["score"].to_numpy() if baseline is not None else None,
                    frame.select(slices),
                )
            )
    if "validation" not in chunks:
        raise InputError("the validation split is empty; change data.holdout.fraction or data.validation")
    return {name: ScoredSplit.concat(parts) for name, parts in chunks.items()}
