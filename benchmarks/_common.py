"""Shared helpers for the benchmarks: data location, seeds, timing, environment record."""

from __future__ import annotations

import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from myelin.data import read_idx
from myelin.models import mlp

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def parse_seeds(text: str) -> list[int]:
    """A --seeds argument as a list: "0-4" -> 0..4, "0,2,5" -> [0, 2, 5] (both may mix)."""
    out: list[int] = []
    for part in text.split(","):
        if "-" in part:
            a, b = part.split("-")
            out += list(range(int(a), int(b) + 1))
        elif part:
            out.append(int(part))
    return out


def seed_range(seeds: list[int]) -> str:
    """Seeds as a --seeds argument: 0-4 for a contiguous run, else 0,2,5."""
    seeds = sorted(seeds)
    if len(seeds) > 1 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return ",".join(map(str, seeds))


# Student's t, two-sided 95 %, by degrees of freedom (past 10 degrees of freedom the value at 10,
# a little wide): the benchmarks' intervals over a few seeds
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
       9: 2.262, 10: 2.228}


def sample_sd(values: list[float]) -> float:
    """Sample standard deviation (n − 1) of `values`; 0 for a single value."""
    if len(values) < 2:
        return 0.0
    mean = sum(values) / len(values)
    return (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5


def t_half_width(values: list[float], least: int = 3) -> float | None:
    """Half-width of the 95 % Student-t interval of the mean of `values`; None under `least`
    values (an interval from two seeds says little)."""
    n = len(values)
    if n < max(least, 2):
        return None
    return T95[min(n - 1, 10)] * sample_sd(values) / n ** 0.5


def interval(values: list[float]) -> str:
    """A mean over seeds with its 95 % t-interval's half-width (the mean alone under 3)."""
    mean, half, n = sum(values) / len(values), t_half_width(values), len(values)
    if half is not None:
        return f"{mean:+.3f} ± {half:.3f}"
    return f"{mean:+.3f} ({n} seed{'s' if n > 1 else ''})"


def resolved(values: list[float], sign: int) -> bool:
    """Whether the 95 % t-interval of the mean of `values` lies on the `sign` side of 0."""
    half = t_half_width(values)
    return half is not None and sign * sum(values) / len(values) > half


def along(points: list[tuple[int, float, float]], x: float,
          pick: Callable[[list[float]], float] = min) -> float | None:
    """The y of a path of (step, x, y) evaluations where it reaches `x`, linear between
    evaluations; `pick` of the values if it passes there more than once (the reference's most
    favourable: `min` for a loss, `max` for an accuracy); None if it never does."""
    found = [y0 + (y1 - y0) * (x - x0) / (x1 - x0) if x1 != x0 else pick([y0, y1])
             for (_, x0, y0), (_, x1, y1) in itertools.pairwise(points)
             if min(x0, x1) <= x <= max(x0, x1)]
    return pick(found) if found else None


def at_grid_edge(methods: dict[str, dict], grid: dict[str, tuple[float, ...]],
                 at_zero: dict[str, str] | None = None, lower_is_better: bool = True) -> str:
    """A sentence naming the methods whose λ, chosen on a complete grid, is its smallest or
    largest value (a better λ may lie beyond it); "" when there are none.

    `methods` maps a method to its summary entry (``"chosen"`` and ``"lams"``, keyed by
    ``f"{λ:g}"``, each with a ``"criterion"``); methods whose grid is not all run yet, or has one
    value, are passed over. `at_zero` maps a method to the method its λ = 0 limit is (EWC at
    λ = 0 is fine-tuning): when that one's criterion is worse than the chosen λ's, the sentence
    says so, since the best λ then lies between 0 and the grid's next value.
    """
    at_zero = at_zero or {}

    def worse(a: float, b: float) -> bool:
        return a > b if lower_is_better else a < b

    low, high = [], []
    for method, entry in methods.items():
        lams = grid.get(method, ())
        if len(lams) < 2 or any(f"{lam:g}" not in entry["lams"] for lam in lams):
            continue
        chosen = float(entry["chosen"])
        if chosen == min(lams):
            text = f"{method} ({chosen:g})"
            zero = methods.get(at_zero.get(method, ""))
            if zero is not None:
                mine = entry["lams"][entry["chosen"]]["criterion"]
                ref = zero["lams"][zero["chosen"]]["criterion"]
                if worse(ref, mine):
                    above = min(lam for lam in lams if lam > chosen)
                    text = (f"{method} ({chosen:g}; λ = 0, {at_zero[method]}, scores worse: "
                            f"{ref:.3f} against {mine:.3f}, so the best λ lies between 0 and "
                            f"{above:g})")
            low.append(text)
        elif chosen == max(lams):
            high.append(f"{method} ({chosen:g})")
    if not low and not high:
        return ""
    parts = ([f"the smallest λ run for {', '.join(low)}"] if low else []) + (
        [f"the largest for {', '.join(high)}"] if high else [])
    return ("The chosen λ is " + " and ".join(parts) + ": a better λ may lie beyond the grid "
            "(not run: each value costs a run per seed).")


def find_mnist(explicit: str | None = None) -> Path:
    """The MNIST directory: explicit, $MYELIN_DATA/mnist, ../shared/data/mnist, Debian's path."""
    candidates = [explicit] if explicit else []
    if os.environ.get("MYELIN_DATA"):
        candidates.append(os.path.join(os.environ["MYELIN_DATA"], "mnist"))
    candidates += [str(ROOT.parent / "shared" / "data" / "mnist"), "/usr/share/datasets/mnist"]
    for c in candidates:
        if c and (Path(c) / "train-images-idx3-ubyte.gz").exists():
            return Path(c)
    raise FileNotFoundError(f"MNIST IDX files not found; looked in {candidates}. "
                            "Pass --mnist DIR or set MYELIN_DATA.")


def mnist_root() -> str:
    """The data root holding the MNIST directory (the `root` of `myelin.data.load`)."""
    return str(find_mnist().parent)


def load_mnist(directory: Path, split: str = "train", n: int | None = None):
    """(X float32 (N, 784) in [0, 1], y int64 (N,)) from the gzipped IDX files."""
    prefix = "train" if split == "train" else "t10k"
    x = read_idx(directory / f"{prefix}-images-idx3-ubyte.gz")[:n]
    y = read_idx(directory / f"{prefix}-labels-idx1-ubyte.gz")[:n]
    return (torch.from_numpy(x.reshape(len(x), -1).astype(np.float32) / 255.0),
            torch.from_numpy(y.astype(np.int64)))


def make_mlp() -> torch.nn.Module:
    """The 784-300-150-10 ReLU MLP of the seeds' experiments (PyTorch default init)."""
    return mlp((784,), 10, (300, 150))


def timed(fn: Callable[[], object], repeats: int = 3) -> tuple[float, object]:
    """Median wall time over `repeats` calls (after one warm-up), and the last result."""
    fn()
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def paired(base: Callable[[], object], fn: Callable[[], object],
           repeats: int = 5, self_timed: bool = False) -> tuple[float, float, float, object]:
    """Time `base` and `fn` alternately: (median ratio fn/base, median base s, median fn s, out).

    Alternating the two (in both orders, so neither always runs on the other's cache) and
    taking the median of the per-round ratios cancels most of the drift of a shared 2-core
    machine, which a ratio of two separate medians does not. `self_timed`: each call returns
    the seconds that count (e.g. only the training steps of a run, not its setup).
    """
    base()
    out = fn()
    ratios, tb, tf = [], [], []
    for i in range(repeats):
        first, second = (base, fn) if i % 2 == 0 else (fn, base)
        t0 = time.perf_counter()
        r1 = first()
        t1 = time.perf_counter()
        r2 = second()
        t2 = time.perf_counter()
        t_base, t_fn = (t1 - t0, t2 - t1) if i % 2 == 0 else (t2 - t1, t1 - t0)
        if self_timed:
            t_base, t_fn = (float(r1), float(r2)) if i % 2 == 0 else (float(r2), float(r1))
        out = r2 if i % 2 == 0 else r1
        tb.append(t_base)
        tf.append(t_fn)
        ratios.append(t_fn / t_base)
    return statistics.median(ratios), statistics.median(tb), statistics.median(tf), out


def environment() -> dict[str, object]:
    """What the numbers were measured on."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "myelin", "benchmarks/*.py"],
                               cwd=ROOT, capture_output=True, text=True, check=True).stdout
        if dirty.strip():
            commit += "+uncommitted"
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "device": "cpu", "python": platform.python_version(),
            "machine": platform.machine(), "commit": commit,
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}


def portable(arg: str) -> str:
    """A command-line argument without this machine's checkout: an absolute path into a
    checkout's ``benchmarks/results`` (e.g. ``--out`` from another worktree) becomes relative to
    the repository root, the folder it names in any checkout."""
    marker = "benchmarks/results"
    head, sep, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
    if os.path.isabs(value) and f"/{marker}" in value:
        value = value[value.index(marker):]
    return f"{head}{sep}{value}"


def command(module: str, argv: list[str] | None) -> str:
    """The command line that reproduces this run of ``benchmarks.<module>`` (`portable` paths)."""
    return " ".join(["python", "-m", f"benchmarks.{module}",
                     *(portable(a) for a in (argv if argv is not None else sys.argv[1:]))])


def write_json(name: str, payload: dict[str, object], out: str | None = None) -> Path:
    """Write `payload` to `out`, or to benchmarks/results/<name>.json; print and return it."""
    if out:
        path = Path(out)
    else:
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {path}")
    return path


def debian_versions(packages: tuple[str, ...]) -> dict[str, str | None]:
    """The installed version of each Debian package (None: not installed, or no dpkg)."""
    versions: dict[str, str | None] = {}
    for package in packages:
        try:
            versions[package] = subprocess.run(
                ["dpkg-query", "-W", "-f=${Version}", package], capture_output=True,
                text=True, timeout=30).stdout.strip() or None
        except FileNotFoundError:
            versions[package] = None
    return versions


def write_pinned(path: Path, pinned: dict[str, object]) -> None:
    """Write a benchmark's pinned data file whole, or not at all (temporary file, rename)."""
    tmp = path.with_suffix(f".{os.getpid()}.part")
    tmp.write_text(json.dumps(pinned) + "\n")
    os.replace(tmp, path)


def read_pinned(path: Path, module: str) -> dict:
    """A benchmark's pinned data file, or a clear exit saying how to make it."""
    if not path.exists():
        raise SystemExit(f"{path} is missing: `python -m benchmarks.{module} pin` makes it from "
                         "this machine's data (once; every run then uses it).")
    return json.loads(path.read_text())
