"""Uniform quadratic pull to the last anchor (the EWC paper's L2 baseline)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..importance.base import Importance
from .base import Consolidator, ParameterSet, check_lam
from .penalized import PenalizedOptimizer

__all__ = ["L2"]


class L2(Consolidator):
    """Penalty (λ/2) Σ_i (θ_i − θ*_i)² with θ* the weights after the latest task.

    Every parameter counts the same: the baseline that shows what importances buy.
    One extra tensor per parameter (θ*). `consolidate` ignores any importance it is given.

    Args:
        model: The network to protect.
        lam: λ ≥ 0.
    """

    name = "l2"
    needs_importance = False

    def __init__(self, model: nn.Module, lam: float):
        self.params = ParameterSet(model, "L2")
        self.lam = check_lam(lam, "L2")
        self.anchor: dict[str, Tensor] = {}
        self.n_tasks = 0

    @torch.no_grad()
    def consolidate(self, importance: Importance | None = None) -> None:
        """Move the anchor to the current weights."""
        self.params.check_unchanged()
        self.anchor = {n: p.detach().clone() for n, p in self.params.params.items()}
        self.n_tasks += 1

    def penalty(self) -> Tensor:
        """The scalar (λ/2) Σ (θ − θ*)²."""
        self.params.check_unchanged(throttle=True)
        total = super().penalty()
        for n, p in self.params.params.items():
            if n in self.anchor:
                total = total + (p - self.anchor[n]).square().sum() * (0.5 * self.lam)
        return total

    @torch.no_grad()
    def apply_to_grad(self) -> None:
        """Add the penalty's gradient λ(θ − θ*) to each ``.grad``."""
        self.params.check_unchanged(throttle=True)
        for n, p in self.params.params.items():
            if n in self.anchor:
                g = (p - self.anchor[n]).mul_(self.lam)
                p.grad = g if p.grad is None else p.grad.add_(g)

    def penalty_terms(self) -> tuple[list[Tensor], list[None], list[Tensor], float]:
        """(params, coefs, anchors, f) with the penalty f · Σ (θ − θ*)² (coef None: uniform)."""
        self.params.check_unchanged(throttle=True)
        if self.lam == 0:
            return [], [], [], 0.0
        held = [(p, self.anchor[n]) for n, p in self.params.params.items() if n in self.anchor]
        return [p for p, _ in held], [None] * len(held), [a for _, a in held], 0.5 * self.lam

    def wrap(self, optimizer: torch.optim.Optimizer) -> PenalizedOptimizer:
        """An optimizer whose ``step()`` adds this penalty's gradient (fused for plain SGD)."""
        return PenalizedOptimizer(optimizer, self)

    def _tensors(self) -> dict[str, Tensor]:
        return {f"anchor/{n}": v for n, v in self.anchor.items()}

    def _config(self) -> dict[str, Any]:
        return {"lam": self.lam, "n_tasks": self.n_tasks}

    def _restore(self, tensors: dict[str, Tensor], config: dict[str, Any]) -> None:
        current = self.params.params
        self.anchor = {n: tensors[f"anchor/{n}"].to(p) for n, p in current.items()
                       if f"anchor/{n}" in tensors}
        self.lam = float(config["lam"])
        self.n_tasks = int(config["n_tasks"])

    def __repr__(self) -> str:
        return f"L2(lam={self.lam}, tasks={self.n_tasks})"
