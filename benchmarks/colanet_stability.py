"""CoLaNET stability growth r_s for preset "sources" (issue 24), chosen on a validation stream.

    python -m benchmarks.colanet_stability --microcolumns 45 --alpha 0.01 --stability 0.005,0.002
    python -m benchmarks.colanet_stability --microcolumns 15 --alpha 0.005 --stability 0.001
    python -m benchmarks.colanet_stability --show

Preset "sources" learns task 1 better than "myelin" (93.7 vs 91.3 % on one pass) but, with the
stability growth r_s of "myelin" (0.005), loses plasticity on the reported stream: the diagonal
of the accuracy matrix falls to 48-64 % by task 10. The teacher of "sources" is never blocked,
so every training image is rewarded and σ grows faster; r_s has to shrink.

Validation stream (never the reported one): 10 tasks whose permutations are drawn with seed
100 + k (no identity task), trained on the first 50 000 MNIST training images in file order,
scored on the last 10 000 training images (the first `--eval` of them per task, default 2 000:
the score of one task then has a standard error of ≈ 0.6 points, AA over ten ≈ 0.2). The test
images and the reported permutations are never used. Each trial is appended to
benchmarks/results/colanet/stability_trials.json when it ends (a file lock lets two processes
share it); a rerun skips trials already there (same microcolumns, α, r_s, extra settings, seed).
Run with OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 when sharing the machine.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import sys
import time
from typing import Any

import numpy as np
import torch

from benchmarks._common import RESULTS, mnist_root
from myelin.data import load
from myelin.scenarios import Scenario, permuted
from myelin.snn import PRESETS, CoLaNET, fit_scenario

OUT = RESULTS / "colanet" / "stability_trials.json"
PRESET = "sources"


def validation_stream(seed: int, n_tasks: int = 10) -> Scenario:
    """Ten permuted tasks on the first 50k training images, scored on the last 10k."""
    train = load("mnist", "train", mnist_root())
    n = len(train) - 10_000
    pair = (train.subset(torch.arange(n), "mnist"),
            train.subset(torch.arange(n, len(train)), "mnist"))
    return permuted(pair, n_tasks, seed=100 + seed, first_identity=False)


def params_of(alpha: float, stability: float, extra: dict[str, Any]) -> dict[str, Any]:
    """The preset's values with α, r_s and `extra` replacing its own."""
    return {**PRESETS[PRESET], "alpha": alpha, "stability": stability, **extra}


def run(microcolumns: int, alpha: float, stability: float, extra: dict[str, Any], seed: int,
        n_eval: int, n_tasks: int = 10) -> dict[str, Any]:
    """One 10-task validation run: accuracy matrix, AA, FM, the diagonal."""
    p = params_of(alpha, stability, extra)
    a, silent = p.pop("alpha"), p.pop("silent_synapses", 0)
    net = CoLaNET(784, 10, microcolumns, a, silent, seed, **p)
    t0 = time.perf_counter()
    result = fit_scenario(net, validation_stream(seed, n_tasks), eval_samples=n_eval,
                          progress=False)
    acc = np.array(result.accuracy)
    return {"microcolumns": microcolumns, "alpha": alpha, "stability": stability,
            "extra": extra, "seed": seed, "eval_per_task": n_eval, "tasks": n_tasks,
            "aa": float(acc[-1].mean()), "fm": float(result.metrics.get("forgetting", 0.0)),
            "diagonal": [round(float(v), 4) for v in np.diag(acc)],
            "accuracy": acc.round(4).tolist(), "wall_seconds": round(time.perf_counter() - t0, 1),
            "split": "permutations seed 100+k; train first 50k / score last 10k training images",
            "command": " ".join(["python -m benchmarks.colanet_stability", *sys.argv[1:]])}


def _key(r: dict[str, Any]) -> tuple:
    return (r["microcolumns"], r["alpha"], r["stability"], json.dumps(r["extra"], sort_keys=True),
            r["seed"], r["eval_per_task"], r["tasks"])


def _append(r: dict[str, Any]) -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with open(OUT, "a+") as f:                        # the file itself is the lock
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        text = f.read()
        done = json.loads(text) if text.strip() else []
        done.append(r)
        f.seek(0)
        f.truncate()
        f.write(json.dumps(done, indent=1) + "\n")


def show() -> str:
    """One line per trial, grouped by microcolumns and α, best validation AA first."""
    done = json.loads(OUT.read_text()) if OUT.exists() else []
    lines = []
    for r in sorted(done, key=lambda r: (r["microcolumns"], r["alpha"], -r["aa"])):
        diag = " ".join(f"{100 * v:.0f}" for v in r["diagonal"])
        lines.append(f"{r['microcolumns']:3d} mc α {r['alpha']:<8g} r_s {r['stability']:<7g} "
                     f"{json.dumps(r['extra']) if r['extra'] else '':28s} seed {r['seed']}: "
                     f"AA {100 * r['aa']:.2f} FM {100 * r['fm']:.2f}  diagonal {diag}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--microcolumns", type=int, default=45)
    ap.add_argument("--alpha", type=float, default=0.01)
    ap.add_argument("--stability", default="0.005", help="comma-separated r_s values")
    ap.add_argument("--extra", default="{}", help="JSON of further CoLaNET settings")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval", type=int, default=2000, help="scored images per task")
    ap.add_argument("--tasks", type=int, default=10)
    ap.add_argument("--show", action="store_true")
    args = ap.parse_args(argv)
    if args.show:
        print(show())
        return 0
    try:
        extra = json.loads(args.extra)
    except json.JSONDecodeError as exc:
        ap.error(f"--extra must be a JSON object of CoLaNET settings: {exc}")
    if not isinstance(extra, dict):
        ap.error(f"--extra must be a JSON object of CoLaNET settings, got {args.extra!r}")
    try:                                              # unknown names fail now, not after a run
        p = params_of(args.alpha, 0.0, extra)
        CoLaNET(784, 10, 1, p.pop("alpha"), p.pop("silent_synapses", 0), 0, **p)
    except (TypeError, ValueError) as exc:
        ap.error(f"--extra: {exc}")
    for s in (float(v) for v in args.stability.split(",")):
        done = json.loads(OUT.read_text()) if OUT.exists() else []
        key = (args.microcolumns, args.alpha, s, json.dumps(extra, sort_keys=True), args.seed,
               args.eval, args.tasks)
        if key in {_key(r) for r in done}:
            continue
        r = run(args.microcolumns, args.alpha, s, extra, args.seed, args.eval, args.tasks)
        print(f"{args.microcolumns} mc α {args.alpha} r_s {s} {extra or ''}: AA "
              f"{100 * r['aa']:.2f} FM {100 * r['fm']:.2f} diagonal "
              f"{' '.join(f'{100 * v:.0f}' for v in r['diagonal'])} ({r['wall_seconds']} s)",
              flush=True)
        _append(r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
