"""Weight Velocity Attenuation (Kutalev 2020; Kutalev & Lapina 2022) as an optimizer wrapper."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from ..importance.base import Importance
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


class WVA(torch.optim.Optimizer, Consolidator):
    """Wrap any optimizer so that each parameter's update is scaled by A = 1/(1 + λΩ).

    No loss term and no anchor: important weights simply move slowly. Ω accumulates the tasks'
    importances (`consolidate`). The one extra tensor kept per parameter (optionally in bf16/fp16)
    is the factor A itself, updated exactly when a task's I is added — A ← A / (1 + λ·I·A)
    (hyperbolic) or A ← A·exp(−λI) — so a step computes nothing but the scaling. Ω is available
    as `omega` (derived from A; λ is therefore fixed once tasks are consolidated).

    ``on="step"`` (default): θ ← θ_prev + A ⊙ (θ_opt − θ_prev) after the base optimizer's step.
    ``on="grad"``: g ← A ⊙ g before it. With plain SGD (no momentum, no weight decay) the two are
    identical. With Adam, gradient attenuation is cancelled by Adam's normalisation by the
    second moment (Kutalev & Lapina 2022 found Adam + gradient attenuation does not protect old
    tasks while Adam + step attenuation does): use ``on="step"`` for every optimizer but SGD.

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
        if not isinstance(base_optimizer, torch.optim.Optimizer):
            raise TypeError("WVA wraps a torch.optim.Optimizer; got "
                            f"{type(base_optimizer).__name__}.")
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
        self.base_optimizer = base_optimizer
        optimized = {id(p) for g in base_optimizer.param_groups for p in g["params"]}
        strangers = [n for n, p in self.params.params.items() if id(p) not in optimized]
        if strangers:
            raise ValueError(f"WVA: parameters {strangers} are not optimized by the base "
                             "optimizer; pass the model whose parameters it optimizes.")
        self.factor: dict[str, Tensor] = {}
        self.n_tasks = 0
        # share the base optimizer's groups (same dict objects): schedulers reach it through us
        self._initialized = False
        super().__init__(base_optimizer.param_groups, {})
        self.param_groups = base_optimizer.param_groups
        self._initialized = True
        self._pairs: list[tuple[Tensor, Tensor]] = []

    # optimizer interface --------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> Any:  # type: ignore[override]
        """Take the base optimizer's step, attenuated by A (see the class docstring)."""
        self.params.check_unchanged(throttle=True)
        if not self._pairs:
            return self.base_optimizer.step(closure)
        factors = self._factors()
        if self.on == "grad" or self._plain_sgd():
            # plain SGD: θ − lr·(A ⊙ g) is exactly θ_prev + A ⊙ (θ_opt − θ_prev), and cheaper
            if closure is None:
                self._attenuate_grads(factors)
                return self.base_optimizer.step()

            def attenuated_closure() -> Any:       # the closure recomputes the gradients
                with torch.enable_grad():
                    loss = closure()
                self._attenuate_grads(factors)
                return loss

            return self.base_optimizer.step(attenuated_closure)
        params = [p for p, _ in self._pairs]
        before = torch._foreach_mul(params, 1.0)      # a copy of θ_prev
        loss = self.base_optimizer.step(closure)
        torch._foreach_lerp_(before, params, factors)      # θ_prev + A ⊙ (θ − θ_prev)
        torch._foreach_copy_(params, before)
        return loss

    @torch.no_grad()
    def _attenuate_grads(self, factors: list[Tensor]) -> None:
        with_grad = [(p.grad, a) for (p, _), a in zip(self._pairs, factors) if p.grad is not None]
        if with_grad:
            torch._foreach_mul_([g for g, _ in with_grad], [a for _, a in with_grad])

    def _plain_sgd(self) -> bool:
        """True when the base optimizer's step is −lr·g (SGD, no momentum or weight decay)."""
        return type(self.base_optimizer) is torch.optim.SGD and all(
            g.get("momentum", 0) == 0 and g.get("weight_decay", 0) == 0
            for g in self.param_groups)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients, as the base optimizer does."""
        self.base_optimizer.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group to the base optimizer (its parameters are not attenuated)."""
        if not self._initialized:       # Optimizer.__init__ re-adding the shared groups
            return
        self.base_optimizer.add_param_group(param_group)

    def state_dict(self) -> dict[str, Any]:
        """The base optimizer's state plus WVA's configuration and factors A."""
        return {"base": self.base_optimizer.state_dict(),
                "wva": {"config": self._config(), "parameters": self.params.describe(),
                        "factor": {n: v.clone() for n, v in self.factor.items()}}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a `state_dict`; refuses one saved for different parameters."""
        if "base" not in state_dict or "wva" not in state_dict:
            raise ValueError("Not a WVA state_dict (expected keys 'base' and 'wva').")
        self.base_optimizer.load_state_dict(state_dict["base"])
        wva = state_dict["wva"]
        self.load_consolidation_state({"config": wva["config"], "parameters": wva["parameters"],
                                       "tensors": {f"factor/{n}": v
                                                   for n, v in wva["factor"].items()}},
                                      "state_dict")

    # consolidation --------------------------------------------------------------------------
    @property
    def omega(self) -> dict[str, Tensor]:
        """Ω = Σ_t I_t per parameter, recovered from A: (1/A − 1)/λ or −log(A)/λ."""
        if self.lam == 0:
            raise ValueError("WVA with lam=0 keeps no Ω: it is the base optimizer unchanged.")
        out = {}
        for n, a in self.factor.items():
            a = a.float()
            out[n] = (1.0 / a - 1.0) / self.lam if self.curve == "hyperbolic" \
                else -torch.log(a) / self.lam
        return out

    @torch.no_grad()
    def consolidate(self, importance: Importance | None = None) -> None:
        """Ω ← Ω + I for a finished task."""
        imp = self._task_importance(importance)
        for n, p in self.params.params.items():
            i = imp[n].to(device=p.device, dtype=torch.promote_types(p.dtype, torch.float32))
            if n not in self.factor:
                a = attenuation(i, self.lam, self.curve)
            elif self.curve == "hyperbolic":           # 1/(1 + λ(Ω + I)) from A = 1/(1 + λΩ)
                a = self.factor[n].to(i.dtype)
                a = a / (1.0 + self.lam * i * a)
            else:
                a = self.factor[n].to(i.dtype) * torch.exp(-self.lam * i)
            self.factor[n] = a.to(self.factor_dtype or p.dtype)
        self.n_tasks += 1
        self._sync()

    def _sync(self) -> None:
        self._pairs = [(p, self.factor[n]) for n, p in self.params.params.items()
                       if n in self.factor]

    def _factors(self) -> list[Tensor]:
        """A per attenuated parameter, in its dtype (a bf16/fp16 A is cast at each step)."""
        return [a if a.dtype == p.dtype else a.to(p.dtype) for p, a in self._pairs]

    def _tensors(self) -> dict[str, Tensor]:
        return {f"factor/{n}": v for n, v in self.factor.items()}

    def _config(self) -> dict[str, Any]:
        return {"lam": self.lam, "curve": self.curve, "on": self.on, "n_tasks": self.n_tasks}

    def _restore(self, tensors: dict[str, Tensor], config: dict[str, Any]) -> None:
        current = self.params.params
        self.factor = {n: tensors[f"factor/{n}"].to(device=p.device,
                                                     dtype=self.factor_dtype or p.dtype)
                       for n, p in current.items() if f"factor/{n}" in tensors}
        self.lam, self.curve, self.on = float(config["lam"]), config["curve"], config["on"]
        self.n_tasks = int(config["n_tasks"])
        self._sync()

    def __repr__(self) -> str:
        return (f"WVA({type(self.base_optimizer).__name__}, lam={self.lam}, "
                f"curve={self.curve!r}, on={self.on!r}, tasks={self.n_tasks})")
