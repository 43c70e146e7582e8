"""What the optimizer wrappers (WVA, PenalizedOptimizer) share.

The base optimizer's groups, the plain-SGD test of their fused steps, and the step that
transforms the gradients first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

import torch
from torch import Tensor
from torch.optim import optimizer as _optimizer

from .base import ParameterSet

__all__ = ["SGDGroups", "WrappedOptimizer", "global_step_hooks"]

SGDGroups = list[tuple[float, list[Tensor]]]
"""(signed lr, parameters) per group: a plain SGD step is θ ← θ + signed_lr · g."""


def global_step_hooks() -> bool:
    """True if step hooks are registered for every optimizer (torch.optim's global hooks)."""
    return bool(getattr(_optimizer, "_global_optimizer_pre_hooks", None)
                or getattr(_optimizer, "_global_optimizer_post_hooks", None))


class WrappedOptimizer(torch.optim.Optimizer):
    """A torch optimizer that shares a base optimizer's ``param_groups`` and delegates to it.

    The groups are the same dict objects, so LR schedulers and ``add_param_group`` reach the
    base optimizer through the wrapper; ``zero_grad`` is the base optimizer's. A subclass calls
    `_start` (an optimizer without groups of its own), then `_bind` once it has the base
    optimizer; until then ``base_optimizer`` is None and stepping raises.
    """

    base_optimizer: torch.optim.Optimizer | None

    def _start(self) -> None:
        """Initialise as a torch optimizer (hooks, step profiling) not yet bound to a base one."""
        self.base_optimizer = None
        self._initialized = False        # add_param_group ignores Optimizer.__init__'s groups
        super().__init__([{"params": []}], {})
        self.param_groups = []
        self._initialized = True

    def _bind(self, base_optimizer: torch.optim.Optimizer, params: ParameterSet,
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
        self.param_groups = base_optimizer.param_groups

    def _unbound(self) -> NoReturn:
        """Raise the error of a wrapper used as an optimizer before it has a base optimizer."""
        name = type(self).__name__
        raise RuntimeError(f"This {name} wraps no optimizer yet: call {name.lower()}.wrap("
                           f"optimizer) first (or pass optimizer= when creating it).")

    def _base(self) -> torch.optim.Optimizer:
        """The base optimizer; raises if there is none yet."""
        if self.base_optimizer is None:
            self._unbound()
        return self.base_optimizer

    def _load_base_state(self, state_dict: dict[str, Any]) -> None:
        """Load the base optimizer's state and share its groups again.

        torch's ``load_state_dict`` replaces the group list (accelerate calls it on every
        Trainer run); without re-sharing, LR schedulers on the wrapper would move stale groups.
        """
        base = self._base()
        base.load_state_dict(state_dict)
        self.param_groups = base.param_groups

    def _stepped_in_place_of_base(self) -> None:
        """Record on the base optimizer that its step was taken (by a fused step replacing it).

        An LR scheduler built on the base optimizer checks this flag of torch's and otherwise
        warns that ``lr_scheduler.step()`` came before ``optimizer.step()``.
        """
        self.base_optimizer._opt_called = True       # type: ignore[union-attr]

    def _step_hooked(self, own: bool = True) -> bool:
        """True if a step hook may see what a fused step skips.

        Hooks on the base optimizer, on all optimizers, and (if `own`) on this wrapper. Called
        by a bound wrapper's step.
        """
        base: Any = self.base_optimizer
        mine = own and bool(self._optimizer_step_pre_hooks or self._optimizer_step_post_hooks)
        return bool(base._optimizer_step_pre_hooks or base._optimizer_step_post_hooks
                    or global_step_hooks() or mine)

    def _plain_sgd(self) -> bool:
        """True when the base optimizer's step is −lr·g (SGD, no momentum or weight decay)."""
        return type(self.base_optimizer) is torch.optim.SGD and all(
            g.get("momentum", 0) == 0 and g.get("weight_decay", 0) == 0
            for g in self.param_groups)

    def _sgd_groups(self, own_hooks: bool = True) -> SGDGroups | None:
        """The base step as (signed lr, parameters) per group, if a fused step may replace it.

        It may when the base optimizer is exactly ``torch.optim.SGD`` with no momentum, no weight
        decay, float learning rates, not differentiable, no sparse gradient, and no step hook
        that could see what the replacement skips (see `_step_hooked`; `own_hooks` includes the
        wrapper's own). The signed lr is −lr, or lr when maximizing. None if it may not; the
        parameter lists are the groups' own (do not modify them).
        """
        if type(self.base_optimizer) is not torch.optim.SGD or self._step_hooked(own_hooks):
            return None
        plan = []
        for group in self.param_groups:
            lr = group["lr"]
            if isinstance(lr, Tensor) or group.get("momentum", 0) != 0 or \
                    group.get("weight_decay", 0) != 0 or group.get("differentiable", False):
                return None
            params = group["params"]
            for p in params:
                grad = p.grad
                if grad is not None and grad.is_sparse:
                    return None
            plan.append((lr if group.get("maximize", False) else -lr, params))
        return plan

    def _step_with(self, closure: Callable[[], Any] | None,
                   transform_grads: Callable[[], object]) -> Any:
        """The base optimizer's step on gradients that `transform_grads()` rewrites first.

        With a `closure` (it recomputes the gradients: LBFGS calls it several times), the
        closure runs under ``torch.enable_grad()`` and `transform_grads` after each call.
        """
        base = self._base()
        if closure is None:
            transform_grads()
            return base.step()

        def transformed_closure() -> Any:
            with torch.enable_grad():
                loss = closure()
            transform_grads()
            return loss

        return base.step(transformed_closure)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients, as the base optimizer does."""
        base = self.base_optimizer
        if base is None:
            self._unbound()
        base.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group to the base optimizer (the wrapper does not act on its parameters)."""
        if not self._initialized:       # Optimizer.__init__ adding its groups
            return
        self._base().add_param_group(param_group)
