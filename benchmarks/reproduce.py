"""Reproduce the seeds' experiments and the published tables (issue 5).

Every experiment is a protocol (scenario, network, optimizer, schedule) plus rows (a method and
its options, and the number the authors published): `benchmarks.catalogue`. Each (row, seed)
run is written as a record under ``benchmarks/results/reproduce/<experiment>/<row>/seed<k>.json``
as soon as it finishes, so a stopped session loses at most one run and a rerun resumes
(`benchmarks.runner`). `report` writes the summary, the plots and ``docs/results.md``
(`benchmarks.report`).

    python -m benchmarks.reproduce list
    python -m benchmarks.reproduce run seed000-fig1 --seeds 0-4
    python -m benchmarks.reproduce run all --seeds 0-4       # everything (hours on 2 cores)
    python -m benchmarks.reproduce report                    # summary JSON, plots, docs/results.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from benchmarks import catalogue_replay  # noqa: F401  (registers seed 001's experiments)
from benchmarks._common import ROOT, parse_seeds
from benchmarks.catalogue import EXPERIMENTS
from benchmarks.report import write_report
from benchmarks.runner import OUT, run

DOCS = ROOT / "docs"


def _cmd_run(args: argparse.Namespace) -> int:
    names = list(EXPERIMENTS) if args.experiment == "all" else args.experiment.split(",")
    for name in names:
        if name not in EXPERIMENTS:
            raise SystemExit(f"Unknown experiment {name!r}. Available: {', '.join(EXPERIMENTS)}")
    if args.threads is not None:
        if args.threads < 1:
            raise SystemExit(f"--threads must be ≥ 1. Got {args.threads}.")
        torch.set_num_threads(args.threads)
    run([EXPERIMENTS[n] for n in names], parse_seeds(args.seeds),
        [r for r in args.rows.split(",") if r], Path(args.out), quick=args.quick,
        progress=args.progress)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command line: list, run, report."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="the experiments and their rows")
    r = sub.add_parser("run", help="run experiments (resumable)")
    r.add_argument("experiment", help="a name, a comma list, or all")
    r.add_argument("--seeds", default="0-4", help="e.g. 0-4 or 0,2,5")
    r.add_argument("--rows", default="", help="comma list of row keys (default all)")
    r.add_argument("--out", default=str(OUT))
    r.add_argument("--quick", action="store_true", help="tiny smoke run (tests)")
    r.add_argument("--progress", action="store_true")
    r.add_argument("--threads", type=int, default=None,
                   help="torch threads (default torch's: all cores); use 1 per process when "
                        "running several processes at once — two 2-thread processes on 2 cores "
                        "run several times slower than two 1-thread ones")
    rep = sub.add_parser("report", help="summary JSON, plots and docs/results.md")
    rep.add_argument("--out", default=str(OUT))
    rep.add_argument("--docs", default=str(DOCS))
    args = p.parse_args(argv)
    if args.cmd == "list":
        for exp in EXPERIMENTS.values():
            print(f"{exp.name}: {exp.title}")
            for row in exp.rows:
                print(f"    {row.key}: {row.label}")
        return 0
    if args.cmd == "run":
        return _cmd_run(args)
    write_report(Path(args.out), Path(args.docs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
