"""A quadratic penalty (EWC, L2) applied by the optimizer step instead of through the loss."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import Tensor

from ._kernels import PARALLEL_FROM, compilable, flat, sgd_pull_kernels
from ._wrapper import SGDGroups, WrappedOptimizer
from .base import ParameterSet

__all__ = ["PenalizedOptimizer"]


class QuadraticPenalty(Protocol):
    """What `PenalizedOptimizer` needs from a consolidator (EWC and L2 provide it).

    ``penalty_terms()`` is (params, coefs, anchors, f) with the penalty f · Σ_i coef_i ⊙
    (θ_i − θ*_i)²; the coefs are all tensors, or all None for a uniform coefficient of 1 (L2).
    """

    params: ParameterSet

    def apply_to_grad(self) -> None: ...

    def penalty_terms(self) -> tuple[list[Tensor], list[Tensor | None], list[Tensor], float]: ...


class PenalizedOptimizer(WrappedOptimizer):
    """Wrap an optimizer so that each step also follows the penalty's gradient.

    ``opt.step()`` is ``penalty.apply_to_grad()`` followed by the base optimizer's step, so the
    training loop needs neither ``penalty()`` in the loss nor a call after ``backward()``. With
    plain SGD (no momentum, no weight decay, no step hooks on either optimizer, one term per
    parameter, i.e. not EWC's "separate" mode) the two are fused:
    θ ← θ − lr·g − lr·2f·c ⊙ (θ − θ*), ``.grad`` left untouched — one pass over memory (a
    compiled kernel) for contiguous float CPU tensors, three foreach ops otherwise. It is the
    cheapest way to train with EWC: about the cost of torch's own SGD step. Other optimizers
    (Adam, momentum SGD, ...) take the unfused path and see the penalty's gradient in ``.grad``.
    Sharded parameters (FSDP2) always take the unfused path (the penalty's gradient added to
    each rank's gradient shards, then the base step).

    It is a `torch.optim.Optimizer` sharing the base optimizer's ``param_groups`` (schedulers,
    ``zero_grad`` and ``state_dict`` work as usual). Build it with ``EWC.wrap(opt)`` or
    ``L2.wrap(opt)``.

    Args:
        base_optimizer: Any torch optimizer over the protected parameters.
        penalty: The consolidator whose penalty gradient each step adds.
    """

    def __init__(self, base_optimizer: torch.optim.Optimizer, penalty: QuadraticPenalty):
        if isinstance(base_optimizer, PenalizedOptimizer):
            raise ValueError("This optimizer already applies a penalty; wrap the base optimizer "
                             "once (two penalties: add one of them to the loss instead).")
        self._start()
        self._bind(base_optimizer, penalty.params, "wrap()",
                   "wrap the optimizer of the model the penalty protects")
        self.consolidator = penalty
        self._plan: _SGDPlan | None = None     # the fused step, rebuilt when anything changes

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> Any:  # type: ignore[override]
        """Add the penalty's gradient, then take the base step (fused for plain SGD)."""
        if closure is None and self._fused_sgd_step():
            self._stepped_in_place_of_base()
            return None
        return self._step_with(closure, self.consolidator.apply_to_grad)

    def _fused_sgd_step(self) -> bool:
        """Plain SGD with the penalty folded in; False (nothing done) if it cannot apply."""
        if self.consolidator.params.sharded:   # FSDP2: apply_to_grad on the shards, SGD's step
            return False
        groups = self._sgd_groups()     # a hook may read .grad (SI does): give it the penalty's
        if groups is None:
            return False
        terms = self.consolidator.penalty_terms()
        plan = self._plan
        threads = torch.get_num_threads()
        key = [(lr, len(params)) for lr, params in groups]
        if plan is None or plan.terms is not terms[0] or plan.key != key or \
                plan.threads != threads:
            plan = self._plan = _SGDPlan.build(groups, terms, threads)
        return plan.step()

    def state_dict(self) -> dict[str, Any]:
        """The base optimizer's state (the penalty's state is saved by the consolidator)."""
        return self._base().state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the base optimizer's state."""
        self._load_base_state(state_dict)

    def __repr__(self) -> str:
        return f"PenalizedOptimizer({type(self.base_optimizer).__name__}, {self.consolidator!r})"


class _SGDPlan:
    """A fused SGD + quadratic-pull step, validated once for fixed parameters and settings."""

    def __init__(self, terms: list[Tensor] | None, key: list[tuple[float, int]],
                 threads: int = 1):
        self.terms, self.key, self.threads = terms, key, threads
        self.usable = False
        self.compiled = False
        # compiled path: (param, its data_ptr, θ view, c view, θ* view, lr, k, kernel) per term
        self.entries: list[tuple[Tensor, int, Any, Any, Any, float, float,
                                 Callable[..., None]]] = []
        # foreach path: the terms, the penalty factor f, and the terms grouped by signed lr
        self.params: list[Tensor] = []
        self.coefs: list[Tensor | None] = []
        self.anchors: list[Tensor] = []
        self.factor = 0.0
        self.by_lr: list[tuple[float, list[int]]] = []        # term indices by signed lr
        self.others: list[tuple[float, list[Tensor]]] = []    # parameters outside the penalty

    @classmethod
    def build(cls, groups: SGDGroups,
              terms: tuple[list[Tensor], list[Tensor | None], list[Tensor], float],
              threads: int = 1) -> _SGDPlan:
        """The fused step for these plain-SGD groups (`WrappedOptimizer._sgd_groups`) and terms.

        The compiled kernel runs in parallel only for large tensors and when torch itself may
        use more than one thread: a process limited to one thread (e.g. one of several running
        side by side) stays serial, not oversubscribing the cores with numba's own threads.
        """
        params, coefs, anchors, factor = terms
        plan = cls(params, [(lr, len(ps)) for lr, ps in groups], threads)
        if len({id(p) for p in params}) != len(params):    # EWC "separate": one term per task
            return plan
        signed = {id(p): lr for lr, ps in groups for p in ps}
        held = {id(p) for p in params}
        by_lr: dict[float, list[Tensor]] = {}
        for lr, ps in groups:
            for p in ps:
                if id(p) not in held:
                    by_lr.setdefault(lr, []).append(p)
        plan.others = list(by_lr.items())
        plan.params, plan.coefs, plan.anchors = list(params), list(coefs), list(anchors)
        plan.factor = factor
        term_lr: dict[float, list[int]] = {}
        for i, p in enumerate(params):
            term_lr.setdefault(signed[id(p)], []).append(i)
        plan.by_lr = list(term_lr.items())
        plan.usable = True
        kernels = sgd_pull_kernels()
        if kernels is not None and params and all(c is not None for c in coefs) and \
                compilable([*params, *anchors, *coefs], params[0].dtype):
            plan.compiled = True
            plan.entries = [(p, p.data_ptr(), flat(p), flat(c), flat(a), -signed[id(p)],
                             -2.0 * factor * signed[id(p)],
                             kernels[threads > 1 and p.numel() >= PARALLEL_FROM])
                            for p, c, a in zip(params, coefs, anchors)]
        return plan

    def step(self) -> bool:
        """Apply the step in place; False (nothing done) if this plan cannot.

        The caller has checked the groups (`WrappedOptimizer._sgd_groups`: no sparse gradient).
        """
        if not self.usable:
            return False
        grads = [p.grad for p in self.params]
        if not (self.compiled and self._compiled(grads)):
            # the pull at the weights before the step, then the two updates
            diffs = torch._foreach_sub(self.params, self.anchors) if self.params else []
            for lr, idx in self.by_lr:
                held = [i for i in idx if grads[i] is not None]
                if held:
                    torch._foreach_add_([self.params[i] for i in held],
                                        [grads[i] for i in held], alpha=lr)
                ps, ds = [self.params[i] for i in idx], [diffs[i] for i in idx]
                scale = 2.0 * self.factor * lr
                if self.coefs[idx[0]] is None:                 # uniform (L2)
                    torch._foreach_add_(ps, ds, alpha=scale)
                else:
                    torch._foreach_addcmul_(ps, [self.coefs[i] for i in idx], ds, value=scale)
        for lr, plist in self.others:
            with_grad = [p for p in plist if p.grad is not None]
            if with_grad:
                torch._foreach_add_(with_grad, [p.grad for p in with_grad], alpha=lr)
        return True

    def _compiled(self, grads: list[Tensor | None]) -> bool:
        """The terms' step in one compiled pass per tensor; False (nothing done) if it cannot."""
        for (p, ptr, *_), g in zip(self.entries, grads):    # autograd keeps g's dtype/device
            if p.data_ptr() != ptr or (g is not None and not g.is_contiguous()):
                return False
        for (p, _, theta, coef, anchor, lr, k, kernel), g in zip(self.entries, grads):
            if g is None:                  # no gradient: the pull alone, as apply_to_grad does
                g = torch.zeros_like(p)
            kernel(theta, g.numpy(), coef, anchor, lr, k)
        return True
