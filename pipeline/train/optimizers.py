"""The optimizers: row-wise updates for the per-id tables (only the rows a batch touched), torch's
update for the dense rest, the same mathematics as torch.optim's SparseAdam, Adam(W) and Adagrad
(tests hold them equal) in fewer passes.

Regularization (train.table_l2, train.weight_decay):

    table rows:  the step's loss gains (λ/2)·Σ_{r touched} ‖θ_r‖², so g_r ← g_r + λ·θ_r for the
                 rows the batch touched and no others (lazy, like the row-wise updates themselves);
    dense:       decoupled weight decay θ ← θ·(1 − lr·wd) before the optimizer's step, for the
                 dense weight matrices only (biases, norm scales and PReLU slopes are not decayed:
                 a decayed logit bias could not reach a low base rate). With adam this is torch's
                 AdamW on those parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..model.network import Network
from .spec import TrainSpec


class RowOptimizer:
    """Updates rows `unique` of full tables from the gradients of their gathered copies."""

    state_names: tuple[str, ...] = ()  # the per-row state: lists of tensors shaped like the tables

    def __init__(self, tables: list[torch.Tensor], lr: float, l2: float = 0.0):
        self.tables, self.lr, self.l2, self.steps = tables, lr, l2, 0
        self.table_steps = [0] * len(tables)  # the steps that updated each table (SparseAdam's per-parameter t)

    def state_dict(self) -> dict:
        return {
            "steps": self.steps,
            "table_steps": list(self.table_steps),
            **{name: getattr(self, name) for name in self.state_names},
        }

    def load_state_dict(self, state: dict) -> None:
        self.steps = int(state["steps"])
        self.table_steps = [int(t) for t in state["table_steps"]]
        for name in self.state_names:
            for mine, saved in zip(getattr(self, name), state[name], strict=True):
                mine.copy_(saved)

    def step(self, table_rows: list[torch.Tensor], gathered: list[torch.Tensor]) -> None:
        """Update each table's rows `table_rows[k]` from the gradients of their copies `gathered[k]`."""
        self.apply(table_rows, [rows.grad for rows in gathered], [rows.detach() for rows in gathered])

    def apply(
        self,
        table_rows: list[torch.Tensor],
        grads: list[torch.Tensor | None],
        copies: list[torch.Tensor] | None = None,
    ) -> None:
        """Update each table's rows `table_rows[k]` [U] with the gradient `grads[k]` [U, D] (None: the
        step left the table alone); `copies[k]` holds the rows' values (scratch), read from the table
        when not given (the rows every rank touched: distributed.exchange_rows)."""
        self.steps += 1
        with torch.no_grad():
            for index, (table, unique, grad) in enumerate(zip(self.tables, table_rows, grads)):
                if grad is None:
                    continue
                self.table_steps[index] += 1
                rows = copies[index] if copies is not None else table.index_select(0, unique)
                grad = grad if self.l2 == 0 else grad.add(rows, alpha=self.l2)
                table.index_copy_(0, unique, self.update(index, unique, rows, grad))

    def update(self, index: int, unique: torch.Tensor, rows: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """Table `index`'s rows `unique` [U] (gathered copies [U, D], scratch that may be overwritten)
        and their gradient [U, D] -> the updated rows [U, D]."""
        raise NotImplementedError


class RowAdam(RowOptimizer):
    """Lazy Adam, the update of torch.optim.SparseAdam (t counts the steps that updated the table, as
    SparseAdam counts a parameter's steps with a gradient):

    m_r ← β1·m_r + (1−β1)·g_r ;  v_r ← β2·v_r + (1−β2)·g_r² ;
    θ_r ← θ_r − lr·√(1−β2^t)/(1−β1^t) · m_r / (√v_r + ε)   for touched rows r only.

    The touched rows' moments are gathered ([U, D] each) and updated with the parameters in one
    pass of torch's fused Adam kernel, instead of six elementwise passes. That kernel divides by
    √v/√(1−β2^t) + ε'; with ε' = ε/√(1−β2^t) its step is exactly the one above.
    """

    state_names = ("first", "second")

    def __init__(self, tables, lr: float, l2: float = 0.0, betas=(0.9, 0.999), eps: float = 1e-8):
        super().__init__(tables, lr, l2)
        self.betas, self.eps = betas, eps
        self.first = [torch.zeros_like(t) for t in tables]
        self.second = [torch.zeros_like(t) for t in tables]
        self.step_count = [torch.zeros((), device=t.device) for t in tables]  # t, on the device (no host copy)

    def update(self, index, unique, rows, grad):
        t = self.table_steps[index]
        b2, step = self.betas[1], self.step_count[index].fill_(float(t))
        m, v = self.first[index].index_select(0, unique), self.second[index].index_select(0, unique)
        fused_adam([rows], [grad.contiguous()], [m], [v], [step], self.lr, self.betas, self.eps / (1 - b2**t) ** 0.5)
        self.first[index].index_copy_(0, unique, m)
        self.second[index].index_copy_(0, unique, v)
        return rows


def fused_adam(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avg: list[torch.Tensor],
    exp_avg_sq: list[torch.Tensor],
    steps: list[torch.Tensor],
    lr: float,
    betas: tuple[float, float],
    eps: float,
) -> None:
    """One Adam step (no weight decay, no amsgrad) over lists of tensors, in place, in one call of
    torch's fused kernel (the one place snn calls that private API): steps are each tensor's step
    count t, already advanced, as a scalar on its device; the divisor is √v/√(1−β2^t) + eps."""
    torch._fused_adam_(
        params,
        grads,
        exp_avg,
        exp_avg_sq,
        [],
        steps,
        lr=lr,
        beta1=betas[0],
        beta2=betas[1],
        weight_decay=0.0,
        eps=eps,
        amsgrad=False,
        maximize=False,
    )


class RowAdagrad(RowOptimizer):
    """Adagrad on touched rows, the update of torch.optim.Adagrad on a sparse gradient:

    s_r ← s_r + g_r² ;  θ_r ← θ_r − lr · g_r / (√s_r + ε)
    """

    state_names = ("sums",)

    def __init__(self, tables, lr: float, l2: float = 0.0, eps: float = 1e-10):
        super().__init__(tables, lr, l2)
        self.eps = eps
        self.sums = [torch.zeros_like(t) for t in tables]

    def update(self, index, unique, rows, grad):
        s = self.sums[index].index_select(0, unique).addcmul_(grad, grad)
        self.sums[index].index_copy_(0, unique, s)
        return rows.addcdiv(grad, s.sqrt().add_(self.eps), value=-self.lr)


class FusedAdam:
    """torch.optim.Adam (no weight decay, no amsgrad) for the dense parameters: the same update in
    one call of torch's fused kernel per step, without torch.optim's per-step Python bookkeeping
    (which short steps, such as logistic regression's, feel). State per
    parameter p: exp_avg and exp_avg_sq [like p], and the step count t (a scalar on p's device)."""

    def __init__(self, params: Sequence[torch.Tensor], lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.params, self.lr, self.betas, self.eps = list(params), lr, betas, eps
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        self.step_count = [torch.zeros((), device=p.device) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def state_dict(self) -> dict:
        return {"exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq, "step_count": self.step_count}

    def load_state_dict(self, state: dict) -> None:
        for name in ("exp_avg", "exp_avg_sq", "step_count"):
            for mine, saved in zip(getattr(self, name), state[name], strict=True):
                mine.copy_(saved)

    @torch.no_grad()
    def step(self) -> None:
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not live:
            return
        steps = [self.step_count[i] for i in live]
        torch._foreach_add_(steps, 1.0)
        fused_adam(
            [self.params[i] for i in live],
            [self.params[i].grad for i in live],  # type: ignore[misc]  # live: those with a gradient
            [self.exp_avg[i] for i in live],
            [self.exp_avg_sq[i] for i in live],
            steps,
            self.lr,
            self.betas,
            self.eps,
        )


@dataclass
class Optimizers:
    """Row-wise updates for the per-id tables (rows.py), a torch optimizer for the dense rest.

    adam: lazy Adam on touched rows (SparseAdam's update) + Adam (`FusedAdam`); adagrad: Adagrad
    for both (torch's, fused on CPU); table_l2 and weight_decay as in the module docstring. Short
    steps (logistic regression) pay for every bit of per-step Python, hence the fused dense updates
    (the bench's B5 measures them).
    """

    rows: RowOptimizer
    dense: FusedAdam | torch.optim.Optimizer
    decayed: Sequence[torch.Tensor] = ()  # the dense matrices weight decay shrinks
    weight_decay: float = 0.0
    lr: float = 0.0  # the current learning rate (the decay's factor is 1 − lr·weight_decay)

    @classmethod
    def for_model(cls, model: Network, spec: TrainSpec) -> Optimizers:
        tables = model.row_tables()
        dense = [p for p in model.parameters() if all(p is not t for t in tables)]
        matrices = [p for p in dense if p.ndim >= 2]
        if spec.optimizer == "adagrad":
            on_cpu = all(p.device.type == "cpu" for p in dense)
            rows: RowOptimizer = RowAdagrad(tables, spec.lr, spec.table_l2)
            optimizer: FusedAdam | torch.optim.Optimizer = torch.optim.Adagrad(dense, lr=spec.lr, fused=on_cpu or None)
        else:
            rows, optimizer = RowAdam(tables, spec.lr, spec.table_l2), FusedAdam(dense, spec.lr)
        return cls(rows, optimizer, matrices, spec.weight_decay, spec.lr)

    @torch.no_grad()
    def step_dense(self) -> None:
        """Decay the dense matrices that have a gradient (θ ← θ·(1 − lr·wd)), then the dense step."""
        if self.weight_decay:
            live = [p for p in self.decayed if p.grad is not None]
            if live:
                torch._foreach_mul_(live, 1.0 - self.lr * self.weight_decay)
        self.dense.step()

    @property
    def dense_params(self) -> list[torch.Tensor]:
        """The parameters the dense optimizer steps (those that are not per-id tables)."""
        if isinstance(self.dense, FusedAdam):
            return self.dense.params
        return [p for group in self.dense.param_groups for p in group["params"]]

    def set_lr(self, lr: float) -> None:
        """The learning rate of every update from the next step on (a schedule's value)."""
        self.lr = self.rows.lr = lr
        if isinstance(self.dense, FusedAdam):
            self.dense.lr = lr
        else:
            for group in self.dense.param_groups:
                group["lr"] = lr

    def state_dict(self) -> dict:
        return {"rows": self.rows.state_dict(), "dense": self.dense.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.rows.load_state_dict(state["rows"])
        self.dense.load_state_dict(state["dense"])
