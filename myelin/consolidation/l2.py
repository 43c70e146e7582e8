"""Uniform quadratic pull to the last anchor (the EWC paper's L2 baseline): EWC with Ω = 1."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
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
        state_dtype: Store θ* in this floating dtype (None: each parameter's dtype).
    """

    name = "l2"
    needs_importance = False
    _uniform = True
    _loaded_settings_note = "assign l2.lam afterwards to use another"

    def __init__(self, model_or_params: nn.Module | Iterable[Any], lam: float, *,
                 state_dtype: torch.dtype | None = None):
        super().__init__(model_or_params, lam, state_dtype=state_dtype)

    @torch.no_grad()
    def consolidate(self, importance: Importance | None = None) -> None:
        """Move the anchor to the current weights (any importance is ignored).

        Warns (`RuntimeWarning`) if the wrapped SGD's lr·λ exceeds its stability limit.
        """
        self.params.check_unchanged()
        self._move_anchor()
        self.n_tasks += 1
        self._check_stability()

    def _config(self) -> dict[str, Any]:
        return {"lam": self.lam, "n_tasks": self.n_tasks}

    def _full_config(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """A saved L2 configuration with EWC's fixed settings added."""
        return {"mode": self.mode, "gamma": 1.0, "stabilized": False, "lr": None, **config}

    def _check_state(self, tensors: Mapping[str, Tensor], config: Mapping[str, Any],
                     source: str) -> None:
        super()._check_state(tensors, self._full_config(config), source)

    def _restore(self, tensors: dict[str, Tensor], config: dict[str, Any]) -> None:
        super()._restore(tensors, self._full_config(config))

    def __repr__(self) -> str:
        return f"L2(lam={self.lam}, tasks={self.n_tasks})"
