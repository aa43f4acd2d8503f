"""Block `embedding_bag`: SparseNN's embedding and pooling (E-P) layer, one vector per feature.

    e[r, k] = pool_{entries e of row r with feature f_k} ( V[id_e] · v_e )        [K, dim]

pool: sum, mean (the sum over the bag's entry count; an empty bag gives 0) or max (elementwise
over the bag; an empty bag gives 0). v_e is the entry's value: 1 for ids, the weight of a weighted
id list. The K features are `features` (default: every feature whose entries are ids or id lists;
raw numbers go to `dense_features`), in that order.

reads  entries   the batch's entries
writes out       fields [K, dim]
weights  weight [num_ids, dim] (per id, trained row-wise), V ~ N(0, 0.05²); each feature owns its
         own ids, so the rows of one feature form its own table. With `shared`: table_<k> [n_k, dim]
         per table instead, a feature's own (its ids) or one shared by name by features of one
         encoding (`shares`: equal sizes; the table reads each one's id range onto the same rows)

torch: when every row holds one entry per feature (no id lists), the bags are the entries
themselves, gathered as [B, K]; otherwise each entry's bag is found from its id's feature
(base.entry_slots) and pooled by index_add / scatter_reduce. numpy mirrors both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field

from ...config import Strict
from .base import (
    Block,
    Entries,
    EntryKind,
    FieldVectors,
    IdSpace,
    Node,
    Port,
    RequestEntries,
    Weight,
    entry_ids,
    entry_slots,
    init_normal,
    range_rows,
    request_slots,
)

if TYPE_CHECKING:
    import torch

INIT_STD = 0.05
POOLED: tuple[EntryKind, ...] = ("id", "list")


class PooledSpec(Strict):
    """What every embedding-and-pooling block takes: the features, the vectors' dim, the pooling."""

    features: list[str] | None = Field(
        default=None,
        min_length=1,
        description="The features pooled, one vector each, in this order (default: every id and id-list feature).",
    )
    dim: int = Field(default=16, ge=1, le=1024, description="Size of each feature's vector (this table's width).")
    pooling: Literal["sum", "mean", "max"] = Field(
        default="sum", description="How the vectors of a row's entries of one feature are pooled."
    )


class EmbeddingBagSpec(PooledSpec):
    shared: dict[str, list[str]] | None = Field(
        default=None,
        description="Tables shared by name: each name's features read one table (give them one encoding with "
        "`shares`); with it, every other pooled feature reads a table of its own.",
    )


def tables_of(spec: EmbeddingBagSpec, space: IdSpace) -> list[list[int]]:
    """With `shared`: the features (indices into space.fields) reading each table, the shared
    tables first (in the spec's order), then one per remaining pooled feature. A ValueError when a
    shared feature is not pooled, is named twice, or differs in size from its table's others."""
    chosen = space.select(spec.features, POOLED)
    tables, taken = [], set()
    for name, features in (spec.shared or {}).items():
        indices = list(space.select(features, POOLED))
        if not space.fields:  # no layout yet: names are checked when the plan is laid over the data
            tables.append(indices)
            continue
        for j in indices:
            if j not in chosen or j in taken:
                raise ValueError(
                    f"shared table {name!r}: feature {space.fields[j].name!r} is "
                    + ("named twice" if j in taken else "not among the pooled features")
                )
            taken.add(j)
        sizes = {space.fields[j].size for j in indices}
        if len(sizes) > 1:
            raise ValueError(
                f"shared table {name!r}: its features have {sorted(sizes)} ids; give them one encoding "
                f"(`shares: {space.fields[indices[0]].name}` on the others)"
            )
        tables.append(indices)
    if not space.fields:
        return tables
    return tables + [[j] for j in chosen if j not in taken]


def pool_torch(vectors: torch.Tensor, bags: torch.Tensor, count: int, pooling: str) -> torch.Tensor:
    """vectors [m, dim] pooled into `count` bags by bag index [m] -> [count, dim] (empty bags 0)."""
    import torch

    out = vectors.new_zeros((count, vectors.shape[1]))
    if pooling == "max":
        return out.scatter_reduce(0, bags.unsqueeze(1).expand_as(vectors), vectors, "amax", include_self=False)
    out = out.index_add(0, bags, vectors)
    if pooling == "mean":
        out = out / torch.bincount(bags, minlength=count).clamp_min(1).unsqueeze(1).to(out.dtype)
    return out


def pool_numpy(vectors: np.ndarray, bags: np.ndarray, count: int, pooling: str) -> np.ndarray:
    """numpy twin of `pool_torch`."""
    if pooling == "max":
        out = np.full((count, vectors.shape[1]), -np.inf)
        np.maximum.at(out, bags, vectors)
        out[np.isneginf(out)] = 0.0
        return out
    out = np.zeros((count, vectors.shape[1]))
    np.add.at(out, bags, vectors)
    if pooling == "mean":
        out /= np.maximum(np.bincount(bags, minlength=count), 1)[:, None]
    return out


def read_bags_torch(
    entries: Entries, space: IdSpace, chosen: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The batch's entries of the `chosen` features (indices into space.fields) -> (their positions
    among the batch's entries [m], their ids [m], their bags [m]: row · len(chosen) + slot)."""
    import torch

    ids = entry_ids(entries)
    read, bags = entry_slots(ids, entries.offsets, entries.width, space, chosen)
    positions = torch.nonzero(read).squeeze(1)
    return positions, ids.index_select(0, positions), bags.index_select(0, positions)


def pool_bags_torch(
    vectors: torch.Tensor, entries: Entries, positions: torch.Tensor, bags: torch.Tensor, spec: PooledSpec, fields: int
) -> torch.Tensor:
    """Each read entry's vector [m, dim] (entries from `read_bags_torch`) times its value, pooled
    into the batch's B · `fields` bags -> [B, fields, dim]."""
    if entries.values is not None:
        vectors = vectors * entries.values.index_select(0, positions).unsqueeze(1)
    batch = len(entries.offsets)
    return pool_torch(vectors, bags, batch * fields, spec.pooling).view(batch, fields, spec.dim)


def read_bags_numpy(
    entries: RequestEntries, space: IdSpace, chosen: tuple[int, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """numpy twin of `read_bags_torch` for a request -> (ids [m], values [m], bags [m])."""
    if entries.offsets is None:  # one entry per feature: each candidate's entry of each chosen feature
        columns = list(chosen)
        ids, values = entries.ids[:, columns].reshape(-1), entries.values[:, columns].reshape(-1)
        return ids, values, np.arange(len(ids), dtype=np.int64)
    read, bags = request_slots(entries, space, chosen)
    return entries.ids[read], entries.values[read], bags[read]


def pool_bags_numpy(
    vectors: np.ndarray, values: np.ndarray, bags: np.ndarray, spec: PooledSpec, count: int, fields: int
) -> FieldVectors:
    """numpy twin of `pool_bags_torch` for `count` candidates -> FieldVectors [count, fields, dim]."""
    pooled = pool_numpy(vectors * values[:, None], bags, count * fields, spec.pooling)
    return FieldVectors.of(pooled.reshape(count, fields, spec.dim))


class EmbeddingBag(Block):
    kind = "embedding_bag"
    Spec = EmbeddingBagSpec
    reads = {"entries": "entries"}

    def outputs(self, spec: EmbeddingBagSpec, inputs: dict[str, Port], space: IdSpace) -> dict[str, Port]:
        tables_of(spec, space)  # shared tables are checked against the data's features
        return {"out": Port("fields", (len(space.select(spec.features, POOLED)), spec.dim))}

    def weights(self, spec: EmbeddingBagSpec, inputs: dict[str, Port], space: IdSpace) -> dict[str, Weight]:
        if spec.shared is None:
            return {"weight": Weight((space.num_ids, spec.dim), per_id=True)}
        out = {}
        for k, features in enumerate(tables_of(spec, space)):
            fields = [space.fields[j] for j in features]
            rows = fields[0].size if fields else 1  # no layout yet (a spec checked before data): any size
            starts = tuple(f.offset for f in fields) or (0,)
            out[f"table_{k}"] = Weight((rows, spec.dim), per_id=True, first_id=starts[0], also_from=starts[1:])
        return out

    def init(self, node: Node, weights: dict[str, torch.Tensor]) -> None:
        for weight in weights.values():
            init_normal(weight, INIT_STD)

    def forward(
        self, node: Node, weights: dict[str, torch.Tensor], inputs: dict[str, Any], training: bool
    ) -> dict[str, torch.Tensor]:
        if node.spec.shared is not None:
            return {"out": self._shared_forward(node, weights, inputs["entries"])}
        entries: Entries = inputs["entries"]
        chosen, table, dim = node.space.select(node.spec.features, POOLED), weights["weight"], node.spec.dim
        batch = len(entries.offsets)
        if not node.space.ragged and entries.width == node.space.num_fields:
            index = entries.index.view(batch, -1)[:, list(chosen)]
            vectors = table.index_select(0, index.reshape(-1)).view(batch, len(chosen), dim)
            if entries.values is not None:
                vectors = vectors * entries.values.view(batch, -1)[:, list(chosen)].unsqueeze(2)
            return {"out": vectors}  # one entry per bag: its sum, mean and max are itself
        read, bags = entry_slots(entry_ids(entries), entries.offsets, entries.width, node.space, chosen)
        vectors = table.index_select(0, entries.index[read])
        if entries.values is not None:
            vectors = vectors * entries.values[read].unsqueeze(1)
        pooled = pool_torch(vectors, bags[read], batch * len(chosen), node.spec.pooling)
        return {"out": pooled.view(batch, len(chosen), dim)}

    def _shared_forward(self, node: Node, weights: dict[str, torch.Tensor], entries: Entries) -> torch.Tensor:
        """`forward` with a table per feature or per shared name: each read entry's row in its
        table is its id minus its feature's first id (row-wise: that row's place among the rows
        the batch touches, base.range_rows)."""
        import torch

        spec, space = node.spec, node.space
        chosen = space.select(spec.features, POOLED)
        positions, ids, bags = read_bags_torch(entries, space, chosen)
        slot = bags % len(chosen)
        first = torch.tensor([space.fields[j].offset for j in chosen], dtype=ids.dtype, device=ids.device)
        local = ids - first.index_select(0, slot)
        vectors = torch.zeros((len(ids), spec.dim), dtype=next(iter(weights.values())).dtype, device=ids.device)
        for k, features in enumerate(tables_of(spec, space)):
            slots = torch.tensor([chosen.index(j) for j in features], dtype=slot.dtype, device=ids.device)
            mine = torch.nonzero(torch.isin(slot, slots)).squeeze(1)
            rows = local.index_select(0, mine)
            if entries.rows is not None:
                first_ids = tuple(space.fields[j].offset for j in features)
                touched = range_rows(entries.rows.unique, first_ids, space.fields[features[0]].size)
                rows = torch.searchsorted(touched, rows)
            vectors = vectors.index_copy(0, mine, weights[f"table_{k}"].index_select(0, rows))
        return pool_bags_torch(vectors, entries, positions, bags, spec, len(chosen))

    def _shared_score(self, node: Node, weights: dict[str, np.ndarray], entries: RequestEntries) -> FieldVectors:
        """numpy twin of `_shared_forward` (full tables)."""
        spec, space = node.spec, node.space
        chosen = space.select(spec.features, POOLED)
        ids, values, bags = read_bags_numpy(entries, space, chosen)
        slot = bags % len(chosen)
        local = ids - np.array([space.fields[j].offset for j in chosen], dtype=np.int64)[slot]
        vectors = np.zeros((len(ids), spec.dim))
        for k, features in enumerate(tables_of(spec, space)):
            mine = np.flatnonzero(np.isin(slot, [chosen.index(j) for j in features]))
            vectors[mine] = weights[f"table_{k}"][local[mine]]
        return pool_bags_numpy(vectors, values, bags, spec, entries.count, len(chosen))

    def score(self, node: Node, weights: dict[str, np.ndarray], inputs: dict[str, Any]) -> dict[str, Any]:
        entries: RequestEntries = inputs["entries"]
        if node.spec.shared is not None:
            return {"out": self._shared_score(node, weights, entries)}
        chosen, table = node.space.select(node.spec.features, POOLED), weights["weight"]
        if entries.offsets is None:
            columns = list(chosen)
            ids, values = (np.ascontiguousarray(a[:, columns]) for a in (entries.ids, entries.values))
            return {"out": FieldVectors(table, ids, values)}
        read, bags = request_slots(entries, node.space, chosen)
        vectors = np.take(table, entries.ids[read], axis=0) * entries.values[read, None]
        pooled = pool_numpy(vectors, bags[read], entries.count * len(chosen), node.spec.pooling)
        return {"out": FieldVectors.of(pooled.reshape(entries.count, len(chosen), node.spec.dim))}


BLOCK = EmbeddingBag()
