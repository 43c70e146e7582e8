"""Wall time of a whole 10-task run (seed 000 Fig. 4 protocol) with myelin vs a plain loop.

Issue 5, experiment 2 asks for one 10-task EWC run in ≤ 35 s on 2 cores. One process, the
same permuted-MNIST tasks (10 × 2000 SGD steps, lr 0.1, batch 100, 784-300-150-10 ReLU) run:

* ``plain``: a bare PyTorch loop (random batches from float tensors prepared before timing,
  cross-entropy, SGD step), then the accuracy on all ten test sets after each task, as the
  accuracy matrix needs. No consolidation.
* ``myelin-finetune``: ``myelin.fit`` with no protection (the harness's own cost).
* ``myelin-ewc-f``: ``myelin.fit`` with EWC, sampled true Fisher on 5000 held-out images, λ 14.

Each is timed once per repeat in alternating order; the JSON keeps every wall time, the
medians and their ratios to the plain loop, and the best (shortest) run of each. This shared
2-core machine alternates between a fast and a slow state for minutes at a time (a plain SGD
step of this MLP takes 1.3 ms or 2.3 ms), so each run is bracketed by a probe — 300 plain steps
on fixed random batches, ms per step — recorded with its wall time: a run is comparable with
another only at equal probe speed.

    python -m benchmarks.walltime                     # → results/walltime.json
    python -m benchmarks.walltime --tasks 2 --iterations 20 --repeats 1 --out /tmp/w.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from benchmarks._common import command, environment, find_mnist, write_json
from myelin import fit
from myelin.models import mlp, truncated_normal_init_
from myelin.scenarios import Scenario, permuted
from myelin.train import evaluate


def make_model(s: Scenario) -> torch.nn.Module:
    return truncated_normal_init_(mlp(s.input_shape, s.n_classes, (300, 150)))


def plain_loop(s: Scenario, data: list[tuple[torch.Tensor, torch.Tensor]], iterations: int,
               seed: int) -> list[list[float]]:
    """The bare PyTorch loop on float tensors prepared beforehand; returns the accuracy matrix."""
    torch.manual_seed(seed)
    model = make_model(s)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(seed)
    matrix = []
    for x_all, y_all in data:
        model.train()
        for _ in range(iterations):
            idx = torch.randint(len(x_all), (100,), generator=g)
            opt.zero_grad()
            F.cross_entropy(model(x_all[idx]), y_all[idx]).backward()
            opt.step()
        matrix.append([evaluate(model, t.test) for t in s.tasks])
    return matrix


def probe(steps: int = 300) -> float:
    """Milliseconds per plain SGD step of the benchmark's MLP on fixed random batches."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(steps, 100, 784, generator=g), torch.randint(10, (steps, 100), generator=g)
    model = mlp((784,), 10, (300, 150))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    t0 = time.perf_counter()
    for xb, yb in zip(x, y):
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()
    return (time.perf_counter() - t0) / steps * 1000


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iterations", type=int, default=2000, help="SGD steps per task")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tasks", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mnist", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    env, cmd = environment(), command("walltime", argv)
    s = permuted("mnist", args.tasks, seed=args.seed, root=str(find_mnist(args.mnist).parent))
    fit_kw = {"optimizer": "sgd", "lr": 0.1, "batch_size": 100,
              "iterations": args.iterations, "closing_samples": 5000, "closing": "holdout",
              "seed": args.seed, "progress": False}

    def myelin_run(method: str, options: dict | None):
        def run():
            torch.manual_seed(args.seed)
            return fit(s, make_model(s), method, method_options=options, **fit_kw)
        return run

    data = [t.train.tensors() for t in s.tasks]          # the plain loop's data, untimed
    runs = {"plain": lambda: plain_loop(s, data, args.iterations, args.seed),
            "myelin-finetune": myelin_run("finetune", None),
            "myelin-ewc-f": myelin_run("ewc", {"lam": 14, "importance": "fisher-sampled"})}
    walls: dict[str, list[float]] = {k: [] for k in runs}
    probes: dict[str, list[list[float]]] = {k: [] for k in runs}
    last: dict[str, object] = {}
    probe()                                               # warm-up
    for r in range(args.repeats):
        for name in (runs if r % 2 == 0 else reversed(list(runs))):
            before = probe()
            t0 = time.perf_counter()
            last[name] = runs[name]()
            walls[name].append(time.perf_counter() - t0)
            probes[name].append([before, probe()])
            print(f"repeat {r + 1}: {name} {walls[name][-1]:.1f} s (probe "
                  f"{probes[name][-1][0]:.2f} / {probes[name][-1][1]:.2f} ms per step)",
                  flush=True)
    med = {k: statistics.median(v) for k, v in walls.items()}
    best = {k: min(v) for k, v in walls.items()}
    aa = {"plain": sum(last["plain"][-1]) / len(s.tasks),
          **{k: last[k].metrics["average_accuracy"] for k in runs if k != "plain"}}
    timings = {k: {part: sum(t[part] for t in last[k].timings)
                   for part in ("train", "importance", "eval")}
               for k in runs if k != "plain"}
    payload = {"benchmark": "walltime", "command": cmd, "environment": env,
               "setup": {"protocol": "seed 000 Fig. 4: permuted MNIST, 784-300-150-10 "
                                     "ReLU, SGD lr 0.1, batch 100", "iterations": args.iterations,
                         "tasks": args.tasks, "repeats": args.repeats, "seed": args.seed},
               "wall_seconds": walls, "median_seconds": med, "best_seconds": best,
               "probe_ms_per_step": probes,
               "ratio_to_plain": {k: med[k] / med["plain"] for k in runs},
               "aa": aa, "last_run_parts_seconds": timings}
    write_json("walltime", payload, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
