"""Compiled one-pass SGD updates for the consolidation fast paths (numba; CPU tensors)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

__all__ = ["PARALLEL_FROM", "compilable", "flat", "sgd_pull_kernels", "sgd_scaled_kernels"]

PARALLEL_FROM = 32768     # elements; below this a thread pool costs more than it saves

Kernels = tuple[Callable[..., None], Callable[..., None]]


def _serial_and_parallel(fn: Callable[..., None]) -> Kernels:
    from numba import njit
    return (njit(cache=True, fastmath=True)(fn),
            njit(cache=True, fastmath=True, parallel=True)(fn))


@functools.cache
def sgd_pull_kernels() -> Kernels | None:
    """θ ← θ − lr·g − k·c ⊙ (θ − θ*) in one pass (serial, parallel), or None without numba.

    θ, c and θ* are flat arrays; g is the gradient array of any shape (C-contiguous).
    """
    try:
        from numba import prange
    except ImportError:                        # pragma: no cover - numba is a dependency
        return None

    def sgd_pull(theta, grad, coef, anchor, lr, k):          # pragma: no cover - compiled
        g = grad.reshape(theta.size)
        for i in prange(theta.size):
            theta[i] = theta[i] - lr * g[i] - k * coef[i] * (theta[i] - anchor[i])

    return _serial_and_parallel(sgd_pull)


@functools.cache
def sgd_scaled_kernels() -> Kernels | None:
    """θ ← θ + s·(1 − B) ⊙ g in one pass, and g ← (1 − B) ⊙ g if asked (serial, parallel).

    θ and B are flat arrays; g is the gradient array of any shape (C-contiguous).
    """
    try:
        from numba import prange
    except ImportError:                        # pragma: no cover - numba is a dependency
        return None

    def sgd_scaled(theta, grad, red, s, write_grad):          # pragma: no cover - compiled
        g = grad.reshape(theta.size)
        for i in prange(theta.size):
            a = g[i] - red[i] * g[i]
            theta[i] += s * a
            if write_grad:
                g[i] = a

    return _serial_and_parallel(sgd_scaled)


def flat(t: Tensor) -> Any:
    """A flat numpy view of a contiguous CPU tensor (shares its memory)."""
    return t.detach().view(-1).numpy()


def compilable(tensors: list[Tensor], dtype: torch.dtype) -> bool:
    """True if every tensor is a contiguous CPU float32/float64 tensor of `dtype`."""
    return dtype in (torch.float32, torch.float64) and all(
        t.device.type == "cpu" and t.dtype == dtype and t.is_contiguous() for t in tensors)
