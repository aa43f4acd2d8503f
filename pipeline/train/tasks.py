"""The spec's `tasks:` section and the multi-task loss (DPER's multi-task learning: shared layers,
a tower per task, a loss per task).

Each task t reads its label y_t (`data.labels`, by the task's name) and owns a tower (an MLP and
a logit head over the shared layers' output, read through `gradient_scale`). Per batch:

    m_rt = w_rt · [y_r,given(t) = 1]            (w_rt: the row's weight for t, 0 where t's negative
                                                 downsampling dropped it; the bracket only for a
                                                 dependent task, `given`)
    c_rt = pos_weight_t · y_rt + neg_weight_t · (1 − y_rt)
    L_t  = Σ_r m_rt · c_rt · BCE(σ(logit_rt), y_rt) / Σ_r m_rt
    L    = Σ_t weight_t · L_t

A dependent task b given a learns P(b | a) on the rows with a = 1 and is served as
P(b) = P(a) · P(b | a) (`served_probabilities`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from pydantic import Field

from ..config import Strict
from ..data.spec import TASK_NAME, NegativeDownsampling
from ..model.blocks.mlp import MLPSpec
from ..model.plan import Tower

if TYPE_CHECKING:
    import torch


class Breakdown(Strict):
    """Break-down calibration: a calibrator per value of a column, for the values with enough
    validation positives; the others take the task's calibrator."""

    column: str = Field(description="The slice column (read as text; a missing value is the slice 'null').")
    min_positives: float = Field(
        default=200,
        gt=0,
        le=1e12,
        description="A value needs at least this many (weighted) validation positives for its own calibrator.",
    )


class TaskSpec(Strict):
    """One task: how its label (`data.labels[name]`) is learned and served."""

    name: str = Field(pattern=TASK_NAME, description="The task's name: its label in data.labels, its output columns.")
    weight: float = Field(default=1.0, gt=0, le=1e6, description="This task's factor in the summed loss.")
    pos_weight: float = Field(default=1.0, gt=0, le=1e6, description="Loss factor of this task's positive rows.")
    neg_weight: float = Field(default=1.0, gt=0, le=1e6, description="Loss factor of this task's negative rows.")
    negative_downsampling: NegativeDownsampling | None = Field(
        default=None,
        description="Keep only a share of this task's negatives (its positives all kept); calibration undoes it "
        "for this task. A row is trained on when some task keeps it.",
    )
    tower: MLPSpec = Field(
        default_factory=lambda: MLPSpec(layers=[16]),
        description="The task's own layers over the shared output, before its logit head.",
    )
    gradient_scale: float = Field(
        default=1.0,
        ge=0,
        le=1,
        description="How much of this task's gradient reaches the shared layers (0: none, exactly; 1: all).",
    )
    given: str | None = Field(
        default=None,
        description="An earlier task this one depends on: learned on the rows where that task's label is 1, served "
        "as P(given) · P(this | given).",
    )
    breakdown: Breakdown | None = Field(
        default=None,
        description="Calibrate this task per value of a column (break-down calibration); every scorer then reads "
        "that column.",
    )
    value_weight: float | None = Field(
        default=None,
        ge=-1e9,
        le=1e9,
        description="This task's weight in the value model: with any task's set, predictions carry "
        "value = Σ value_weight · score (tasks without one count 0).",
    )


def task_masks(labels: np.ndarray, weights: np.ndarray, tasks: Sequence[TaskSpec]) -> np.ndarray:
    """m [n, T] of the module docstring: each row's weight for each task, 0 where a dependent task's
    condition is 0 (numpy: validation and calibration select their rows by it)."""
    names = [task.name for task in tasks]
    masks = np.array(weights, dtype=np.float64, copy=True)
    for t, task in enumerate(tasks):
        if task.given is not None:
            masks[:, t] *= labels[:, names.index(task.given)] == 1
    return masks


def multitask_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor,
    tasks: Sequence[TaskSpec],
    denominators: np.ndarray | None = None,
) -> torch.Tensor:
    """L of the module docstring from logits, labels and weights [B, T]; each task's sum is divided
    by Σ_r m_rt of the batch, or by `denominators[t]` (a global batch's, when ranks share it)."""
    from torch.nn import functional as F

    names = [task.name for task in tasks]
    total = logits.new_zeros(())
    for t, task in enumerate(tasks):
        y, m = labels[:, t], weights[:, t]
        if task.given is not None:
            m = m * (labels[:, names.index(task.given)] == 1).to(m.dtype)
        c = task.pos_weight * y + task.neg_weight * (1 - y)
        bce = F.binary_cross_entropy_with_logits(logits[:, t], y, reduction="none")
        divisor = m.sum() if denominators is None else m.new_tensor(float(denominators[t]))
        total = total + task.weight * (m * c * bce).sum() / divisor.clamp_min(1e-12)
    return total


def served_probabilities(p: np.ndarray, tasks: Sequence[TaskSpec]) -> np.ndarray:
    """Each task's served probability [n, T] from the towers' [n, T]: a dependent task's is the
    product along its chain of conditions, P(b) = P(a) · P(b | a)."""
    names = [task.name for task in tasks]
    served = np.array(p, dtype=np.float64, copy=True)
    for t, task in enumerate(tasks):  # `given` names an earlier task: its column is final already
        if task.given is not None:
            served[:, t] *= served[:, names.index(task.given)]
    return served


def towers_of(tasks: Sequence[TaskSpec] | None) -> tuple[Tower, ...]:
    """The plan's towers for the tasks (none for a one-task model)."""
    return tuple(Tower(task.name, task.tower, task.gradient_scale) for task in tasks or ())
