"""Kutalev & Lapina 2021 with a warm Adam: does the 2021 code's optimizer leak explain SIG's gap?

The 2021 scripts build one Adam optimizer and reuse it for every run of a λ: `reset()`
re-initialises the layers but not Adam's moments or step count, so every run after a λ's first
starts with the previous run's final Adam state. myelin's harness starts each run cold. Our
cold SIG row is ~1 point below the published 92.91 while Fisher/MAS/SI match, and the 2021
log's own λ = 0.1 runs (6th–10th, all warm) read 92.4–93.4.

This script runs a chain of seeds on the `kutalev2021-fc` protocol: the first seed cold, each
later seed with the Adam state its predecessor ended with (as the 2021 code does), and records
AA per seed next to the cold harness result of the same seed when one exists.

    python benchmarks/warm_adam.py --importance signal --lam 0.2 --seeds 0-19 --threads 1
    python benchmarks/warm_adam.py --importance fisher --lam 82 --seeds 0-19 --threads 1
    python benchmarks/warm_adam.py --quick --out /tmp/w.json      # smoke run
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import RESULTS, command, environment, write_json

from benchmarks.reproduce import EXPERIMENTS, _parse_seeds, _small
from myelin import fit

EXPERIMENT = EXPERIMENTS["kutalev2021-fc"]     # the protocol: scenario, model, fit settings


def run_chain(importance: str, lam: float, seeds: list[int], quick: bool = False,
              log=print, each=None) -> list[dict[str, Any]]:
    """AA of each seed, the first cold, each later one starting from its predecessor's Adam.

    `each(runs)`, if given, is called after every run with the records so far (so a long chain
    can be saved as it goes).
    """
    options = {"lam": lam, "importance": importance}
    cold_row = next((r.key for r in EXPERIMENT.rows
                     if r.method == "ewc" and r.options == options), None)
    kw = {k: v for k, v in EXPERIMENT.fit.items() if k not in ("optimizer", "lr")}
    if quick:
        kw.update(EXPERIMENT.quick_fit, closing_samples=50)
        kw.pop("epochs")
    runs: list[dict[str, Any]] = []
    warm: dict[str, Any] | None = None
    for seed in seeds:
        scenario = EXPERIMENT.scenario(seed)
        if quick:
            scenario = _small(scenario)
        torch.manual_seed(seed)
        model = EXPERIMENT.model(scenario)
        made: list[torch.optim.Optimizer] = []

        def adam(params, state=warm, made=made):
            opt = torch.optim.Adam(params, lr=EXPERIMENT.fit["lr"])
            if state is not None:
                opt.load_state_dict(state)
            made.append(opt)
            return opt

        t0 = time.perf_counter()
        res = fit(scenario, model, "ewc", adam, method_options=options, seed=seed,
                  progress=False, **kw)
        cold = RESULTS / "reproduce" / EXPERIMENT.name / str(cold_row) / f"seed{seed}.json"
        record = {"seed": seed, "warm": warm is not None,
                  "aa": res.metrics["average_accuracy"], "wall_seconds":
                  time.perf_counter() - t0,
                  "cold_harness_aa": (json.loads(cold.read_text())["measured"]["aa"]
                                      if cold_row and cold.exists() and not quick else None)}
        runs.append(record)
        log(json.dumps(record))
        if each is not None:
            each(runs)
        warm = made[-1].state_dict()
    return runs


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--importance", default="signal")
    p.add_argument("--lam", type=float, default=0.2)
    p.add_argument("--seeds", default="0-4")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: all cores); 1 when running chains in parallel")
    args = p.parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            raise SystemExit(f"--threads must be ≥ 1. Got {args.threads}.")
        torch.set_num_threads(args.threads)
    seeds = _parse_seeds(args.seeds)

    def save(runs: list[dict[str, Any]]) -> None:
        warm = [r["aa"] for r in runs if r["warm"]]
        cold = [r["cold_harness_aa"] for r in runs if r["warm"] and r["cold_harness_aa"]]
        write_json(f"warm-adam-{args.importance}", {
            "protocol": f"{EXPERIMENT.name}: {EXPERIMENT.title}", "fit": EXPERIMENT.fit,
            "importance": args.importance, "lam": args.lam, "runs": runs,
            "complete": len(runs) == len(seeds),
            # the 2021 protocol's number: every run of the chain, the first (cold) included
            "mean_chain_aa": sum(r["aa"] for r in runs) / len(runs),
            "mean_warm_aa": sum(warm) / len(warm) if warm else None,
            "mean_cold_aa_same_seeds": sum(cold) / len(cold) if cold else None,
            "command": command("warm_adam.py", argv), "environment": environment(),
            "quick": args.quick}, args.out)

    run_chain(args.importance, args.lam, seeds, args.quick,
              log=lambda s: print(s, flush=True), each=save)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
