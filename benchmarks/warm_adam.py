"""Kutalev & Lapina 2021 with a warm Adam: does the 2021 code's optimizer leak explain SIG's gap?

The 2021 scripts build one Adam optimizer and reuse it for every run of a λ: `reset()`
re-initialises the layers but not Adam's moments or step count, so every run after a λ's first
starts with the previous run's final Adam state. myelin's harness starts each run cold. Our
cold SIG row is ~1 point below the published 92.91 while Fisher/MAS/SI match, and the 2021
log's own λ = 0.1 runs (6th–10th, all warm) read 92.4–93.4.

This script runs a chain of seeds on the `kutalev2021-fc` protocol: the first seed cold, each
later seed with the Adam state its predecessor ended with (as the 2021 code does), and records
AA per seed next to the cold harness result of the same seed when one exists.

    python -m benchmarks.warm_adam --importance signal --lam 0.2 --seeds 0-19 --threads 1
    python -m benchmarks.warm_adam --importance fisher --lam 82 --seeds 0-19 --threads 1
    python -m benchmarks.warm_adam --quick --out /tmp/w.json      # smoke run

The chain is one record (`myelin.records.RecordStore`), rewritten after every run: a complete
chain with the same spec (protocol, options, seeds) is not run again; an incomplete one is run
again from its first seed (the next run needs its predecessor's Adam state, not kept).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks._common import RESULTS, command, environment, parse_seeds
from benchmarks.catalogue import EXPERIMENTS, Row, small
from benchmarks.runner import OUT, record_key, run_spec
from myelin import fit
from myelin.records import RecordStore

EXPERIMENT = EXPERIMENTS["kutalev2021-fc"]     # the protocol: scenario, model, fit settings


def _row(importance: str, lam: float) -> Row:
    """The experiment's cold EWC row with these options, or one made for them."""
    options = {"lam": lam, "importance": importance}
    return next((r for r in EXPERIMENT.rows if r.method == "ewc" and r.options == options),
                Row(f"ewc-{importance}-{lam:g}", "", "ewc", options))


def chain_spec(importance: str, lam: float, seeds: list[int], quick: bool = False
               ) -> dict[str, Any]:
    """What determines a chain: the protocol, the EWC options and the seeds in order."""
    return {"experiment": EXPERIMENT.name, "importance": importance, "lam": lam,
            "seeds": list(seeds), "fit": EXPERIMENT.fit_options(_row(importance, lam), quick),
            "quick": quick}


def run_chain(importance: str, lam: float, seeds: list[int], quick: bool = False,
              log=print, each=None) -> list[dict[str, Any]]:
    """AA of each seed, the first cold, each later one starting from its predecessor's Adam.

    `each(runs)`, if given, is called after every run with the records so far (so a long chain
    can be saved as it goes).
    """
    options = {"lam": lam, "importance": importance}
    row = _row(importance, lam)
    kw = {k: v for k, v in EXPERIMENT.fit_options(row, quick).items()
          if k not in ("optimizer", "lr")}
    cold = RecordStore(OUT)         # the harness's cold runs of the same row, where they exist
    runs: list[dict[str, Any]] = []
    warm: dict[str, Any] | None = None
    for seed in seeds:
        scenario = EXPERIMENT.scenario(seed)
        if quick:
            scenario = small(scenario)
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
        harness = None if quick else cold.get(record_key(EXPERIMENT, row, seed),
                                              run_spec(EXPERIMENT, row, seed))
        record = {"seed": seed, "warm": warm is not None,
                  "aa": res.metrics["average_accuracy"], "wall_seconds":
                  time.perf_counter() - t0,
                  "cold_harness_aa": harness["measured"]["aa"] if harness else None}
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
    p.add_argument("--out", help="the record's file (default results/warm-adam-<importance>"
                                 ".json)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: all cores); 1 when running chains in parallel")
    args = p.parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            raise SystemExit(f"--threads must be ≥ 1. Got {args.threads}.")
        torch.set_num_threads(args.threads)
    seeds = parse_seeds(args.seeds)
    path = Path(args.out or RESULTS / f"warm-adam-{args.importance}.json")
    store, key = RecordStore(path.parent, suffix=""), path.name
    spec = chain_spec(args.importance, args.lam, seeds, args.quick)
    done = store.get(key, spec)
    if done is not None and done.get("complete"):
        print(f"{path}: this chain is complete (mean AA {done['mean_chain_aa']:.4f})")
        return 0
    if key in store:
        print(f"{path}: {store.stale.get(key, 'the chain is incomplete')}; running the chain "
              "from its first seed", flush=True)
    env, cmd = environment(), command("warm_adam", argv)

    def save(runs: list[dict[str, Any]]) -> None:
        warm = [r["aa"] for r in runs if r["warm"]]
        cold = [r["cold_harness_aa"] for r in runs if r["warm"] and r["cold_harness_aa"]]
        store.put(key, spec, {
            "protocol": f"{EXPERIMENT.name}: {EXPERIMENT.title}", "fit": EXPERIMENT.fit,
            "importance": args.importance, "lam": args.lam, "runs": runs,
            "complete": len(runs) == len(seeds),
            # the 2021 protocol's number: every run of the chain, the first (cold) included
            "mean_chain_aa": sum(r["aa"] for r in runs) / len(runs),
            "mean_warm_aa": sum(warm) / len(warm) if warm else None,
            "mean_cold_aa_same_seeds": sum(cold) / len(cold) if cold else None,
            "command": cmd, "environment": env, "quick": args.quick})

    run_chain(args.importance, args.lam, seeds, args.quick,
              log=lambda s: print(s, flush=True), each=save)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
