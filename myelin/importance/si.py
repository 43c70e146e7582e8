"""Synaptic Intelligence (Zenke, Poole & Ganguli 2017): importance from the training path."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ..distributed import unwrap
from .base import Importance, accumulation_dtype, all_finite, trainable_parameters

__all__ = ["NonFiniteGradientError", "SynapticIntelligence"]


class NonFiniteGradientError(FloatingPointError, ValueError):
    """A gradient holds NaN or inf (training diverged): a FloatingPointError and a ValueError."""

class SynapticIntelligence:
    """Online path-integral importance, ω / ((θ − θ_start)² + ξ) at the end of a task.

    After every optimizer step, `update` adds −g ⊙ Δθ to the running ω, where g is the gradient
    the optimizer just used (the total loss's, penalties included, as in the seeds' code) and Δθ
    the step it took. Call `update` yourself after ``optimizer.step()``, or `attach` it to the
    optimizer once. At the end of a task, `importance` returns ω / ((θ − θ_start)² + ξ) and
    `reset` starts the next task's window. ω is summed, and the importance returned, in float32
    for a half-precision model (float64 for a float64 one).

    Under torch.distributed DDP no communication is needed: the gradients are averaged over
    the ranks by the time the optimizer steps and the parameters are the same on every rank, so
    every rank accumulates the same ω, the path integral of the global loss (see
    `myelin.distributed`). A DDP-wrapped model is accepted (its inner module's parameter names).
    Call `update` after the synchronised step, not inside ``no_sync()`` (rank-local gradients).

    Args:
        model: The network being trained; its trainable parameters are tracked.
        damping: ξ > 0 in the denominator (0.1 in Zenke et al. and the seeds' code).

    Example:
        >>> si = SynapticIntelligence(model)
        >>> si.attach(optimizer)            # or call si.update() after each optimizer.step()
        >>> ...train task...
        >>> omega = omega + si.importance(); si.reset()

    """

    def __init__(self, model: nn.Module, damping: float = 0.1):
        if isinstance(damping, bool) or not isinstance(damping, (int, float)) \
                or not math.isfinite(damping) or damping <= 0:
            raise ValueError(f"The 'damping' parameter of SynapticIntelligence must be a finite "
                             f"float > 0. Got {damping!r} instead.")
        self.model = unwrap(model)
        self.damping = float(damping)
        self._params = trainable_parameters(model)
        if not self._params:
            raise ValueError("model has no trainable parameters (all have requires_grad=False).")
        self.reset()

    @torch.no_grad()
    def reset(self) -> None:
        """Start a new task: ω ← 0, θ_start ← θ."""
        # ω sums thousands of tiny terms: float32 (or wider) whatever the parameters' dtype
        self.omega_path_ = {n: torch.zeros_like(p, dtype=accumulation_dtype(p.dtype))
                            for n, p in self._params.items()}
        self._start = {n: p.detach().clone() for n, p in self._params.items()}
        self._prev = {n: p.detach().clone() for n, p in self._params.items()}
        self.steps_ = 0

    @torch.no_grad()
    def update(self) -> None:
        """Account for the optimizer step just taken: ω −= g ⊙ (θ − θ_prev)."""
        for n, p in self._params.items():
            if p.grad is not None:
                if not all_finite(p.grad):
                    raise NonFiniteGradientError(
                        f"Gradient of parameter {n!r} is NaN or inf: training diverged.")
                omega = self.omega_path_[n]
                step = p.detach().to(omega.dtype) - self._prev[n].to(omega.dtype)
                omega.sub_(p.grad.to(omega.dtype) * step)
            self._prev[n].copy_(p.detach())
        self.steps_ += 1

    def attach(self, optimizer: torch.optim.Optimizer) -> Any:
        """Call `update` after every ``optimizer.step()``; returns a handle with ``remove()``."""
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError("attach needs a torch.optim.Optimizer. "
                            f"Got {type(optimizer).__name__}.")
        return optimizer.register_step_post_hook(lambda *_: self.update())

    @torch.no_grad()
    def importance(self) -> Importance:
        """ω / ((θ − θ_start)² + ξ) for the current task, one tensor per parameter."""
        values: dict[str, Tensor] = {}
        for n, p in self._params.items():
            omega = self.omega_path_[n]
            moved = p.detach().to(omega.dtype) - self._start[n].to(omega.dtype)
            values[n] = omega / (moved ** 2 + self.damping)
        return Importance(values, {"estimator": "si", "damping": self.damping,
                                   "steps": self.steps_})
