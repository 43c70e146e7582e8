"""GEM and A-GEM: project the gradient so the loss on past tasks' memories does not rise.

* GEM (Lopez-Paz & Ranzato 2017): one gradient g_k per past task (on its whole memory); when
  some ⟨g, g_k⟩ < 0 the gradient becomes g̃ = Mᵀv + g, with v the solution of the original's
  dual QP  min ½ vᵀ(MMᵀ + εI)v + (Mg)ᵀv  s.t.  v ≥ margin  (M: the g_k as rows; ε = 1e-3,
  margin = the original's `memory_strength`, 0.5 — a bound on the dual variable).
* A-GEM (Chaudhry et al. 2019): one reference gradient g_ref on up to 256 samples of the
  past tasks' memory, recomputed every step; when ⟨g, g_ref⟩ < 0,
  g̃ = g − (gᵀg_ref / g_refᵀg_ref)·g_ref.

Both keep a ring buffer per task (the last samples of the stream of each task). The dual QP
is solved exactly: with w = v − margin it is a non-negative QP, which a Cholesky factor turns
into a non-negative least-squares problem solved by Lawson–Hanson (`scipy.optimize.nnls`,
finite termination).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from scipy.linalg import cho_factor, solve_triangular
from scipy.optimize import nnls
from torch import Tensor

from ..methods import METHODS, Context, Method
from .base import Replay, _positive_or_none, replay_loss

__all__ = ["AGEM", "GEM", "agem", "gem", "gem_dual", "gem_project"]


def _params(ctx: Context) -> list[Tensor]:
    return [p for p in ctx.model.parameters() if p.requires_grad]


def _flat_grad(params: list[Tensor]) -> Tensor:
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                      for p in params])


def _set_grad(params: list[Tensor], flat: Tensor) -> None:
    i = 0
    for p in params:
        n = p.numel()
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        p.grad.copy_(flat[i:i + n].view_as(p))
        i += n


def _memory_grad(ctx: Context, params: list[Tensor], batch: Any, tasks: Tensor) -> Tensor:
    """The gradient of the mean loss of stored samples (each under its task's loss)."""
    for p in params:
        p.grad = None
    replay_loss(ctx, batch, tasks).backward()
    return _flat_grad(params)


def gem_dual(P: np.ndarray, q: np.ndarray, margin: float) -> np.ndarray:
    """Solve GEM's dual QP  min ½ vᵀPv + qᵀv  s.t.  v ≥ margin  (P symmetric positive definite).

    Args:
        P: (t, t) matrix (GEM: MMᵀ symmetrised + 1e-3·I).
        q: (t,) vector (GEM: Mg).
        margin: Lower bound on every dual variable.

    Returns:
        (t,) the minimiser v (exact up to rounding).
    """
    P = np.asarray(P, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if P.ndim != 2 or P.shape[0] != P.shape[1] or q.shape != (P.shape[0],):
        raise ValueError(f"gem_dual needs P (t, t) and q (t,); got {P.shape} and {q.shape}.")
    c = P @ np.full(len(q), margin) + q                 # w = v − margin ≥ 0: ½wᵀPw + cᵀw
    L, _ = cho_factor(P, lower=True)
    L = np.tril(L)
    d = solve_triangular(L, -c, lower=True)             # ½‖Lᵀw − d‖² = ½wᵀPw + cᵀw + const
    w, _ = nnls(L.T, d)
    return w + margin


def gem_project(g: Tensor, M: Tensor, margin: float = 0.5, eps: float = 1e-3) -> Tensor:
    """GEM's projected gradient g̃ = Mᵀv + g.

    The products with M run in the gradients' dtype on their device (one pass each; in float32
    the projection agrees with an all-float64 one to ~1e-7 relative); the t×t dual QP is solved
    in float64, like the original's quadprog call.

    Args:
        g: (P,) the incoming gradient.
        M: (t, P) one past task's gradient per row.
        margin: The dual variables' lower bound (GEM's memory_strength).
        eps: Ridge added to MMᵀ.
    """
    P = (M @ M.T).double().cpu().numpy()
    P = 0.5 * (P + P.T) + eps * np.eye(len(P))
    v = gem_dual(P, (M @ g).double().cpu().numpy(), margin)
    return torch.from_numpy(v).to(M) @ M + g


class GEM(Replay):
    """Gradient Episodic Memory: no past task's memory loss may increase (to first order).

    Every step: one backward per past task over that task's whole memory, then the dual QP
    (see the module docstring) when the incoming gradient conflicts with any of them. The
    memory is a ring buffer per task. With one task GEM is plain training.

    Args:
        memory_per_task: Samples stored per task (or give the total as `memory`).
        memory: Total samples stored, split evenly between the tasks.
        margin: The dual variables' lower bound (the original's memory_strength).
        eps: Ridge added to the Gram matrix of the past gradients.
    """

    name = "gem"

    def __init__(self, memory_per_task: int | None = None, memory: int | None = None,
                 margin: float = 0.5, eps: float = 1e-3):
        super().__init__(memory, memory_per_task, "ring")
        if not np.isfinite(margin) or margin < 0:
            raise ValueError(f"gem: margin must be ≥ 0. Got {margin!r}.")
        if not np.isfinite(eps) or eps <= 0:
            raise ValueError(f"gem: eps must be > 0 (it keeps the QP strictly convex). "
                             f"Got {eps!r}.")
        self.margin, self.eps = float(margin), float(eps)
        self.config.update(margin=self.margin, eps=self.eps)
        self.projections = 0

    def setup(self, ctx: Context) -> None:
        """Allocate the ring memory; warn that one task leaves nothing to protect."""
        super().setup(ctx)
        if len(ctx.scenario.tasks) == 1:
            warnings.warn("gem on a single task: there is no past task to protect, so it "
                          "trains plainly.", UserWarning, stacklevel=2)

    def prepare_batch(self, ctx: Context, batch: Any) -> Any:
        """Store the incoming batch in the current task's ring (as the original, first)."""
        self.store(ctx, batch if ctx.incoming is None else None)
        return batch

    def after_backward(self, ctx: Context, batch: Any) -> None:
        """Project the gradient onto the cone the past tasks' gradients allow."""
        if ctx.task_index == 0:
            return
        params = _params(ctx)
        g = _flat_grad(params)
        rows = []
        for t in range(ctx.task_index):
            slots = self.memory.task_slots(t)
            if len(slots):
                rows.append(_memory_grad(ctx, params, self.memory.get(slots),
                                         self.memory.task[slots]))
        if rows:
            M = torch.stack(rows)
            if bool((M @ g < 0).any()):
                g = gem_project(g, M, self.margin, self.eps)
                self.projections += 1
        _set_grad(params, g)

    def state_dict(self) -> dict[str, Any]:
        """The memory and the count of projected steps."""
        return {**super().state_dict(), "projections": self.projections}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore `state_dict` after `setup`."""
        super().load_state_dict(state)
        self.projections = int(state["projections"])


class AGEM(Replay):
    """Averaged GEM: one reference gradient on past tasks' memory, projected when it conflicts.

    The reference batch (up to `reference_batch` samples, without replacement) is drawn every
    step from the memory of tasks before the current one; before any task ended A-GEM trains
    plainly. The memory is a ring buffer per task (the original keeps one per class of each
    task; the unit here is samples per task).

    Args:
        memory_per_task: Samples stored per task (or give the total as `memory`).
        memory: Total samples stored, split evenly between the tasks.
        reference_batch: Samples the reference gradient is computed on.
    """

    name = "agem"

    def __init__(self, memory_per_task: int | None = None, memory: int | None = None,
                 reference_batch: int = 256):
        super().__init__(memory, memory_per_task, "ring")
        self.reference_batch = _positive_or_none("reference_batch", reference_batch)
        if self.reference_batch is None:
            raise ValueError("agem: reference_batch must be a positive integer.")
        self.config["reference_batch"] = self.reference_batch
        self.projections = 0

    def after_backward(self, ctx: Context, batch: Any) -> None:
        """Project g when ⟨g, g_ref⟩ < 0."""
        if ctx.task_index == 0:
            return
        drawn = self.memory.sample(self.reference_batch, tasks=range(ctx.task_index))
        if drawn is None:
            return
        params = _params(ctx)
        g = _flat_grad(params)
        g_ref = _memory_grad(ctx, params, *drawn)
        dot = torch.dot(g, g_ref)
        if dot < 0:
            g = g - (dot / torch.dot(g_ref, g_ref)) * g_ref
            self.projections += 1
        _set_grad(params, g)

    def after_step(self, ctx: Context, batch: Any) -> None:
        """Store the incoming batch in the current task's ring."""
        self.store(ctx, batch if ctx.incoming is None else None)

    def state_dict(self) -> dict[str, Any]:
        """The memory and the count of projected steps."""
        return {**super().state_dict(), "projections": self.projections}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore `state_dict` after `setup`."""
        super().load_state_dict(state)
        self.projections = int(state["projections"])


@METHODS.register("gem", "GEM: gradient projected so no past task's memory loss rises (dual QP)")
def gem(memory_per_task: int | None = None, memory: int | None = None, margin: float = 0.5,
        eps: float = 1e-3) -> Method:
    """Gradient Episodic Memory (Lopez-Paz & Ranzato 2017).

    Args:
        memory_per_task: Samples stored per task (default 256 when memory is not given).
        memory: Total samples stored (split evenly between tasks).
        margin: Lower bound of the dual variables (the original's memory_strength).
        eps: Ridge added to the Gram matrix of past-task gradients.
    """
    if memory is None and memory_per_task is None:
        memory_per_task = 256
    return GEM(memory_per_task, memory, margin, eps)


@METHODS.register("agem", "A-GEM: gradient projected against one reference gradient of memory")
def agem(memory_per_task: int | None = None, memory: int | None = None,
         reference_batch: int = 256) -> Method:
    """Averaged GEM (Chaudhry et al. 2019).

    Args:
        memory_per_task: Samples stored per task (default 250 when memory is not given).
        memory: Total samples stored (split evenly between tasks).
        reference_batch: Memory samples the reference gradient is computed on, every step.
    """
    if memory is None and memory_per_task is None:
        memory_per_task = 250
    return AGEM(memory_per_task, memory, reference_batch)
