"""Uniform quadratic pull to the last anchor (the EWC paper's L2 baseline): EWC with Ω = 1."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from ..importance.base import Importance
from .ewc import EWC

__all__ = ["L2"]


class L2(EWC):
    """Penalty (λ/2) Σ_i (θ_i − θ*_i)² with θ* the weights after the latest task.

    EWC with a uniform importance: every parameter counts the same, the baseline that shows
    what importances buy. One extra tensor per parameter (θ*; no Ω is kept). `consolidate`
    ignores any importance it is given. Everything else is EWC's: `penalty()`,
    `apply_to_grad()`, ``wrap(optimizer)`` (fused with a plain SGD step), save and load.

    Args:
        model_or_params: The network to protect, or its parameters.
        lam: λ ≥ 0.
    """

    name = "l2"
    needs_importance = False
    _uniform = True

    def __init__(self, model_or_params: nn.Module | Iterable[Any], lam: float):
        super().__init__(model_or_params, lam)

    @torch.no_grad()
    def consolidate(self, importance: Importance | None = None) -> None:
        """Move the anchor to the current weights (any importance is ignored)."""
        self.params.check_unchanged()
        self._move_anchor()
        self.n_tasks += 1

    def _config(self) -> dict[str, Any]:
        return {"lam": self.lam, "n_tasks": self.n_tasks}

    def _restore(self, tensors: dict[str, Tensor], config: dict[str, Any]) -> None:
        super()._restore(tensors, {"mode": self.mode, "gamma": 1.0, "stabilized": False,
                                   "lr": None, **config})

    def __repr__(self) -> str:
        return f"L2(lam={self.lam}, tasks={self.n_tasks})"
