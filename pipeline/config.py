"""What every spec model shares: the strict pydantic base and the bounds of spec values.

Every number a spec gives is bounded here: floats are finite (`Strict`), integers fit int64, and
the sizes that become memory have an upper limit whose message names the memory they would take.
Spec models live beside the code they configure (blocks, data, features, training); spec.py
composes them and loads the YAML.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

INT64_MAX = 2**63 - 1
MAX_WIDTH = 8192  # sparse layer and MLP widths
MAX_BUCKETS = 2**31 - 1  # hash buckets of one feature

Activation = Literal["relu", "prelu", "sigmoid", "tanh", "none"]


class Strict(BaseModel):
    """Unknown keys refused, values frozen, floats finite."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def gigabytes(count: float) -> str:
    return f"{count / 2**30:,.1f} GiB" if count >= 2**30 else f"{count / 2**20:,.1f} MiB"


def at_most(limit: int, cost: Callable[[int], str]) -> AfterValidator:
    """An upper bound whose error names what the value would cost (`cost(value)`, a phrase)."""

    def check(value: int) -> int:
        if value > limit:
            raise ValueError(f"{value:,} is above the limit of {limit:,}: {cost(value)}")
        return value

    return AfterValidator(check)


def _table_cost(rows_per_unit: str, rows: float) -> Callable[[int], str]:
    # float32 weights, and Adam's two moments beside them
    return lambda value: f"{rows_per_unit} would take {gigabytes(value * rows * 4 * 3)} (weights and Adam moments)"


Seed = Annotated[int, Field(ge=0, le=INT64_MAX, description="A seed: an integer in [0, 2^63 - 1].")]
RowIndex = Annotated[int, Field(ge=0, le=INT64_MAX)]
Width = Annotated[int, Field(ge=1), at_most(MAX_WIDTH, _table_cost("a table of 1M ids this wide", 1e6))]
Buckets = Annotated[int, Field(ge=2), at_most(MAX_BUCKETS, _table_cost("one unit of width over these buckets", 1))]
