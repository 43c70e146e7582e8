"""Elastic Weight Consolidation: a quadratic pull of each weight to its anchor, by importance."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..distributed import like, local, shard_like
from ..importance.base import Importance
from ._kernels import PARALLEL_FROM, compilable, flat, grad_pull_kernels
from ._wrapper import WrappedOptimizer
from .base import Consolidator, ParameterSet
from .penalized import PenalizedOptimizer

__all__ = ["ABSORBED_WARNING", "EWC", "MODES"]

MODES = ("accumulate", "separate", "online")

ABSORBED_WARNING = 0.01
"""Warn when rounding Ω to a narrower `state_dtype` drops more than this share of a task's
importance (elements whose contribution is below half a step of the stored Ω)."""


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

    Plain EWC past that limit fails silently (each SGD step overshoots the anchor further), so
    `consolidate` warns (`RuntimeWarning`) when the penalty's curvature λΩ (summed over the
    terms of a parameter) times the learning rate exceeds the SGD stability limit: 2 for plain
    SGD, 2(1 + μ)/(1 − dampening) with momentum μ, 2(1 + μ)/(1 + 2μ) with Nesterov's. The
    learning rates are read from the optimizer given to `wrap` (its current ``param_groups``);
    without one, from `lr` if given. Other optimizers (Adam, ...) are not checked.

    ``state_dtype=torch.bfloat16`` stores Ω and θ* (and the cached stabilized c) in bfloat16:
    the state then takes 4 bytes per parameter, the bytes of the fp32 model, instead of 8
    (`state_nbytes`). The penalty and its gradient are computed in each parameter's dtype (the
    stored tensors are upcast on the fly), and `save` writes the state in its storage dtype.
    Ω is summed in float32 (or the parameter's dtype, if wider) and rounded once per task, so
    each consolidation adds a relative error of at most half a step of the storage dtype (2⁻⁹
    for bf16) and θ* is the weights rounded likewise; a task's importance below half a step of
    the Ω it adds to is lost in that rounding, and `consolidate` warns (`RuntimeWarning`) when
    more than `ABSORBED_WARNING` of a task's importance was lost so.

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
        lr: The optimizer's learning rate, for ``stabilized=True`` (and, when no optimizer is
            wrapped, for the stability warning).
        state_dtype: Store Ω and θ* in this floating dtype (None: each parameter's dtype).

    Raises:
        ValueError: An argument is out of range (λ < 0, unknown mode, γ outside (0, 1], ...).
        TypeError: `state_dtype` is not a floating torch.dtype.
    """

    name = "ewc"
    _uniform = False        # True: every coefficient is 1 (L2), no Ω is kept
    _loaded_settings_note = "assign ewc.lam or ewc.lr afterwards to use others"

    def __init__(self, model_or_params: nn.Module | Iterable[Any], lam: float, *,
                 mode: str = "accumulate", gamma: float = 1.0, stabilized: bool = False,
                 lr: float | None = None, state_dtype: torch.dtype | None = None):
        owner = type(self).__name__
        self.params = ParameterSet(model_or_params, owner)
        self.lam = lam
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
        if state_dtype is not None and not (isinstance(state_dtype, torch.dtype)
                                            and state_dtype.is_floating_point):
            raise TypeError(f"The 'state_dtype' parameter of {owner} must be a floating "
                            f"torch.dtype or None. Got {state_dtype!r} instead.")
        self.mode, self.gamma, self.stabilized = mode, float(gamma), bool(stabilized)
        self.lr = None if lr is None else float(lr)
        self.state_dtype = state_dtype
        self._optimizer: torch.optim.Optimizer | None = None    # set by wrap
        self.omega: dict[str, Tensor] = {}
        self.anchor: dict[str, Tensor] = {}
        self.tasks: list[tuple[dict[str, Tensor], dict[str, Tensor]]] = []   # separate mode
        self.n_tasks = 0
        # per-step work is cached until the next consolidation (or a change of lam/lr):
        self._terms_key: tuple[Any, ...] | None = None
        self._terms_cache: tuple[list[Tensor], list[Tensor | None], list[Tensor], float] = (
            [], [], [], 0.0)

    def _stored_dtype(self, p: Tensor) -> torch.dtype:
        """The dtype Ω and θ* of parameter `p` are stored in."""
        return self.state_dtype or p.dtype

    @torch.no_grad()
    def consolidate(self, importance: Importance | None = None) -> None:
        """Add a finished task's importance and move the anchor to the current weights.

        Warns (`RuntimeWarning`) if plain SGD steps on the new penalty would overshoot (see the
        class docstring), or if rounding Ω to `state_dtype` lost a share of the importance.
        """
        imp = self._task_importance(importance)
        current = self.params.params
        if self.params.sharded:          # FSDP2: this rank's shard of each (whole) importance
            imp = {n: shard_like(imp[n], p) for n, p in current.items()}
        total = absorbed = 0.0
        narrow = None                                   # a storage dtype narrower than the sum
        if self.mode == "separate":
            self.tasks.append(({n: like(imp[n].to(device=local(p).device,
                                                  dtype=self._stored_dtype(p), copy=True), p)
                                for n, p in current.items()},
                               {n: like(local(p).detach().to(self._stored_dtype(p), copy=True), p)
                                for n, p in current.items()}))
        else:
            decay = self.gamma if self.mode == "online" else 1.0
            for n, param in current.items():
                p = local(param)                  # sharded: this rank's shards throughout
                wide = torch.promote_types(p.dtype, torch.float32)   # sum, then round once
                old = self.omega.get(n)
                old = None if old is None else local(old)
                new = imp[n].to(device=p.device, dtype=wide, copy=old is None)   # not aliased
                if old is not None:
                    new = old.to(wide).mul(decay).add_(new)
                stored = new.to(self._stored_dtype(p))
                if stored.dtype != wide:                  # what the rounding dropped
                    narrow = stored.dtype
                    if not bool(torch.isfinite(stored).all()):
                        raise ValueError(f"{type(self).__name__}: Ω of {n!r} overflows its "
                                         f"storage dtype {narrow} (max {float(new.max()):.4g}); "
                                         "use a wider state_dtype (e.g. torch.float32).")
                    i = imp[n].to(device=p.device, dtype=wide)
                    before = torch.zeros_like(stored) if old is None else \
                        (old.to(wide) * decay).to(stored.dtype)
                    total += float(i.sum())
                    absorbed += float(i[(stored == before) & (i > 0)].sum())
                if old is not None and old.dtype == stored.dtype:
                    old.copy_(stored)                      # in place, as before
                else:
                    self.omega[n] = like(stored, param)
            self._move_anchor()
        self.n_tasks += 1
        if total > 0 and absorbed > ABSORBED_WARNING * total:
            warnings.warn(
                f"{type(self).__name__}: rounding Ω to {narrow} lost {absorbed / total:.1%} of "
                f"task {self.n_tasks}'s importance (values below half a step of the Ω they add "
                "to). Use a wider state_dtype (e.g. torch.float32) to keep it.",
                RuntimeWarning, stacklevel=3)
        self._check_stability()

    def _move_anchor(self) -> None:
        """θ* ← the current weights (in place once the anchors exist)."""
        for n, p in self.params.params.items():
            if n in self.anchor:
                local(self.anchor[n]).copy_(local(p))
            else:
                self.anchor[n] = like(local(p).detach().to(self._stored_dtype(p), copy=True), p)

    def _step_limits(self) -> dict[int, tuple[float, float]]:
        """id(parameter) -> (lr, the largest stable lr·curvature) for the plain-SGD check.

        From the wrapped optimizer if it is (or wraps) ``torch.optim.SGD``; otherwise, with no
        optimizer wrapped, `lr` with plain SGD's limit 2; empty if neither applies.
        """
        opt = self._optimizer
        while isinstance(opt, WrappedOptimizer):
            opt = opt.base_optimizer
        if opt is None:
            if self.lr is None or not math.isfinite(self.lr) or self.lr <= 0:
                return {}
            return {id(p): (self.lr, 2.0) for p in self.params.params.values()}
        if not isinstance(opt, torch.optim.SGD):
            return {}
        limits = {}
        for group in opt.param_groups:
            lr, mu = float(group["lr"]), float(group.get("momentum", 0))
            if group.get("nesterov", False):
                limit = 2 * (1 + mu) / (1 + 2 * mu)
            else:
                damped = 1 - float(group.get("dampening", 0)) if mu else 1.0
                limit = 2 * (1 + mu) / damped if damped > 0 else math.inf
            limit -= lr * float(group.get("weight_decay", 0))   # decay adds to the curvature
            if limit <= 0:                     # unstable without the penalty: not EWC's doing
                continue
            for p in group["params"]:
                limits[id(p)] = (lr, limit)
        return limits

    def _check_stability(self) -> None:
        """Warn if plain SGD steps on the penalty alone would overshoot and diverge."""
        limits = self._step_limits()
        if not limits or self.lam == 0:
            return
        params, coefs, _, factor = self._terms()
        curvature: dict[int, Tensor | float] = {}       # 2f·Σ c per parameter: λΩ if plain
        for p, c in zip(params, coefs):   # sharded: each rank checks its own shards
            c = None if c is None else local(c)
            term = 2.0 * factor if c is None else \
                c.to(torch.promote_types(c.dtype, torch.float32)) * (2.0 * factor)
            curvature[id(p)] = term if id(p) not in curvature else curvature[id(p)] + term
        names = {id(p): n for n, p in self.params.params.items()}
        worst = None
        for key, curv in curvature.items():
            if key not in limits:
                continue
            lr, limit = limits[key]
            if isinstance(curv, Tensor) and not curv.numel():    # an empty shard
                continue
            peak = float(curv.max()) if isinstance(curv, Tensor) else curv
            if lr * peak > limit and (worst is None or lr * peak / limit > worst[0]):
                worst = (lr * peak / limit, names[key], lr, peak, limit)
        if worst is not None:
            _, name, lr, peak, limit = worst
            owner = type(self).__name__
            warnings.warn(
                f"{owner} is past its stability limit: lr·λ·max Ω = {lr:g} × {peak:.4g} = "
                f"{lr * peak:.4g} > {limit:.4g} for parameter {name!r} (λ·max Ω = {peak:.4g}). "
                "Each SGD step on the penalty overshoots the anchor and the weights diverge. "
                f"Use {owner}(..., stabilized=True, lr=...), or λ at most "
                f"{self.lam * limit / (lr * peak):.4g}, or a smaller learning rate.",
                RuntimeWarning, stacklevel=4)        # the caller of consolidate

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
        if self.stabilized:           # c itself, a third tensor per parameter, stored like Ω
            self._terms_cache = (params, [None if c is None else
                                          like(self.coefficient(local(c)).to(c.dtype), c)
                                          for c in coefs], anchors, 1.0)
        else:
            self._terms_cache = (params, coefs, anchors, 0.5 * self.lam)
        self._terms_key = key
        return self._terms_cache

    def coefficient(self, omega: Tensor) -> Tensor:
        """The c in the penalty Σ c (θ − θ*)²: λΩ/2, or (λΩ/2)/(1 + lr·λΩ) if stabilized.

        Computed in at least float32 (a bf16 Ω is upcast).
        """
        omega = omega.to(torch.promote_types(omega.dtype, torch.float32))
        if self.stabilized:
            lam_omega = self.lam * omega
            return 0.5 * lam_omega / (1.0 + self.lr * lam_omega)
        return 0.5 * self.lam * omega

    def penalty(self) -> Tensor:
        """The scalar Σ c (θ − θ*)², differentiable w.r.t. the model's parameters.

        Its backward pass is the closed form 2c(θ − θ*), computed with foreach kernels, so adding
        it to the loss costs about what `apply_to_grad` does (no double backward).

        Sharded parameters (FSDP2): this rank's share, the terms of its shards (no
        communication). Summed over the ranks it is the whole penalty, and its gradient is the
        whole penalty's for this rank's shards: added to each rank's loss, it gives the same
        update as one process (FSDP averages only the loss's gradients, not this one).
        """
        self.params.check_unchanged(throttle=True)
        params, coefs, anchors, factor = self._terms()
        if self.lam == 0 or not params:
            return super().penalty()
        if self.params.sharded:       # the shards; to_local passes the gradient back as DTensor
            params = [local(p) for p in params]
            coefs = [None if c is None else local(c) for c in coefs]
            anchors = [local(a) for a in anchors]
        return _QuadraticPenalty.apply(factor, coefs, anchors, *params)

    @torch.no_grad()
    def apply_to_grad(self) -> None:
        """Add the penalty's gradient 2c(θ − θ*) to each ``.grad`` (call after backward)."""
        self.params.check_unchanged(throttle=True)
        params, coefs, anchors, factor = self._terms()
        if self.lam == 0 or not params:
            return
        if self.params.sharded:
            self._apply_to_shard_grads(params, coefs, anchors, factor)
            return
        params, coefs, anchors = _pull_large_in_place(params, coefs, anchors, 2.0 * factor)
        if not params:
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

    def _apply_to_shard_grads(self, params: list[Tensor], coefs: list[Tensor | None],
                              anchors: list[Tensor], factor: float) -> None:
        """`apply_to_grad` for sharded parameters: on this rank's shards of g, θ, c and θ*."""
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        grads = [local(p.grad) for p in params]
        diffs = torch._foreach_sub([local(p) for p in params], [local(a) for a in anchors])
        if coefs[0] is None:
            torch._foreach_add_(grads, diffs, alpha=2.0 * factor)
        else:
            torch._foreach_addcmul_(grads, [local(c) for c in coefs], diffs,
                                    value=2.0 * factor)

    def penalty_terms(self) -> tuple[list[Tensor], list[Tensor | None], list[Tensor], float]:
        """(params, coefs, anchors, f): the penalty is f · Σ_i coef_i ⊙ (θ_i − θ*_i)².

        One entry per term (per task in separate mode, so a parameter can repeat); empty when
        λ = 0 or nothing is consolidated. The coefs are all None when uniform (L2: coefficient
        1). Coefs and anchors are in their storage dtype (`state_dtype`), which can differ from
        the parameters'. The lists and tensors are the live (cached) state, the same objects
        until the next consolidation or change of λ/lr: do not modify them.
        """
        self.params.check_unchanged(throttle=True)
        params, coefs, anchors, factor = self._terms()
        if self.lam == 0:
            return [], [], [], 0.0
        return params, coefs, anchors, factor

    def wrap(self, optimizer: torch.optim.Optimizer) -> PenalizedOptimizer:
        """An optimizer whose ``step()`` adds this penalty's gradient (fused for plain SGD).

        Use it instead of `penalty()` or `apply_to_grad()`, not with them (that would count the
        penalty twice). `consolidate` reads its learning rates for the stability warning.
        """
        wrapped = PenalizedOptimizer(optimizer, self)
        self._optimizer = optimizer
        return wrapped

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

    def state_nbytes(self) -> int:
        """Bytes of Ω and θ* (per task in separate mode), in their storage dtype.

        Accumulate and online modes: 2 tensors per parameter, 2 × 4 bytes per weight in
        float32, 2 × 2 (the fp32 model's bytes) with ``state_dtype=torch.bfloat16``.
        """
        return super().state_nbytes()

    def memory_bytes(self) -> int:
        """Bytes of Ω and θ* (per task in separate mode), plus the cached c when stabilized."""
        coefs = self._terms()[1] if self.stabilized else []
        return super().memory_bytes() + sum(local(t).numel() * t.element_size() for t in coefs)

    def _config(self) -> dict[str, Any]:
        return {"lam": self.lam, "mode": self.mode, "gamma": self.gamma,
                "stabilized": self.stabilized, "lr": self.lr, "n_tasks": self.n_tasks}

    def _check_state(self, tensors: Mapping[str, Tensor], config: Mapping[str, Any],
                     source: str) -> None:
        super()._check_state(tensors, config, source)
        owner = type(self).__name__
        if config.get("mode") != self.mode:
            raise ValueError(f"Saved {owner} state is in mode {config.get('mode')!r}; this "
                             f"{owner} uses {self.mode!r}.")
        gamma, lr = config.get("gamma"), config.get("lr")
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) \
                or not math.isfinite(gamma) or not 0 < gamma <= 1:
            raise ValueError(f"The 'gamma' entry of the {owner} state in {source!r} must be in "
                             f"(0, 1]. Got {gamma!r} instead.")
        if not isinstance(config.get("stabilized"), bool):
            raise ValueError(f"The 'stabilized' entry of the {owner} state in {source!r} must "
                             f"be a bool. Got {config.get('stabilized')!r} instead.")
        if (lr is not None or config["stabilized"]) and (
                isinstance(lr, bool) or not isinstance(lr, (int, float))
                or not math.isfinite(lr) or lr <= 0):
            raise ValueError(f"The 'lr' entry of the {owner} state in {source!r} must be a "
                             f"finite float > 0{'' if config['stabilized'] else ' or None'}. "
                             f"Got {lr!r} instead.")
        kinds = [] if self._uniform else ["omega"]
        kinds.append("anchor")
        prefixes = ([f"task{t}/{k}/" for t in range(config["n_tasks"]) for k in kinds]
                    if self.mode == "separate" else
                    [f"{k}/" for k in kinds] if config["n_tasks"] else [])
        for prefix in prefixes:
            for n in self.params.params:
                v = self._check_tensor(tensors, prefix + n, n, source)
                if "omega/" in prefix and bool((local(v) < 0).any()):
                    raise ValueError(f"The {owner} state in {source!r} has negative values in "
                                     f"{prefix + n!r}; Ω must be >= 0.")

    def _restore(self, tensors: dict[str, Tensor], config: dict[str, Any]) -> None:
        current = self.params.params

        def pick(prefix: str) -> dict[str, Tensor]:
            if self.params.sharded:    # whole tensors (a file) or DTensors: this rank's shards
                return {n: like(shard_like(tensors[prefix + n], p).to(
                            device=local(p).device, dtype=self._stored_dtype(p)), p)
                        for n, p in current.items() if prefix + n in tensors}
            return {n: tensors[prefix + n].to(device=p.device, dtype=self._stored_dtype(p))
                    for n, p in current.items() if prefix + n in tensors}

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
        if self.state_dtype is not None:
            extra += f", state_dtype={self.state_dtype}"
        return f"EWC(lam={self.lam}, mode={self.mode!r}{extra}, tasks={self.n_tasks})"


def _pull_large_in_place(params: list[Tensor], coefs: list[Tensor | None],
                         anchors: list[Tensor], k: float
                         ) -> tuple[list[Tensor], list[Tensor | None], list[Tensor]]:
    """Add k·c ⊙ (θ − θ*) to each large float32/64 CPU term's gradient by the compiled kernel.

    Returns the terms left for torch's foreach ops (small tensors, where a kernel call costs
    more than the foreach temporary; other dtypes or devices; a bf16 state).
    """
    kernels = grad_pull_kernels()
    if kernels is None:
        return params, coefs, anchors
    threads = torch.get_num_threads()
    rest: tuple[list[Tensor], list[Tensor | None], list[Tensor]] = ([], [], [])
    for p, c, a in zip(params, coefs, anchors):
        if p.numel() < PARALLEL_FROM or not compilable(
                [p, a, *(() if c is None else (c,)), *(() if p.grad is None else (p.grad,))],
                p.dtype):
            rest[0].append(p)
            rest[1].append(c)
            rest[2].append(a)
            continue
        if p.grad is None:
            p.grad = torch.zeros_like(p, memory_format=torch.contiguous_format)
        if c is None:
            kernels[1][threads > 1](flat(p.grad), flat(p), flat(a), k)
        else:
            kernels[0][threads > 1](flat(p.grad), flat(p), flat(c), flat(a), k)
    return rest

