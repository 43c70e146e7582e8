"""The benchmarks run end to end on tiny sizes, so they cannot rot (no timing assertions)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import find_mnist  # noqa: E402

try:
    find_mnist()
    HAVE_MNIST = True
except FileNotFoundError:
    HAVE_MNIST = False

needs_mnist = pytest.mark.skipif(not HAVE_MNIST, reason="MNIST IDX files not found "
                                 "(../shared/data/mnist or $MYELIN_DATA/mnist)")


def run(script, *args):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


@needs_mnist
def test_importance_benchmark_smoke(tmp_path):
    out = tmp_path / "imp.json"
    run("importance.py", "--n", "64", "--batch-size", "32", "--cnn-batch-size", "32",
        "--repeats", "1", "--quick",
        "--out", str(out))
    data = json.loads(out.read_text())
    assert {r["model"] for r in data["results"]} == {"mlp", "cnn"}
    for r in data["results"]:
        assert r["fisher_empirical_ratio"] > 0 and r["fisher_max_rel_error_vs_vmap"] < 1e-3


@needs_mnist
def test_overhead_benchmark_smoke(tmp_path):
    out = tmp_path / "over.json"
    run("overhead.py", "--tasks", "2", "--steps", "3", "--repeats", "1", "--out", str(out))
    data = json.loads(out.read_text())
    assert len(data["per_task"]) == 2
    assert data["summary"]["ewc_autograd"]["extra_tensors_per_parameter"] == 2.0
    assert data["summary"]["wva_step"]["extra_tensors_per_parameter"] == 1.0


def test_tables_render_committed_results():
    proc = run("tables.py")
    assert "### importance" in proc.stdout and "### overhead" in proc.stdout
