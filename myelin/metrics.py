"""Continual-learning metrics, pure functions of an accuracy matrix.

``a[k, j]`` is the test accuracy on task j after training task k (0-based here; T tasks, shape
(T, T)). Entries above the diagonal (tasks not yet trained) are used only by forward transfer.
`ci95` summarises one metric over seeds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["average_accuracy", "average_accuracy_curve", "backward_transfer", "ci95", "forgetting",
           "forward_transfer", "learning_accuracy", "summary", "two_task_forgetting"]

Matrix = Sequence[Sequence[float]] | np.ndarray


def _check(a: Matrix, min_tasks: int = 1) -> np.ndarray:
    m = np.asarray(a, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"The accuracy matrix must be square (T, T). Got shape {m.shape}.")
    if m.shape[0] < min_tasks:
        raise ValueError(f"This metric needs at least {min_tasks} tasks; the matrix has "
                         f"{m.shape[0]}.")
    if not np.isfinite(m).all():
        raise ValueError("The accuracy matrix contains NaN or inf.")
    return m


def average_accuracy(a: Matrix) -> float:
    """AA = A_T = (1/T) Σ_j a[T, j], the mean of the last row (Chaudhry et al. 2018; GEM's ACC)."""
    m = _check(a)
    return float(m[-1].mean())


def average_accuracy_curve(a: Matrix) -> list[float]:
    """A_k = (1/k) Σ_{j≤k} a[k, j] after each task k: the seeds' "total accuracy after n tasks"."""
    m = _check(a)
    return [float(m[k, :k + 1].mean()) for k in range(m.shape[0])]


def forgetting(a: Matrix) -> float:
    """FM = F_T = (1/(T−1)) Σ_{j<T} max_{l<T} a[l, j] − a[T, j] (Chaudhry et al. 2018, eq. 3)."""
    m = _check(a, 2)
    return float((m[:-1, :-1].max(axis=0) - m[-1, :-1]).mean())


def backward_transfer(a: Matrix) -> float:
    """BWT = (1/(T−1)) Σ_{j<T} a[T, j] − a[j, j] (Lopez-Paz & Ranzato 2017, GEM)."""
    m = _check(a, 2)
    return float((m[-1, :-1] - np.diag(m)[:-1]).mean())


def forward_transfer(a: Matrix, random_init: Sequence[float]) -> float:
    """FWT = (1/(T−1)) Σ_{j≥2} a[j−1, j] − b_j, b = accuracies at random initialisation (GEM)."""
    m = _check(a, 2)
    b = np.asarray(random_init, dtype=np.float64)
    if b.shape != (m.shape[0],):
        raise ValueError(f"random_init must hold one accuracy per task ({m.shape[0]}); got "
                         f"shape {b.shape}.")
    return float(np.mean([m[j - 1, j] - b[j] for j in range(1, m.shape[0])]))


def learning_accuracy(a: Matrix) -> float:
    """LA = (1/T) Σ_j a[j, j], accuracy on each task right after learning it (CTN; GEM diag)."""
    m = _check(a)
    return float(np.diag(m).mean())


def two_task_forgetting(a: Matrix) -> float:
    """Two-task FM of the seeds' E/MNIST tables: a[1, 1] − a[2, 1] (1-based), first task only."""
    m = _check(a, 2)
    return float(m[0, 0] - m[1, 0])


def summary(a: Matrix, random_init: Sequence[float] | None = None) -> dict[str, float]:
    """Every metric that the matrix (and optional random-init accuracies) defines."""
    m = _check(a)
    out = {"average_accuracy": average_accuracy(m), "learning_accuracy": learning_accuracy(m)}
    if m.shape[0] >= 2:
        out.update(forgetting=forgetting(m), backward_transfer=backward_transfer(m),
                   two_task_forgetting=two_task_forgetting(m))
        if random_init is not None:
            out["forward_transfer"] = forward_transfer(m, random_init)
    return out


def ci95(values: Iterable[float]) -> tuple[float, float]:
    """Mean and half-width of the 95 % Student-t confidence interval of the mean.

    The half-width is t₀.₉₇₅(n−1) · s / √n with s the sample standard deviation (ddof 1) and
    t from ``scipy.stats.t.ppf``. For a single value it is NaN: one run says nothing about the
    spread (it is undefined, not 0). Report ``mean ± half``.

    Args:
        values: One value per run (e.g. the average accuracy of each seed).

    Returns:
        ``(mean, half_width)``.

    Raises:
        ValueError: No values.
    """
    v = np.asarray(list(values), dtype=np.float64)
    if v.ndim != 1 or len(v) == 0:
        raise ValueError(f"ci95 needs a non-empty list of numbers. Got shape {v.shape}.")
    mean = float(v.mean())
    if len(v) < 2:
        return mean, math.nan
    from scipy.stats import t as student  # scipy comes with scikit-learn; imported on use

    return mean, float(student.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
