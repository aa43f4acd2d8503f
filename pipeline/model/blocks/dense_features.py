"""Block `dense_features`: the numbers of continuous features as a dense vector (DLRM's dense input).

    x[r, c] = v_c if feature c's number is present in row r else 0          c = 1..C
    out = [x, m]  with m[r, c] = 1 where it is missing (`missing_indicators`), else out = x

reads  entries   the batch's entries
writes out       dense [C] or [2C]
no weights

The features are `features` (default: every feature whose entry carries a number: a continuous
feature without bins, `discretizer: none`, `log1p` or `normal`). Feature c's number is present when
its entry's id is the feature's first id (base.FieldInfo); a transform (log1p, to-normal) is applied
by the encoder, so an MLP reading this gets values of a sane scale.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field

from ...config import Strict
from .base import Block, Entries, EntryKind, IdSpace, Node, Port, RequestEntries, entry_ids, entry_slots, request_slots

if TYPE_CHECKING:
    import torch

NUMBERS: tuple[EntryKind, ...] = ("value",)


class DenseFeaturesSpec(Strict):
    features: list[str] | None = Field(
        default=None,
        min_length=1,
        description="The continuous features read, in this order (default: every feature carrying a number).",
    )
    missing_indicators: bool = Field(
        default=True, description="Append one 0/1 input per feature marking a missing number (else it reads 0)."
    )


class DenseFeatures(Block):
    kind = "dense_features"
    Spec = DenseFeaturesSpec
    reads = {"entries": "entries"}

    def outputs(self, spec: DenseFeaturesSpec, inputs: dict[str, Port], space: IdSpace) -> dict[str, Port]:
        count = len(space.select(spec.features, NUMBERS))
        return {"out": Port("dense", (2 * count if spec.missing_indicators else count,))}

    def forward(
        self, node: Node, weights: dict[str, torch.Tensor], inputs: dict[str, Any], training: bool
    ) -> dict[str, torch.Tensor]:
        import torch

        entries: Entries = inputs["entries"]
        chosen, batch = node.space.select(node.spec.features, NUMBERS), len(entries.offsets)
        ids = entry_ids(entries)
        values = (
            entries.values
            if entries.values is not None
            else torch.ones(len(ids), dtype=torch.float64, device=ids.device)
        )
        first = torch.tensor([node.space.fields[j].offset for j in chosen], device=ids.device)
        if not node.space.ragged and entries.width == node.space.num_fields:
            ids = ids.view(batch, -1)[:, list(chosen)]
            numbers = values.view(batch, -1)[:, list(chosen)]
        else:
            read, bags = entry_slots(ids, entries.offsets, entries.width, node.space, chosen)
            flat_ids = torch.zeros(batch * len(chosen), dtype=ids.dtype, device=ids.device)
            flat_values = torch.zeros(batch * len(chosen), dtype=values.dtype, device=ids.device)
            ids = flat_ids.index_copy(0, bags[read], ids[read]).view(batch, -1)
            numbers = flat_values.index_copy(0, bags[read], values[read]).view(batch, -1)
        present = ids == first
        x = torch.where(present, numbers, torch.zeros_like(numbers))
        if node.spec.missing_indicators:
            x = torch.cat([x, (~present).to(x.dtype)], 1)
        return {"out": x}

    def score(self, node: Node, weights: dict[str, np.ndarray], inputs: dict[str, Any]) -> dict[str, Any]:
        entries: RequestEntries = inputs["entries"]
        chosen, n = node.space.select(node.spec.features, NUMBERS), entries.count
        first = np.array([node.space.fields[j].offset for j in chosen], dtype=np.int64)
        if entries.offsets is None:
            ids, numbers = entries.ids[:, list(chosen)], entries.values[:, list(chosen)]
        else:
            read, bags = request_slots(entries, node.space, chosen)
            ids, numbers = np.zeros(n * len(chosen), np.int64), np.zeros(n * len(chosen))
            ids[bags[read]], numbers[bags[read]] = entries.ids[read], entries.values[read]
            ids, numbers = ids.reshape(n, -1), numbers.reshape(n, -1)
        present = ids == first
        x = np.where(present, numbers, 0.0)
        return {"out": np.concatenate([x, (~present).astype(np.float64)], 1) if node.spec.missing_indicators else x}


BLOCK = DenseFeatures()
