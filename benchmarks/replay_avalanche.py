"""myelin's replay steps against Avalanche's, on the same model and batches, in one process.

What it measures: the cost of one training step of Avalanche 0.6's Naive, Replay (ER), AGEM
and GEM strategies and of myelin's ``finetune``, ``er``, ``agem`` and ``gem`` methods. Both
libraries use the same setup:

* the model is an MLP 784-256-256-10 (``myelin.models.mlp``), trained by SGD (lr 0.03) on
  batches of 10, on the CPU with one thread;
* the data is real permuted MNIST (``myelin.scenarios.permuted``, 1000 samples per task);
* `--past` tasks are trained first, for `--steps` steps each, so every memory is full:
  ER keeps 500 samples in all, AGEM and GEM keep 50 per task, AGEM's reference sample is 256
  and GEM's margin is 0.5. Both AGEMs then compute the reference gradient on all 100 stored
  samples: myelin draws min(256, stored) samples, and Avalanche draws 256 // 2 per past
  experience, which its loader caps at the 50 that each buffer holds;
* then the steps on the next task are timed. Both libraries get the same `--steps` incoming
  batches in the same order: the Avalanche experience is the myelin task's samples in the
  order myelin draws them, and it is loaded without shuffling.

How each side is timed:

* myelin: the wall time of `GradientLearner.learn` for `--steps` steps, divided by the
  number of steps. The runs use `benchmarks.replay_cost`'s `_trained`/`_runner`, so the timed
  window includes their state restore, which takes a few microseconds per step.
* Avalanche: a plugin that is listed first. It records the "loop" time, from
  ``before_training_epoch`` to the last ``after_training_iteration``, divided by the number
  of iterations; this includes data loading and every hook of the strategy's plugins. It also
  records the "inner" time, from ``before_training_iteration`` to ``after_training_iteration``
  (the median over iterations). The inner window includes AGEM's and GEM's memory gradients
  and the GEM QP. It excludes the DataLoader, and it excludes the evaluator's and clock's
  ``after_training_iteration``. Each timed run first deep-copies the strategy as it stood
  after the past tasks, and the copy is not timed. The per-experience work
  (before/after_training_exp, where Avalanche updates its memories) is not timed either.

Runs alternate (paired rounds): each method's group runs [myelin plain, myelin method,
Avalanche Naive, Avalanche method], in reverse order every other round. The ratios are the
medians of the per-round ratios. The finetune row (myelin plain ÷ Naive) pools the rounds of
every group.

It needs Avalanche, which is not a myelin dependency. Build a side venv that keeps torch 2.13
(the only matching torchvision wheel, 0.28.0, is a CUDA build; see the note below):

    python3.11 -m venv /tmp/avl
    /tmp/avl/bin/pip download avalanche-lib==0.6.0 torchvision==0.28.0 --no-deps -d /tmp/avl_dl
    /tmp/avl/bin/pip install --no-deps torch==2.13.0 typing-extensions filelock sympy mpmath \\
        networkx jinja2 markupsafe fsspec numpy pillow
    /tmp/avl/bin/pip install --no-deps /tmp/avl_dl/torchvision-0.28.0-*.whl \\
        /tmp/avl_dl/avalanche_lib-0.6.0-py3-none-any.whl
    /tmp/avl/bin/pip install --no-deps dill packaging gdown requests urllib3 idna certifi \\
        beautifulsoup4 soupsieve charset-normalizer tqdm pytorchcv matplotlib pyparsing \\
        cycler python-dateutil kiwisolver fonttools
    printf "torch==2.13.0\\ntorchvision==0.28.0\\n" > /tmp/avl_constraints.txt
    /tmp/avl/bin/pip install -c /tmp/avl_constraints.txt wandb pydantic scikit-learn \\
        torchmetrics qpsolvers quadprog psutil gputil tensorboard safetensors numba scipy
    /tmp/avl/bin/pip install --no-deps -e .          # myelin itself

With torch 2.13.0+cpu, torchvision 0.28.0+cu130 cannot load its C++ ops, so
``import torchvision`` fails ("operator torchvision::nms does not exist"). In the venv's
``torchvision/__init__.py``, import ``_meta_registrations`` and ``_autograd_registrations`` only
``if extension._has_ops():``. None of these strategies uses the C++ ops.

    /tmp/avl/bin/python -m benchmarks.replay_avalanche     # → results/replay_avalanche.json
    /tmp/avl/bin/python -m benchmarks.replay_avalanche --steps 10 --repeats 1 --out /tmp/a.json
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from importlib import metadata
from typing import Any

import torch
from torch import nn

from benchmarks._common import command, environment, mnist_root, write_json
from benchmarks.replay_cost import METHODS, _qp_ms, _runner, _trained
from myelin.models import mlp
from myelin.scenarios import permuted

LR = 0.03                     # replay_cost._learner's SGD learning rate
BATCH = 10
# the budgets of both sides: name -> (myelin spec, myelin options, Avalanche class, its options)
SETUPS: dict[str, tuple[str, dict[str, Any], str, dict[str, Any]]] = {
    "er": ("er", {"memory": 500}, "Replay", {"mem_size": 500}),
    "agem": ("agem", {"memory_per_task": 50, "reference_batch": 256},
             "AGEM", {"patterns_per_exp": 50, "sample_size": 256}),
    "gem": ("gem", {"memory_per_task": 50}, "GEM", {"patterns_per_exp": 50,
                                                    "memory_strength": 0.5}),
}
NO_AVALANCHE = """\
benchmarks.replay_avalanche needs Avalanche (avalanche-lib 0.6.0), which cannot be imported here:
  {error}
Run it from a side venv that has Avalanche and myelin. Build the venv as the module docstring
describes (in short):
  python3.11 -m venv /tmp/avl; install torch==2.13.0, torchvision==0.28.0 and
  avalanche-lib==0.6.0 with --no-deps; patch torchvision/__init__.py so that it imports its
  _meta/_autograd_registrations only if extension._has_ops(); add Avalanche's dependencies
  with -c constraints pinning torch==2.13.0 and torchvision==0.28.0; then
  /tmp/avl/bin/pip install --no-deps -e .
and run:  cd <repo> && /tmp/avl/bin/python -m benchmarks.replay_avalanche"""


def _quiet() -> warnings.catch_warnings:
    """Silence warnings, Avalanche's too (its deprecation notices force their filter to
    "always" inside the call, so they are recorded here and dropped)."""
    return warnings.catch_warnings(record=True)


def _import_avalanche() -> dict[str, Any]:
    """Avalanche's pieces; exit with the side-venv recipe if it cannot be imported."""
    try:
        with _quiet():
            import avalanche
            from avalanche.benchmarks import tensors_benchmark
            from avalanche.training.plugins import EvaluationPlugin, SupervisedPlugin
            from avalanche.training.plugins.gem import GEMPlugin
            from avalanche.training.supervised import AGEM, GEM, Naive, Replay
    except Exception as exc:      # ImportError, or torchvision's RuntimeError when unpatched
        raise SystemExit(NO_AVALANCHE.format(error=f"{type(exc).__name__}: {exc}")) from exc
    return {"version": avalanche.__version__, "tensors_benchmark": tensors_benchmark,
            "EvaluationPlugin": EvaluationPlugin, "SupervisedPlugin": SupervisedPlugin,
            "GEMPlugin": GEMPlugin,
            "strategies": {"Naive": Naive, "Replay": Replay, "AGEM": AGEM, "GEM": GEM}}


def _timer_class(base: type) -> type:
    """A plugin that records the timed experience's loop and per-iteration times."""

    class IterTimer(base):
        def __init__(self) -> None:
            super().__init__()
            self.start = self.end = 0.0
            self.t0 = 0.0
            self.inner: list[float] = []
            self.sizes: set[int] = set()

        def before_training_epoch(self, strategy, **kwargs) -> None:
            self.inner, self.sizes = [], set()
            self.start = time.perf_counter()

        def before_training_iteration(self, strategy, **kwargs) -> None:
            self.t0 = time.perf_counter()

        def after_training_iteration(self, strategy, **kwargs) -> None:
            self.end = time.perf_counter()
            self.inner.append(self.end - self.t0)
            self.sizes.add(int(strategy.mb_x.shape[0]))

    return IterTimer


class AvalancheRun:
    """One Avalanche strategy trained on the past experiences; `run()` times the next one."""

    def __init__(self, avl: dict[str, Any], strategy: str, options: dict[str, Any], bench,
                 past: int, input_shape, n_classes: int):
        torch.manual_seed(0)
        model = mlp(input_shape, n_classes, (256, 256))
        self.timer_class = _timer_class(avl["SupervisedPlugin"])
        cls = avl["strategies"][strategy]
        self.strategy = cls(
            model=model, optimizer=torch.optim.SGD(model.parameters(), lr=LR),
            criterion=nn.CrossEntropyLoss(), train_mb_size=BATCH, train_epochs=1,
            eval_mb_size=BATCH, device="cpu", plugins=[self.timer_class()],
            evaluator=avl["EvaluationPlugin"](loggers=[]), **options)
        stream = bench.train_stream
        for k in range(past):
            self.strategy.train(stream[k], num_workers=0, shuffle=False)
        self.experience = stream[past]
        self.memory_sizes = _memory_sizes(self.strategy)
        self.qp_calls = 0
        self.qp_seconds = 0.0
        self.last_sizes: set[int] = set()

    def _copy(self):
        """A deep copy of the trained strategy (AGEM's memory iterator is re-created)."""
        held = {}
        for p in self.strategy.plugins:
            if hasattr(p, "buffer_dliter"):              # a generator: cannot be copied
                held[id(p)] = p.buffer_dliter
                p.buffer_dliter = iter(())
        try:
            clone = copy.deepcopy(self.strategy)
        finally:
            for p in self.strategy.plugins:
                if id(p) in held:
                    p.buffer_dliter = held[id(p)]
        for p in clone.plugins:
            if hasattr(p, "buffer_dliter") and p.buffer_dataloader is not None:
                p.buffer_dliter = iter(p.buffer_dataloader)
            if hasattr(p, "solve_quadprog"):
                p.solve_quadprog = self._counted(p.solve_quadprog)
        return clone

    def _counted(self, solve: Callable) -> Callable:
        def wrapped(g):
            t0 = time.perf_counter()
            out = solve(g)
            self.qp_seconds += time.perf_counter() - t0
            self.qp_calls += 1
            return out
        return wrapped

    def run(self) -> tuple[float, float]:
        """Train the timed experience once: (loop s per step, median inner s per step)."""
        clone = self._copy()
        timer = next(p for p in clone.plugins if isinstance(p, self.timer_class))
        with _quiet():
            clone.train(self.experience, num_workers=0, shuffle=False)
        n = len(timer.inner)
        self.last_sizes = timer.sizes
        return (timer.end - timer.start) / n, statistics.median(timer.inner)


def _memory_sizes(strategy) -> dict[str, Any]:
    """What the strategy's memory holds after the past experiences."""
    for p in strategy.plugins:
        if hasattr(p, "storage_policy"):
            return {"replay_buffer": len(p.storage_policy.buffer)}
        if hasattr(p, "buffers") and hasattr(p, "sample_size"):
            # sample_size // experiences per buffer, but a buffer gives at most all it holds
            return {"agem_buffers": [len(b) for b in p.buffers],
                    "agem_reference_batch": len(p.sample_from_memory()[0])}
        if hasattr(p, "memory_x"):
            return {"gem_memory": [len(v) for v in p.memory_x.values()]}
    return {}


def _avalanche_qp_ms(avl: dict[str, Any], past: int, n_params: int,
                     repeats: int = 30) -> float:
    """Median ms of Avalanche's GEMPlugin.solve_quadprog (float64 Gram matrix, qpsolvers +
    quadprog, Mᵀv + g), on the same conflicting constraints as `replay_cost._qp_ms`."""
    g = torch.randn(n_params)
    plugin = avl["GEMPlugin"](patterns_per_experience=50, memory_strength=0.5)
    plugin.G = -g[None] + 0.5 * torch.randn(past, n_params)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        plugin.solve_quadprog(g)
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def _myelin_run(scenario, spec: str, options: dict[str, Any], past: int,
                steps: int, label: str) -> tuple[Callable[[], dict[str, float]], Any]:
    """A timed `replay_cost._runner` for a method with our budget, and the learner's method.

    `replay_cost._learner` looks a method's options up in `replay_cost.METHODS` by name, so
    our budgets are added there under their own names (this process only)."""
    key = "finetune" if spec == "finetune" else f"replay_avalanche:{spec}:{sorted(options.items())}"
    if spec != "finetune":
        METHODS.setdefault(key, (spec, options, "—"))
    learner = _trained(scenario, key, past, steps)
    run = _runner(learner, past, scenario)

    def timed() -> dict[str, float]:
        t0 = time.perf_counter()
        run()
        return {label: (time.perf_counter() - t0) / steps}
    return timed, learner.method


def _avalanche_timed(run: AvalancheRun, label: str) -> Callable[[], dict[str, float]]:
    def timed() -> dict[str, float]:
        loop, inner = run.run()
        return {label: loop, f"{label} inner": inner}
    return timed


def _rounds(runs: list[Callable[[], dict[str, float]]], repeats: int) -> list[dict[str, float]]:
    """Per-round seconds per step of every run (each returns {label: s}); forward order on
    even rounds, reversed on odd ones, after one untimed warm-up of each."""
    for fn in runs:
        fn()
    out = []
    for i in range(repeats):
        out.append({})
        for fn in runs if i % 2 == 0 else runs[::-1]:
            out[-1].update(fn())
    return out


def _median_ratio(rounds: list[dict[str, float]], num: str, den: str) -> float:
    return statistics.median(r[num] / r[den] for r in rounds)


def main(argv: list[str] | None = None) -> int:
    """Time both libraries' steps in paired rounds; write the JSON and print the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--past", type=int, default=2, help="tasks trained before timing")
    p.add_argument("--steps", type=int, default=50, help="steps per timed run (≤ 100)")
    p.add_argument("--repeats", type=int, default=15, help="paired rounds per method")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--methods", default=",".join(SETUPS))
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    avl = _import_avalanche()
    torch.set_num_threads(args.threads)
    try:
        from threadpoolctl import threadpool_limits  # numpy's BLAS (Avalanche's GEM QP)
        threadpool_limits(args.threads)       # stays in force (no context manager)
    except ImportError:
        pass

    scenario = permuted("mnist", args.past + 1, seed=0, root=mnist_root(), first_identity=False,
                        per_task_samples=1000)
    k, n_samples = args.past, args.steps * BATCH
    if n_samples > len(scenario.tasks[k].train):
        raise SystemExit(f"--steps {args.steps} needs {n_samples} samples per task; a task has "
                         f"{len(scenario.tasks[k].train)}.")
    # The timed task: the batches myelin draws (`_runner` seeds the generator with k, and
    # `_train` walks one randperm), in order, for Avalanche (loaded without shuffling).
    # Past tasks: their first steps × 10 samples (as many steps as myelin's past tasks).
    order = torch.randperm(len(scenario.tasks[k].train),
                           generator=torch.Generator().manual_seed(k))[:n_samples]
    train = []
    for j, task in enumerate(scenario.tasks):
        x, y = task.train.tensors()
        index = order if j == k else torch.arange(n_samples)
        train.append((x[index], y[index]))
    with _quiet():
        bench = avl["tensors_benchmark"](train_tensors=train,
                                         test_tensors=[(x[:10], y[:10]) for x, y in train],
                                         task_labels=[0] * len(train))

    def avalanche(strategy: str, options: dict[str, Any]) -> AvalancheRun:
        with _quiet():
            return AvalancheRun(avl, strategy, options, bench, args.past, scenario.input_shape,
                                scenario.n_classes)

    plain, _ = _myelin_run(scenario, "finetune", {}, args.past, args.steps, "myelin plain")
    naive_run = avalanche("Naive", {})
    naive = _avalanche_timed(naive_run, "avalanche plain")

    rows: dict[str, dict[str, Any]] = {}
    all_rounds: dict[str, list[dict[str, float]]] = {}
    for name in args.methods.split(","):
        spec, options, strategy, avl_options = SETUPS[name]
        mine, method = _myelin_run(scenario, spec, options, args.past, args.steps, "myelin")
        theirs = avalanche(strategy, avl_options)
        projections0 = getattr(method, "projections", 0)
        rounds = _rounds([plain, mine, naive, _avalanche_timed(theirs, "avalanche")],
                         args.repeats)
        all_rounds[name] = rounds
        runs = args.repeats + 1
        rows[name] = {
            "myelin": {"spec": spec, "options": options,
                       "ms_per_step": 1e3 * statistics.median(r["myelin"] for r in rounds),
                       "plain_ms_per_step":
                           1e3 * statistics.median(r["myelin plain"] for r in rounds),
                       "ratio_to_plain": _median_ratio(rounds, "myelin", "myelin plain"),
                       "projections_per_run":
                           (getattr(method, "projections", 0) - projections0) / runs},
            "avalanche": {"strategy": strategy, "options": avl_options,
                          "ms_per_step": 1e3 * statistics.median(r["avalanche"] for r in rounds),
                          "plain_ms_per_step":
                              1e3 * statistics.median(r["avalanche plain"] for r in rounds),
                          "ratio_to_plain": _median_ratio(rounds, "avalanche", "avalanche plain"),
                          "inner_ms_per_step":
                              1e3 * statistics.median(r["avalanche inner"] for r in rounds),
                          "inner_ratio_to_plain":
                              _median_ratio(rounds, "avalanche inner", "avalanche plain inner"),
                          "minibatch_sizes": sorted(theirs.last_sizes),
                          "memory": theirs.memory_sizes,
                          "qp_calls_per_run": theirs.qp_calls / runs,
                          "qp_ms_per_call": (1e3 * theirs.qp_seconds / theirs.qp_calls
                                             if theirs.qp_calls else None)},
            "myelin_over_avalanche": _median_ratio(rounds, "myelin", "avalanche"),
            "myelin_over_avalanche_inner": _median_ratio(rounds, "myelin", "avalanche inner"),
        }
        r = rows[name]
        print(f"{name:12s} myelin {r['myelin']['ms_per_step']:6.2f} ms "
              f"({r['myelin']['ratio_to_plain']:.2f}× plain)  avalanche "
              f"{r['avalanche']['ms_per_step']:6.2f} ms "
              f"({r['avalanche']['ratio_to_plain']:.2f}× plain)  myelin/avalanche "
              f"{r['myelin_over_avalanche']:.2f}", flush=True)

    pooled = [r for rounds in all_rounds.values() for r in rounds]
    finetune = {
        "myelin_ms_per_step": 1e3 * statistics.median(r["myelin plain"] for r in pooled),
        "avalanche_ms_per_step": 1e3 * statistics.median(r["avalanche plain"] for r in pooled),
        "avalanche_inner_ms_per_step":
            1e3 * statistics.median(r["avalanche plain inner"] for r in pooled),
        "myelin_over_avalanche": _median_ratio(pooled, "myelin plain", "avalanche plain"),
        "myelin_over_avalanche_inner":
            _median_ratio(pooled, "myelin plain", "avalanche plain inner"),
        "rounds": len(pooled)}
    n_params = sum(q.numel() for q in naive_run.strategy.model.parameters())
    mine_qp = _qp_ms(args.past, n_params)
    qp = {"myelin_gem_project_ms": mine_qp["projection"], "myelin_gem_dual_ms": mine_qp["qp"],
          "avalanche_solve_quadprog_ms": _avalanche_qp_ms(avl, args.past, n_params)}

    print(f"\nper step after {args.past} past tasks, {args.steps} steps × {args.repeats} paired "
          f"rounds; ms = median; ratios = median of per-round ratios")
    print(f"{'method':12s} {'myelin ms':>9s} {'÷plain':>7s} {'avl ms':>8s} {'÷Naive':>7s} "
          f"{'avl inner':>9s} {'÷Naive':>7s} {'myelin÷avl':>10s}")
    print(f"{'finetune':12s} {finetune['myelin_ms_per_step']:9.2f} {1:7.2f} "
          f"{finetune['avalanche_ms_per_step']:8.2f} {1:7.2f} "
          f"{finetune['avalanche_inner_ms_per_step']:9.2f} {1:7.2f} "
          f"{finetune['myelin_over_avalanche']:10.2f}")
    for name, r in rows.items():
        my, av = r["myelin"], r["avalanche"]
        print(f"{name:12s} {my['ms_per_step']:9.2f} {my['ratio_to_plain']:7.2f} "
              f"{av['ms_per_step']:8.2f} {av['ratio_to_plain']:7.2f} "
              f"{av['inner_ms_per_step']:9.2f} {av['inner_ratio_to_plain']:7.2f} "
              f"{r['myelin_over_avalanche']:10.2f}")
    print(f"GEM solver alone, {args.past} conflicting constraints: myelin gem_project "
          f"{qp['myelin_gem_project_ms']:.2f} ms (nnls {qp['myelin_gem_dual_ms']:.3f} ms), "
          f"Avalanche solve_quadprog {qp['avalanche_solve_quadprog_ms']:.2f} ms")

    versions = {}
    for package in ("avalanche-lib", "qpsolvers", "quadprog", "scipy", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    write_json("replay_avalanche", {
        "what": "time per training step of myelin's methods and Avalanche's strategies on the "
                f"same batches (permuted MNIST, batch {BATCH}, MLP 784-256-256-10, SGD lr {LR}, "
                f"after {args.past} past tasks), one process, paired rounds",
        "command": command("replay_avalanche", argv), "interpreter": sys.executable,
        "environment": environment(),
        "avalanche": avl["version"], "versions": versions,
        "past_tasks": args.past, "steps": args.steps, "repeats": args.repeats,
        "timing": {
            "myelin": "wall time of GradientLearner.learn (replay_cost._runner: state restore "
                      "included) ÷ steps",
            "avalanche": "before_training_epoch → last after_training_iteration ÷ iterations "
                         "(DataLoader and all iteration hooks included; per-experience "
                         "hooks, where Avalanche updates its memories, excluded)",
            "avalanche_inner": "median before_training_iteration → after_training_iteration "
                               "(timer plugin first: strategy plugins' iteration hooks inside, "
                               "DataLoader outside)"},
        "finetune": finetune, "methods": rows, "gem_solver_ms": qp,
        "parameters": n_params}, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
