"""Numba's thread pool, started without undoing the user's torch thread count."""

from __future__ import annotations

import functools

import torch

__all__ = ["launch_threads"]


@functools.cache
def launch_threads() -> None:
    """Start numba's threading layer once, then restore torch's thread count.

    Numba's OpenMP layer shares torch's libgomp and, when it starts, sets the OpenMP thread
    count to numba's own (every core): a ``torch.set_num_threads(1)`` made before the first
    parallel kernel would silently become 2+ threads, oversubscribing the cores of processes
    run side by side (seen with EWC.wrap's kernel). Call it before a numba kernel first runs.
    """
    threads = torch.get_num_threads()
    import numba

    numba.get_num_threads()                 # starts the threading layer
    torch.set_num_threads(threads)
