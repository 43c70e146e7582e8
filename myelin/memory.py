"""Process memory settings for training on the CPU.

On Linux with glibc, ``malloc`` hands blocks above a threshold (128 KiB, raised dynamically up
to 32 MiB) straight to the kernel with ``mmap`` and gives the top of its heap back when more
than twice that is free. A training step frees and re-allocates its activations and gradients
every step; whether they come back as already-mapped heap memory or as fresh pages (one minor
page fault per 4 KiB, each zeroed by the kernel) depends on the process's allocation history.
Measured on SmolLM2-135M (batch 4 × 128, 2 threads, `benchmarks/llm_cost.py`): holding a
consolidator's state (or any allocation of that size) moved plain Trainer steps from 0 to
~230 000 faults per step, +0.6–1.1 s on a 3.5 s step. `keep_freed_memory` makes glibc keep freed
memory for reuse, so every step after the first faults nothing in.
"""

from __future__ import annotations

import ctypes
import sys

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD = -1      # glibc <malloc.h>
_M_MMAP_MAX = -4


def keep_freed_memory() -> bool:
    """Make this process's ``malloc`` keep freed memory for reuse (Linux, glibc); True if set.

    Equivalent to starting Python with ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647``:
    no block is ``mmap``-ed on its own, and the heap is not shrunk until 2 GiB at its top are
    free. The process's resident memory then stays at its peak (memory is reused, not given
    back), so call it in a training process, not in a long-lived one that peaks once. Affects
    allocations made after the call, for the whole process (not only PyTorch's). Returns False,
    changing nothing, where the C library has no ``mallopt`` (macOS, Windows, musl).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
