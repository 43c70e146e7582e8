"""Elastic Weight Consolidation: a quadratic pull of each weight to its anchor, by importance."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from ..importance.base import Importance
from .base import Consolidator, ParameterSet, check_lam
from .penalized import PenalizedOptimizer

__all__ = ["EWC", "MODES"]

MODES = ("accumulate", "separate", "online")


class _QuadraticPenalty(torch.autograd.Function):
    """factor · Σ_i <coef_i ⊙ d_i, d_i> with d = θ − θ*, and its closed-form gradient.

    The coefs are all tensors, or all None: a uniform coefficient of 1 (L2), d_i itself.
    """

    @staticmethod
    def forward(ctx: Any, factor: float, coefs: list[Tensor | None], anchors: list[Tensor],
                *params: Tensor) -> Tensor:
        diffs = torch._foreach_sub(params, anchors)
        # c ⊙ d, reused by backward
        weighted = diffs if coefs[0] is None else torch._foreach_mul(diffs, coefs)
        total = torch.stack([torch.vdot(w.reshape(-1), d.reshape(-1))
                             for w, d in zip(weighted, diffs)]).sum()
        ctx.weighted, ctx.factor = weighted, factor
        return total * factor

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        grads = torch._foreach_mul(ctx.weighted, grad_output * (2.0 * ctx.factor))
        return (None, None, None, *grads)


class EWC(Consolidator):
    """EWC penalty Σ_i c_i (θ_i − θ*_i)², with c = λΩ/2 (Kirkpatrick et al. 2017).

    Modes:
        * ``"accumulate"`` (default, the seeds' form): Ω = Σ_t I_t, one anchor θ* at the weights
          after the latest task. Two extra tensors per parameter (Ω and θ*).
        * ``"separate"``: one penalty per task with its own importance and anchor (Kirkpatrick's
          original; memory grows by two tensors per parameter per task).
        * ``"online"``: Ω ← γΩ + I_t (Schwarz et al. 2018), one anchor; two extra tensors.

    ``stabilized=True`` uses Kutalev & Lapina's (2021) coefficient c = (λΩ/2) / (1 + lr·λΩ): a plain
    SGD step on the penalty alone moves θ by −lr·λΩ/(1 + lr·λΩ)·(θ − θ*), a contraction, so it can
    never overshoot the anchor (plain EWC diverges once lr·λ·Ω > 2). It needs the optimizer's
    learning rate; update ``ewc.lr`` if a scheduler changes it. It caches c (a third tensor per
    parameter, counted by `memory_bytes`) so that a step costs no more than plain EWC's.

    Add `penalty()` to the loss, or call `apply_to_grad()` after ``loss.backward()`` to add the
    penalty's gradient 2c(θ − θ*) in closed form (no autograd graph; the same update), or step
    with ``ewc.wrap(optimizer)``, which does the latter inside ``step()`` and, for plain SGD,
    fuses it with the SGD update (the fastest of the three).

    Args:
        model_or_params: The network to protect (its trainable parameters at construction),
            or its parameters (or (name, parameter) pairs).
        lam: λ ≥ 0, the penalty strength.
        mode: "accumulate", "separate" or "online".
        gamma: Decay of the old Ω in online mode, 0 < γ ≤ 1.
        stabilized: Use the stabilized coefficient (needs `lr`).
        lr: The optimizer's learning rate, for ``stabilized=True``.
    """

    name = "ewc"
    _uniform = False        # True: every coefficient is 1 (L2), no Ω is kept

    def __init__(self, model_or_params: nn.Module | Iterable[Any], lam: float, *,
                 mode: str = "accumulate", gamma: float = 1.0, stabilized: bool = False,
                 lr: float | None = None):
        owner = type(self).__name__
        self.params = ParameterSet(model_or_params, owner)
        self.lam = check_lam(lam, owner)
        if mode not in MODES:
            raise ValueError(f"The 'mode' parameter of EWC must be one of {MODES}. "
                             f"Got {mode!r} instead.")
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) \
                or not math.isfinite(gamma) or not 0 < gamma <= 1:
            raise ValueError(f"The 'gamma' parameter of EWC must be in (0, 1]. Got {gamma!r}.")
        if stabilized and (lr is None or isinstance(lr, bool) or not math.isfinite(lr)
                           or lr <= 0):
            raise ValueError("EWC(stabilized=True) needs the optimizer's learning rate: pass a "
                             f"finite lr > 0. Got lr={lr!r}.")
        self.mode, self.gamma, self.stabilized = mode, float(gamma), bool(stabilized)
        self.lr = None if lr is None else float(lr)
        self.omega: dict[str, Tensor] = {}
        self.anchor: dict[str, Tensor] = {}
        self.tasks: list[tuple[dict[str, Tensor], dict[str, Tensor]]] = []   # separate mode
        self.n_tasks = 0
        # per-step work is cached until the next consolidation (or a change of lam/lr):
        self._terms_key: tuple[Any, ...] | None = None
        self._terms_cache: tuple[list[Tensor], list[Tensor | None], list[Tensor], float] = (
            [], [], [], 0.0)

    @torch.no_grad()
    def consolidate(self, importance: Importance | None = None) -> None:
        """Add a finished task's importance and move the anchor to the current weights."""
        imp = self._task_importance(importance)
        current = self.params.params
        if self.mode == "separate":
            self.tasks.append(({n: imp[n].to(p).clone() for n, p in current.items()},
                               {n: p.detach().clone() for n, p in current.items()}))
        else:
            decay = self.gamma if self.mode == "online" else 1.0
            for n, p in current.items():
                if n in self.omega:
                    self.omega[n].mul_(decay).add_(imp[n].to(p))
                else:
                    self.omega[n] = imp[n].to(p).clone()
            self._move_anchor()
        self.n_tasks += 1

    def _move_anchor(self) -> None:
        """θ* ← the current weights (in place once the anchors exist)."""
        for n, p in self.params.params.items():
            if n in self.anchor:
                self.anchor[n].copy_(p)
            else:
                self.anchor[n] = p.detach().clone()

    def _terms(self) -> tuple[list[Tensor], list[Tensor | None], list[Tensor], float]:
        """Parameters, coefficients, anchors of every term, and the scalar factor.

        The penalty is factor · Σ coef ⊙ (θ − θ*)², coef None when uniform (L2). Cached until
        the state or lam/lr change.
        """
        key = (self.n_tasks, self.lam, self.lr, self.stabilized)
        if key == self._terms_key:
            return self._terms_cache
        current = self.params.params
        pairs = ([(omega, anchor) for omega, anchor in self.tasks] if self.mode == "separate"
                 else [(self.omega, self.anchor)])
        params: list[Tensor] = []
        coefs: list[Tensor | None] = []
        anchors: list[Tensor] = []
        for omega, anchor in pairs:
            for n, p in current.items():
                if n in anchor:
                    params.append(p)
                    coefs.append(None if self._uniform else omega[n])
                    anchors.append(anchor[n])
        if self.stabilized:           # c itself, a third tensor per parameter
            self._terms_cache = (params, [None if c is None else self.coefficient(c)
                                          for c in coefs], anchors, 1.0)
        else:
            self._terms_cache = (params, coefs, anchors, 0.5 * self.lam)
        self._terms_key = key
        return self._terms_cache

    def coefficient(self, omega: Tensor) -> Tensor:
        """The c in the penalty Σ c (θ − θ*)²: λΩ/2, or (λΩ/2)/(1 + lr·λΩ) if stabilized."""
        if self.stabilized:
            lam_omega = self.lam * omega
            return 0.5 * lam_omega / (1.0 + self.lr * lam_omega)
        return 0.5 * self.lam * omega

    def penalty(self) -> Tensor:
        """The scalar Σ c (θ − θ*)², differentiable w.r.t. the model's parameters.

        Its backward pass is the closed form 2c(θ − θ*), computed with foreach kernels, so adding
        it to the loss costs about what `apply_to_grad` does (no double backward).
        """
        self.params.check_unchanged(throttle=True)
        params, coefs, anchors, factor = self._terms()
        if self.lam == 0 or not params:
            return super().penalty()
        return _QuadraticPenalty.apply(factor, coefs, anchors, *params)

    @torch.no_grad()
    def apply_to_grad(self) -> None:
        """Add the penalty's gradient 2c(θ − θ*) to each ``.grad`` (call after backward)."""
        self.params.check_unchanged(throttle=True)
        params, coefs, anchors, factor = self._terms()
        if self.lam == 0 or not params:
            return
        diffs = torch._foreach_sub(params, anchors)
        if coefs[0] is None:             # uniform: g ← g + (2f·d), as L2 always computed it
            torch._foreach_mul_(diffs, 2.0 * factor)
            for p, d in zip(params, diffs):
                if p.grad is None:
                    p.grad = d
                else:
                    p.grad.add_(d)
            return
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        torch._foreach_addcmul_([p.grad for p in params], coefs, diffs, value=2.0 * factor)

    def penalty_terms(self) -> tuple[list[Tensor], list[Tensor | None], list[Tensor], float]:
        """(params, coefs, anchors, f): the penalty is f · Σ_i coef_i ⊙ (θ_i − θ*_i)².

        One entry per term (per task in separate mode, so a parameter can repeat); empty when
        λ = 0 or nothing is consolidated. The coefs are all None when uniform (L2: coefficient
        1). The lists and tensors are the live (cached) state, the same objects until the next
        consolidation or change of λ/lr: do not modify them.
        """
        self.params.check_unchanged(throttle=True)
        params, coefs, anchors, factor = self._terms()
        if self.lam == 0:
            return [], [], [], 0.0
        return params, coefs, anchors, factor

    def wrap(self, optimizer: torch.optim.Optimizer) -> PenalizedOptimizer:
        """An optimizer whose ``step()`` adds this penalty's gradient (fused for plain SGD).

        Use it instead of `penalty()` or `apply_to_grad()`, not with them (that would count the
        penalty twice).
        """
        return PenalizedOptimizer(optimizer, self)

    def _tensors(self) -> dict[str, Tensor]:
        out = {}
        if self.mode == "separate":
            for t, (omega, anchor) in enumerate(self.tasks):
                out.update({f"task{t}/omega/{n}": v for n, v in omega.items()})
                out.update({f"task{t}/anchor/{n}": v for n, v in anchor.items()})
        else:
            out.update({f"omega/{n}": v for n, v in self.omega.items()})
            out.update({f"anchor/{n}": v for n, v in self.anchor.items()})
        return out

    def memory_bytes(self) -> int:
        """Bytes of Ω and θ* (per task in separate mode), plus the cached c when stabilized."""
        coefs = self._terms()[1] if self.stabilized else []
        return super().memory_bytes() + sum(t.numel() * t.element_size() for t in coefs)

    def _config(self) -> dict[str, Any]:
        return {"lam": self.lam, "mode": self.mode, "gamma": self.gamma,
                "stabilized": self.stabilized, "lr": self.lr, "n_tasks": self.n_tasks}

    def _restore(self, tensors: dict[str, Tensor], config: dict[str, Any]) -> None:
        if config["mode"] != self.mode:
            raise ValueError(f"Saved EWC state is in mode {config['mode']!r}; this EWC uses "
                             f"{self.mode!r}.")
        current = self.params.params

        def pick(prefix: str) -> dict[str, Tensor]:
            return {n: tensors[prefix + n].to(current[n]) for n in current
                    if prefix + n in tensors}

        self.lam, self.gamma = float(config["lam"]), float(config["gamma"])
        self.stabilized, self.lr = bool(config["stabilized"]), config["lr"]
        self.n_tasks = int(config["n_tasks"])
        self._terms_key = None                  # the cached terms refer to the old tensors
        if self.mode == "separate":
            self.tasks = [(pick(f"task{t}/omega/"), pick(f"task{t}/anchor/"))
                          for t in range(self.n_tasks)]
        else:
            self.omega, self.anchor = pick("omega/"), pick("anchor/")

    def __repr__(self) -> str:
        extra = f", stabilized=True, lr={self.lr}" if self.stabilized else ""
        return f"EWC(lam={self.lam}, mode={self.mode!r}{extra}, tasks={self.n_tasks})"
