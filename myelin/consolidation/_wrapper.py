"""What the optimizer wrappers (WVA, PenalizedOptimizer) share: the base optimizer's groups."""

from __future__ import annotations

from typing import Any

import torch
from torch.optim import optimizer as _optimizer

from .base import ParameterSet

__all__ = ["WrappedOptimizer", "global_step_hooks"]


def global_step_hooks() -> bool:
    """True if step hooks are registered for every optimizer (torch.optim's global hooks)."""
    return bool(getattr(_optimizer, "_global_optimizer_pre_hooks", None)
                or getattr(_optimizer, "_global_optimizer_post_hooks", None))


class WrappedOptimizer(torch.optim.Optimizer):
    """A torch optimizer that shares a base optimizer's ``param_groups`` and delegates to it.

    The groups are the same dict objects, so LR schedulers and ``add_param_group`` reach the
    base optimizer through the wrapper; ``zero_grad`` is the base optimizer's.
    """

    def _wrap(self, base_optimizer: torch.optim.Optimizer, params: ParameterSet,
              who: str, hint: str) -> None:
        """Check that `base_optimizer` optimizes every parameter in `params`; share its groups.

        `who` names the caller in error messages, `hint` says what to pass instead.
        """
        if not isinstance(base_optimizer, torch.optim.Optimizer):
            raise TypeError(f"{who} needs a torch.optim.Optimizer; got "
                            f"{type(base_optimizer).__name__}.")
        optimized = {id(p) for g in base_optimizer.param_groups for p in g["params"]}
        strangers = [n for n, p in params.params.items() if id(p) not in optimized]
        if strangers:
            raise ValueError(f"{who}: parameters {strangers} are not optimized by the base "
                             f"optimizer; {hint}.")
        self.base_optimizer = base_optimizer
        self._initialized = False
        super().__init__(base_optimizer.param_groups, {})
        self.param_groups = base_optimizer.param_groups
        self._initialized = True

    def _step_hooked(self, own: bool = True) -> bool:
        """True if a step hook may see what a fused step skips.

        Hooks on the base optimizer, on all optimizers, and (if `own`) on this wrapper.
        """
        base = self.base_optimizer
        mine = own and bool(self._optimizer_step_pre_hooks or self._optimizer_step_post_hooks)
        return bool(base._optimizer_step_pre_hooks or base._optimizer_step_post_hooks
                    or global_step_hooks() or mine)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients, as the base optimizer does."""
        self.base_optimizer.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group to the base optimizer (the wrapper does not act on its parameters)."""
        if not self._initialized:       # Optimizer.__init__ re-adding the shared groups
            return
        self.base_optimizer.add_param_group(param_group)
