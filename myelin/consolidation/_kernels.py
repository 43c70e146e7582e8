"""Compiled one-pass optimizer updates (numba; CPU).

The SGD step with the pull folded in (EWC.wrap / L2.wrap), the pull added to a gradient
(`apply_to_grad`, the route of every other optimizer and of the Hugging Face callback), and
WVA's attenuated Adam step for a base optimizer built with ``fused=True``.
"""

from __future__ import annotations

import functools
import math
import types
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .._numba import launch_threads

__all__ = ["PARALLEL_FROM", "adam_kernels", "compilable", "flat", "grad_pull_kernels",
           "sgd_pull_kernels"]

# elements; below this numba's thread pool costs more than it saves (float32, 2 cores:
# parallel ÷ serial time 2.2 at 1 500 elements, 1.19 at 8 192, 0.91 at 16 384, 0.66 at 45 000)
PARALLEL_FROM = 16384

Kernels = tuple[Callable[..., None], Callable[..., None]]


def _serial_and_parallel(fn: Callable[..., None]) -> Kernels:
    """`fn` compiled twice, serial and parallel, each with its own on-disk cache.

    Numba's cache index is keyed by the function's qualified name and signature, not by its
    options (numba issue #6845): two jits of one function would share one cache entry, and
    whichever ran first would be loaded for both. Each version therefore gets a copy of the
    function under its own name.
    """
    from numba import njit

    def renamed(suffix: str) -> Callable[..., None]:
        twin = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__,
                                  fn.__closure__)
        twin.__qualname__ = f"{fn.__qualname__}_{suffix}"
        return twin

    return (njit(cache=True, fastmath=True)(renamed("serial")),
            njit(cache=True, fastmath=True, parallel=True)(renamed("parallel")))


@functools.cache
def sgd_pull_kernels() -> Kernels | None:
    """θ ← θ − lr·g − k·c ⊙ (θ − θ*) in one pass (serial, parallel), or None without numba.

    θ, c and θ* are flat arrays; g is the gradient array of any shape (C-contiguous).
    """
    try:
        from numba import prange
    except ImportError:                        # pragma: no cover - numba is a dependency
        return None
    launch_threads()

    def sgd_pull(theta, grad, coef, anchor, lr, k):          # pragma: no cover - compiled
        g = grad.reshape(theta.size)
        for i in prange(theta.size):
            theta[i] = theta[i] - lr * g[i] - k * coef[i] * (theta[i] - anchor[i])

    return _serial_and_parallel(sgd_pull)


@functools.cache
def grad_pull_kernels() -> tuple[Kernels, Kernels] | None:
    """Kernels adding k·c ⊙ (θ − θ*), or k·(θ − θ*), to g in one pass; None without numba.

    Each as (serial, parallel); flat arrays. One read of g, θ, (c,) θ* and one write of g,
    and no temporary: torch's foreach form allocates θ − θ* for the whole model every step,
    which for a large model costs page faults comparable to the arithmetic.
    """
    try:
        from numba import prange
    except ImportError:                        # pragma: no cover - numba is a dependency
        return None
    launch_threads()

    def grad_pull(grad, theta, coef, anchor, k):             # pragma: no cover - compiled
        for i in prange(theta.size):
            grad[i] += k * coef[i] * (theta[i] - anchor[i])

    def grad_pull_uniform(grad, theta, anchor, k):           # pragma: no cover - compiled
        for i in prange(theta.size):
            grad[i] += k * (theta[i] - anchor[i])

    return _serial_and_parallel(grad_pull), _serial_and_parallel(grad_pull_uniform)


@functools.cache
def adam_kernels() -> Kernels | None:
    """One Adam/AdamW step, its update scaled by A, in one pass (serial, parallel); or None.

    Arguments ``(p, g, m, v, a, has_a, lr, beta1, beta2, eps, weight_decay, decoupled,
    maximize, step_size, bc2_sqrt)``, flat arrays of one dtype (``a`` ignored unless
    ``has_a``), step_size = lr / (1 − β₁ᵗ), bc2_sqrt = √(1 − β₂ᵗ). Per element, torch's fused
    CPU Adam (``_fused_adam_``/``_fused_adamw_``) with the update and the decoupled decay
    scaled by A: g ← −g if maximize; θ ← θ − lr·wd·A·θ (decoupled) or g ← g + wd·θ;
    m ← m + (1 − β₁)(g − m); v ← β₂v + (1 − β₂)g²; θ ← θ − A·step_size·m/(√v/bc2_sqrt + ε).
    Reads θ, g, m, v, A once and writes θ, m, v once, as torch's fused step does without A.
    """
    try:
        from numba import prange
    except ImportError:                        # pragma: no cover - numba is a dependency
        return None
    launch_threads()

    def adam(p, g, m, v, a, has_a, lr, beta1, beta2, eps, weight_decay, decoupled,
             maximize, step_size, bc2_sqrt):                 # pragma: no cover - compiled
        for i in prange(p.size):
            gi = -g[i] if maximize else g[i]
            ai = a[i] if has_a else 1.0
            pi = p[i]
            if weight_decay != 0.0:
                if decoupled:
                    pi = pi - lr * weight_decay * ai * pi
                else:
                    gi = gi + weight_decay * pi
            mi = m[i] + (1.0 - beta1) * (gi - m[i])
            vi = beta2 * v[i] + (1.0 - beta2) * gi * gi
            m[i] = mi
            v[i] = vi
            p[i] = pi - ai * step_size * mi / (math.sqrt(vi) / bc2_sqrt + eps)

    return _serial_and_parallel(adam)


def flat(t: Tensor) -> Any:
    """A flat numpy view of a contiguous CPU tensor (shares its memory)."""
    return t.detach().view(-1).numpy()


def compilable(tensors: list[Tensor], dtype: torch.dtype) -> bool:
    """True if every tensor is a contiguous CPU float32/float64 tensor of `dtype`."""
    return dtype in (torch.float32, torch.float64) and all(
        t.device.type == "cpu" and t.dtype == dtype and t.is_contiguous() for t in tensors)
