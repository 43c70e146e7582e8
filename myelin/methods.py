"""Continual-learning methods as the training loop sees them: a registry of small recipes.

A method is a consolidator (or none) built around the model and optimizer, plus the name of the
importance estimator run on the closing set after each task. The loop treats them all alike.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ._registry import Registry
from .consolidation import EWC, L2, WVA, Consolidator
from .importance import ESTIMATORS

__all__ = ["METHODS", "Method", "make_method"]

Build = Callable[[nn.Module, torch.optim.Optimizer],
                 tuple["Consolidator | None", torch.optim.Optimizer]]


@dataclass(frozen=True)
class Method:
    """A method ready for `myelin.fit`.

    Attributes:
        name: Registry name.
        build: ``(model, optimizer) -> (consolidator or None, optimizer to step)``.
        importance: Estimator run after each task ("fisher", "mas", "signal", ...), "si" for the
            online SI tracker, or None.
        config: The options, for the result JSON.
    """

    name: str
    build: Build
    importance: str | None = None
    config: dict[str, Any] = field(default_factory=dict)


def _lr(opt: torch.optim.Optimizer) -> float:
    return float(opt.param_groups[0]["lr"])


def _check_importance(name: str) -> str:
    if name != "si":
        ESTIMATORS.get(name)           # raises with suggestions
    return name


METHODS: Registry[Callable[..., Method]] = Registry("method")


@METHODS.register("finetune", "plain fine-tuning, no protection (the lower bound)")
def finetune() -> Method:
    """Plain fine-tuning."""
    return Method("finetune", lambda model, opt: (None, opt))


@METHODS.register("ewc", "EWC: quadratic pull to the anchor, importance-weighted")
def ewc(lam: float = 41.0, importance: str = "fisher", mode: str = "accumulate",
        gamma: float = 1.0, stabilized: bool = False) -> Method:
    """EWC with any importance estimator (fisher, fisher-sampled, fisher-exact, mas, signal, si)."""
    _check_importance(importance)
    EWC(nn.Linear(1, 1), lam, mode=mode, gamma=gamma)          # validate the options now

    def build(model: nn.Module, opt: torch.optim.Optimizer):
        penalty = EWC(model, lam, mode=mode, gamma=gamma, stabilized=stabilized,
                      lr=_lr(opt) if stabilized else None)
        return penalty, penalty.wrap(opt)        # the step applies it (fused for plain SGD)

    return Method("ewc", build, importance, {"lam": lam, "importance": importance, "mode": mode,
                                             "gamma": gamma, "stabilized": stabilized})


@METHODS.register("si", "Synaptic Intelligence: EWC-style penalty with path-integral importance")
def si(lam: float = 1.0, stabilized: bool = False) -> Method:
    """SI (Zenke et al. 2017): the accumulated penalty with the online SI importance."""
    method = ewc(lam=lam, importance="si", stabilized=stabilized)
    return Method("si", method.build, "si", {"lam": lam, "stabilized": stabilized})


@METHODS.register("mas", "MAS: EWC-style penalty with MAS importance")
def mas(lam: float = 4.5, stabilized: bool = False) -> Method:
    """MAS (Aljundi et al. 2018): the accumulated penalty with MAS importance."""
    method = ewc(lam=lam, importance="mas", stabilized=stabilized)
    return Method("mas", method.build, "mas", {"lam": lam, "stabilized": stabilized})


@METHODS.register("l2", "uniform quadratic pull to the last anchor (baseline)")
def l2(lam: float = 1.0) -> Method:
    """The L2 baseline."""
    L2(nn.Linear(1, 1), lam)

    def build(model: nn.Module, opt: torch.optim.Optimizer):
        penalty = L2(model, lam)
        return penalty, penalty.wrap(opt)

    return Method("l2", build, None, {"lam": lam})


@METHODS.register("wva", "weight velocity attenuation: updates scaled by 1/(1 + lam*omega)")
def wva(lam: float = 1000.0, importance: str = "signal", curve: str = "hyperbolic",
        on: str = "step") -> Method:
    """WVA around the loop's optimizer."""
    _check_importance(importance)
    probe = nn.Linear(1, 1)
    WVA(torch.optim.SGD(probe.parameters(), lr=0.1), probe, lam, curve=curve, on=on)

    def build(model: nn.Module, opt: torch.optim.Optimizer):
        wrapped = WVA(opt, model, lam, curve=curve, on=on)
        return wrapped, wrapped

    return Method("wva", build, importance, {"lam": lam, "importance": importance,
                                             "curve": curve, "on": on})


def make_method(name: str, **options: Any) -> Method:
    """Build a registered method, e.g. ``make_method("ewc", lam=41, importance="fisher")``.

    Raises:
        ValueError: Unknown method or option, or a bad option value.
    """
    factory = METHODS.get(name)
    accepted = set(inspect.signature(factory).parameters)
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ValueError(f"Method {name!r} takes no option(s) {unknown}. "
                         f"Its options: {sorted(accepted) or 'none'}.")
    return factory(**options)
