"""Binary features: local ids 0 false, 1 true, 2 missing; value 1.0. True is 1/true/t/yes/y, false
0/false/f/no/n (any case); anything else is an input error naming the values. Nothing to fit: the
fitter only checks every row."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from .. import native
from ..errors import InputError
from .spec import BinaryFeature
from .values import category_of, category_text, unit_values

TRUE = {"1", "true", "t", "yes", "y", "1.0"}
FALSE = {"0", "false", "f", "no", "n", "0.0"}
MISSING = 2


@dataclass
class BinaryEncoder:
    name: str
    offset: int = 0

    kind = "binary"
    # the kinds of raw value `encode_numbers` takes as native.records_to_numbers read them
    number_kinds = native.SEEN_BOOL | native.SEEN_INT | native.SEEN_FLOAT | native.SEEN_NONE
    size = 3
    one_hot = True  # every value it emits is 1.0

    def _bad(self, examples) -> InputError:
        return InputError(
            f"feature {self.name!r} is binary but has values such as {examples}; "
            "use 0/1, true/false or yes/no, or declare it categorical"
        )

    def local_ids(self, series: pl.Series) -> np.ndarray:
        """A column's local ids, int64 [n]; an InputError naming values that are neither true nor false."""
        text = category_text(series).str.to_lowercase()
        is_true, is_false = text.is_in(list(TRUE)), text.is_in(list(FALSE))
        bad = text.is_not_null() & ~is_true & ~is_false
        if bad.any():
            raise self._bad(text.filter(bad).unique().head(3).to_list())
        return np.where(text.is_null().to_numpy(), MISSING, np.where(is_true.to_numpy(), 1, 0)).astype(np.int64)

    def encode_into(self, series: pl.Series, out: np.ndarray) -> np.ndarray:
        """The batch path: global ids (local + offset) into `out` int64 or int32 [n]; values float32 [n]."""
        np.add(self.local_ids(series), self.offset, out=out, casting="unsafe")
        return unit_values(len(series))

    def _local_id(self, raw) -> int:
        value = category_of(raw)
        if value is None:
            return MISSING
        value = value.lower()
        if value in TRUE:
            return 1
        if value in FALSE:
            return 0
        raise self._bad([value])

    def encode_values(self, raws: list) -> tuple[np.ndarray, np.ndarray]:
        """The online path over a request's raw values: local ids int64 [n], values float64 [n]."""
        return np.array([self._local_id(r) for r in raws], dtype=np.int64), np.ones(len(raws))

    def encode_numbers(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`encode_values` of values read as numbers, float64 [n] (NaN missing): 1 and 0 (True and
        False) their ids, anything else an input error."""
        missing = np.isnan(x)
        bad = ~missing & (x != 0.0) & (x != 1.0)
        if bad.any():
            raise self._bad(np.unique(x[bad])[:3].tolist())
        return np.where(missing, MISSING, x).astype(np.int64), np.ones(len(x))

    def to_json(self) -> dict:
        return {"kind": self.kind, "name": self.name, "offset": self.offset}


class BinaryFitter:
    """Checks every row's value; the encoder has nothing to learn."""

    def __init__(self, feature: BinaryFeature):
        self.encoder = BinaryEncoder(feature.name)

    def update(self, series: pl.Series, weights: np.ndarray, rows: np.ndarray | None = None) -> None:
        self.encoder.local_ids(series)

    def finish(self) -> BinaryEncoder:
        return self.encoder
