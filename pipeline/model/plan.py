"""The plan: the network as a list of blocks with their specs and wiring, resolved against the data
(the id space's size, the number of features) into each block's ports and weights.

The bundle stores the plan as JSON beside the weights (`plan.json`); the torch network
(network.py) is built from it and the online scorer (serving/) interprets it with the blocks' numpy
scorers. A block's inputs name a port: "features" (the batch's entries) or "<block>.<output>".

`ModelSpec` is the spec's `model:` section: either the usual network, given by its sections
    sparse (sparse_linear) [-> embedding (field_embedding) -> interactions (dot_interaction)]
    -> mlp (mlp) -> head (logit),
or any plan written out as `blocks` (each: name, kind, inputs, and its kind's options) and the
`output` port. Every registered block kind is available there without any change to this module.

With several tasks, the model is the shared layers (the preset without its head, or the written
plan up to `output`, its last block's `out` by default), and each task adds its tower:

    <task>_scale (gradient_scale, unless 1) -> <task>_tower (mlp) -> <task>_head (logit)

so the plan has one output per task, in task order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

import numpy as np
from pydantic import Field, ValidationError, create_model, model_validator

from ..config import Strict
from ..errors import ArtifactError
from .blocks import BLOCKS
from .blocks.base import FieldInfo, IdSpace, Node, Port, Weight
from .blocks.field_embedding import FieldEmbeddingSpec
from .blocks.gradient_scale import GradientScaleSpec
from .blocks.mlp import MLPSpec
from .blocks.sparse_linear import SparseLinearSpec

PLAN_FORMAT = 3  # 2: the features' layout (fields); 3: one output per task
FEATURES = "features"
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_RESERVED = {"features", "training", "forward", "blocks", "plan"}


class InteractionSpec(Strict):
    """DLRM dot interactions: a dim-d embedding per feature, every pairwise dot product fed to the MLP."""

    dim: int = Field(
        default=16, ge=1, le=256, description="Embedding size d of each feature (and of the sparse layer's projection)."
    )


class BlockNode(Strict):
    """What every block of a written-out plan gives besides its kind's options."""

    name: str = Field(description="The block's name: a lowercase identifier, unique in the plan.")
    kind: str = Field(description="Block kind.")
    inputs: dict[str, str] = Field(description="Input -> the port it reads: 'features' or '<block>.<output>'.")


def _node_spec(kind: str) -> type[BlockNode]:
    """The spec of a `kind` block of a written-out plan: its kind's options, and its name and inputs."""
    block = BLOCKS[kind]
    model: type[BlockNode] = create_model(
        f"{''.join(part.title() for part in kind.split('_'))}Block",
        __base__=(block.Spec, BlockNode),  # type: ignore[arg-type]  # a Strict spec and the node fields
        __doc__=f"A `{kind}` block of a written-out plan; it reads {sorted(block.reads)}.",
        kind=(Literal[kind], Field(description="Block kind.")),
    )
    return model


if TYPE_CHECKING:
    BlockSpec = BlockNode
else:  # one tagged union of every registered kind
    BlockSpec = Annotated[Union[tuple(_node_spec(kind) for kind in BLOCKS)], Field(discriminator="kind")]  # noqa: UP007
PRESET_SECTIONS = ("sparse_linear", "interactions", "mlp")


class ModelSpec(Strict):
    sparse_linear: SparseLinearSpec = Field(default_factory=SparseLinearSpec, description="The sparse linear layer.")
    interactions: InteractionSpec | None = Field(
        default=None,
        description="Optional DLRM dot interactions between per-feature embeddings and the sparse layer's output.",
    )
    mlp: MLPSpec = Field(default_factory=MLPSpec, description="The MLP on top of it.")
    blocks: list[BlockSpec] | None = Field(
        default=None,
        max_length=256,
        description="A plan written out block by block, instead of the sections above: every block kind is "
        "available, wired by name.",
    )
    output: str | None = Field(
        default=None,
        description="With `blocks`: the port holding the logit ('head.out' when absent); with tasks, the shared "
        "layers' output the towers read (the last block's `out` when absent).",
    )
    tables: Literal["float32", "int8"] = Field(
        default="float32",
        description="How the bundle stores the per-id tables at least 8 wide: float32, or row-wise 8-bit (uint8 "
        "codes with a float32 scale and low end per row: 72 bytes for a 64-wide row instead of 256); both scorers "
        "read the dequantized tables, and the train step reports the validation AUC change.",
    )

    @model_validator(mode="after")
    def _one_way(self) -> ModelSpec:
        defaults = ModelSpec.model_construct()
        given = [name for name in PRESET_SECTIONS if getattr(self, name) != getattr(defaults, name)]
        if self.blocks is not None and given:
            raise ValueError(f"give either `blocks` or the sections {given}, not both")
        if self.blocks is None and self.output is not None:
            raise ValueError("`output` goes with `blocks`")
        plan_for(self, IdSpace(1, 1))  # the wiring is checked now: it does not depend on the data
        return self


@dataclass(frozen=True)
class PlanBlock:
    """One block of a plan: its name (a Python identifier), kind, spec and inputs (input -> port)."""

    name: str
    kind: str
    spec: Any
    inputs: dict[str, str]


@dataclass(frozen=True)
class Tower:
    """One task's tower over the shared layers: its MLP and how much of its gradient they get."""

    task: str
    mlp: MLPSpec
    gradient_scale: float = 1.0


@dataclass(frozen=True)
class Plan:
    """Blocks in order (each reads ports written before it) and the ports holding the logits, one
    per task (one for a one-task model)."""

    space: IdSpace
    blocks: tuple[PlanBlock, ...]
    outputs: tuple[str, ...]
    nodes: tuple[Node, ...] = field(default=(), init=False, compare=False)  # derived: each block's ports

    def __post_init__(self) -> None:
        nodes: list[Node] = []
        ports = {FEATURES: Port("entries", (self.space.num_fields,))}
        for block in self.blocks:
            if not _NAME.match(block.name) or block.name in _RESERVED or any(n.name == block.name for n in nodes):
                raise ValueError(f"block name {block.name!r} is not a new lowercase identifier")
            kind = _block(block.kind)
            if kind.accepts is None and set(block.inputs) != set(kind.reads):
                raise ValueError(
                    f"block {block.name!r} ({block.kind}) reads {sorted(kind.reads)}, "
                    f"the plan gives {sorted(block.inputs)}"
                )
            if kind.accepts is not None and not block.inputs:
                raise ValueError(f"block {block.name!r} ({block.kind}) reads at least one port; the plan gives none")
            inputs = {}
            for name, ref in block.inputs.items():
                port = ports.get(ref)
                takes = kind.accepts or (kind.reads[name],)
                if port is None or port.kind not in takes:
                    raise ValueError(
                        f"block {block.name!r} input {name!r} reads {ref!r}, which is "
                        f"{'not written before it' if port is None else 'a ' + port.kind + ' port'}; "
                        f"it takes a {' or '.join(takes)} port"
                    )
                inputs[name] = port
            nodes.append(Node(block.name, block.spec, self.space, inputs))
            try:
                outputs = kind.outputs(block.spec, inputs, self.space)
            except ValueError as exc:
                raise ValueError(f"block {block.name!r} ({block.kind}): {exc}") from None
            for name, port in outputs.items():
                ports[f"{block.name}.{name}"] = port
        for output in self.outputs:
            if ports.get(output) != Port("dense", (1,)):
                raise ValueError(f"the plan's output {output!r} is not a block's dense output of width 1")
        object.__setattr__(self, "nodes", tuple(nodes))

    @property
    def weights(self) -> dict[str, Weight]:
        """Every weight, "<block>.<name>" -> Weight, in plan order."""
        out = {}
        for block, node in zip(self.blocks, self.nodes):
            for name, weight in BLOCKS[block.kind].weights(block.spec, node.inputs, self.space).items():
                out[f"{block.name}.{name}"] = weight
        return out

    def consumers(self, port: str) -> list[str]:
        """The blocks reading `port`."""
        return [block.name for block in self.blocks if port in block.inputs.values()]

    def to_json(self) -> dict:
        return {
            "format": PLAN_FORMAT,
            "num_ids": self.space.num_ids,
            "num_fields": self.space.num_fields,
            "fields": self.space.to_json(),
            "blocks": [
                {"name": b.name, "kind": b.kind, "inputs": b.inputs, "spec": b.spec.model_dump(mode="json")}
                for b in self.blocks
            ],
            "outputs": list(self.outputs),
            "weights": {
                name: {
                    "shape": list(w.shape),
                    "per_id": w.per_id,
                    "trainable": w.trainable,
                    "first_id": w.first_id,
                    "also_from": list(w.also_from),
                }
                for name, w in self.weights.items()
            },
        }

    @classmethod
    def from_json(cls, obj: dict) -> Plan:
        """The plan a bundle stores; an ArtifactError when it is damaged or from another format."""
        if not isinstance(obj, dict) or obj.get("format") != PLAN_FORMAT:
            raise ArtifactError(
                f"plan format {obj.get('format') if isinstance(obj, dict) else None!r} is not "
                f"{PLAN_FORMAT}; rebuild the bundle with this snn (`snn fit --force`)"
            )
        try:
            blocks = tuple(
                PlanBlock(b["name"], b["kind"], _block(b["kind"]).Spec.model_validate(b["spec"]), dict(b["inputs"]))
                for b in obj["blocks"]
            )
            fields = tuple(FieldInfo(str(n), int(o), int(s), k) for n, o, s, k in obj["fields"])
            space = IdSpace(int(obj["num_ids"]), int(obj["num_fields"]), fields)
            plan = cls(space, blocks, tuple(str(output) for output in obj["outputs"]))
            stored = {
                name: Weight(tuple(w["shape"]), w["per_id"], w["trainable"], w["first_id"], tuple(w["also_from"]))
                for name, w in obj["weights"].items()
            }
        except (KeyError, TypeError, ValueError, ValidationError) as exc:
            raise ArtifactError(
                f"plan is corrupted ({type(exc).__name__}: {str(exc)[:200]}); rebuild the bundle with `snn fit --force`"
            ) from None
        if stored != plan.weights:
            raise ArtifactError(
                "plan is corrupted (its weights do not match its blocks); rebuild the bundle with `snn fit --force`"
            )
        return plan


def _block(kind: str):
    if kind not in BLOCKS:
        raise ValueError(f"unknown kind {kind!r}; one of {sorted(BLOCKS)}")
    return BLOCKS[kind]


def space_of(num_ids: int, layout: list[tuple[str, int, int, str]]) -> IdSpace:
    """The id space of a fitted feature map (FeatureMap.num_ids and .layout())."""
    return IdSpace(num_ids, len(layout), tuple(FieldInfo(*field) for field in layout))  # type: ignore[arg-type]


def uses_counts(spec: ModelSpec) -> bool:
    """Some block is completed from the train split's id counts (see `plan_for`)."""
    return any(BLOCKS[block.kind].uses_counts for block in spec.blocks or ())


def plan_for(spec: ModelSpec, space: IdSpace, counts: np.ndarray | None = None, towers: tuple[Tower, ...] = ()) -> Plan:
    """The plan of the spec's `model:` section over the data's id space; `counts` (the train split's
    accesses per id, int64 [num_ids]) complete the blocks that need them (Block.resolve). With
    `towers` (several tasks), the model is the shared layers and each tower is added over them."""
    blocks = _written(spec, space, counts) if spec.blocks is not None else _preset(spec, bool(towers))
    if not towers:
        return Plan(space, tuple(blocks), (spec.output or "head.out",))
    shared = spec.output or f"{blocks[-1].name}.out"
    if spec.blocks is not None and spec.output is None and blocks[-1].kind == "logit":
        raise ValueError(
            "with tasks, the model is the shared layers: end it before a logit head (each task's tower has its "
            "own), or name the shared output in model.output"
        )
    for tower in towers:
        top = shared
        if tower.gradient_scale != 1:
            scale = GradientScaleSpec(scale=tower.gradient_scale)
            blocks.append(PlanBlock(f"{tower.task}_scale", "gradient_scale", scale, {"x": top}))
            top = f"{tower.task}_scale.out"
        blocks.append(PlanBlock(f"{tower.task}_tower", "mlp", tower.mlp, {"x": top}))
        head = {"x": f"{tower.task}_tower.out"}
        blocks.append(PlanBlock(f"{tower.task}_head", "logit", BLOCKS["logit"].Spec(), head))
    return Plan(space, tuple(blocks), tuple(f"{tower.task}_head.out" for tower in towers))


def _written(spec: ModelSpec, space: IdSpace, counts: np.ndarray | None) -> list[PlanBlock]:
    """The blocks of a written-out plan, those that need them resolved from `counts`."""
    written = []
    for block in spec.blocks or ():
        options = block.model_dump(exclude={"name", "kind", "inputs"})
        kind = BLOCKS[block.kind]
        block_spec = kind.Spec(**options)
        if counts is not None and kind.uses_counts:
            try:
                block_spec = kind.resolve(block_spec, space, counts)
            except ValueError as exc:
                raise ValueError(f"block {block.name!r} ({block.kind}): {exc}") from None
        written.append(PlanBlock(block.name, block.kind, block_spec, dict(block.inputs)))
    return written


def _preset(spec: ModelSpec, shared_only: bool) -> list[PlanBlock]:
    """The usual network's blocks: sparse [-> embedding -> interactions] -> mlp [-> head]."""
    blocks = [PlanBlock("sparse", "sparse_linear", spec.sparse_linear, {"entries": FEATURES})]
    top = "sparse.out"
    if spec.interactions is not None:
        blocks.append(
            PlanBlock(
                "embedding",
                "field_embedding",
                FieldEmbeddingSpec(dim=spec.interactions.dim),
                {"entries": FEATURES, "scaled": "sparse.scaled"},
            )
        )
        blocks.append(
            PlanBlock(
                "interactions",
                "dot_interaction",
                BLOCKS["dot_interaction"].Spec(),
                {"dense": top, "fields": "embedding.out"},
            )
        )
        top = "interactions.out"
    blocks.append(PlanBlock("mlp", "mlp", spec.mlp, {"x": top}))
    if not shared_only:
        blocks.append(PlanBlock("head", "logit", BLOCKS["logit"].Spec(), {"x": "mlp.out"}))
    return blocks
