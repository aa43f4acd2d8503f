"""What a block is: one kind of layer of the network, written once as plain functions.

A block file holds everything about its kind: its spec (pydantic), the ports it reads and writes
and the weights it owns (names, shapes, which have one row per id), how those weights start, its
torch forward (training and the reference scorer, full tables or the rows a batch touches) and its
numpy scorer (serving). Blocks keep no state: the network (network.py) owns the tensors and hands
each block its own weights by name, so nothing ever parses a state dict's names, and a block file
imports torch only inside the functions that run it (a spec loads without torch).

Ports between blocks (B rows of a batch, F features, n candidates of a request):

    entries  the batch's sparse entries: torch `Entries` (ids, values, offsets [, the distinct-id
             structure of row-wise training]); numpy `RequestEntries` (ids, values [n, F])
    dense    torch [B, width] / numpy [n, width]
    fields   a vector per feature, torch [B, F, dim] / numpy `FieldVectors` (built lazily)
    scaled   the entries' values divided by their id's running max |v|: torch [nnz] / numpy [n, F]
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from ...config import Activation, Strict

if TYPE_CHECKING:
    import torch

    from ..rows import RowBatch

PortKind = Literal["entries", "dense", "fields", "scaled"]


@dataclass(frozen=True)
class Port:
    """What flows along one edge of the plan: its kind and its shape without the batch dimension."""

    kind: PortKind
    shape: tuple[int, ...] = ()


@dataclass(frozen=True)
class Weight:
    """One array a block owns: its shape, whether it has one row per id (`per_id`: trained
    row-wise, a touched row at a time) and whether training changes it by gradient (`trainable`;
    running statistics are not). A per-id array's rows are ids [first_id, first_id + shape[0]):
    every id by default (first_id 0, num_ids rows), or one range of them (a table of one feature,
    or of one popularity block of a feature)."""

    shape: tuple[int, ...]
    per_id: bool = False
    trainable: bool = True
    first_id: int = 0
    also_from: tuple[int, ...] = ()  # more id ranges [a, a + shape[0]) read onto the same rows (a shared table)

    @property
    def first_ids(self) -> tuple[int, ...]:
        return (self.first_id, *self.also_from)


EntryKind = Literal["id", "value", "list"]


@dataclass(frozen=True)
class FieldInfo:
    """One feature as blocks see it: its name, its ids [offset, offset + size), and its entries'
    kind: "id" (one entry, value 1), "value" (one entry: id offset carrying a number, or id
    offset + 1 with value 1 when the number is missing) or "list" (any number of entries)."""

    name: str
    offset: int
    size: int
    kind: EntryKind


KIND_HINT = {
    "value": "a continuous number: discretizer none, log1p or normal; read it with dense_features",
    "id": "one id per row: categorical, binary or binned continuous; embed it with embedding_bag",
    "list": "an id list; pool it with embedding_bag",
}


@dataclass(frozen=True)
class IdSpace:
    """The data a plan is laid over: the id space's size, the number of features and, once the
    feature map is fitted, each feature's ids and entry kind (`fields`; empty for a spec checked
    before any data, when blocks take every feature name on trust)."""

    num_ids: int
    num_fields: int
    fields: tuple[FieldInfo, ...] = ()

    @property
    def ragged(self) -> bool:
        """Some feature is an id list: a row's entries are not one per feature."""
        return any(f.kind == "list" for f in self.fields)

    def select(self, names: list[str] | None, kinds: tuple[EntryKind, ...]) -> tuple[int, ...]:
        """The indices of the features `names` (None: every feature of `kinds`), each checked to be
        of one of `kinds`; a ValueError naming the feature otherwise."""
        if not self.fields:  # no data yet: the names are checked when the plan is laid over it
            return tuple(range(len(names) if names is not None else self.num_fields))
        index = {f.name: j for j, f in enumerate(self.fields)}
        if names is None:
            chosen = tuple(j for j, f in enumerate(self.fields) if f.kind in kinds)
        else:
            unknown = [n for n in names if n not in index]
            if unknown:
                raise ValueError(f"feature {unknown[0]!r} is not one of the spec's features {sorted(index)}")
            chosen = tuple(index[n] for n in names)
        for j in chosen:
            if self.fields[j].kind not in kinds:
                raise ValueError(
                    f"feature {self.fields[j].name!r} has {self.fields[j].kind} entries; this block reads "
                    f"features with {' or '.join(kinds)} entries ({KIND_HINT[self.fields[j].kind]})"
                )
        if not chosen:
            raise ValueError(f"no feature has {' or '.join(kinds)} entries, which this block reads")
        return chosen

    def to_json(self) -> list:
        return [[f.name, f.offset, f.size, f.kind] for f in self.fields]


@dataclass(frozen=True)
class Node:
    """One block of a plan as its functions see it: its name, spec, the data's id space and the
    ports it reads (input name -> port)."""

    name: str
    spec: Any
    space: IdSpace
    inputs: dict[str, Port]


@dataclass
class Entries:
    """The sparse entries of a torch batch: `index` int64 [nnz], each entry's row in the per-id
    weights a block receives, values [nnz] (None: one-hot, every value 1), offsets int64 [B] (row
    starts), `width` when every row has that many entries. Full tables: index is the entries' ids.
    Row-wise training (`rows`, the batch's distinct ids): the per-id weights are the gathered rows
    [U, ...] and index is rows.inverse."""

    index: torch.Tensor
    values: torch.Tensor | None
    offsets: torch.Tensor
    width: int | None = None
    rows: RowBatch | None = None


@dataclass
class RequestEntries:
    """The entries of an online request, float64 values: with one entry per feature (`offsets`
    None), ids int64 and values [n, F]; with id lists (ragged), ids int64 and values [nnz] and the
    candidates' offsets int64 [n + 1]."""

    ids: np.ndarray
    values: np.ndarray
    offsets: np.ndarray | None = None

    @property
    def count(self) -> int:
        return len(self.ids) if self.offsets is None else len(self.offsets) - 1


def table_base(entries: Entries, first_id: int) -> int | torch.Tensor:
    """What to subtract from `entries.index` to index a per-id table whose rows start at id
    `first_id` (valid for the entries whose ids it holds): the id itself with full tables; in a
    row-wise batch, where the table's gathered rows begin among the batch's distinct ids."""
    if entries.rows is None:
        return first_id
    import torch

    return torch.searchsorted(entries.rows.unique, first_id)


def range_rows(unique: torch.Tensor, first_ids: tuple[int, ...], rows: int) -> torch.Tensor:
    """The rows of a per-id table over the id ranges [a, a + rows), a in first_ids, that a batch's
    distinct ids `unique` (ascending) touch: distinct, ascending, int64 [U_t]."""
    import torch

    bounds = torch.tensor([b for a in first_ids for b in (a, a + rows)], dtype=unique.dtype, device=unique.device)
    edges = torch.searchsorted(unique, bounds).tolist()
    parts = [unique[edges[2 * k] : edges[2 * k + 1]] - a for k, a in enumerate(first_ids)]
    return parts[0] if len(parts) == 1 else torch.unique(torch.cat(parts))


def entry_ids(entries: Entries) -> torch.Tensor:
    """The entries' global ids [nnz] (row-wise batches hold each entry's row among the distinct ids)."""
    return entries.index if entries.rows is None else entries.rows.unique.index_select(0, entries.index)


def entry_slots(
    ids: torch.Tensor, offsets: torch.Tensor, width: int | None, space: IdSpace, chosen: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """For a block reading features `chosen` of a torch batch (ids [nnz], row starts [B]): which
    entries it reads (bool [nnz]) and each one's bag, row · k + the feature's slot among the k
    chosen (int64 [nnz], meaningful where read)."""
    import torch

    from ..rows import rows_of_entries

    starts = torch.tensor([f.offset for f in space.fields[1:]], dtype=ids.dtype, device=ids.device)
    field = torch.bucketize(ids, starts, right=True)
    slot_of_field = torch.full((len(space.fields),), -1, dtype=torch.int64, device=ids.device)
    slot_of_field[list(chosen)] = torch.arange(len(chosen), device=ids.device)
    slot = slot_of_field[field]
    rows = rows_of_entries(offsets, len(ids), width)
    return slot >= 0, rows * len(chosen) + slot


def request_slots(entries: RequestEntries, space: IdSpace, chosen: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """numpy twin of `entry_slots` for a ragged request: (read bool [nnz], bag int64 [nnz])."""
    assert entries.offsets is not None
    starts = np.array([f.offset for f in space.fields], dtype=np.int64)
    field = np.searchsorted(starts, entries.ids, side="right") - 1
    slot_of_field = np.full(len(space.fields), -1, dtype=np.int64)
    slot_of_field[list(chosen)] = np.arange(len(chosen))
    slot = slot_of_field[field]
    rows = np.repeat(np.arange(entries.count), np.diff(entries.offsets))
    return slot >= 0, rows * len(chosen) + slot


def select_entries(entries: Entries, space: IdSpace, chosen: tuple[int, ...]) -> Entries:
    """The torch batch restricted to the entries of features `chosen` (rows kept, in order): a
    block over a feature group sees only its group. Row-wise batches keep their distinct ids; the
    restricted batch is scattered (no transposed structure)."""
    import torch

    from ..rows import RowBatch, rows_of_entries

    batch = len(entries.offsets)
    if len(chosen) == space.num_fields and (not space.fields or not space.ragged):
        return entries
    device = entries.index.device
    if not space.ragged and entries.width == space.num_fields:  # one entry per feature: pick columns
        columns = torch.tensor(chosen, dtype=torch.int64, device=device)
        positions = (torch.arange(batch, device=device).unsqueeze(1) * space.num_fields + columns).reshape(-1)
        width: int | None = len(chosen)
        offsets = torch.arange(batch, dtype=torch.int64, device=device) * len(chosen)
    else:
        read, _ = entry_slots(entry_ids(entries), entries.offsets, entries.width, space, chosen)
        positions = torch.nonzero(read).squeeze(1)
        rows = rows_of_entries(entries.offsets, len(entries.index), entries.width).index_select(0, positions)
        counts = torch.bincount(rows, minlength=batch)
        offsets, width = torch.cumsum(counts, 0) - counts, None
    values = None if entries.values is None else entries.values.index_select(0, positions)
    row_batch = None
    if entries.rows is not None:
        row_batch = RowBatch(
            entries.rows.unique,
            entries.rows.inverse.index_select(0, positions),
            entries.rows.row_of_entry.index_select(0, positions),
        )
    return Entries(entries.index.index_select(0, positions), values, offsets, width, row_batch)


def select_request(entries: RequestEntries, space: IdSpace, chosen: tuple[int, ...]) -> RequestEntries:
    """numpy twin of `select_entries` for an online request."""
    if len(chosen) == space.num_fields and (not space.fields or not space.ragged):
        return entries
    if entries.offsets is None:
        columns = list(chosen)
        return RequestEntries(
            np.ascontiguousarray(entries.ids[:, columns]), np.ascontiguousarray(entries.values[:, columns])
        )
    read, _ = request_slots(entries, space, chosen)
    rows = np.repeat(np.arange(entries.count), np.diff(entries.offsets))[read]
    offsets = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=entries.count))]).astype(np.int64)
    return RequestEntries(entries.ids[read], entries.values[read], offsets)


@dataclass
class FieldVectors:
    """numpy `fields`: vector f of candidate r is table[ids[r, f]] · scaled[r, f] ([n, F, dim]),
    kept as its parts so a consumer with a fused kernel need not build it; `dense()` builds it."""

    table: np.ndarray
    ids: np.ndarray
    scaled: np.ndarray

    def dense(self) -> np.ndarray:
        return np.take(self.table, self.ids, axis=0) * self.scaled[:, :, None]

    @classmethod
    def of(cls, vectors: np.ndarray) -> FieldVectors:
        """Vectors already built, [n, F, dim], in this form (each its own table row, scale 1)."""
        n, fields, dim = vectors.shape
        return cls(
            np.ascontiguousarray(vectors).reshape(n * fields, dim),
            np.arange(n * fields, dtype=np.int64).reshape(n, fields),
            np.ones((n, fields)),
        )


@dataclass
class DenseParts:
    """numpy `dense` given as side-by-side parts, [n, w_1] ... [n, w_k] for [n, Σ w]: a consumer's
    first matmul takes each part against its rows of the weight (`matmul`) instead of copying them
    into one array."""

    parts: list[np.ndarray]

    def dense(self) -> np.ndarray:
        return np.concatenate(self.parts, axis=1)


def matmul(x: np.ndarray | DenseParts, weight_t: np.ndarray) -> np.ndarray:
    """x [n, w] (or its parts) @ weight_t [w, k] -> [n, k]."""
    if not isinstance(x, DenseParts):
        return x @ weight_t
    out, start = np.zeros((len(x.parts[0]), weight_t.shape[1])), 0
    for part in x.parts:
        out += part @ weight_t[start : start + part.shape[1]]
        start += part.shape[1]
    return out


def as_array(x: np.ndarray | DenseParts) -> np.ndarray:
    return x.dense() if isinstance(x, DenseParts) else x


class Block:
    """The interface every block kind implements (see the module docstring). Subclasses are
    stateless: one instance per kind, in the registry."""

    kind: ClassVar[str]
    Spec: ClassVar[type[Strict]]
    reads: ClassVar[dict[str, PortKind]]  # input name -> the port kind it takes
    accepts: ClassVar[tuple[PortKind, ...] | None] = None  # instead: any inputs, named freely, of these kinds
    uses_counts: ClassVar[bool] = False  # its spec is completed from the train split's id counts (`resolve`)

    def resolve(self, spec: Any, space: IdSpace, counts: np.ndarray) -> Any:
        """The spec completed from the train split's access count per id (int64 [num_ids]), when the
        train step builds the plan; the spec itself for blocks that need nothing from the data."""
        return spec

    def outputs(self, spec: Any, inputs: dict[str, Port], space: IdSpace) -> dict[str, Port]:
        """The ports this block writes ("out" first), given the ports it reads."""
        raise NotImplementedError

    def weights(self, spec: Any, inputs: dict[str, Port], space: IdSpace) -> dict[str, Weight]:
        """The arrays it owns, by name."""
        return {}

    def init(self, node: Node, weights: dict[str, torch.Tensor]) -> None:
        """Give its weights their starting values, in place (the global torch generator is seeded by
        training; blocks are initialized in plan order)."""

    def forward(
        self, node: Node, weights: dict[str, torch.Tensor], inputs: dict[str, Any], training: bool
    ) -> dict[str, torch.Tensor]:
        """Torch: the outputs of one batch. Per-id weights arrive as full tables, or as the rows the
        batch touches when `inputs` hold row-wise Entries."""
        raise NotImplementedError

    def infer(self, node: Node, weights: dict[str, torch.Tensor], inputs: dict[str, Any]) -> torch.Tensor | None:
        """Torch inference of "out" alone through a native fast path (no autograd), or None for none."""
        return None

    def serving_weights(self, node: Node, weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The weights as `score` reads them, laid out once when a scorer loads (matrices transposed
        to the row-major [in, out] a request's matmul reads fastest, say); the same by default."""
        return weights

    def score(self, node: Node, weights: dict[str, np.ndarray], inputs: dict[str, Any]) -> dict[str, Any]:
        """numpy, float64: the outputs for one request (serving), from `serving_weights`."""
        raise NotImplementedError


# ----------------------------------------------------------------------------- activations, both ways

ACTIVATIONS: tuple[str, ...] = ("relu", "prelu", "sigmoid", "tanh", "none")


def activation_weights(name: Activation, width: int) -> dict[str, Weight]:
    """PReLU has one learned slope per unit; the other activations have no weights."""
    return {"prelu": Weight((width,))} if name == "prelu" else {}


@functools.cache
def _torch_activations() -> dict[str, Callable]:
    import torch
    from torch.nn import functional as F

    return {
        "relu": lambda x, w: torch.relu(x),
        "prelu": F.prelu,
        "sigmoid": lambda x, w: torch.sigmoid(x),
        "tanh": lambda x, w: torch.tanh(x),
        "none": lambda x, w: x,
    }


def activate_torch(name: Activation, x: torch.Tensor, prelu: torch.Tensor | None = None) -> torch.Tensor:
    """F(x) in torch (`prelu`: PReLU's slopes [width])."""
    activations = _torch_activations()
    if name not in activations:
        raise ValueError(f"unknown activation {name!r}; one of {ACTIVATIONS}")
    return activations[name](x, prelu)


def activate_numpy(name: Activation, x: np.ndarray, prelu: np.ndarray | None = None) -> np.ndarray:
    if name == "relu":
        return np.maximum(x, 0.0)
    if name == "prelu":
        return np.where(x >= 0, x, prelu * x)
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-x))
    if name == "tanh":
        return np.tanh(x)
    if name == "none":
        return x
    raise ValueError(f"unknown activation {name!r}; one of {ACTIVATIONS}")


def init_prelu(weights: dict[str, torch.Tensor]) -> None:
    if "prelu" in weights:
        weights["prelu"].data.fill_(0.25)  # torch.nn.PReLU's start


def init_normal(weight: torch.Tensor, std: float) -> None:
    """weight ~ N(0, std²), in place (the per-id embedding tables' start)."""
    import torch

    with torch.no_grad():
        weight.copy_(torch.randn(weight.shape) * std)


def init_linear(weight: torch.Tensor, bias: torch.Tensor) -> None:
    """torch.nn.Linear's start: weight [out, in] Kaiming-uniform (a = √5), bias U(±1/√in)."""
    import math

    from torch import nn

    nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
    bound = 1 / math.sqrt(weight.shape[1]) if weight.shape[1] > 0 else 0.0
    nn.init.uniform_(bias, -bound, bound)
