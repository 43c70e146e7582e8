"""myelin's numba kernels leave torch's thread count as the user set it."""

import os
import subprocess
import sys

import pytest

PRELUDE = """
import numpy as np, torch
torch.set_num_threads(1)
assert torch.get_num_threads() == 1     # torch's OpenMP state is set up before numba starts
x = torch.randn(64, 64)
x @ x
"""
USES = {                  # the compiled kernels EWC.wrap / L2.wrap use
    "ewc-wrap-kernels": """
from myelin.consolidation._kernels import sgd_pull_kernels
serial, parallel = sgd_pull_kernels()
a = np.zeros(40000, dtype=np.float32)
serial(a, a, a, a, 0.1, 0.1)
parallel(a, a, a, a, 0.1, 0.1)
""",
}


@pytest.mark.parametrize("use", list(USES))
def test_numba_kernels_keep_torchs_thread_count(use):
    """Numba's OpenMP layer sets every core's worth of threads when it starts (a fresh
    process each time), which would undo the user's torch.set_num_threads(1)."""
    script = PRELUDE + USES[use] + "print(torch.get_num_threads())\n"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "1"


def test_serial_and_parallel_kernels_are_cached_apart(tmp_path):
    """Two jits of one function share numba's cache entry unless named apart (numba #6845):
    the 'serial' kernel would then load the parallel code, or the other way round."""
    script = """
import numpy as np
from myelin.consolidation._kernels import sgd_pull_kernels
serial, parallel = sgd_pull_kernels()
a = np.zeros(40000, dtype=np.float32)
serial(a, a, a, a, 0.1, 0.1)
parallel(a, a, a, a, 0.1, 0.1)
"""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    names = sorted(p.name for p in tmp_path.rglob("*sgd_pull*.nbi"))
    assert len(names) == 2, names
    assert any("serial" in n for n in names) and any("parallel" in n for n in names), names
