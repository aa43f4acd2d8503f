"""The online scorer: raw records (dicts), one or a request of many at a time, in numpy.

An independent implementation of the network for serving: it interprets the bundle's plan with
each block's numpy scorer (float64; native kernels for the sparse sums and the dot interactions,
through native/), never torch, so offline/online parity compares two implementations. For a request:
(ids, values) = feature_map.encode_records(records), one entry per feature (or, with id lists, the
candidates' ragged rows from encode_records_rows); the blocks in plan order,
a block of BLOCK_ROWS candidates at a time; raw = σ(logit); score = bundle.finish(raw).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from ..errors import InputError
from ..model.blocks import BLOCKS
from ..model.blocks.base import RequestEntries, as_array
from ..model.plan import FEATURES
from ..store.bundle import Bundle

BLOCK_ROWS = 1024  # candidates run through the plan together: a bound on the temporaries of big requests


def sigmoid(logit: np.ndarray) -> np.ndarray:
    """σ without overflow: 1/(1+e^-|x|) for x >= 0, e^-|x|/(1+e^-|x|) below."""
    small = np.exp(-np.abs(logit))
    return np.where(logit >= 0, 1.0, small) / (1.0 + small)


class OnlineScorer:
    """Scores dicts of raw feature values; `score(record) -> float`, `score_many(records) -> array`."""

    def __init__(self, bundle: Bundle):
        self.bundle = bundle
        self.plan = bundle.plan
        owned: dict[str, dict[str, np.ndarray]] = {block.name: {} for block in self.plan.blocks}
        for name, array in bundle.weights.items():
            block, weight = name.split(".", 1)
            owned[block][weight] = np.ascontiguousarray(array, dtype=np.float64)
        self.weights = {
            block.name: BLOCKS[block.kind].serving_weights(node, owned[block.name])
            for block, node in zip(self.plan.blocks, self.plan.nodes)
        }

    def raw_rows(self, ids: np.ndarray, values: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """Ragged rows (id lists): ids [nnz], values [nnz], entries per candidate [n] -> raw probabilities [n]."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        values = np.ascontiguousarray(values, dtype=np.float64)
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        logits = []
        for start in range(0, len(lengths), BLOCK_ROWS):
            stop = min(start + BLOCK_ROWS, len(lengths))
            a, b = offsets[start], offsets[stop]
            logits.append(self._logits(RequestEntries(ids[a:b], values[a:b], offsets[start : stop + 1] - a)))
        return sigmoid(np.concatenate(logits) if logits else np.empty(0))

    def raw_encoded(self, ids: np.ndarray, values: np.ndarray) -> np.ndarray:
        """ids [n, F], values [n, F] -> raw probabilities [n]."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        values = np.ascontiguousarray(values, dtype=np.float64)
        logits = [
            self._logits(RequestEntries(ids[start : start + BLOCK_ROWS], values[start : start + BLOCK_ROWS]))
            for start in range(0, len(ids), BLOCK_ROWS)
        ]
        return sigmoid(np.concatenate(logits) if logits else np.empty(0))

    def _logits(self, entries: RequestEntries) -> np.ndarray:
        ports: dict[str, object] = {FEATURES: entries}
        for block, node in zip(self.plan.blocks, self.plan.nodes):
            inputs = {name: ports[ref] for name, ref in block.inputs.items()}
            for name, value in BLOCKS[block.kind].score(node, self.weights[block.name], inputs).items():
                ports[f"{block.name}.{name}"] = value
        logits = np.concatenate([as_array(ports[output]) for output in self.plan.outputs], 1)  # type: ignore[arg-type]
        return logits[:, 0] if logits.shape[1] == 1 else logits

    def raw(self, record: dict) -> float | np.ndarray:
        """One candidate's raw probability (with several tasks, one per task [T])."""
        out = self.raw_many([record])[0]
        return float(out) if np.ndim(out) == 0 else out

    def score(self, record: dict) -> float | np.ndarray:
        """One candidate's final score (with several tasks, one per task [T])."""
        out = self.score_many([record])[0]
        return float(out) if np.ndim(out) == 0 else out

    def raw_many(self, records: list[dict]) -> np.ndarray:
        """One request of many candidates, encoded and scored together: raw probabilities [n] (or
        [n, T], a column per task)."""
        if not records:
            tasks = len(self.plan.outputs)
            return np.zeros((0, tasks)) if tasks > 1 else np.zeros(0)
        if self.bundle.feature_map.ragged:
            return self.raw_rows(*self.bundle.feature_map.encode_records_rows(records))
        return self.raw_encoded(*self.bundle.feature_map.encode_records(records))

    def score_many(self, records: list[dict]) -> np.ndarray:
        """One request of many candidates, encoded and scored together: final scores [n] (or [n, T];
        a task calibrated by slice reads its column from the records)."""
        return self.bundle.finish(self.raw_many(records), self.slices(records))

    def outputs_many(self, records: list[dict]) -> dict[str, np.ndarray]:
        """One request's every output column (Bundle.score_columns) [n] each."""
        return self.bundle.score_columns(self.raw_many(records), self.slices(records))

    def slices(self, records: list[dict]) -> dict[str, np.ndarray] | None:
        """The break-down columns' values of a request, as text [n] each (None without break-down)."""
        columns = self.bundle.slice_columns
        if not columns:
            return None
        try:
            values = pl.DataFrame([pl.Series(c, [r.get(c) for r in records], strict=False) for c in columns])
            return self.bundle.slice_values(values)
        except (pl.exceptions.PolarsError, TypeError, ValueError):
            raise InputError(
                f"the break-down column(s) {columns} take one value per record (a number, text or null)"
            ) from None
