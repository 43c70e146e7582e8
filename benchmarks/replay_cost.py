"""Cost of a replay (or importance) method's training step ÷ a plain step of the same batch.

One process, MLP 784-256-256-10, SGD, batches of 10 permuted-MNIST images (seed 001's
protocol). Each method first trains `--past` tasks (so GEM has that many past-task
constraints and every memory is full), then its steps on the next task are timed against
plain fine-tuning steps on the same batches, alternately (median of per-round ratios; see
`benchmarks._common.paired`). Also: GEM's QP time per projection, and the bytes one stored
sample takes.

    python -m benchmarks.replay_cost                   # → benchmarks/results/replay_cost.json
    python -m benchmarks.replay_cost --past 1 --steps 5 --repeats 1 --out /tmp/c.json
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from typing import Any

import numpy as np
import torch

from benchmarks._common import command, environment, mnist_root, paired, write_json
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


def main(argv: list[str] | None = None) -> int:
    """Time every method's step against plain steps; write the JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--past", type=int, default=5, help="tasks trained before timing")
    p.add_argument("--steps", type=int, default=50, help="steps per timed call")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=10, help="training batch size")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    scenario = permuted("mnist", args.past + 1, seed=0, root=mnist_root(), first_identity=False,
                        per_task_samples=1000)
    k = args.past
    base = _trained(scenario, "finetune", args.past, args.steps, args.batch)
    base_run = _runner(base, k, scenario)
    rows = {}
    for name in args.methods.split(","):
        learner = _trained(scenario, name, args.past, args.steps, args.batch)
        ratio, t_base, t_fn, _ = paired(base_run, _runner(learner, k, scenario), args.repeats)
        method = learner.method
        parts = getattr(method, "parts", [method])
        replay = next((m for m in parts if isinstance(m, Replay)), None)
        rows[name] = {
            "ratio": ratio, "plain_ms_per_step": 1e3 * t_base / args.steps,
            "ms_per_step": 1e3 * t_fn / args.steps, "target": METHODS[name][2],
            "options": METHODS[name][1],
            "bytes_per_stored_sample": replay.memory.bytes_per_sample() if replay else 0,
            "memory_bytes": replay.memory.nbytes() if replay else 0,
        }
        print(f"{name:8s} {ratio:6.2f}× a plain step ({1e3 * t_fn / args.steps:.2f} ms vs "
              f"{1e3 * t_base / args.steps:.2f} ms)", flush=True)
    n_params = sum(q.numel() for q in base.model.parameters())
    qp = {str(t): _qp_ms(t, n_params) for t in (1, 5, 9, 19)}
    print("GEM ms by past tasks (QP, whole projection):",
          {t: (round(v["qp"], 3), round(v["projection"], 2)) for t, v in qp.items()})
    write_json("replay_cost", {
        "what": "time per training step ÷ a plain SGD step on the same batches (batch "
                f"{args.batch}, "
                f"784-256-256-10, after {args.past} tasks), one process",
        "command": command("replay_cost", argv), "environment": environment(),
        "batch": args.batch, "past_tasks": args.past, "steps": args.steps, "repeats": args.repeats,
        "methods": rows, "gem_ms": qp, "parameters": n_params}, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
