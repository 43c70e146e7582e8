"""Cost of a replay (or importance) method's training step ÷ a plain step of the same batch.

One process, MLP 784-256-256-10, SGD, batches of 10 permuted-MNIST images (seed 001's
protocol). Each method first trains `--past` tasks (so GEM has that many past-task
constraints and every memory is full), then its steps on the next task are timed against
plain fine-tuning steps on the same batches, alternately (median of per-round ratios; see
`benchmarks._common.paired`). Also: GEM's QP time per projection, and the bytes one stored
sample takes.

A forward hook counts the rows each step sends through the model (with and without
gradients), so every ratio sits beside the work ratio that bounds it: a backward pass costs
about two forwards, and a 10-sample step is overhead-bound, so the time ratio at batch 10 is
below the work ratio and approaches it as the batch grows.

    python -m benchmarks.replay_cost                   # → benchmarks/results/replay_cost.json
    python -m benchmarks.replay_cost --past 1 --steps 5 --repeats 1 --batch 10 --out /tmp/c.json
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks._common import RESULTS, command, environment, mnist_root, paired, write_json
from myelin import Result, make_method
from myelin.models import mlp
from myelin.replay import CTNNet, Replay, gem_dual, gem_project
from myelin.scenarios import permuted
from myelin.train import GradientLearner

# name -> (method spec, options, targets from the issue: ratio to a plain step)
METHODS: dict[str, tuple[str, dict[str, Any], str]] = {
    "er": ("er", {"memory_per_task": 50}, "≤ 2.2×"),
    "agem": ("agem", {"memory_per_task": 50}, "≤ 3×"),
    "gem": ("gem", {"memory_per_task": 50}, "≤ 1 + past tasks passes, QP < 1 ms"),
    "mir": ("mir", {"memory": 500}, "≤ 4×"),
    "mer": ("mer", {"memory": 500, "replay_batch": 10, "batches_per_example": 5}, "—"),
    "ctn": ("ctn", {"memory_per_task": 50}, "—"),
    "ewc": ("ewc", {"lam": 100.0}, "—"),
    "wva": ("wva", {"lam": 1000.0}, "—"),
    "er+ewc": ("er+ewc", {"memory_per_task": 50, "lam": 10.0}, "—"),
}


def _learner(scenario, name: str, steps: int, seed: int = 0, batch: int = 10) -> GradientLearner:
    spec, options, _ = METHODS.get(name, ("finetune", {}, ""))
    torch.manual_seed(seed)
    model = (CTNNet(scenario.input_shape, scenario.n_classes, (256, 256),
                    n_tasks=len(scenario.tasks)) if spec == "ctn"
             else mlp(scenario.input_shape, scenario.n_classes, (256, 256)))
    learner = GradientLearner(model, make_method(spec, **options), "sgd", lr=0.03,
                              iterations=steps, batch_size=batch, seed=seed, progress=False)
    learner.begin(scenario, Result([], []))
    return learner


def _trained(scenario, name: str, past: int, steps: int, batch: int = 10) -> GradientLearner:
    """A learner that has trained (and closed) the first `past` tasks."""
    learner = _learner(scenario, name, steps, batch=batch)
    for k in range(past):
        learner.learn(k, scenario.tasks[k])
        learner.end_task(k, scenario.tasks[k], [0.0] * len(scenario.tasks))
    return learner


def _runner(learner: GradientLearner, k: int, scenario) -> Any:
    """Train task k for the learner's `iterations` steps from the same state every call."""
    state = (copy.deepcopy(learner.model.state_dict()),
             copy.deepcopy(learner.ctx.optimizer.state_dict()))
    method = learner.method
    saved = copy.deepcopy(getattr(method, "memory", None))

    def run() -> None:
        learner.model.load_state_dict(state[0])
        learner.ctx.optimizer.load_state_dict(state[1])
        if saved is not None:
            method.memory = copy.deepcopy(saved)
        learner.ctx.generator.manual_seed(k)
        learner.learn(k, scenario.tasks[k])
    return run


def _qp_ms(past: int, n_params: int, repeats: int = 30) -> dict[str, float]:
    """Median ms of GEM's dual QP alone and of the whole projection (Gram matrix, float64
    QP, Mᵀv + g) for `past` conflicting constraints."""
    g = torch.randn(n_params)
    M = -g[None] + 0.5 * torch.randn(past, n_params)
    M64 = M.double()
    P = (M64 @ M64.T).numpy() + 1e-3 * np.eye(past)
    q = (M64 @ g.double()).numpy()
    out = {}
    for what, fn in (("qp", lambda: gem_dual(P, q, 0.5)),
                     ("projection", lambda: gem_project(g, M))):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        out[what] = 1e3 * statistics.median(times)
    return out


def _rows(learner: GradientLearner, run: Any) -> dict[str, int]:
    """Rows (samples) that pass through the model in one call of `run`: with gradients
    (forward + backward) and without (forward only), counted by a forward hook."""
    count = {"grad": 0, "no_grad": 0}

    def hook(module, args, kwargs, output):
        x = args[0] if args else next(iter(kwargs.values()))
        count["grad" if torch.is_grad_enabled() else "no_grad"] += int(x.shape[0])

    handle = learner.model.register_forward_hook(hook, with_kwargs=True)
    try:
        run()
    finally:
        handle.remove()
    return count


def _work(rows: dict[str, int]) -> float:
    """Forward-pass equivalents: a backward pass costs about two forwards."""
    return 3.0 * rows["grad"] + rows["no_grad"]


def measure(scenario, past: int, steps: int, repeats: int, batch: int,
            methods: list[str]) -> dict[str, Any]:
    """Every method's step ÷ a plain step at one batch size, and the work ratio behind it."""
    base = _trained(scenario, "finetune", past, steps, batch)
    base_run = _runner(base, past, scenario)
    base_rows = _rows(base, base_run)
    rows = {}
    for name in methods:
        learner = _trained(scenario, name, past, steps, batch)
        run = _runner(learner, past, scenario)
        ratio, t_base, t_fn, _ = paired(base_run, run, repeats)
        counted = _rows(learner, run)
        method = learner.method
        parts = getattr(method, "parts", [method])
        replay = next((m for m in parts if isinstance(m, Replay)), None)
        rows[name] = {
            "ratio": ratio, "plain_ms_per_step": 1e3 * t_base / steps,
            "ms_per_step": 1e3 * t_fn / steps, "target": METHODS[name][2],
            "options": METHODS[name][1],
            "rows_per_step": {k: v / steps for k, v in counted.items()},
            "work_ratio": _work(counted) / _work(base_rows),
            "bytes_per_stored_sample": replay.memory.bytes_per_sample() if replay else 0,
            "memory_bytes": replay.memory.nbytes() if replay else 0,
        }
        print(f"batch {batch:4d} {name:8s} {ratio:6.2f}× a plain step "
              f"({1e3 * t_fn / steps:.2f} ms vs {1e3 * t_base / steps:.2f} ms); "
              f"work {rows[name]['work_ratio']:.1f}×", flush=True)
    return {"methods": rows, "plain_rows_per_step": {k: v / steps for k, v in base_rows.items()}}


def main(argv: list[str] | None = None) -> int:
    """Time every method's step against plain steps at each batch size; write the JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--past", type=int, default=5, help="tasks trained before timing")
    p.add_argument("--steps", type=int, default=50, help="steps per timed call")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", default="10,100",
                   help="training batch sizes, comma list (10 is seed 001's)")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--out", default=None)
    p.add_argument("--add", action="store_true",
                   help="merge these methods into the existing JSON (same --past, --steps, "
                   "--repeats) instead of replacing it; the commands are kept side by side")
    args = p.parse_args(argv)
    try:
        batches = [int(b) for b in args.batch.split(",")]
    except ValueError:
        p.error(f"--batch must be a comma list of integers, got {args.batch!r}")
    if not batches or min(batches) < 1:
        p.error(f"--batch sizes must be positive, got {args.batch!r}")
    methods = args.methods.split(",")
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        p.error(f"unknown methods {unknown}; known: {sorted(METHODS)}")
    torch.set_num_threads(args.threads)
    scenario = permuted("mnist", args.past + 1, seed=0, root=mnist_root(), first_identity=False,
                        per_task_samples=1000)
    by_batch = {str(b): measure(scenario, args.past, args.steps, args.repeats, b, methods)
                for b in batches}
    if args.add:
        path = Path(args.out) if args.out else RESULTS / "replay_cost.json"
        if not path.exists():
            p.error(f"--add merges into {path}, which does not exist")
        old = json.loads(path.read_text())
        same = {k: old.get(k) for k in ("past_tasks", "steps", "repeats")}
        if same != {"past_tasks": args.past, "steps": args.steps, "repeats": args.repeats}:
            p.error(f"--add needs the settings of {path} ({same})")
        for b, measured in by_batch.items():
            old["batches"].setdefault(b, {"methods": {}})["methods"].update(measured["methods"])
        old["command"] = f"{old['command']} && {command('replay_cost', argv)}"
        old.setdefault("added", []).append({"command": command("replay_cost", argv),
                                            "environment": environment()})
        write_json("replay_cost", old, args.out)
        return 0
    torch.manual_seed(0)
    n_params = sum(q.numel() for q in mlp(scenario.input_shape, scenario.n_classes,
                                          (256, 256)).parameters())
    qp = {str(t): _qp_ms(t, n_params) for t in (1, 5, 9, 19)}
    print("GEM ms by past tasks (QP, whole projection):",
          {t: (round(v["qp"], 3), round(v["projection"], 2)) for t, v in qp.items()})
    write_json("replay_cost", {
        "what": "time per training step ÷ a plain SGD step on the same batches (784-256-256-10, "
                f"after {args.past} tasks), one process",
        "command": command("replay_cost", argv), "environment": environment(),
        "batches": by_batch, "past_tasks": args.past, "steps": args.steps,
        "repeats": args.repeats, "gem_ms": qp, "parameters": n_params}, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
