"""Weight Velocity Attenuation (Kutalev 2020; Kutalev & Lapina 2022) as an optimizer wrapper."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from ..importance.base import Importance
from ._wrapper import WrappedOptimizer
from .base import Consolidator, ParameterSet, check_lam

__all__ = ["CURVES", "PLACEMENTS", "WVA", "attenuation"]

CURVES = ("hyperbolic", "exponential")
PLACEMENTS = ("step", "grad")


def attenuation(omega: Tensor, lam: float, curve: str = "hyperbolic") -> Tensor:
    """The per-element factor A in (0, 1]: 1/(1 + λΩ) or exp(−λΩ); A = 1 where Ω = 0."""
    if curve == "hyperbolic":
        return 1.0 / (1.0 + lam * omega)
    if curve == "exponential":
        return torch.exp(-lam * omega)
    raise ValueError(f"curve must be one of {CURVES}. Got {curve!r} instead.")


def _add_reduction(b: Tensor, importance: Tensor, lam: float, curve: str) -> Tensor:
    """B' = 1 − A' for Ω' = Ω + I, from B = 1 − A, computed without forming 1 − B's rounding.

    Hyperbolic: A' = A/(1 + λIA), so B' = (B + λIA)/(1 + λIA). Exponential: A' = A·exp(−λI),
    so B' = B + A·(1 − exp(−λI)). Both stay accurate where B is tiny (A rounds to 1).
    """
    a = 1.0 - b
    if curve == "hyperbolic":
        x = lam * importance * a
        return (b + x) / (1.0 + x)
    return b - a * torch.expm1(-lam * importance)


class WVA(WrappedOptimizer, Consolidator):
    """Wrap any optimizer so that each parameter's update is scaled by A = 1/(1 + λΩ).

    No loss term and no anchor: important weights simply move slowly. Ω accumulates the tasks'
    importances (`consolidate`). The one extra tensor kept per parameter (optionally in bf16/fp16)
    is the reduction B = 1 − A, updated exactly when a task's I is added (A ← A / (1 + λ·I·A)
    hyperbolic, A ← A·exp(−λI) exponential), so a step computes nothing but the scaling. Storing
    B rather than A keeps small attenuations exact in half precision (A = 1 − 10⁻⁴ rounds to 1
    in bf16; B = 10⁻⁴ does not) and lets the step be one fused lerp. A is `factor`, Ω is
    `omega` (both derived from B; λ is therefore fixed once tasks are consolidated).

    ``on="step"`` (default): θ ← θ_prev + A ⊙ (θ_opt − θ_prev) after the base optimizer's step.
    ``on="grad"``: g ← A ⊙ g before it. With plain SGD (no momentum, no weight decay) the two are
    the same update (equal up to rounding: the arithmetic is ordered differently), and both
    take a fused path in place of the base step unless hooks are attached to the base
    optimizer: θ ← θ − lr·(g − B ⊙ g) in two foreach ops; ``on="step"`` leaves ``.grad``
    untouched, ``on="grad"`` leaves A ⊙ g in it. With Adam, gradient attenuation is cancelled
    by Adam's normalisation by the second moment (Kutalev & Lapina 2022 found Adam + gradient
    attenuation does not protect old tasks while Adam + step attenuation does): use
    ``on="step"`` for every optimizer but SGD.

    It is a `torch.optim.Optimizer` sharing the base optimizer's ``param_groups``, so LR
    schedulers, ``zero_grad`` and ``state_dict`` work as usual.

    Args:
        base_optimizer: Any torch optimizer over the model's parameters.
        model_or_params: The model (parameter names come from it) or its parameters.
        lam: λ ≥ 0.
        curve: "hyperbolic" (1/(1 + λΩ), the authors' choice) or "exponential" (exp(−λΩ)).
        on: "step" or "grad".
        dtype: Store A in this dtype (e.g. torch.bfloat16 halves its memory).
    """

    name = "wva"

    def __init__(self, base_optimizer: torch.optim.Optimizer,
                 model_or_params: nn.Module | Iterable[Any], lam: float, *,
                 curve: str = "hyperbolic", on: str = "step", dtype: torch.dtype | None = None):
        if curve not in CURVES:
            raise ValueError(f"The 'curve' parameter of WVA must be one of {CURVES}. "
                             f"Got {curve!r} instead.")
        if on not in PLACEMENTS:
            raise ValueError(f"The 'on' parameter of WVA must be one of {PLACEMENTS}. "
                             f"Got {on!r} instead.")
        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise TypeError(f"dtype must be a floating torch.dtype or None. Got {dtype!r}.")
        self.params = ParameterSet(model_or_params, "WVA")
        self.lam = check_lam(lam, "WVA")
        self.curve, self.on, self.factor_dtype = curve, on, dtype
        self.reduction: dict[str, Tensor] = {}          # B = 1 − A per parameter
        self.n_tasks = 0
        self._wrap(base_optimizer, self.params, "WVA",
                   "pass the model whose parameters it optimizes")
        self._pairs: list[tuple[Tensor, Tensor]] = []

    # optimizer interface --------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> Any:  # type: ignore[override]
        """Take the base optimizer's step, attenuated by A (see the class docstring)."""
        self.params.check_unchanged(throttle=True)
        if not self._pairs:
            return self.base_optimizer.step(closure)
        reductions = self._reductions()
        plain_sgd = self._plain_sgd()
        if closure is None and plain_sgd and \
                self._fused_sgd_step(reductions, write_grad=self.on == "grad"):
            return None
        if self.on == "grad" or plain_sgd:
            # plain SGD: θ − lr·(A ⊙ g) is exactly θ_prev + A ⊙ (θ_opt − θ_prev), and cheaper
            if closure is None:
                self._attenuate_grads(reductions)
                return self.base_optimizer.step()

            def attenuated_closure() -> Any:       # the closure recomputes the gradients
                with torch.enable_grad():
                    loss = closure()
                self._attenuate_grads(reductions)
                return loss

            return self.base_optimizer.step(attenuated_closure)
        params = [p for p, _ in self._pairs]
        before = torch._foreach_mul(params, 1.0)      # a copy of θ_prev
        loss = self.base_optimizer.step(closure)
        # θ ← θ + B ⊙ (θ_prev − θ) = θ_prev + A ⊙ (θ − θ_prev), in place
        torch._foreach_lerp_(params, before, reductions)
        return loss

    @torch.no_grad()
    def _attenuate_grads(self, reductions: list[Tensor]) -> None:
        """Scale the gradients: g ← A ⊙ g = g − B ⊙ g."""
        with_grad = [(p.grad, b) for (p, _), b in zip(self._pairs, reductions)
                     if p.grad is not None]
        if with_grad:
            grads = [g for g, _ in with_grad]
            torch._foreach_addcmul_(grads, [b for _, b in with_grad], grads, value=-1.0)

    @torch.no_grad()
    def _fused_sgd_step(self, reductions: list[Tensor], write_grad: bool = False) -> bool:
        """Plain SGD on A ⊙ g in place of the base step; False (nothing done) if it cannot apply.

        θ ← θ + s·(g − B ⊙ g) with s = −lr (lr if maximizing), in two foreach ops. ``.grad`` is
        left untouched unless `write_grad` (``on="grad"``: it then holds A ⊙ g, as the unfused
        path leaves it). A compiled one-pass kernel (as EWC.wrap uses) measured no faster here.
        The base optimizer's own per-step work is skipped, so this is used only when nothing is
        attached to it: no step hooks, no tensor lr, no sparse or differentiable gradients.
        """
        if self._step_hooked(own=False):    # hooks on WVA itself see what the unfused step gives
            return False
        b_of = {id(p): b for (p, _), b in zip(self._pairs, reductions)}
        plan = []
        for group in self.param_groups:
            lr = group["lr"]
            if isinstance(lr, Tensor) or group.get("differentiable", False):
                return False
            params = [p for p in group["params"] if p.grad is not None]
            if any(p.grad.is_sparse for p in params):
                return False
            plan.append((-lr if not group.get("maximize", False) else lr, params))
        for signed_lr, params in plan:
            rest = [p for p in params if id(p) not in b_of]
            held = [(p, b_of[id(p)]) for p in params if id(p) in b_of]
            if held and write_grad:               # g ← g − B ⊙ g, then the plain step
                grads = [p.grad for p, _ in held]
                torch._foreach_addcmul_(grads, [b for _, b in held], grads, value=-1.0)
                rest += [p for p, _ in held]
            elif held:
                torch._foreach_add_([p for p, _ in held], [p.grad for p, _ in held],
                                    alpha=signed_lr)
                torch._foreach_addcmul_([p for p, _ in held], [p.grad for p, _ in held],
                                        [b for _, b in held], value=-signed_lr)
            if rest:
                torch._foreach_add_(rest, [p.grad for p in rest], alpha=signed_lr)
        return True

    def _plain_sgd(self) -> bool:
        """True when the base optimizer's step is −lr·g (SGD, no momentum or weight decay)."""
        return type(self.base_optimizer) is torch.optim.SGD and all(
            g.get("momentum", 0) == 0 and g.get("weight_decay", 0) == 0
            for g in self.param_groups)

    def state_dict(self) -> dict[str, Any]:
        """The base optimizer's state plus WVA's configuration and reductions B = 1 − A."""
        return {"base": self.base_optimizer.state_dict(),
                "wva": {"config": self._config(), "parameters": self.params.describe(),
                        "reduction": {n: v.clone() for n, v in self.reduction.items()}}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a `state_dict`; refuses one saved for different parameters."""
        if "base" not in state_dict or "wva" not in state_dict:
            raise ValueError("Not a WVA state_dict (expected keys 'base' and 'wva').")
        self.base_optimizer.load_state_dict(state_dict["base"])
        wva = state_dict["wva"]
        self.load_consolidation_state({"config": wva["config"], "parameters": wva["parameters"],
                                       "tensors": {f"reduction/{n}": v
                                                   for n, v in wva["reduction"].items()}},
                                      "state_dict")

    # consolidation --------------------------------------------------------------------------
    @property
    def factor(self) -> dict[str, Tensor]:
        """The attenuation A = 1 − B per parameter (a new tensor each call)."""
        return {n: 1.0 - b for n, b in self.reduction.items()}

    @property
    def omega(self) -> dict[str, Tensor]:
        """Ω = Σ_t I_t per parameter, recovered from B: B/((1 − B)λ) or −log(1 − B)/λ."""
        if self.lam == 0:
            raise ValueError("WVA with lam=0 keeps no Ω: it is the base optimizer unchanged.")
        out = {}
        for n, b in self.reduction.items():
            b = b.float()
            out[n] = b / ((1.0 - b) * self.lam) if self.curve == "hyperbolic" \
                else -torch.log1p(-b) / self.lam
        return out

    @torch.no_grad()
    def consolidate(self, importance: Importance | None = None) -> None:
        """Ω ← Ω + I for a finished task."""
        imp = self._task_importance(importance)
        for n, p in self.params.params.items():
            i = imp[n].to(device=p.device, dtype=torch.promote_types(p.dtype, torch.float32))
            b = self.reduction[n].to(i.dtype) if n in self.reduction else torch.zeros_like(i)
            self.reduction[n] = _add_reduction(b, i, self.lam, self.curve).to(
                self.factor_dtype or p.dtype)
        self.n_tasks += 1
        self._sync()

    def _sync(self) -> None:
        self._pairs = [(p, self.reduction[n]) for n, p in self.params.params.items()
                       if n in self.reduction]

    def _reductions(self) -> list[Tensor]:
        """B per attenuated parameter, in its dtype (a bf16/fp16 B is cast at each step)."""
        return [b if b.dtype == p.dtype else b.to(p.dtype) for p, b in self._pairs]

    def _tensors(self) -> dict[str, Tensor]:
        return {f"reduction/{n}": v for n, v in self.reduction.items()}

    def _config(self) -> dict[str, Any]:
        return {"lam": self.lam, "curve": self.curve, "on": self.on, "n_tasks": self.n_tasks}

    def _restore(self, tensors: dict[str, Tensor], config: dict[str, Any]) -> None:
        current = self.params.params
        saved_as_a = {k[7:]: v for k, v in tensors.items() if k.startswith("factor/")}
        tensors = {**tensors, **{f"reduction/{n}": 1.0 - a.double() for n, a in saved_as_a.items()}}
        self.reduction = {n: tensors[f"reduction/{n}"].to(device=p.device,
                                                           dtype=self.factor_dtype or p.dtype)
                          for n, p in current.items() if f"reduction/{n}" in tensors}
        self.lam, self.curve, self.on = float(config["lam"]), config["curve"], config["on"]
        self.n_tasks = int(config["n_tasks"])
        self._sync()

    def __repr__(self) -> str:
        return (f"WVA({type(self.base_optimizer).__name__}, lam={self.lam}, "
                f"curve={self.curve!r}, on={self.on!r}, tasks={self.n_tasks})")
