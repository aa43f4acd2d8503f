"""The spec's `features:` section: each input column, its kind, and how its values become ids."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from ..config import INT64_MAX, Buckets, Strict


class PercentileDiscretizer(Strict):
    """Weighted equal-frequency bins; id = feature offset + bin."""

    kind: Literal["percentile"] = Field(default="percentile", description="Discretizer tag.")
    bins: int = Field(default=32, ge=2, le=65536, description="Target number of bins (duplicates are merged).")


class HashingDiscretizer(Strict):
    """Percentile bins whose ids are a stable hash of (feature, bin), so ids survive refits."""

    kind: Literal["hashing"] = Field(description="Discretizer tag.")
    bins: int = Field(default=32, ge=2, le=65536, description="Target number of bins.")
    buckets: Buckets = Field(default=1024, description="Hash buckets reserved for this feature.")


class RawValue(Strict):
    """No discretization: one id whose value is the raw number, scaled by the running max |v|."""

    kind: Literal["none"] = Field(description="Discretizer tag.")


Discretizer = Annotated[PercentileDiscretizer | HashingDiscretizer | RawValue, Field(discriminator="kind")]


class ContinuousFeature(Strict):
    name: str = Field(description="Column name.")
    kind: Literal["continuous"] = Field(description="Feature kind tag.")
    discretizer: Discretizer = Field(
        default_factory=PercentileDiscretizer, description="How numbers become sparse ids."
    )


class CategoricalFeature(Strict):
    name: str = Field(description="Column name.")
    kind: Literal["categorical"] = Field(description="Feature kind tag.")
    min_count: int = Field(
        default=1, ge=1, le=INT64_MAX, description="Values seen fewer times in train share the out-of-vocabulary id."
    )
    hash_buckets: Buckets | None = Field(
        default=None,
        description="Hash values into this many buckets (stable BLAKE2b) instead of a vocabulary.",
    )


class BinaryFeature(Strict):
    name: str = Field(description="Column name (values 0/1, true/false, yes/no).")
    kind: Literal["binary"] = Field(description="Feature kind tag.")


Feature = Annotated[ContinuousFeature | CategoricalFeature | BinaryFeature, Field(discriminator="kind")]
