"""Position features (SparseNN's position feature): the slot a row was shown in, trained on so the
model absorbs position bias, and at serving read as one fixed position for every row.

    training (the train split, in prepare): the column's value -> its id, as a categorical
                                             (vocabulary of positions, OOV and missing ids)
    served   (validation, calibration, validate, predict, the online scorer): every row -> the id
             of `serve_as`, value 1; or, with serve_as null (dropped), the missing id with value 0,
             which every block reads as no contribution (a zero-weighted entry); the column is not
             read, so requests need not carry it

So the scores that calibration fits, validate grades and the server returns are the ones of the
served setting. `FeatureMap.for_training()` is the one place that switches a map to the training
reading.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from ..errors import InputError
from .categorical import CategoricalEncoder, CategoricalFitter
from .spec import CategoricalFeature, PositionFeature
from .values import category_of, unit_values


@dataclass
class PositionEncoder:
    name: str
    vocabulary: list[str]
    serve_as: str | None = None  # as text; None: served as missing
    training: bool = False  # read the column (the train split) instead of serving `serve_as`
    offset: int = 0

    kind = "position"

    @property
    def one_hot(self) -> bool:
        """Every value is 1, but for a dropped position's served entries (value 0)."""
        return self.training or self.serve_as is not None

    @property
    def served_value(self) -> float:
        return 1.0 if self.serve_as is not None else 0.0

    def __post_init__(self) -> None:
        self.positions = CategoricalEncoder(self.name, self.vocabulary)

    @property
    def size(self) -> int:
        return self.positions.size

    @property
    def number_kinds(self) -> int:
        return self.positions.number_kinds if self.training else 0

    @property
    def served_id(self) -> int:
        """The local id every served row takes."""
        return self.positions._local_id(self.serve_as)

    def encode_into(self, series: pl.Series, out: np.ndarray) -> np.ndarray:
        """Batch: global ids into `out` [n] (served: `series` is not read)."""
        if self.training:
            self.positions.offset = self.offset
            return self.positions.encode_into(series, out)
        out[:] = self.offset + self.served_id
        return unit_values(len(out)) if self.serve_as is not None else np.zeros(len(out), np.float32)

    def encode_values(self, raws: list) -> tuple[np.ndarray, np.ndarray]:
        """Online: local ids int64 [n], values float64 [n]."""
        if self.training:
            return self.positions.encode_values(raws)
        return np.full(len(raws), self.served_id, dtype=np.int64), np.full(len(raws), self.served_value)

    def encode_numbers(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.positions.encode_numbers(x)

    def to_json(self) -> dict:
        return {
            "kind": self.kind,
            "name": self.name,
            "vocabulary": self.vocabulary,
            "serve_as": self.serve_as,
            "offset": self.offset,
        }


class PositionFitter:
    """The vocabulary of positions seen in train (a categorical's fit)."""

    def __init__(self, feature: PositionFeature):
        self.feature = feature
        self.positions = CategoricalFitter(CategoricalFeature(name=feature.name, kind="categorical"))

    def update(self, series: pl.Series, weights: np.ndarray, rows: np.ndarray | None = None) -> None:
        self.positions.update(series, weights, rows)

    def finish(self) -> PositionEncoder:
        vocabulary = self.positions.finish().vocabulary
        served = category_of(self.feature.serve_as)
        if served is not None and served not in vocabulary:
            raise InputError(
                f"position feature {self.feature.name!r} is served as {served!r}, which no train row has "
                f"(positions seen: {', '.join(vocabulary[:10])}); set serve_as to one of them, or null to drop it"
            )
        return PositionEncoder(self.feature.name, vocabulary, served)
