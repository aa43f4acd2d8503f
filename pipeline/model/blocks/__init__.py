"""The registry of block kinds: kind -> the block (one file each). A new block is its file, a line
here, and its tests (tests/model/test_blocks.py runs every registered block through the same checks)."""

from __future__ import annotations

from . import (
    concat,
    dense_features,
    dot_interaction,
    embedding_bag,
    field_embedding,
    gradient_scale,
    logit,
    mixed_embedding,
    mlp,
    sparse_linear,
)
from .base import Block

BLOCKS: dict[str, Block] = {
    module.BLOCK.kind: module.BLOCK
    for module in (
        sparse_linear,
        field_embedding,
        embedding_bag,
        mixed_embedding,
        dense_features,
        dot_interaction,
        concat,
        gradient_scale,
        mlp,
        logit,
    )
}
