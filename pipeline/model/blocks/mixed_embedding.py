"""Block `mixed_embedding`: E-P with mixed-dimension tables (Ginart et al. 2019, "Mixed Dimension
Embeddings with Application to Memory-Efficient Recommendation Systems").

Each pooled feature's ids are cut into `blocks` popularity blocks (contiguous id ranges holding equal
shares of the train split's accesses; vocabulary ids run most frequent first, so the first block is
the head). Block k of n_k ids and a_k train accesses has popularity p_k = a_k / n_k (accesses per
row) and dimension

    d_k = clip( round( λ · dim · (p_k / max_k p_k)^α ), 1, dim )

α the temperature (0: every table `dim` wide), round to the nearest power of 2 when asked, λ ≤ 1 the
largest scale whose tables fit the parameter `budget` (Σ_k n_k · d_k; none: λ = 1). Its table
T_k [n_k, d_k] (per id, trained row-wise, ids [first_k, first_k + n_k)) is projected back to the base
dim by P_k [d_k, dim] (none when d_k = dim):

    v(id) = T_k[id − first_k] · P_k                                                    [dim]
    e[r, f] = pool_{entries of row r with feature f} ( v(id_e) · value_e )             [K, dim]

with pooling sum, mean or max as in `embedding_bag`. The dims are resolved once, by `resolve`, from
the train split's id counts when the train step builds the plan, and stored in the plan (`tables`),
so serving needs no counts.

reads  entries   the batch's entries
writes out       fields [K, dim]
weights  table_<k> [n_k, d_k] (per id, ids from first_k), T ~ N(0, 0.05²);
         projection_<k> [d_k, dim] for d_k < dim, P ~ N(0, 1/d_k) (so v starts with T's variance)
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field
from pydantic.json_schema import SkipJsonSchema

from ...config import Strict
from .base import (
    Block,
    Entries,
    IdSpace,
    Node,
    Port,
    RequestEntries,
    Weight,
    init_normal,
    table_base,
)
from .embedding_bag import (
    INIT_STD,
    POOLED,
    PooledSpec,
    pool_bags_numpy,
    pool_bags_torch,
    read_bags_numpy,
    read_bags_torch,
)

if TYPE_CHECKING:
    import torch


class MixedTable(Strict):
    """One resolved table: ids [first_id, first_id + rows) of one feature, `dim` wide."""

    first_id: int = Field(ge=0)
    rows: int = Field(ge=1)
    dim: int = Field(ge=1, le=1024)


class MixedEmbeddingSpec(PooledSpec):
    """embedding_bag's options (features, pooling; `dim` the base dim every table is projected to),
    and how the tables' dims follow popularity."""

    alpha: float = Field(
        default=0.5, ge=0, le=4, description="Temperature α of d ∝ popularity^α (0: every table the base dim)."
    )
    blocks: int = Field(
        default=4,
        ge=1,
        le=64,
        description="Popularity blocks per feature (equal shares of the train accesses); 4 and α 0.5 measured on "
        "Criteo and synthetic Zipf data (bench B7).",
    )
    budget: int | None = Field(
        default=None, ge=1, description="At most this many table parameters Σ rows·dim (the dims shrink to fit)."
    )
    power_of_2: bool = Field(default=True, description="Round each table's dim to a power of 2.")
    tables: SkipJsonSchema[list[MixedTable] | None] = Field(
        default=None, description="Resolved by snn from the train split's id counts; never written in a spec."
    )


def resolve_dims(spec: MixedEmbeddingSpec, space: IdSpace, counts: np.ndarray) -> list[MixedTable]:
    """The tables of the module docstring from the train split's per-id access counts [num_ids]."""
    cuts: list[tuple[int, int, float]] = []  # (first id, rows, accesses)
    for j in space.select(spec.features, POOLED):
        field = space.fields[j]
        own = counts[field.offset : field.offset + field.size].astype(np.float64)
        total = own.sum()
        edges = [0, field.size]
        if total > 0 and spec.blocks > 1:
            shares = np.cumsum(own) / total
            inner = np.searchsorted(shares, np.arange(1, spec.blocks) / spec.blocks, side="left") + 1
            edges = sorted({0, field.size, *[int(e) for e in inner if 0 < e < field.size]})
        for start, stop in itertools.pairwise(edges):
            cuts.append((field.offset + start, stop - start, float(own[start:stop].sum())))
    popularity = np.array([accesses / rows for _, rows, accesses in cuts])
    top = popularity.max() if len(popularity) and popularity.max() > 0 else 1.0
    ideal = spec.dim * (popularity / top) ** spec.alpha if spec.alpha > 0 else np.full(len(cuts), float(spec.dim))
    rows = np.array([r for _, r, _ in cuts], dtype=np.float64)

    def dims(scale: float) -> np.ndarray:
        d = np.maximum(ideal * scale, 1.0)
        d = 2.0 ** np.round(np.log2(d)) if spec.power_of_2 else np.round(d)
        return np.clip(d, 1, spec.dim).astype(np.int64)

    scale = 1.0
    if spec.budget is not None and float((rows * dims(1.0)).sum()) > spec.budget:
        low, high = 0.0, 1.0  # the largest scale that fits, by bisection
        for _ in range(60):
            middle = (low + high) / 2
            low, high = (middle, high) if float((rows * dims(middle)).sum()) <= spec.budget else (low, middle)
        scale = low
        if float((rows * dims(scale)).sum()) > spec.budget:
            raise ValueError(
                f"budget {spec.budget:,} is below {int(rows.sum()):,} parameters, one per id of the pooled features"
            )
    return [MixedTable(first_id=f, rows=r, dim=int(d)) for (f, r, _), d in zip(cuts, dims(scale))]


def table_of_ids(tables: list[MixedTable], ids: np.ndarray) -> np.ndarray:
    """The table holding each id int64 [m] (ids of the pooled features only) -> int64 [m]."""
    firsts = np.array([t.first_id for t in tables], dtype=np.int64)
    by_start = np.argsort(firsts, kind="stable")
    return by_start[np.searchsorted(firsts[by_start], ids, side="right") - 1]


def _checked_tables(spec: MixedEmbeddingSpec, space: IdSpace) -> list[MixedTable]:
    """The resolved tables, checked to tile the pooled features' ids in order."""
    if spec.tables is None:
        raise ValueError("its tables are not resolved: the plan is built from the train split's id counts")
    expected = [
        (space.fields[j].offset, space.fields[j].offset + space.fields[j].size)
        for j in space.select(spec.features, POOLED)
    ]
    position, covered = 0, []
    for start, stop in expected:
        at = start
        while at < stop and position < len(spec.tables) and spec.tables[position].first_id == at:
            at += spec.tables[position].rows
            position += 1
        covered.append(at == stop)
    if not all(covered) or position != len(spec.tables):
        raise ValueError("its tables do not tile the ids of the features it pools, in order")
    return spec.tables


class MixedEmbedding(Block):
    kind = "mixed_embedding"
    Spec = MixedEmbeddingSpec
    reads = {"entries": "entries"}
    uses_counts = True

    def resolve(self, spec: MixedEmbeddingSpec, space: IdSpace, counts: np.ndarray) -> MixedEmbeddingSpec:
        return spec.model_copy(update={"tables": resolve_dims(spec, space, counts)})

    def outputs(self, spec: MixedEmbeddingSpec, inputs: dict[str, Port], space: IdSpace) -> dict[str, Port]:
        return {"out": Port("fields", (len(space.select(spec.features, POOLED)), spec.dim))}

    def weights(self, spec: MixedEmbeddingSpec, inputs: dict[str, Port], space: IdSpace) -> dict[str, Weight]:
        out = {}
        for k, table in enumerate(_checked_tables(spec, space)):
            out[f"table_{k}"] = Weight((table.rows, table.dim), per_id=True, first_id=table.first_id)
            if table.dim < spec.dim:
                out[f"projection_{k}"] = Weight((table.dim, spec.dim))
        return out

    def init(self, node: Node, weights: dict[str, torch.Tensor]) -> None:
        for k, table in enumerate(_checked_tables(node.spec, node.space)):
            init_normal(weights[f"table_{k}"], INIT_STD)
            if f"projection_{k}" in weights:
                init_normal(weights[f"projection_{k}"], 1 / math.sqrt(table.dim))

    def forward(
        self, node: Node, weights: dict[str, torch.Tensor], inputs: dict[str, Any], training: bool
    ) -> dict[str, torch.Tensor]:
        import torch

        entries: Entries = inputs["entries"]
        spec, tables = node.spec, _checked_tables(node.spec, node.space)
        chosen = node.space.select(spec.features, POOLED)
        positions, ids, bags = read_bags_torch(entries, node.space, chosen)
        index = entries.index.index_select(0, positions)
        firsts = torch.tensor([t.first_id for t in tables], dtype=ids.dtype, device=ids.device)
        starts, by_start = torch.sort(firsts, stable=True)
        table_of = by_start.index_select(0, torch.bucketize(ids, starts, right=True) - 1)  # as table_of_ids
        order = torch.argsort(table_of, stable=True)
        ends = torch.cumsum(torch.bincount(table_of, minlength=len(tables)), 0).tolist()
        vectors = ids.new_zeros((len(ids), spec.dim), dtype=weights["table_0"].dtype)
        begin = 0
        for k, (table, end) in enumerate(zip(tables, ends)):
            if end > begin:
                mine = order[begin:end]
                local = index.index_select(0, mine) - table_base(entries, table.first_id)
                rows = weights[f"table_{k}"].index_select(0, local)
                if f"projection_{k}" in weights:
                    rows = rows @ weights[f"projection_{k}"]
                vectors = vectors.index_copy(0, mine, rows)
            begin = end
        return {"out": pool_bags_torch(vectors, entries, positions, bags, spec, len(chosen))}

    def score(self, node: Node, weights: dict[str, np.ndarray], inputs: dict[str, Any]) -> dict[str, Any]:
        entries: RequestEntries = inputs["entries"]
        spec, tables = node.spec, _checked_tables(node.spec, node.space)
        chosen = node.space.select(spec.features, POOLED)
        ids, values, bags = read_bags_numpy(entries, node.space, chosen)
        table_of = table_of_ids(tables, ids)
        vectors = np.zeros((len(ids), spec.dim))
        for k, table in enumerate(tables):
            mine = np.flatnonzero(table_of == k)
            if len(mine):
                rows = weights[f"table_{k}"][ids[mine] - table.first_id]
                vectors[mine] = rows @ weights[f"projection_{k}"] if f"projection_{k}" in weights else rows
        return {"out": pool_bags_numpy(vectors, values, bags, spec, entries.count, len(chosen))}


BLOCK = MixedEmbedding()
