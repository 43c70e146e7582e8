"""Weight Velocity Attenuation (Kutalev 2020; Kutalev & Lapina 2022) as an optimizer wrapper."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any, overload

import torch
from torch import Tensor, nn

from ..distributed import like, local, shard_like
from ..importance.base import Importance
from ._kernels import PARALLEL_FROM, adam_kernels, compilable, flat
from ._wrapper import SGDGroups, WrappedOptimizer
from .base import Consolidator, ParameterSet

__all__ = ["CURVES", "PLACEMENTS", "WVA", "attenuation"]

CURVES = ("hyperbolic", "exponential")
PLACEMENTS = ("step", "grad")
_ADAMS = (torch.optim.Adam, torch.optim.AdamW)       # the optimizers `WVA` may fuse with A
# elements per foreach call of the fused Adam step on the CPU: its temporaries (√v, and the
# negated or decayed gradients) then stay small enough for the allocator to reuse them across
# calls, where one call over a whole language model would fault in ~4 fresh bytes per weight
# every step (torch's own CPU Adam, a loop over the parameters, allocates per parameter too)
_CPU_CHUNK = 1 << 21
_PLAIN_TENSORS = (Tensor, nn.Parameter)              # not DTensors or other subclasses


def attenuation(omega: Tensor, lam: float, curve: str = "hyperbolic") -> Tensor:
    """The per-element factor A in [0, 1]: 1/(1 + λΩ) or exp(−λΩ); A = 1 where Ω = 0.

    Where λΩ overflows `omega`'s dtype, A is 0 (not NaN), and A = 1 where Ω = 0 even for a λ
    beyond that dtype's range.

    Args:
        omega: Ω ≥ 0, any shape.
        lam: λ ≥ 0.
        curve: "hyperbolic" or "exponential".

    Returns:
        A, of `omega`'s shape and (floating) dtype.
    """
    if curve not in CURVES:
        raise ValueError(f"curve must be one of {CURVES}. Got {curve!r} instead.")
    lam_omega = torch.where(omega == 0, 0.0, lam * omega)     # not 0·inf = NaN
    return 1.0 / (1.0 + lam_omega) if curve == "hyperbolic" else torch.exp(-lam_omega)


def _add_reduction(b: Tensor, importance: Tensor, lam: float, curve: str) -> Tensor:
    """B' = 1 − A' for Ω' = Ω + I, from B = 1 − A, computed without forming 1 − B's rounding.

    Hyperbolic: A' = A/(1 + λIA), so B' = (B + λIA)/(1 + λIA). Exponential: A' = A·exp(−λI),
    so B' = B + A·(1 − exp(−λI)). Both stay accurate where B is tiny (A rounds to 1).

    Where λIA overflows the dtype it is capped at the largest finite value, so B' = 1 (A' = 0),
    not inf/inf = NaN. B and I are finite, so a NaN in λIA or λI can only be 0·inf (λ beyond
    the dtype's range, times I = 0 or A = 0), whose value is 0.
    """
    a = 1.0 - b
    if curve == "hyperbolic":
        x = (lam * importance * a).nan_to_num_(nan=0.0, posinf=torch.finfo(b.dtype).max)
        return (b + x) / (1.0 + x)
    return b - a * torch.expm1(-(lam * importance).nan_to_num_(nan=0.0))


def _as_reduction(dtype: torch.dtype) -> bool:
    """True if A is stored as B = 1 − A in this dtype: half precision, where A ≈ 1 rounds off."""
    return torch.finfo(dtype).bits < 32


def _new_form(model_or_params: nn.Module | Iterable[Any], lam: float, *,
              optimizer: torch.optim.Optimizer | None = None, curve: str = "hyperbolic",
              on: str = "step", dtype: torch.dtype | None = None) -> tuple[Any, ...]:
    """WVA(model_or_params, lam, *, optimizer=None, curve=..., on=..., dtype=...)."""
    return model_or_params, lam, optimizer, curve, on, dtype


def _legacy_form(base_optimizer: torch.optim.Optimizer,
                 model_or_params: nn.Module | Iterable[Any], lam: float, *,
                 curve: str = "hyperbolic", on: str = "step",
                 dtype: torch.dtype | None = None) -> tuple[Any, ...]:
    """The earlier WVA(base_optimizer, model_or_params, lam, *, curve=..., on=..., dtype=...)."""
    return model_or_params, lam, base_optimizer, curve, on, dtype


def _wva_arguments(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """(model_or_params, lam, optimizer, curve, on, dtype) from either form of WVA's arguments.

    The earlier form is recognised by a torch optimizer as the first argument, or by arguments
    that only it accepts (three positional ones, ``base_optimizer=``).
    """
    legacy_first = bool(args) and isinstance(args[0], torch.optim.Optimizer)
    forms = (_legacy_form,) if legacy_first else (_new_form, _legacy_form)
    errors = []
    for form in forms:
        try:
            arguments = form(*args, **kwargs)
        except TypeError as e:        # the arguments do not fit this form
            errors.append(str(e).replace(f"{form.__name__}()", "WVA()"))
            continue
        if not (arguments[2] is None or isinstance(arguments[2], torch.optim.Optimizer)):
            raise TypeError(f"WVA needs a torch.optim.Optimizer as its base optimizer; got "
                            f"{type(arguments[2]).__name__}. Pass it as WVA(model_or_params, "
                            "lam, optimizer=...) or bind it with .wrap(optimizer).")
        return arguments
    raise TypeError(errors[0])


class WVA(WrappedOptimizer, Consolidator):
    """Wrap any optimizer so that each parameter's update is scaled by A = 1/(1 + λΩ).

    No loss term and no anchor: important weights simply move slowly. Ω accumulates the tasks'
    importances (`consolidate`). The one extra tensor kept per parameter is A itself, updated
    exactly when a task's I is added (A ← A / (1 + λ·I·A) hyperbolic, A ← A·exp(−λI)
    exponential), so a step computes nothing but the scaling — with plain SGD one fused
    θ ← θ − lr·A ⊙ g, no dearer than SGD's own step. Stored in half precision (``dtype=`` bf16
    or fp16, or a half-precision model) it is kept as the reduction B = 1 − A instead: A =
    1 − 10⁻⁴ rounds to 1 in bf16, B = 10⁻⁴ does not. `factor` (A), `reduction` (B) and
    `omega` (Ω) are derived from what is stored; λ is therefore fixed once tasks are
    consolidated, and Ω recovered from an fp32 A is exact only to ~10⁻⁷/λ absolute.

    ``on="step"`` (default): θ ← θ_prev + A ⊙ (θ_opt − θ_prev) after the base optimizer's step.
    ``on="grad"``: g ← A ⊙ g before it. With plain SGD (no momentum, no weight decay) the two are
    the same update (equal up to rounding: the arithmetic is ordered differently), and both
    take a fused path in place of the base step unless hooks are attached to the base
    optimizer: θ ← θ − lr·A ⊙ g in one foreach op; ``on="step"`` leaves ``.grad`` untouched,
    ``on="grad"`` leaves A ⊙ g in it. With ``torch.optim.Adam`` or ``AdamW`` and ``on="step"``
    the step is fused too: torch's own foreach Adam arithmetic and state with one extra pass,
    the denominator divided by A (decoupled weight decay is attenuated likewise, θ ← θ −
    lr·wd·A ⊙ θ), the same update up to rounding. Adam takes the unfused path of every other
    optimizer (its step, then θ_prev + A ⊙ (θ_opt − θ_prev): about three more passes over the
    parameters) with a closure, hooks on the base optimizer, amsgrad, capturable,
    differentiable or fused=True, a Tensor lr or betas, sparse or complex parameters, or
    sharded (FSDP) parameters. With Adam, gradient attenuation is cancelled by Adam's
    normalisation by the second moment (Kutalev & Lapina 2022 found Adam + gradient
    attenuation does not protect old tasks while Adam + step attenuation does): use
    ``on="step"`` for every optimizer but SGD.

    It is a `torch.optim.Optimizer` sharing the base optimizer's ``param_groups``, so LR
    schedulers, ``zero_grad`` and ``state_dict`` work as usual. Like every consolidator it is
    built as ``WVA(model, lam, ...)``; ``wva.wrap(optimizer)`` then binds the base optimizer
    and returns the WVA itself, the optimizer to step (``optimizer=`` does the same at
    construction). Until it is bound, `step`, `zero_grad` and `state_dict` raise;
    `consolidate`, `factor`, `omega`, `save` and `load` work.

    The earlier form ``WVA(base_optimizer, model_or_params, lam, ...)``, a torch optimizer first,
    is still accepted: it is ``WVA(model_or_params, lam, optimizer=base_optimizer, ...)``.

    Args:
        model_or_params: The model (parameter names come from it) or its parameters.
        lam: λ ≥ 0.
        optimizer: The base optimizer, any torch optimizer over those parameters (or None, and
            `wrap` later).
        curve: "hyperbolic" (1/(1 + λΩ), the authors' choice) or "exponential" (exp(−λΩ)).
        on: "step" or "grad".
        dtype: Store A in this dtype (e.g. torch.bfloat16 halves its memory; kept as B).

    Example:
        >>> wva = WVA(model, 300).wrap(torch.optim.Adam(model.parameters(), 1e-3))
        >>> # ... train, stepping wva; after each task: wva.consolidate(importance)
    """

    name = "wva"
    _loaded_settings_note = "the stored attenuation was computed with the saved λ"

    @overload
    def __init__(self, model_or_params: nn.Module | Iterable[Any], lam: float, *,
                 optimizer: torch.optim.Optimizer | None = None, curve: str = "hyperbolic",
                 on: str = "step", dtype: torch.dtype | None = None) -> None: ...

    @overload
    def __init__(self, base_optimizer: torch.optim.Optimizer,
                 model_or_params: nn.Module | Iterable[Any], lam: float, *,
                 curve: str = "hyperbolic", on: str = "step",
                 dtype: torch.dtype | None = None) -> None: ...

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        model_or_params, lam, optimizer, curve, on, dtype = _wva_arguments(args, kwargs)
        if curve not in CURVES:
            raise ValueError(f"The 'curve' parameter of WVA must be one of {CURVES}. "
                             f"Got {curve!r} instead.")
        if on not in PLACEMENTS:
            raise ValueError(f"The 'on' parameter of WVA must be one of {PLACEMENTS}. "
                             f"Got {on!r} instead.")
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise TypeError(f"dtype must be a floating torch.dtype or None. Got {dtype!r}.")
        self.params = ParameterSet(model_or_params, "WVA")
        self.lam = lam
        self.curve, self.on, self.factor_dtype = curve, on, dtype
        self._stored: dict[str, Tensor] = {}     # A per parameter, or B = 1 − A if half precision
        self.n_tasks = 0
        self._pairs: list[tuple[Tensor, Tensor]] = []      # (parameter, stored A or B)
        self._factors_cache: list[Tensor] = []              # A per pair in its parameter's dtype
        self._start()
        if optimizer is not None:
            self.wrap(optimizer)

    # what help() and inspect.signature(WVA) show: the current form
    __signature__ = inspect.signature(_new_form).replace(
        return_annotation=inspect.Signature.empty)

    def wrap(self, optimizer: torch.optim.Optimizer) -> WVA:
        """Bind the base optimizer whose updates this WVA attenuates; returns this WVA.

        Step the returned WVA (it shares the optimizer's ``param_groups``) in place of the
        optimizer. A WVA wraps one optimizer, once.
        """
        if self.base_optimizer is not None:
            raise ValueError(f"This WVA already wraps an optimizer "
                             f"({type(self.base_optimizer).__name__}); create another WVA for "
                             "another optimizer (load_state_dict moves the state).")
        self._bind(optimizer, self.params, "WVA", "pass the model whose parameters it optimizes")
        return self

    # optimizer interface --------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> Any:  # type: ignore[override]
        """Take the base optimizer's step, attenuated by A (see the class docstring)."""
        base = self.base_optimizer
        if base is None:
            self._unbound()
        self.params.check_unchanged(throttle=True)
        if not self._pairs:
            return base.step(closure)
        factors = self._factors()
        if closure is None:
            groups = self._sgd_groups(own_hooks=False)   # hooks on WVA see the unfused result
            if groups is not None:
                self._fused_sgd_step(groups, factors, write_grad=self.on == "grad")
                self._stepped_in_place_of_base()
                return None
            adam_groups = self._adam_groups() if self.on == "step" else None
            if adam_groups is not None:
                self._fused_adam_step(adam_groups, factors)
                self._stepped_in_place_of_base()
                return None
        if self.on == "grad" or self._plain_sgd():
            # plain SGD: θ − lr·(A ⊙ g) is exactly θ_prev + A ⊙ (θ_opt − θ_prev), and cheaper
            return self._step_with(closure, lambda: self._attenuate_grads(factors))
        params = [local(p) for p, _ in self._pairs] if self.params.sharded else \
            [p for p, _ in self._pairs]
        before = torch._foreach_mul(params, 1.0)      # a copy of θ_prev
        loss = base.step(closure)
        torch._foreach_lerp_(before, params, factors)   # θ_prev + A ⊙ (θ − θ_prev) ...
        torch._foreach_copy_(params, before)            # ... written back in place
        return loss

    @torch.no_grad()
    def _attenuate_grads(self, factors: list[Tensor]) -> None:
        """Scale the gradients: g ← A ⊙ g."""
        with_grad = [(p.grad, a) for (p, _), a in zip(self._pairs, factors)
                     if p.grad is not None]
        if self.params.sharded:
            with_grad = [(local(g), a) for g, a in with_grad]
        if with_grad:
            torch._foreach_mul_([g for g, _ in with_grad], [a for _, a in with_grad])

    @torch.no_grad()
    def _fused_sgd_step(self, groups: SGDGroups, factors: list[Tensor],
                        write_grad: bool = False) -> None:
        """Plain SGD on A ⊙ g in place of the base step, for `WrappedOptimizer._sgd_groups`.

        θ ← θ + s·A ⊙ g with s = −lr (lr if maximizing), one foreach op per group. ``.grad`` is
        left untouched unless `write_grad` (``on="grad"``: it then holds A ⊙ g, as the unfused
        path leaves it, and the step is two ops). A compiled kernel (as EWC.wrap uses) measured
        no faster here.
        """
        a_of = {id(p): a for (p, _), a in zip(self._pairs, factors)}
        if self.params.sharded:
            self._fused_shard_step(groups, a_of, write_grad)
            return
        for signed_lr, group in groups:
            params = [p for p in group if p.grad is not None]
            rest = [p for p in params if id(p) not in a_of]
            held = [(p, a_of[id(p)]) for p in params if id(p) in a_of]
            if held and write_grad:               # g ← A ⊙ g, then the plain step
                torch._foreach_mul_([p.grad for p, _ in held], [a for _, a in held])
                rest += [p for p, _ in held]
            elif held:
                torch._foreach_addcmul_([p for p, _ in held], [p.grad for p, _ in held],
                                        [a for _, a in held], value=signed_lr)
            if rest:
                torch._foreach_add_(rest, [p.grad for p in rest], alpha=signed_lr)

    def _fused_shard_step(self, groups: SGDGroups, a_of: dict[int, Tensor],
                          write_grad: bool) -> None:
        """`_fused_sgd_step` on this rank's shards of sharded (FSDP2) parameters."""
        for signed_lr, group in groups:
            params = [p for p in group if p.grad is not None]
            rest = [(local(p), local(p.grad)) for p in params if id(p) not in a_of]
            held = [(local(p), local(p.grad), a_of[id(p)]) for p in params if id(p) in a_of]
            if held and write_grad:
                torch._foreach_mul_([g for _, g, _ in held], [a for *_, a in held])
                rest += [(p, g) for p, g, _ in held]
            elif held:
                torch._foreach_addcmul_([p for p, _, _ in held], [g for _, g, _ in held],
                                        [a for *_, a in held], value=signed_lr)
            if rest:
                torch._foreach_add_([p for p, _ in rest], [g for _, g in rest], alpha=signed_lr)

    def _adam_groups(self) -> list[tuple[dict[str, Any], list[Tensor]]] | None:
        """(group, parameters with a gradient) per group, if a fused step may replace Adam's.

        It may when the base optimizer is exactly ``torch.optim.Adam`` or ``AdamW``, no step hook
        is registered on it or on all optimizers (hooks on this WVA see its result either way),
        the parameters are not sharded, and every group is plain: no amsgrad, capturable or
        differentiable, float hyperparameters (no Tensor lr or betas), plain dense real
        tensors with gradients, and a step counter on the CPU where one exists already (torch's
        own non-capturable layout); a ``fused=True`` group also needs numba and contiguous
        float32/64 CPU tensors (its step is the compiled kernel). None if it may not; nothing
        is changed either way.
        """
        base: Any = self.base_optimizer
        if type(base) not in _ADAMS or self.params.sharded or self._step_hooked(own=False):
            return None
        plan = []
        for group in base.param_groups:          # what base.step would read
            fused = bool(group.get("fused"))
            if group.get("amsgrad") or group.get("capturable") or group.get("differentiable") \
                    or (fused and adam_kernels() is None) or not all(
                        isinstance(v, (int, float)) for v in
                        (group["lr"], *group["betas"], group["eps"], group["weight_decay"])):
                return None
            params = []
            for p in group["params"]:
                grad = p.grad
                if grad is None:
                    continue
                if type(p) not in _PLAIN_TENSORS or grad.is_sparse or torch.is_complex(p):
                    return None
                state = base.state.get(p)
                if state:
                    step = state.get("step")
                    if not (torch.is_tensor(step) and step.is_cpu and "exp_avg" in state
                            and "exp_avg_sq" in state):
                        return None
                if fused and not compilable(
                        [p, grad, *((state["exp_avg"], state["exp_avg_sq"]) if state else ())],
                        p.dtype):                # the compiled step: CPU float32/64 only
                    return None
                params.append(p)
            plan.append((group, params))
        return plan

    @torch.no_grad()
    def _fused_adam_step(self, groups: list[tuple[dict[str, Any], list[Tensor]]],
                         factors: list[Tensor]) -> None:
        """The foreach Adam/AdamW step of torch, its update scaled by A, for `_adam_groups`.

        The arithmetic and the state (``step``, ``exp_avg``, ``exp_avg_sq``, initialised lazily
        as torch does) are torch's own; the one change is the denominator divided by A, so
        θ ← θ − (lr/bc₁)·m/((√v/√bc₂ + ε)/A) = θ − A ⊙ (Adam's update); decoupled weight decay
        is attenuated likewise, θ ← θ − lr·wd·A ⊙ θ. A = 0 gives an infinite denominator: no
        update. Parameters WVA does not attenuate take the plain step. A ``fused=True`` group
        (the Hugging Face Trainer's default AdamW) takes the same arithmetic as one compiled
        pass per parameter, as torch's fused CPU step does without A.
        """
        base: Any = self.base_optimizer
        a_of = {id(p): a for (p, _), a in zip(self._pairs, factors)}
        scalar_dtype = torch.float64 if torch.get_default_dtype() == torch.float64 \
            else torch.float32                                 # torch's _get_scalar_dtype()
        for group, params in groups:
            lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
            beta1, beta2 = group["betas"]
            maximize = group.get("maximize", False)
            decoupled = group.get("decoupled_weight_decay", False) or \
                type(base) is torch.optim.AdamW
            if group.get("fused"):
                _compiled_adam(base.state, params, a_of, float(lr), float(beta1), float(beta2),
                               float(eps), float(weight_decay), bool(decoupled), bool(maximize))
                continue
            buckets: dict[tuple[Any, ...], list[list[Any]]] = {}
            for p in params:
                state = base.state[p]
                if len(state) == 0:              # lazy initialisation, as Adam._init_group
                    _init_adam_state(state, p, torch.tensor(0.0, dtype=scalar_dtype,
                                                            device="cpu"))
                a = a_of.get(id(p))                     # None: not attenuated
                tensors = (p, p.grad, state["exp_avg"], state["exp_avg_sq"], state["step"], a)
                bucket = buckets.setdefault((p.device, p.dtype, a is None), [[] for _ in tensors])
                for values, value in zip(bucket, tensors):
                    values.append(value)
            for ps, grads, exp_avgs, exp_avg_sqs, steps, attenuations in _chunks(buckets):
                # torch.optim.adam._multi_tensor_adam (non-capturable), op for op
                if maximize:
                    grads = torch._foreach_neg(grads)
                if steps[0].is_cpu:
                    torch._foreach_add_(steps, torch.tensor(1.0, device="cpu"), alpha=1.0)
                else:
                    torch._foreach_add_(steps, 1)
                held = attenuations[0] is not None
                if weight_decay != 0:
                    if decoupled and held:               # θ ← θ − lr·wd·A ⊙ θ
                        torch._foreach_addcmul_(ps, ps, attenuations, value=-lr * weight_decay)
                    elif decoupled:
                        torch._foreach_mul_(ps, 1 - lr * weight_decay)
                    elif maximize:                       # grads is our own copy already
                        torch._foreach_add_(grads, ps, alpha=weight_decay)
                    else:
                        grads = torch._foreach_add(grads, ps, alpha=weight_decay)
                torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
                torch._foreach_mul_(exp_avg_sqs, beta2)
                torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
                del grads
                counts = [step.item() for step in steps]
                step_size = [(lr / (1 - beta1 ** t)) * -1 for t in counts]
                bias_correction2_sqrt = [(1 - beta2 ** t) ** 0.5 for t in counts]
                denom = torch._foreach_sqrt(exp_avg_sqs)
                torch._foreach_div_(denom, bias_correction2_sqrt)
                torch._foreach_add_(denom, eps)
                if held:                                 # the one extra pass: denom / A
                    torch._foreach_div_(denom, attenuations)
                torch._foreach_addcdiv_(ps, exp_avgs, denom, step_size)

    def state_dict(self) -> dict[str, Any]:
        """The base optimizer's state plus WVA's configuration and stored A (or B = 1 − A)."""
        return {"base": self._base().state_dict(),
                "wva": {"config": self._config(), "parameters": self.params.describe(),
                        "stored": {k: v.clone() for k, v in self._tensors().items()}}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a `state_dict`; refuses one saved for different parameters."""
        self._base()                              # raises if unbound, before any check
        if "base" not in state_dict or "wva" not in state_dict:
            raise ValueError("Not a WVA state_dict (expected keys 'base' and 'wva').")
        wva = state_dict["wva"]
        tensors = wva["stored"] if "stored" in wva else \
            {f"reduction/{n}": v for n, v in wva["reduction"].items()}    # before A was stored
        # check WVA's part first: a refused state_dict must leave the base optimizer untouched
        self.params.check_description(wva["parameters"], "state_dict")
        self._check_state(dict(tensors), dict(wva["config"]), "state_dict")
        self._load_base_state(state_dict["base"])
        self.load_consolidation_state({"config": wva["config"], "parameters": wva["parameters"],
                                       "tensors": tensors}, "state_dict")

    # consolidation --------------------------------------------------------------------------
    @property
    def factor(self) -> dict[str, Tensor]:
        """The attenuation A per parameter, in its storage dtype (a new tensor each call)."""
        return {n: 1.0 - v if _as_reduction(v.dtype) else v.clone()
                for n, v in self._stored.items()}

    @property
    def reduction(self) -> dict[str, Tensor]:
        """B = 1 − A per parameter, in its storage dtype (a new tensor each call)."""
        return {n: v.clone() if _as_reduction(v.dtype) else 1.0 - v
                for n, v in self._stored.items()}

    @property
    def omega(self) -> dict[str, Tensor]:
        """Ω = Σ_t I_t per parameter, recovered from B: B/((1 − B)λ) or −log(1 − B)/λ."""
        if self.lam == 0:
            raise ValueError("WVA with lam=0 keeps no Ω: it is the base optimizer unchanged.")
        out = {}
        for n, b in self.reduction.items():
            b = b.to(torch.promote_types(b.dtype, torch.float32))
            out[n] = b / ((1.0 - b) * self.lam) if self.curve == "hyperbolic" \
                else -torch.log1p(-b) / self.lam
        return out

    @torch.no_grad()
    def consolidate(self, importance: Importance | None = None) -> None:
        """Ω ← Ω + I for a finished task."""
        imp = self._task_importance(importance)
        for n, p in self.params.params.items():
            i = shard_like(imp[n], p) if self.params.sharded else imp[n]   # FSDP2: this shard
            i = i.to(device=local(p).device, dtype=torch.promote_types(p.dtype, torch.float32))
            dtype = self.factor_dtype or p.dtype
            b = self._reduction_of(n, i.dtype) if n in self._stored else torch.zeros_like(i)
            b = _add_reduction(b, i, self.lam, self.curve)
            self._stored[n] = like((b if _as_reduction(dtype) else 1.0 - b).to(dtype), p)
        self.n_tasks += 1
        self._sync()

    def _reduction_of(self, name: str, dtype: torch.dtype) -> Tensor:
        """B for one parameter in `dtype` (from a stored A: 1 − A, exact for A ≥ 1/2)."""
        v = local(self._stored[name]).to(dtype)
        return v if _as_reduction(self._stored[name].dtype) else 1.0 - v

    def _sync(self) -> None:
        self._pairs = [(p, self._stored[n]) for n, p in self.params.params.items()
                       if n in self._stored]
        # A in the parameter's dtype, kept (it is the stored tensor itself) unless it must be
        # derived from a stored B or cast; those are derived at each step
        self._factors_cache = [local(v) for p, v in self._pairs      # sharded: the shards
                               if v.dtype == p.dtype and not _as_reduction(v.dtype)]
        if len(self._factors_cache) != len(self._pairs):
            self._factors_cache = []

    def _factors(self) -> list[Tensor]:
        """A per attenuated parameter, in its parameter's dtype."""
        if self._factors_cache:
            return self._factors_cache
        return [1.0 - local(v).to(p.dtype) if _as_reduction(v.dtype) else local(v).to(p.dtype)
                for p, v in self._pairs]

    def _tensors(self) -> dict[str, Tensor]:
        return {f"{'reduction' if _as_reduction(v.dtype) else 'factor'}/{n}": v
                for n, v in self._stored.items()}

    def _config(self) -> dict[str, Any]:
        return {"lam": self.lam, "curve": self.curve, "on": self.on, "n_tasks": self.n_tasks}

    def state_nbytes(self) -> int:
        """Bytes of the stored A (or B in half precision): one tensor per parameter.

        4 bytes per weight for an fp32 model, 2 with ``dtype=torch.bfloat16`` (half the fp32
        model's bytes). A step keeps nothing else (`memory_bytes` is the same).
        """
        return super().state_nbytes()

    def _check_state(self, tensors: Mapping[str, Tensor], config: Mapping[str, Any],
                     source: str) -> None:
        super()._check_state(tensors, config, source)
        for key, choices in (("curve", CURVES), ("on", PLACEMENTS)):
            if config.get(key) not in choices:
                raise ValueError(f"The {key!r} entry of the WVA state in {source!r} must be one "
                                 f"of {choices}. Got {config.get(key)!r} instead.")
        if not config["n_tasks"]:
            return
        for n in self.params.params:
            key = f"factor/{n}" if f"factor/{n}" in tensors else f"reduction/{n}"
            v = self._check_tensor(tensors, key, n, source)
            v = local(v)
            if bool(((v < 0) | (v > 1)).any()):
                raise ValueError(f"The WVA state in {source!r} has values outside [0, 1] in "
                                 f"{key!r}.")

    def _restore(self, tensors: dict[str, Tensor], config: dict[str, Any]) -> None:
        self._stored = {}
        for n, p in self.params.params.items():         # saved as A or as B; stored as ours
            saved_a, saved_b = tensors.get(f"factor/{n}"), tensors.get(f"reduction/{n}")
            if saved_a is None and saved_b is None:
                continue
            dtype = self.factor_dtype or p.dtype
            if (saved_a is None) != _as_reduction(dtype):     # convert in double precision
                saved = 1.0 - (saved_a if saved_b is None else saved_b).double()
            else:
                saved = saved_b if saved_a is None else saved_a
            if self.params.sharded:       # whole tensors (a file) or DTensors: this rank's shard
                self._stored[n] = like(shard_like(saved, p).to(device=local(p).device,
                                                               dtype=dtype), p)
            else:
                self._stored[n] = saved.to(device=p.device, dtype=dtype)
        self.lam, self.curve, self.on = float(config["lam"]), config["curve"], config["on"]
        self.n_tasks = int(config["n_tasks"])
        self._sync()

    def __repr__(self) -> str:
        base = "unbound" if self.base_optimizer is None else type(self.base_optimizer).__name__
        return (f"WVA({base}, lam={self.lam}, curve={self.curve!r}, on={self.on!r}, "
                f"tasks={self.n_tasks})")


def _chunks(buckets: dict[tuple[Any, ...], list[list[Any]]]) -> Iterable[list[list[Any]]]:
    """Each bucket's lists, on the CPU cut into runs of about `_CPU_CHUNK` elements.

    A tensor larger than that is a run of its own; other devices get the whole bucket (one
    launch per foreach op).
    """
    for (device, *_), lists in buckets.items():
        if device.type != "cpu":
            yield lists
            continue
        start, size = 0, 0
        for i, p in enumerate(lists[0]):
            if size and size + p.numel() > _CPU_CHUNK:
                yield [values[start:i] for values in lists]
                start, size = i, 0
            size += p.numel()
        if start < len(lists[0]):
            yield [values[start:] for values in lists]


def _compiled_adam(state: Any, params: list[Tensor], a_of: dict[int, Tensor], lr: float,
                   beta1: float, beta2: float, eps: float, weight_decay: float, decoupled: bool,
                   maximize: bool) -> None:
    """WVA's Adam step for a ``fused=True`` group: `adam_kernels`, one call per parameter.

    The state is torch's fused layout (a float32 ``step`` tensor on the parameter's device,
    ``exp_avg``, ``exp_avg_sq``), created lazily as ``Adam._init_group`` does.
    """
    kernels = adam_kernels()
    assert kernels is not None                   # `_adam_groups` checked
    threads = torch.get_num_threads() > 1
    for p in params:
        s = state[p]
        if len(s) == 0:                          # fused layout: float32 step on p's device
            _init_adam_state(s, p, torch.zeros((), dtype=torch.float32, device=p.device))
        s["step"] += 1
        t = s["step"].item()
        a = a_of.get(id(p))
        factor = flat(p) if a is None else flat(a.contiguous())      # p: unused when no A
        kernels[threads and p.numel() >= PARALLEL_FROM](
            flat(p), flat(p.grad), flat(s["exp_avg"]), flat(s["exp_avg_sq"]), factor,
            a is not None, lr, beta1, beta2, eps, weight_decay, decoupled, maximize,
            lr / (1 - beta1 ** t), (1 - beta2 ** t) ** 0.5)


def _init_adam_state(state: dict[str, Any], p: Tensor, step: Tensor) -> None:
    """Adam's lazily created state for `p`, as ``Adam._init_group`` makes it."""
    state["step"] = step
    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
