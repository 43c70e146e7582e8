"""myelin.memory.keep_freed_memory: glibc stops mmap-ing large blocks (checked in a child)."""

import subprocess
import sys

import pytest

CHILD = r"""
import ctypes, sys
from myelin.memory import keep_freed_memory

libc = ctypes.CDLL(None)

class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]

def mmapped_after_malloc(size):
    before = libc.mallinfo2().hblkhd
    p = libc.malloc(size)
    grew = libc.mallinfo2().hblkhd - before
    libc.free(p)
    return grew

big = 64 << 20
assert mmapped_after_malloc(big) >= big          # glibc's default: a block of its own
assert keep_freed_memory() is True
assert mmapped_after_malloc(big) == 0            # now from the heap, kept when freed
print("ok")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_keep_freed_memory_stops_mmap_of_large_blocks():
    import ctypes

    if not hasattr(ctypes.CDLL(None), "mallinfo2"):
        pytest.skip("C library without mallinfo2 (not glibc ≥ 2.33)")
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_keep_freed_memory_is_false_off_linux(monkeypatch):
    from myelin import memory

    monkeypatch.setattr(memory.sys, "platform", "darwin")
    assert memory.keep_freed_memory() is False
