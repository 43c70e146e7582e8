"""Seed 002 (Kirkpatrick et al. 2017, EWC), Fig. 3A/B/C on permuted MNIST.

    python -m benchmarks.seed002_mnist fig3a --seeds 0-4 --threads 1   # A → B → C curves
    python -m benchmarks.seed002_mnist fig3b --seeds 0-2 --threads 1   # up to 10 tasks
    python -m benchmarks.seed002_mnist fig3c --seeds 0-2 --threads 1   # Fisher overlap vs depth
    python -m benchmarks.seed002_mnist report                          # plots + markdown
    python -m benchmarks.seed002_mnist fig3a --quick --out /tmp/q      # tiny smoke run (tests)

Everything is trained by the library as it is: `myelin.fit` (plain SGD), the permuted
scenarios of `myelin.scenarios.permuted`, ``make_method("ewc", importance="fisher-exact",
stabilized=True)`` and ``make_method("l2")``, `myelin.analysis.overlap`. What is experiment code
here: the data split (MNIST's last 10 000 training images are the validation set, never
trained on), the block-permuted task pairs of Fig. 3C, two small `myelin.methods.Method`s
(`EarlyStopping`, `RecordImportance`), the dropout MLP of Fig. 3B, and the protocol.

* **Fig. 3A** — three tasks A → B → C (independent pixel permutations), accuracy of each on its
  test set during training; SGD, L2 and EWC. λ of EWC and of L2 are chosen on the validation
  split (mean validation accuracy over the three tasks after C, first seed) from a grid; L2 is
  also shown at the smallest λ of its grid that keeps task A (validation, after C) at least as
  well as the chosen EWC — the fair test of "L2 keeps A but cannot learn B": at equal
  retention, can it learn B and C?
* **Fig. 3B** — ten tasks; average test accuracy over the tasks seen so far after each task,
  EWC vs SGD + dropout, each with early stopping on the current task's validation set (every
  epoch; the best epoch's weights are kept) and a reduced hyper-parameter search (mean
  validation accuracy over all ten tasks after the last, first seed).
* **Fig. 3C** — a network of six hidden layers trained on task A (MNIST), then on task B, with
  EWC (λ chosen on validation for the dissimilar pair) and, as a control, with SGD; the Fisher
  overlap (`myelin.analysis.overlap`, per layer) of the two tasks' Fisher diagonals ("exact":
  expectation over the model's own predictive distribution, at the end of each task) against
  depth, for B = A with its central 8×8 block of pixels permuted (similar), the central 16×16
  block, and the whole image (dissimilar).

One JSON per finished run (figure, method settings, seed) under
``benchmarks/results/seed002/fig3X/``; a rerun skips every run whose JSON holds the same
settings, so an interrupted figure continues where it stopped. The figure's summary
(``fig3X.json``), plot (``docs/results/seed002-fig3X.png``) and markdown come from those runs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from benchmarks._common import RESULTS, ROOT, command, environment, mnist_root, parse_seeds
from myelin import fit, make_method
from myelin.analysis import overlap
from myelin.data import load
from myelin.data.datasets import ArrayDataset
from myelin.importance import ESTIMATORS
from myelin.methods import Compose, Context, Method
from myelin.metrics import average_accuracy_curve, ci95
from myelin.models import mlp
from myelin.scenarios import Scenario, Task, permuted
from myelin.train import evaluate

OUT = RESULTS / "seed002"
FIGURES = ROOT / "docs" / "results"
FIGURE_NAMES = {"fig3a": "seed002-fig3a.png", "fig3b": "seed002-fig3b.png",
                "fig3c": "seed002-fig3c.png"}
QUICK_OUT = Path(tempfile.gettempdir()) / "myelin-seed002-mnist-quick"
POOL = 50_000           # MNIST training images 0..49 999 are trained on; 50 000.. validate
SIDE = 28
DEFAULT_SEEDS = {"fig3a": "0-4", "fig3b": "0-2", "fig3c": "0-2"}
GRID_KEYS = ("ewc_lams", "l2_lams", "sgd_grid", "ewc_grid", "patches")
"""Configuration entries that say which runs a figure makes, not what one run computes: a run's
JSON is valid whatever they are (a grid can grow without rerunning its runs)."""

# --------------------------------------------------------------------------------------------
# Settings. The paper's are in PAPER["si_table"]; ours are reduced to the CPU budget (stated in
# the results). Every run's JSON holds the whole figure configuration.

CONFIG: dict[str, dict[str, Any]] = {
    "fig3a": {"n_tasks": 3, "n_train": 20_000, "n_val": 5000, "n_test": 10_000,
              "widths": [400, 400], "epochs": 5, "batch_size": 32, "lr": 0.1,
              "eval_per_epoch": 2, "eval_samples": 1000, "closing_samples": 1000,
              "fisher": "fisher-exact", "ewc_lams": [3, 10, 30, 1e2, 1e3, 1e4, 1e5],
              "l2_lams": [0.003, 0.01, 0.03, 0.1, 0.3]},
    "fig3b": {"n_tasks": 10, "n_train": 10_000, "n_val": 2000, "n_test": 2000,
              "layers": 2, "max_epochs": 8, "patience": 2, "batch_size": 32,
              "closing_samples": 1000, "fisher": "fisher-exact", "dropout": [0.2, 0.5],
              "sgd_grid": [{"width": w, "lr": lr} for w in (400, 800) for lr in (0.03, 0.1)],
              "ewc_grid": [{"width": 400, "lr": 0.1, "lam": lam} for lam in (3, 10, 30, 1e2)]},
    "fig3c": {"n_train": 20_000, "n_val": 5000, "n_test": 10_000, "widths": [100] * 6,
              "epochs": 5, "batch_size": 32, "lr": 0.1, "closing_samples": 2000,
              "fisher": "fisher-exact", "patches": [8, 16, 28], "ewc_lams": [3, 10, 30, 1e2, 1e3]},
}

QUICK: dict[str, dict[str, Any]] = {
    "fig3a": {**CONFIG["fig3a"], "n_train": 300, "n_val": 200, "n_test": 200, "widths": [32, 32],
              "epochs": 2, "eval_samples": 100, "closing_samples": 100, "ewc_lams": [1e2, 1e4],
              "l2_lams": [0.01, 1.0]},
    "fig3b": {**CONFIG["fig3b"], "n_tasks": 3, "n_train": 300, "n_val": 200, "n_test": 200,
              "max_epochs": 3, "patience": 1, "closing_samples": 100,
              "sgd_grid": [{"width": 32, "lr": 0.1}, {"width": 48, "lr": 0.1}],
              "ewc_grid": [{"width": 32, "lr": 0.1, "lam": 1e3}]},
    "fig3c": {**CONFIG["fig3c"], "n_train": 300, "n_val": 200, "n_test": 200,
              "widths": [16] * 6, "epochs": 2, "closing_samples": 100, "patches": [8, 28],
              "ewc_lams": [1e3]},
}

PAPER: dict[str, Any] = {
    "source": "seed 002 (a Chinese translation of Kirkpatrick et al. 2017, PNAS 114:3521, "
              "§3.2) and the paper's SI",
    "claims": {
        "fig3a": [
            "SGD (blue) forgets: when training switches from A to B, A's performance falls "
            "while B's rises, and A is forgotten further as C is added.",
            "L2 (green, the same stiffness for every weight) forgets A less, but B is not "
            "learned properly: the constraint protects all weights equally and leaves little "
            "capacity for B.",
            "EWC (red) learns B (and C) well without forgetting A.",
        ],
        "fig3b": [
            "SGD with dropout, after a cross-validated hyper-parameter search (as Goodfellow "
            "et al. 2013), is limited and does not scale to more tasks.",
            "EWC learns a large number of tasks in sequence with only a modest growth of the "
            "error rate.",
        ],
        "fig3c": [
            "Two very similar tasks (MNIST with only a few pixels permuted) depend on similar "
            "sets of weights throughout the network (grey dashed).",
            "Dissimilar tasks start to allocate separate weights (black dashed), yet the layers "
            "close to the output are reused by both, since the output domain (the class "
            "labels) is shared.",
        ],
    },
    # The SI's hyper-parameter table for the MNIST experiments. Not in any text stored here
    # (the `pages` corpus has only the first ~2000 characters of the PNAS and arXiv pages, and
    # the seed translates the main text only): these entries are the table as we recall it,
    # unverified, and are shown as such.
    "si_table": {
        "learning rate": ["1e-3", "1e-5 – 1e-3", "1e-3"],
        "dropout": ["no", "yes", "no"],
        "early stopping": ["no", "yes", "no"],
        "hidden layers": ["2", "2", "6"],
        "width of hidden layers": ["400", "400 – 2000", "100"],
        "epochs per task": ["20", "100", "100"],
    },
    "not_found": ["the SI table itself (values above recalled, unverified)", "the minibatch "
                  "size", "the λ values and the λ grid", "the optimizer's details beyond "
                  "'SGD'", "how many runs the curves average", "which patch was permuted for "
                  "the similar tasks of Fig. 3C ('a few pixels')",
                  "the numbers behind the figures (the seed's figure images are not stored)"],
}


# --------------------------------------------------------------------------------------------
# Data and scenarios


@lru_cache(maxsize=1)
def _mnist() -> tuple[ArrayDataset, ArrayDataset]:
    root = mnist_root()
    return load("mnist", "train", root), load("mnist", "test", root)


def splits(cfg: dict[str, Any], seed: int) -> tuple[ArrayDataset, ArrayDataset, ArrayDataset]:
    """(train, validation, test) for one seed, before any permutation.

    train: `n_train` images drawn (by `seed`) from MNIST's training images 0..49 999 — the same
    images for every task of a run, permuted differently; validation: the first `n_val` of
    training images 50 000..59 999 (never trained on); test: the first `n_test` test images.
    """
    train_all, test_all = _mnist()
    idx = np.sort(np.random.RandomState(seed).choice(POOL, cfg["n_train"], replace=False))
    return (train_all.subset(idx, "mnist/train"),
            train_all.subset(np.arange(POOL, POOL + cfg["n_val"]), "mnist/val"),
            test_all.subset(np.arange(cfg["n_test"]), "mnist/test"))


def permuted_tasks(train: ArrayDataset, val: ArrayDataset, test: ArrayDataset, n_tasks: int,
                   seed: int, first_identity: bool = False) -> tuple[Scenario, list[ArrayDataset]]:
    """`myelin.scenarios.permuted` over (train, test), and the same permutations of `val`.

    Without per-task subsampling the permutations depend on the seed only, so building the
    scenario a second time over (val, val) permutes the validation images exactly as task t's.
    """
    scenario = permuted((train, test), n_tasks, seed=seed, first_identity=first_identity)
    twin = permuted((val, val), n_tasks, seed=seed, first_identity=first_identity)
    return scenario, [t.test for t in twin.tasks]


def block_permutation(patch: int, seed: int) -> np.ndarray:
    """A pixel permutation of a 28×28 image that shuffles only its central patch×patch block."""
    if not 1 <= patch <= SIDE:
        raise ValueError(f"patch must be in 1..{SIDE}. Got {patch!r}.")
    lo = (SIDE - patch) // 2
    block = np.array([r * SIDE + c for r in range(lo, lo + patch) for c in range(lo, lo + patch)])
    perm = np.arange(SIDE * SIDE)
    perm[block] = block[np.random.RandomState(seed).permutation(len(block))]
    return perm


def pair_tasks(train: ArrayDataset, val: ArrayDataset, test: ArrayDataset, patch: int,
               seed: int) -> tuple[Scenario, list[ArrayDataset]]:
    """Task A = MNIST, task B = MNIST with its central patch×patch block permuted.

    patch = 28 is the whole image: `myelin.scenarios.permuted` with two tasks, the first the
    identity. Returns the scenario and the two validation sets.
    """
    if patch >= SIDE:
        return permuted_tasks(train, val, test, 2, seed, first_identity=True)
    idx = torch.from_numpy(block_permutation(patch, seed))

    def apply(ds: ArrayDataset) -> ArrayDataset:
        flat = ds.images.reshape(len(ds), -1)[:, idx].reshape(ds.images.shape)
        return ds.with_images(flat, f"{ds.name}/patch{patch}")

    classes = list(range(len(train.classes)))
    scenario = Scenario(f"patch{patch}-mnist", [Task("mnist", train, test, classes),
                                                Task(f"mnist-patch{patch}", apply(train),
                                                     apply(test), classes)],
                        len(classes), "domain",
                        config={"kind": "block-permuted", "patch": patch, "seed": seed})
    return scenario, [val, apply(val)]


# --------------------------------------------------------------------------------------------
# Two small methods (the library's Method protocol) and the models


class EarlyStopping(Method):
    """Early stopping per task on its validation set (Fig. 3B's protocol).

    The current task's validation accuracy is measured after every epoch (``ceil(n /
    batch_size)`` steps) and at the task's last step; when it has not improved for `patience`
    checks, or at the last step, the weights of the best check are put back — before the
    runner scores the task and before any consolidation (EWC's Fisher and anchor are those of
    the kept weights). After a stop the task's remaining steps are skipped: `train_step`
    returns 0 without a forward pass, so the loop's recorded training losses are 0 there.

    Args:
        validation: One validation set per task, in task order.
        epochs: The loop's epochs per task (to know its number of steps).
        batch_size: The loop's batch size.
        patience: Checks without improvement before stopping.
    """

    name = "early-stopping"

    def __init__(self, validation: Sequence[ArrayDataset], *, epochs: float, batch_size: int,
                 patience: int):
        if patience < 1:
            raise ValueError(f"patience must be >= 1. Got {patience!r}.")
        self.validation = list(validation)
        self.epochs, self.batch_size, self.patience = epochs, batch_size, patience
        self.config = {"patience": patience, "max_epochs": epochs}
        self.history: list[dict[str, Any]] = []

    def begin_task(self, ctx: Context) -> None:
        """Reset the task's bookkeeping; count its steps as the loop does."""
        n = len(ctx.train_data) - ctx.held_out()
        self._total = max(1, math.ceil(self.epochs * n / self.batch_size))
        self._every = max(1, math.ceil(n / self.batch_size))
        self._steps, self._bad, self._stopped = 0, 0, False
        self._scores: list[float] = []
        self._best: dict[str, Tensor] | None = None

    def train_step(self, ctx: Context, batch: Any) -> Tensor | None:
        """After a stop: skip the step (no forward pass, no update)."""
        return torch.zeros(()) if self._stopped else None

    def after_step(self, ctx: Context, batch: Any) -> None:
        """Check the validation accuracy at epoch ends; stop and restore the best weights."""
        if self._stopped:
            return
        self._steps += 1
        last = self._steps >= self._total
        if self._steps % self._every and not last:
            return
        acc = evaluate(ctx.model, self.validation[ctx.task_index])
        if not self._scores or acc > max(self._scores):
            self._best = {k: v.detach().clone() for k, v in ctx.model.state_dict().items()}
            self._bad = 0
        else:
            self._bad += 1
        self._scores.append(acc)
        if self._bad >= self.patience or last:
            assert self._best is not None
            ctx.model.load_state_dict(self._best)
            self._stopped = True
            self.history.append({"task": ctx.task_index, "validation": self._scores,
                                 "best_epoch": int(np.argmax(self._scores)) + 1,
                                 "epochs_run": len(self._scores), "stopped_early": not last})


class RecordImportance(Method):
    """Record each task's importance at its end, on its closing set (`Context.estimate`).

    Args:
        estimator: A name of `myelin.importance.ESTIMATORS`, e.g. "fisher-exact".
    """

    name = "record-importance"

    def __init__(self, estimator: str):
        self.estimator = ESTIMATORS.get(estimator)
        self.config = {"estimator": estimator}
        self.recorded: list[Any] = []

    def end_task(self, ctx: Context) -> None:
        """Estimate the finished task's importance (the model is still at its end weights)."""
        self.recorded.append(ctx.estimate(self.estimator))


def dropout_mlp(width: int, layers: int, dropout: Sequence[float], inputs: int = SIDE * SIDE
                ) -> nn.Sequential:
    """inputs → width (× layers) → 10, ReLU, dropout p_in on the input, p_hidden after each.

    Module indices: Flatten, then [Dropout] Linear ReLU per layer, ..., Linear (dropout layers
    only when p > 0).
    """
    p_in, p_hidden = dropout
    mods: list[nn.Module] = [nn.Flatten()]
    if p_in > 0:
        mods.append(nn.Dropout(p_in))
    n_in = inputs
    for _ in range(layers):
        mods += [nn.Linear(n_in, width), nn.ReLU()]
        if p_hidden > 0:
            mods.append(nn.Dropout(p_hidden))
        n_in = width
    mods.append(nn.Linear(n_in, 10))
    return nn.Sequential(*mods)


def base_method(spec: dict[str, Any], cfg: dict[str, Any]) -> Method:
    """SGD (fine-tuning), L2 or EWC (stabilized, accumulated Ω, the configured Fisher)."""
    name = spec["method"]
    if name in ("sgd", "sgd-dropout"):
        return make_method("finetune")
    if name.startswith("l2"):
        return make_method("l2", lam=spec["lam"])
    if name == "ewc":
        return make_method("ewc", lam=spec["lam"], importance=cfg["fisher"], stabilized=True)
    raise ValueError(f"Unknown method {name!r} in {spec!r}.")


# --------------------------------------------------------------------------------------------
# One run of each figure


def run_fig3a(cfg: dict[str, Any], spec: dict[str, Any], seed: int) -> dict[str, Any]:
    """Tasks A → B → C with one method: accuracy matrix, curves, final validation accuracies."""
    train, val, test = splits(cfg, seed)
    scenario, vals = permuted_tasks(train, val, test, cfg["n_tasks"], seed)
    torch.manual_seed(seed)
    model = mlp((1, SIDE, SIDE), 10, cfg["widths"])
    per_epoch = math.ceil(cfg["n_train"] / cfg["batch_size"])
    res = fit(scenario, model, base_method(spec, cfg), "sgd", lr=cfg["lr"], epochs=cfg["epochs"],
              batch_size=cfg["batch_size"], eval_every=max(1, per_epoch // cfg["eval_per_epoch"]),
              eval_samples=cfg["eval_samples"], closing_samples=cfg["closing_samples"],
              seed=seed, progress=False)
    return {"accuracy": res.accuracy, "curves": res.curves, "steps_per_task": cfg["epochs"]
            * per_epoch, "validation_final": [evaluate(model, v) for v in vals],
            "metrics": res.metrics}


def run_fig3b(cfg: dict[str, Any], spec: dict[str, Any], seed: int) -> dict[str, Any]:
    """Up to `n_tasks` tasks with early stopping: accuracy matrix, A_k, validation, epochs."""
    train, val, test = splits(cfg, seed)
    scenario, vals = permuted_tasks(train, val, test, cfg["n_tasks"], seed)
    torch.manual_seed(seed)
    dropout = cfg["dropout"] if spec["method"] == "sgd-dropout" else [0.0, 0.0]
    model = dropout_mlp(spec["width"], cfg["layers"], dropout)
    stop = EarlyStopping(vals, epochs=cfg["max_epochs"], batch_size=cfg["batch_size"],
                         patience=cfg["patience"])
    res = fit(scenario, model, Compose(base_method(spec, cfg), stop), "sgd", lr=spec["lr"],
              epochs=cfg["max_epochs"], batch_size=cfg["batch_size"],
              closing_samples=cfg["closing_samples"], seed=seed, progress=False)
    return {"accuracy": res.accuracy, "aa_curve": average_accuracy_curve(res.accuracy),
            "validation_final": [evaluate(model, v) for v in vals], "dropout": dropout,
            "early_stopping": stop.history, "metrics": res.metrics}


def run_fig3c(cfg: dict[str, Any], spec: dict[str, Any], seed: int) -> dict[str, Any]:
    """Task A then B (a block-permuted pair): per-layer and whole-model Fisher overlap."""
    train, val, test = splits(cfg, seed)
    scenario, vals = pair_tasks(train, val, test, spec["patch"], seed)
    torch.manual_seed(seed)
    model = mlp((1, SIDE, SIDE), 10, cfg["widths"])
    record = RecordImportance(cfg["fisher"])
    res = fit(scenario, model, Compose(base_method(spec, cfg), record), "sgd", lr=cfg["lr"],
              epochs=cfg["epochs"], batch_size=cfg["batch_size"],
              closing_samples=cfg["closing_samples"], seed=seed, progress=False)
    fa, fb = record.recorded
    per_layer = overlap(fa, fb)
    assert isinstance(per_layer, dict)
    return {"accuracy": res.accuracy, "layers": list(per_layer),
            "overlap": list(per_layer.values()), "overlap_model": overlap(fa, fb, per="model"),
            "overlap_parameter": overlap(fa, fb, per="parameter"),
            "trace": [float(sum(v.sum() for v in f.values())) for f in (fa, fb)],
            "validation_final": [evaluate(model, v) for v in vals]}


RUNNERS: dict[str, Callable[[dict[str, Any], dict[str, Any], int], dict[str, Any]]] = {
    "fig3a": run_fig3a, "fig3b": run_fig3b, "fig3c": run_fig3c}


# --------------------------------------------------------------------------------------------
# Resumable runs: one JSON each


def _plain(value: Any) -> Any:
    """`value` as JSON gives it back (tuples → lists), for comparing settings."""
    return json.loads(json.dumps(value))


def _identity(figure: str, cfg: dict[str, Any], spec: dict[str, Any], seed: int,
              quick: bool) -> dict[str, Any]:
    """What determines one run's result: the figure, its settings (not its grids), spec, seed."""
    run_cfg = {k: v for k, v in cfg.items() if k not in GRID_KEYS}
    return _plain({"figure": figure, "config": run_cfg, "spec": spec, "seed": seed,
                   "quick": quick})


def run_key(spec: dict[str, Any], seed: int) -> str:
    """File name of a run: e.g. ``ewc-lam1000-seed0``, ``sgd-dropout-w800-lr0.1-seed1``."""
    parts = [str(spec["method"])]
    for k, tag in (("patch", "patch"), ("width", "w"), ("lr", "lr"), ("lam", "lam")):
        if k in spec:
            parts.append(f"{tag}{spec[k]:g}")
    return "-".join(parts) + f"-seed{seed}"


class Runs:
    """Runs of one figure, each computed once: a JSON per run under ``<out>/<figure>/``.

    A run whose JSON holds the same figure, configuration (grids aside: `GRID_KEYS`), method
    settings and seed is read, not run again; one made with other settings is run again and
    replaced.
    """

    def __init__(self, figure: str, cfg: dict[str, Any], out: Path, quick: bool,
                 log: Callable[[str], None]):
        self.figure, self.cfg, self.quick, self.log = figure, cfg, quick, log
        self.folder = out / figure
        self.used: list[dict[str, Any]] = []
        self.ran = self.skipped = 0

    def get(self, spec: dict[str, Any], seed: int) -> dict[str, Any]:
        """The record of (spec, seed): read if done before with these settings, else run."""
        key = run_key(spec, seed)
        path = self.folder / f"{key}.json"
        identity = _identity(self.figure, self.cfg, spec, seed, self.quick)
        if path.exists():
            try:
                rec = json.loads(path.read_text())
                saved = rec["identity"]
                saved = _identity(saved["figure"], saved["config"], saved["spec"], saved["seed"],
                                  saved["quick"])
            except (json.JSONDecodeError, KeyError, TypeError):
                rec, saved = {}, None
            if saved == identity:
                self.skipped += 1
                self.log(f"{self.figure} {key}: done before, read {path}")
                self.used.append(rec)
                return rec
            self.log(f"{self.figure} {key}: {path} holds other settings; running it again")
        t0, c0 = time.perf_counter(), time.process_time()
        result = RUNNERS[self.figure](self.cfg, spec, seed)
        rec = {"key": key, "identity": identity, "result": result,
               "wall_seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0,
               "environment": environment()}
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(_plain(rec), indent=1) + "\n")
        os.replace(tmp, path)
        self.ran += 1
        self.used.append(rec)
        self.log(f"{self.figure} {key}: {rec['cpu_seconds']:.0f} s CPU "
                 f"({rec['wall_seconds']:.0f} s wall) → {path}")
        return rec

    def seconds(self) -> dict[str, float]:
        """CPU and wall seconds of every run this figure used (read or run)."""
        seen = {r["key"]: r for r in self.used}
        return {"cpu": float(sum(r["cpu_seconds"] for r in seen.values())),
                "wall": float(sum(r["wall_seconds"] for r in seen.values())),
                "runs": len(seen)}


# --------------------------------------------------------------------------------------------
# Statistics


def stat(values: Sequence[float]) -> dict[str, Any]:
    """Mean, 95 % CI half-width (None for one value), n and the values."""
    vals = [float(v) for v in values]
    mean, half = ci95(vals)
    return {"mean": mean, "ci95": None if math.isnan(half) else half, "n": len(vals),
            "values": vals}


def positive(values: Sequence[float]) -> int:
    """2 if the mean is > 0 and, with ≥ 2 values, its 95 % CI excludes 0; 1 if only every value
    is > 0 (the CI includes 0); 0 otherwise."""
    s = stat(values)
    if s["mean"] > 0 and (s["ci95"] is None or s["mean"] - s["ci95"] > 0):
        return 2
    return 1 if min(s["values"]) > 0 else 0


def agrees(*levels: int | bool) -> str:
    """The verdict of claims whose parts have these levels (`positive`; a bool: 2 or 0)."""
    level = min(int(lv) * 2 if isinstance(lv, bool) else lv for lv in levels)
    return {2: "yes", 1: "in every seed, but the 95 % CI includes 0", 0: "no"}[level]


def pm(s: dict[str, Any], scale: float = 100.0, digits: int = 1) -> str:
    """'mean ± ci' (in % by default); a single value is marked (1 run)."""
    if s["ci95"] is None:
        return f"{s['mean'] * scale:.{digits}f} (1 run)"
    return f"{s['mean'] * scale:.{digits}f} ± {s['ci95'] * scale:.{digits}f}"


def _mean_curves(records: list[dict[str, Any]], n_tasks: int) -> list[dict[str, list[float]]]:
    """Per task: iterations, mean and SD over seeds of its test accuracy during training."""
    out = []
    for j in range(n_tasks):
        per_seed = []
        for rec in records:
            pts = [(c["iteration"], c["accuracies"][j]) for c in rec["result"]["curves"]
                   if len(c["accuracies"]) > j]
            per_seed.append(pts)
        its = [p[0] for p in per_seed[0]]
        accs = np.array([[p[1] for p in pts] for pts in per_seed])
        out.append({"iteration": its, "mean": accs.mean(0).tolist(), "sd": accs.std(0).tolist()})
    return out


# --------------------------------------------------------------------------------------------
# Fig. 3A


def _lam_label(spec: dict[str, Any]) -> str:
    return f"λ = {spec['lam']:g}" if "lam" in spec else ""


def fig3a(cfg: dict[str, Any], seeds: list[int], runs: Runs) -> dict[str, Any]:
    """Grid on the first seed (validation), selection, then the shown methods on every seed."""
    s0 = seeds[0]
    grid = ([{"method": "sgd"}] + [{"method": "ewc", "lam": lam} for lam in cfg["ewc_lams"]]
            + [{"method": "l2", "lam": lam} for lam in cfg["l2_lams"]])
    rows = []
    for spec in grid:
        r = runs.get(spec, s0)["result"]
        rows.append({"spec": spec, "validation_final": r["validation_final"],
                     "validation_mean": float(np.mean(r["validation_final"])),
                     "test_final": r["accuracy"][-1]})

    def best(method: str) -> dict[str, Any]:
        return max((r for r in rows if r["spec"]["method"] == method),
                   key=lambda r: r["validation_mean"])

    ewc, l2 = best("ewc"), best("l2")
    keep_a = ewc["validation_final"][0]
    l2_rows = [r for r in rows if r["spec"]["method"] == "l2"]
    matching = [r for r in l2_rows if r["validation_final"][0] >= keep_a]
    matched = (min(matching, key=lambda r: r["spec"]["lam"]) if matching
               else max(l2_rows, key=lambda r: r["validation_final"][0]))
    shown = {"sgd": {"method": "sgd"}, "l2": l2["spec"], "ewc": ewc["spec"]}
    if matched["spec"] != l2["spec"]:
        shown["l2-matched"] = {"method": "l2", "lam": matched["spec"]["lam"]}
    methods = {}
    for name, spec in shown.items():
        recs = [runs.get(spec, s) for s in seeds]
        mats = [np.array(r["result"]["accuracy"]) for r in recs]
        methods[name] = {
            "spec": spec, "seeds": seeds, "accuracy": [m.tolist() for m in mats],
            "curves": _mean_curves(recs, cfg["n_tasks"]),
            "steps_per_task": recs[0]["result"]["steps_per_task"],
            "after": {f"{'ABC'[j]}@{'ABC'[k]}": [float(m[k, j]) for m in mats]
                      for k in range(cfg["n_tasks"]) for j in range(k + 1)},
            "final_mean": [float(m[-1].mean()) for m in mats]}
    return {"grid": rows, "selection": {
        "ewc": ewc["spec"], "l2": l2["spec"], "l2_matched": matched["spec"],
        "l2_matches_ewc_retention": bool(matching), "ewc_validation_A_after_C": keep_a,
        "rule": "λ of EWC and of L2: the highest mean validation accuracy over the 3 tasks "
                "after task C (first seed); L2 matched: the smallest L2 λ whose validation "
                "accuracy on A after C is at least the chosen EWC's"},
        "methods": methods}


def fig3a_verdicts(res: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(the paper's claim, our finding, yes/no) for Fig. 3A, from paired per-seed numbers."""
    m = res["methods"]
    sgd, ewc = m["sgd"]["after"], m["ewc"]["after"]
    drop = {k: [a - c for a, c in zip(v["A@A"], v["A@C"])] for k, v in (("sgd", sgd),
                                                                         ("ewc", ewc))}
    claims = PAPER["claims"]["fig3a"]
    rows = []
    sgd_b_drop = [a - b for a, b in zip(sgd["A@A"], sgd["A@B"])]
    ok = agrees(positive(sgd_b_drop), positive([a - b for a, b in zip(sgd["A@B"], sgd["A@C"])]))
    rows.append((claims[0], f"SGD on A: {pm(stat(sgd['A@A']))} after A → "
                 f"{pm(stat(sgd['A@B']))} after B → {pm(stat(sgd['A@C']))} after C (test, %)",
                 ok))
    l2name = "l2-matched" if "l2-matched" in m else "l2"
    l2 = m[l2name]["after"]
    lam = m[l2name]["spec"]["lam"]
    new_l2 = [(b + c) / 2 for b, c in zip(l2["B@B"], l2["C@C"])]
    new_ewc = [(b + c) / 2 for b, c in zip(ewc["B@B"], ewc["C@C"])]
    keeps = np.mean(l2["A@C"]) >= np.mean(ewc["A@C"]) - 0.005
    ok = agrees(bool(keeps), positive([e - x for e, x in zip(new_ewc, new_l2)]))
    if l2name == "l2-matched" or res["selection"]["l2_matches_ewc_retention"]:
        which = "the smallest λ of the grid that keeps A (validation) as well as EWC"
    else:
        which = "no λ of the grid kept A as well as EWC; this one kept it best"
    rows.append((claims[1], f"L2 at λ = {lam:g} ({which}): A after C {pm(stat(l2['A@C']))} "
                 f"(EWC {pm(stat(ewc['A@C']))}); B after B {pm(stat(l2['B@B']))}, C after C "
                 f"{pm(stat(l2['C@C']))} (EWC {pm(stat(ewc['B@B']))}, {pm(stat(ewc['C@C']))})",
                 ok))
    new_sgd = [(b + c) / 2 for b, c in zip(sgd["B@B"], sgd["C@C"])]
    gap = stat([s - e for s, e in zip(new_sgd, new_ewc)])
    ok = agrees(positive([s - e for s, e in zip(drop["sgd"], drop["ewc"])]),
                bool(gap["mean"] < 0.02))
    rows.append((claims[2], f"EWC ({_lam_label(m['ewc']['spec'])}) loses "
                 f"{pm(stat(drop['ewc']))} points of A from after A to after C (SGD "
                 f"{pm(stat(drop['sgd']))}); B after B {pm(stat(ewc['B@B']))}, C after C "
                 f"{pm(stat(ewc['C@C']))}, {pm(gap)} points below SGD's (criterion: < 2)",
                 ok))
    return rows


# --------------------------------------------------------------------------------------------
# Fig. 3B


def fig3b(cfg: dict[str, Any], seeds: list[int], runs: Runs) -> dict[str, Any]:
    """Search on the first seed (validation after the last task), then every seed."""
    s0 = seeds[0]
    grid = ([{"method": "sgd-dropout", **g} for g in cfg["sgd_grid"]]
            + [{"method": "ewc", **g} for g in cfg["ewc_grid"]])
    rows = []
    for spec in grid:
        r = runs.get(spec, s0)["result"]
        rows.append({"spec": spec, "validation_mean": float(np.mean(r["validation_final"])),
                     "aa_curve": r["aa_curve"],
                     "epochs_run": [h["epochs_run"] for h in r["early_stopping"]]})
    chosen = {name: max((r for r in rows if r["spec"]["method"] == name),
                        key=lambda r: r["validation_mean"])["spec"]
              for name in ("sgd-dropout", "ewc")}
    methods = {}
    for name, spec in chosen.items():
        recs = [runs.get(spec, s)["result"] for s in seeds]
        curves = np.array([r["aa_curve"] for r in recs])
        methods[name] = {"spec": spec, "seeds": seeds, "aa_curves": curves.tolist(),
                         "accuracy": [r["accuracy"] for r in recs],
                         "epochs_run": [[h["epochs_run"] for h in r["early_stopping"]]
                                        for r in recs],
                         "best_epoch": [[h["best_epoch"] for h in r["early_stopping"]]
                                        for r in recs]}
    return {"grid": rows, "selection": {
        **chosen, "rule": "per method, the setting with the highest mean validation accuracy "
                          f"over all {cfg['n_tasks']} tasks after the last (first seed)"},
        "methods": methods}


def fig3b_verdicts(res: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(the paper's claim, our finding, yes/no) for Fig. 3B."""
    m = res["methods"]
    sgd, ewc = np.array(m["sgd-dropout"]["aa_curves"]), np.array(m["ewc"]["aa_curves"])
    t = sgd.shape[1]
    claims = PAPER["claims"]["fig3b"]
    d_sgd, d_ewc = sgd[:, 0] - sgd[:, -1], ewc[:, 0] - ewc[:, -1]
    rows = [(claims[0], f"SGD + dropout: average accuracy {pm(stat(sgd[:, 0]))} after 1 task → "
             f"{pm(stat(sgd[:, -1]))} after {t} (a drop of {pm(stat(d_sgd))} points)",
             agrees(positive(d_sgd)))]
    gap = ewc[:, -1] - sgd[:, -1]
    ok = agrees(positive(gap), positive(d_sgd - d_ewc))
    rows.append((claims[1], f"EWC: {pm(stat(ewc[:, 0]))} → {pm(stat(ewc[:, -1]))} after {t} "
                 f"tasks (a drop of {pm(stat(d_ewc))} points), {pm(stat(gap))} points above SGD + "
                 f"dropout after {t}", ok))
    return rows


# --------------------------------------------------------------------------------------------
# Fig. 3C


def fig3c(cfg: dict[str, Any], seeds: list[int], runs: Runs) -> dict[str, Any]:
    """λ on the dissimilar pair (first seed, validation), then every pair × SGD/EWC × seed."""
    s0, full = seeds[0], max(cfg["patches"])
    rows = []
    for lam in cfg["ewc_lams"]:
        spec = {"method": "ewc", "patch": full, "lam": lam}
        r = runs.get(spec, s0)["result"]
        rows.append({"spec": spec, "validation_final": r["validation_final"],
                     "validation_mean": float(np.mean(r["validation_final"])),
                     "overlap": r["overlap"]})
    lam = max(rows, key=lambda r: r["validation_mean"])["spec"]["lam"]
    pairs: dict[str, Any] = {}
    for patch in cfg["patches"]:
        for method in ("ewc", "sgd"):
            spec = {"method": method, "patch": patch, **({"lam": lam} if method == "ewc"
                                                         else {})}
            recs = [runs.get(spec, s)["result"] for s in seeds]
            ov = np.array([r["overlap"] for r in recs])
            pairs[f"{method}-patch{patch}"] = {
                "spec": spec, "seeds": seeds, "layers": recs[0]["layers"],
                "overlap": ov.tolist(), "overlap_mean": ov.mean(0).tolist(),
                "overlap_sd": ov.std(0).tolist(),
                "overlap_model": [r["overlap_model"] for r in recs],
                "accuracy": [r["accuracy"] for r in recs]}
    return {"grid": rows, "selection": {"ewc": {"method": "ewc", "lam": lam}, "rule": (
        "λ: the highest mean validation accuracy over A and B after B on the dissimilar "
        "(whole-image) pair, first seed; the same λ for every pair")}, "pairs": pairs}


def fig3c_verdicts(res: dict[str, Any], cfg: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(the paper's claim, our finding, yes/no) for Fig. 3C (the EWC networks)."""
    small, full = min(cfg["patches"]), max(cfg["patches"])
    sim = np.array(res["pairs"][f"ewc-patch{small}"]["overlap"])
    dis = np.array(res["pairs"][f"ewc-patch{full}"]["overlap"])
    claims = PAPER["claims"]["fig3c"]
    ok = agrees(bool(np.all(sim.mean(0) >= dis.mean(0))), positive(sim[:, 0] - dis[:, 0]))
    rows = [(claims[0], f"{small}×{small} block permuted: overlap "
             + ", ".join(f"{v:.2f}" for v in sim.mean(0)) + " from the first layer to the "
             "output (whole image permuted: " + ", ".join(f"{v:.2f}" for v in dis.mean(0))
             + ")", ok)]
    ok = agrees(positive(dis[:, -1] - dis[:, 0]))
    rows.append((claims[1], f"whole image permuted: first layer {pm(stat(dis[:, 0]), 1, 2)}, "
                 f"output layer {pm(stat(dis[:, -1]), 1, 2)} (the {small}×{small} pair: "
                 f"{pm(stat(sim[:, 0]), 1, 2)}, {pm(stat(sim[:, -1]), 1, 2)})", ok))
    return rows


FIGURE_FUNCS: dict[str, Callable[[dict[str, Any], list[int], Runs], dict[str, Any]]] = {
    "fig3a": fig3a, "fig3b": fig3b, "fig3c": fig3c}


# --------------------------------------------------------------------------------------------
# Plots


COLOURS = {"sgd": "tab:blue", "sgd-dropout": "tab:blue", "l2": "tab:green",
           "l2-matched": "tab:green", "ewc": "tab:red"}


def _label(name: str, spec: dict[str, Any]) -> str:
    base = {"sgd": "SGD", "sgd-dropout": "SGD + dropout", "l2": "L2", "l2-matched": "L2",
            "ewc": "EWC"}[name]
    extra = [_lam_label(spec)] if "lam" in spec else []
    if "width" in spec:
        extra.append(f"width {spec['width']}, lr {spec['lr']:g}")
    if name == "l2-matched":
        extra.append("keeps A as EWC")
    elif name == "l2":
        extra.append("best on validation")
    return base + (f" ({', '.join(extra)})" if extra else "")


def plot_fig3a(summary: dict[str, Any], path: Path) -> Path:
    """Three panels (tasks A, B, C): test accuracy during training, mean ± SD over seeds."""
    from matplotlib.figure import Figure

    res, cfg = summary["result"], summary["config"]
    n = cfg["n_tasks"]
    fig = Figure(figsize=(8, 7.5))
    axes = fig.subplots(n, 1, sharex=True)
    for name, m in res["methods"].items():
        steps = m["steps_per_task"]
        for j, curve in enumerate(m["curves"]):
            x = np.array(curve["iteration"]) / steps
            mean, sd = np.array(curve["mean"]), np.array(curve["sd"])
            ls = "--" if name == "l2-matched" else "-"
            axes[j].plot(x, mean, ls, color=COLOURS[name], label=_label(name, m["spec"]),
                         linewidth=1.4)
            axes[j].fill_between(x, mean - sd, mean + sd, color=COLOURS[name], alpha=0.15,
                                 linewidth=0)
    lo = min(min(np.array(c["mean"]).min() for c in m["curves"])
             for m in res["methods"].values())
    for j, ax in enumerate(axes):
        for k in range(1, n):
            ax.axvline(k, color="grey", linewidth=0.8, linestyle=":")
        ax.set_ylabel(f"task {'ABC'[j]}\nfraction correct")
        ax.set_ylim(max(0.0, lo - 0.02), 1.0)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower left")
    axes[-1].set_xlabel("training time (tasks; A, then B, then C)")
    fig.suptitle(f"Fig. 3A: permuted MNIST, {'-'.join(map(str, [784, *cfg['widths'], 10]))} "
                 f"ReLU MLP, SGD lr {cfg['lr']:g}, {cfg['epochs']} epochs × {cfg['n_train']} "
                 f"images per task\ntest accuracy (first {cfg['eval_samples']} test images), "
                 f"mean ± SD of {len(summary['seeds'])} seeds",
                 fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def plot_fig3b(summary: dict[str, Any], path: Path) -> Path:
    """Average test accuracy over the tasks seen so far vs number of tasks."""
    from matplotlib.figure import Figure

    res, cfg = summary["result"], summary["config"]
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for row in res["grid"]:
        name = row["spec"]["method"]
        ax.plot(range(1, len(row["aa_curve"]) + 1), row["aa_curve"], color=COLOURS[name],
                alpha=0.25, linewidth=0.8)
    for name, m in res["methods"].items():
        c = np.array(m["aa_curves"])
        k = np.arange(1, c.shape[1] + 1)
        ax.plot(k, c.mean(0), "o-", color=COLOURS[name], label=_label(name, m["spec"]),
                markersize=4)
        ax.fill_between(k, c.min(0), c.max(0), color=COLOURS[name], alpha=0.15, linewidth=0)
    ax.set_xlabel("number of tasks")
    ax.set_ylabel("fraction correct (mean over tasks seen)")
    ax.set_xticks(range(1, cfg["n_tasks"] + 1))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title(f"Fig. 3B: {cfg['n_tasks']} permuted-MNIST tasks, early stopping on "
                 f"validation\nmean (band: min–max) of {len(summary['seeds'])} seeds; faint: "
                 f"the search (seed {summary['seeds'][0]}, every setting)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def plot_fig3c(summary: dict[str, Any], path: Path) -> Path:
    """Fisher overlap of tasks A and B per layer vs depth; EWC (dashed) and SGD (dotted)."""
    from matplotlib.figure import Figure

    res, cfg = summary["result"], summary["config"]
    patches = sorted(cfg["patches"])
    greys = dict(zip(patches, np.linspace(0.65, 0.0, len(patches))))
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for p in res["pairs"].values():
        patch, method = p["spec"]["patch"], p["spec"]["method"]
        depth = np.arange(1, len(p["layers"]) + 1)
        mean, sd = np.array(p["overlap_mean"]), np.array(p["overlap_sd"])
        what = "whole image" if patch >= SIDE else f"central {patch}×{patch} block"
        ax.plot(depth, mean, "--" if method == "ewc" else ":", marker="o" if method == "ewc"
                else ".", color=str(greys[patch]), linewidth=1.6 if method == "ewc" else 1.0,
                label=f"{what} permuted, {'EWC' if method == 'ewc' else 'SGD'}")
        if method == "ewc":
            ax.fill_between(depth, mean - sd, mean + sd, color=str(greys[patch]), alpha=0.15,
                            linewidth=0)
    n_layers = len(next(iter(res["pairs"].values()))["layers"])
    ax.set_xticks(range(1, n_layers + 1))
    ax.set_xticklabels([str(i) for i in range(1, n_layers)] + ["out"])
    ax.set_xlabel("layer (weights into hidden layer 1 … 6, then the output layer)")
    ax.set_ylabel("Fisher overlap of tasks A and B")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(f"Fig. 3C: {'-'.join(map(str, [784, *cfg['widths'], 10]))} ReLU MLP; "
                 f"mean ± SD of {len(summary['seeds'])} seeds", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


PLOTS = {"fig3a": plot_fig3a, "fig3b": plot_fig3b, "fig3c": plot_fig3c}


# --------------------------------------------------------------------------------------------
# Markdown


def _verdict_table(rows: list[tuple[str, str, str]]) -> list[str]:
    return ["| the paper says | we find | agrees |", "|---|---|---|",
            *[f"| {a} | {b} | {c} |" for a, b, c in rows]]


def _minutes(summary: dict[str, Any]) -> str:
    s = summary["seconds"]
    return (f"{s['runs']} runs, {s['cpu']/ 60:.1f} min of CPU ({s['wall'] / 60:.1f} min wall, "
            "one thread on a shared 2-core machine)")


def section_3a(summary: dict[str, Any], figure: str) -> list[str]:
    """Markdown for Fig. 3A."""
    res, cfg = summary["result"], summary["config"]
    sel = res["selection"]
    out = ["#### Fig. 3A: tasks A → B → C, SGD vs L2 vs EWC", "", f"`{summary['command']}`", "",
           f"![Fig. 3A]({figure})", "",
           f"{'-'.join(map(str, [784, *cfg['widths'], 10]))} ReLU MLP (PyTorch's default "
           f"init), plain SGD lr {cfg['lr']:g}, batch {cfg['batch_size']}, {cfg['epochs']} "
           f"epochs of the same {cfg['n_train']} training images per task (each task its own "
           f"pixel permutation), no dropout, no early stopping; curves on the first "
           f"{cfg['eval_samples']} test images {cfg['eval_per_epoch']}× per epoch, the table on "
           f"all {cfg['n_test']}. EWC: Fisher = `{cfg['fisher']}` on the last "
           f"{cfg['closing_samples']} training images of the task, Ω accumulated over tasks "
           "(one anchor), Kutalev & Lapina's stabilized coefficient c = (λΩ/2)/(1 + lr·λΩ) "
           "(`stabilized=True`: plain EWC with SGD diverges once lr·λΩ > 2, which the large λ "
           "of the grid reach; where lr·λΩ ≪ 1 the two are the same). Selection: "
           + sel["rule"] + ".", "",
           f"λ grid (seed {summary['seeds'][0]}), validation accuracy (%) after C on A / B / C "
           "and their mean:", "",
           "| method | λ | A | B | C | mean |", "|---|---:|---:|---:|---:|---:|"]
    for r in res["grid"]:
        v = r["validation_final"]
        mark = " ← chosen" if r["spec"] in (sel["ewc"], sel["l2"]) else ""
        mark += " ← matched" if r["spec"] == sel["l2_matched"] and r["spec"] != sel["l2"] else ""
        lam = f"{r['spec']['lam']:g}" if "lam" in r["spec"] else "—"
        out.append(f"| {r['spec']['method']}{mark} | {lam} | "
                   + " | ".join(f"{100 * x:.1f}" for x in v)
                   + f" | {100 * r['validation_mean']:.1f} |")
    out += ["", f"Test accuracy (%), mean ± 95 % CI over seeds {summary['seeds']}:", "",
            "| method | A after A | A after B | A after C | B after B | B after C | C after C | "
            "mean after C |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, m in res["methods"].items():
        a = m["after"]
        out.append(f"| {_label(name, m['spec'])} | " + " | ".join(
            pm(stat(a[k])) for k in ("A@A", "A@B", "A@C", "B@B", "B@C", "C@C"))
            + f" | {pm(stat(m['final_mean']))} |")
    out += ["", *_verdict_table(fig3a_verdicts(res)), "", f"Cost: {_minutes(summary)}.", ""]
    return out


def section_3b(summary: dict[str, Any], figure: str) -> list[str]:
    """Markdown for Fig. 3B."""
    res, cfg = summary["result"], summary["config"]
    out = ["#### Fig. 3B: average accuracy vs number of tasks, EWC vs SGD + dropout", "",
           f"`{summary['command']}`", "", f"![Fig. 3B]({figure})", "",
           f"784-w-w-10 ReLU MLP, plain SGD, batch {cfg['batch_size']}, {cfg['n_train']} "
           f"training images per task, at most {cfg['max_epochs']} epochs per task with early "
           f"stopping on the task's {cfg['n_val']} validation images (checked every epoch, "
           f"patience {cfg['patience']}, the best epoch's weights kept), test on "
           f"{cfg['n_test']} test images per task. SGD + dropout: p = "
           f"{cfg['dropout'][0]:g} on the input, {cfg['dropout'][1]:g} after each hidden "
           "layer; EWC without dropout (stabilized, accumulated Ω, Fisher "
           f"`{cfg['fisher']}`). Search: " + res["selection"]["rule"] + ".", "",
           f"Search (seed {summary['seeds'][0]}): mean validation accuracy after task "
           f"{cfg['n_tasks']}, and the test average accuracy after 1, 5 and {cfg['n_tasks']} "
           "tasks (%):", "",
           "| method | width | lr | λ | validation | A_1 | A_5 | A_10 | epochs run per task |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in res["grid"]:
        s, c = r["spec"], r["aa_curve"]
        mark = " ← chosen" if s in (res["selection"]["sgd-dropout"], res["selection"]["ewc"]) \
            else ""
        lam = f"{s['lam']:g}" if "lam" in s else "—"
        out.append(f"| {s['method']}{mark} | {s['width']} | {s['lr']:g} | {lam} | "
                   f"{100 * r['validation_mean']:.1f} | "
                   + " | ".join(f"{100 * c[min(k, len(c)) - 1]:.1f}" for k in (1, 5, 10))
                   + f" | {' '.join(map(str, r['epochs_run']))} |")
    out += ["", f"Average test accuracy over the tasks seen (%), mean ± 95 % CI over seeds "
            f"{summary['seeds']}:", "",
            "| method | " + " | ".join(f"{k}" for k in range(1, cfg["n_tasks"] + 1)) + " |",
            "|---|" + "---:|" * cfg["n_tasks"]]
    for name, m in res["methods"].items():
        c = np.array(m["aa_curves"])
        out.append(f"| {_label(name, m['spec'])} | "
                   + " | ".join(pm(stat(c[:, k])) for k in range(c.shape[1])) + " |")
    out += ["", *_verdict_table(fig3b_verdicts(res)), "", f"Cost: {_minutes(summary)}.", ""]
    return out


def section_3c(summary: dict[str, Any], figure: str) -> list[str]:
    """Markdown for Fig. 3C."""
    res, cfg = summary["result"], summary["config"]
    lam = res["selection"]["ewc"]["lam"]
    layers = len(next(iter(res["pairs"].values()))["layers"])
    out = ["#### Fig. 3C: Fisher overlap vs depth", "", f"`{summary['command']}`", "",
           f"![Fig. 3C]({figure})", "",
           f"{'-'.join(map(str, [784, *cfg['widths'], 10]))} ReLU MLP, SGD lr {cfg['lr']:g}, "
           f"batch {cfg['batch_size']}, {cfg['epochs']} epochs of {cfg['n_train']} images per "
           "task; task A = MNIST, task B = MNIST with the central k×k block of pixels "
           f"shuffled (k = {', '.join(map(str, sorted(cfg['patches'])))}; 28 = the whole "
           f"image). B is learned with EWC (λ = {lam:g}; {res['selection']['rule']}) or, as a "
           f"control, plain SGD. Fisher: `{cfg['fisher']}` on the last "
           f"{cfg['closing_samples']} training images of each task at its end; overlap = "
           "`myelin.analysis.overlap(F_A, F_B)` per layer (weight and bias together, each "
           "normalised to unit trace; 1 − Fréchet distance², 1 = proportional).", "",
           f"Overlap per layer (mean ± 95 % CI over seeds {summary['seeds']}); test accuracy "
           "(%) on A after B and on B:", "",
           "| pair | method | " + " | ".join(
               [*(f"layer {i}" for i in range(1, layers)), "output"]) + " | whole model | "
           "A after B | B |", "|---|---|" + "---:|" * (layers + 3)]
    for _key, p in sorted(res["pairs"].items(), key=lambda kv: (kv[1]["spec"]["patch"],
                                                                kv[1]["spec"]["method"])):
        ov = np.array(p["overlap"])
        acc = np.array(p["accuracy"])
        patch = p["spec"]["patch"]
        out.append(f"| {'whole image' if patch >= SIDE else f'{patch}×{patch} block'} | "
                   f"{p['spec']['method'].upper()} | "
                   + " | ".join(pm(stat(ov[:, i]), 1, 2) for i in range(ov.shape[1]))
                   + f" | {pm(stat(p['overlap_model']), 1, 2)} | {pm(stat(acc[:, -1, 0]))} | "
                   f"{pm(stat(acc[:, -1, 1]))} |")
    out += ["", *_verdict_table(fig3c_verdicts(res, cfg)), "", f"Cost: {_minutes(summary)}.",
            ""]
    return out


SECTIONS = {"fig3a": section_3a, "fig3b": section_3b, "fig3c": section_3c}


def _ours(cfgs: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """Our settings per figure (columns 3A, 3B, 3C), from the configurations that ran."""
    a, b, c = cfgs["fig3a"], cfgs["fig3b"], cfgs["fig3c"]
    sgd_w = sorted({g["width"] for g in b["sgd_grid"]})
    sgd_lr = sorted({g["lr"] for g in b["sgd_grid"]})
    ewc_w = sorted({g["width"] for g in b["ewc_grid"]})
    ewc_lr = sorted({g["lr"] for g in b["ewc_grid"]})

    def lams(values: Sequence[float]) -> str:
        return ", ".join(f"{v:g}" for v in values)

    return {
        "learning rate": [f"{a['lr']:g} (plain SGD, batch {a['batch_size']})",
                          f"SGD + dropout: searched {lams(sgd_lr)}; EWC {lams(ewc_lr)} "
                          f"(batch {b['batch_size']})",
                          f"{c['lr']:g} (batch {c['batch_size']})"],
        "dropout": ["no", f"SGD: {b['dropout'][0]:g} input, {b['dropout'][1]:g} hidden; "
                          "EWC: no", "no"],
        "early stopping": ["no", f"yes: every epoch, patience {b['patience']}, "
                                 f"{b['n_val']} validation images", "no"],
        "hidden layers": [str(len(a["widths"])), str(b["layers"]), str(len(c["widths"]))],
        "width of hidden layers": [str(a["widths"][0]), f"SGD + dropout: searched "
                                   f"{lams(sgd_w)}; EWC {lams(ewc_w)}", str(c["widths"][0])],
        "epochs per task": [f"{a['epochs']} of {a['n_train']} images",
                            f"≤ {b['max_epochs']} of {b['n_train']} images",
                            f"{c['epochs']} of {c['n_train']} images"],
        "λ": [f"EWC searched {lams(a['ewc_lams'])}; L2 {lams(a['l2_lams'])}",
              f"searched {lams(sorted({g['lam'] for g in b['ewc_grid']}))}",
              f"searched {lams(c['ewc_lams'])}"],
    }


def observations(summaries: dict[str, dict[str, Any]]) -> list[str]:
    """Where our result differs from the paper's description, or adds to it (from the JSON)."""
    out = []
    if "fig3a" in summaries:
        res = summaries["fig3a"]["result"]
        sgd = res["methods"]["sgd"]["after"]
        second = [b - c for b, c in zip(sgd["A@B"], sgd["A@C"])]
        if positive(second) < 2:
            out.append(f"* Fig. 3A: SGD's further loss of A while C is learned ("
                       f"{', '.join(f'{100 * v:.1f}' for v in second)} points in the "
                       f"{len(second)} seeds) is not significant at this number of seeds.")
        best = {m: max(r["validation_mean"] for r in res["grid"] if r["spec"]["method"] == m)
                for m in ("ewc", "l2")}
        out.append(f"* Fig. 3A: the best L2 of the grid reaches a mean validation accuracy of "
                   f"{100 * best['l2']:.1f} % against EWC's {100 * best['ewc']:.1f} %: a weak L2 "
                   "forgets A like SGD, a strong one keeps A but learns B and C worse (grid "
                   "table).")
        lams = summaries["fig3a"]["config"]["ewc_lams"]
        chosen = res["selection"]["ewc"]["lam"]
        if chosen in (min(lams), max(lams)):
            out.append(f"* Fig. 3A: the chosen EWC λ ({chosen:g}) is at the edge of its grid.")
    if "fig3b" in summaries:
        m = summaries["fig3b"]["result"]["methods"]
        ep = {k: np.array(v["epochs_run"]) for k, v in m.items()}
        cap = summaries["fig3b"]["config"]["max_epochs"]
        out.append("* Fig. 3B: epochs trained per task (early stopping), mean over tasks and "
                   "seeds: " + ", ".join(
                       f"{_label(k, m[k]['spec'])} {v.mean():.1f} (stopped before {cap} in "
                       f"{(v < cap).mean():.0%} of the tasks)" for k, v in ep.items()) + ".")
        first = {k: np.array(v["aa_curves"])[:, 0].mean() for k, v in m.items()}
        if first["sgd-dropout"] < first["ewc"]:
            out.append(f"* Fig. 3B: after one task SGD + dropout is already below EWC "
                       f"({100 * first['sgd-dropout']:.1f} % vs {100 * first['ewc']:.1f} %): "
                       f"with at most {cap} epochs the dropout network is not fully trained "
                       "(it mostly ran to the cap), so the claim is judged on the decline "
                       "with the number of tasks, not on the level.")
    if "fig3c" in summaries:
        cfg, pairs = summaries["fig3c"]["config"], summaries["fig3c"]["result"]["pairs"]
        small, full = min(cfg["patches"]), max(cfg["patches"])
        sim = np.array(pairs[f"ewc-patch{small}"]["overlap_mean"])
        low = int(np.argmin(sim))
        out.append(f"* Fig. 3C: the similar pair's overlap is lowest at layer {low + 1} "
                   f"({sim[low]:.2f}), not close to 1 everywhere; \"similar weights throughout"
                   "\" holds relative to the dissimilar pair.")
        dis_e = np.array(pairs[f"ewc-patch{full}"]["overlap_mean"])
        dis_s = np.array(pairs[f"sgd-patch{full}"]["overlap_mean"])
        mids = [p for p in cfg["patches"] if small < p < full]
        first = {p: (pairs[f"sgd-patch{p}"]["overlap_mean"][0],
                     pairs[f"ewc-patch{p}"]["overlap_mean"][0]) for p in mids}
        text = (f"* Fig. 3C, SGD control: for the dissimilar pair the output layer overlaps "
                f"{dis_s[-1]:.2f} with SGD against {dis_e[-1]:.2f} with EWC, the first layer "
                f"{dis_s[0]:.2f} against {dis_e[0]:.2f}")
        text += "".join(f"; for the {p}×{p} block, the first layer {a:.2f} (SGD) against "
                        f"{b:.2f} (EWC)" for p, (a, b) in first.items()) + "."
        if dis_e[-1] > dis_s[-1] and all(b < a for a, b in first.values()) and first:
            text += (" Learning B under EWC, which holds the weights A needs, shares the layers "
                     "near the output more and, where the inputs differ, the first layers less.")
        out.append(text)
    return ["#### Where we differ, and what else we saw", "", *out, ""] if out else []


def notes(summaries: dict[str, dict[str, Any]]) -> list[str]:
    """The paper's settings beside ours, and what could not be found."""
    si = PAPER["si_table"]
    cfgs = {fig: summaries[fig]["config"] if fig in summaries else CONFIG[fig]
            for fig in FIGURE_NAMES}
    ours = _ours(cfgs)
    out = ["#### Settings: the paper's and ours", "",
           "The paper's SI lists the MNIST settings in one table. No stored text reaches it (the "
           "pages corpus holds only the first ~2000 characters of the PNAS and arXiv pages; the "
           "seed translates the main text only); the paper's columns below are that table as "
           "we recall it, **unverified**.", "",
           "| setting | paper 3A | ours 3A | paper 3B | ours 3B | paper 3C | ours 3C |",
           "|---|---|---|---|---|---|---|"]
    for k, ours_k in ours.items():
        paper = si.get(k, ["searched, values not found"] * 3)
        out.append(f"| {k} | " + " | ".join(f"{p} | {o}" for p, o in zip(paper, ours_k))
                   + " |")
    out += ["", "Not found in any stored text, so chosen here: "
            + "; ".join(PAPER["not_found"]) + ". Chosen instead: plain SGD at a learning rate "
            "that trains in our budget of steps (at 10⁻³ plain SGD would need far more), "
            "fewer training images and epochs per task than MNIST's 60 000 × 20–100, the grids "
            "and selection rules stated with each figure, the last 10 000 MNIST training images "
            "as the validation split, EWC's stabilized coefficient and one accumulated penalty "
            "(the paper's text allows one penalty or one per task).", ""]
    total = sum(s["seconds"]["cpu"] for s in summaries.values())
    out += [f"All of Fig. 3 here: {total / 60:.0f} min of CPU.", ""]
    return out


def markdown(summaries: dict[str, dict[str, Any]],
             figures: dict[str, str] | None = None) -> str:
    """The Fig. 3 section of docs/results.md from the figures' summaries."""
    figures = figures or {k: f"results/{v}" for k, v in FIGURE_NAMES.items()}
    lines = ["### Seed 002, Fig. 3A–C: permuted MNIST (`benchmarks/seed002_mnist.py`)", "",
             "Kirkpatrick et al. (2017), §3.2: a fully connected network learns permuted-MNIST "
             "tasks in sequence (each task a fixed random permutation of the pixels, all ten "
             "digits), tested on every task. Trained by `myelin.fit` with `make_method` "
             "(\"finetune\", \"l2\", \"ewc\"); Fisher overlap by `myelin.analysis.overlap`. "
             "Sizes are reduced to a CPU budget; the settings are compared with the paper's "
             "at the end. The paper states no numbers for Fig. 3 (only curves), so each claim "
             "is tested by its direction, with paired per-seed differences (yes: the 95 % CI "
             "of the difference excludes 0; \"in every seed\": each seed agrees but the "
             "Student-t CI of so few seeds includes 0).", ""]
    for fig in ("fig3a", "fig3b", "fig3c"):
        if fig in summaries:
            lines += SECTIONS[fig](summaries[fig], figures[fig])
    lines += observations(summaries)
    lines += notes(summaries)
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Command line


def read_summaries(out: Path) -> dict[str, dict[str, Any]]:
    """The figures' summary JSONs under `out` (real runs only, not --quick ones)."""
    found = {}
    for fig in FIGURE_NAMES:
        path = out / f"{fig}.json"
        if path.exists():
            data = json.loads(path.read_text())
            if not data.get("quick") or out != OUT:
                found[fig] = data
    return found


def results_section(figures: Path | None = None, out: Path = OUT) -> str:
    """The Fig. 3 section of docs/results.md from the committed JSON ('' if none).

    With `figures` (a folder), the plots are redrawn there; without, they are only named.
    """
    summaries = read_summaries(out)
    if not summaries:
        return ""
    if figures is not None:
        for fig, summary in summaries.items():
            PLOTS[fig](summary, figures / FIGURE_NAMES[fig])
    return markdown(summaries)


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("experiment", choices=[*FIGURE_NAMES, "report"])
    p.add_argument("--seeds", default=None, help="seeds, e.g. 0-2 (default: "
                   + ", ".join(f"{k} {v}" for k, v in DEFAULT_SEEDS.items())
                   + "); the first seed also runs the search")
    p.add_argument("--quick", action="store_true", help="tiny smoke run (tests): a few hundred "
                   "images, small MLPs, 1–3 epochs; written under a temporary folder unless "
                   "--out")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--out", default=None, help="results folder (default "
                   f"{OUT.relative_to(ROOT)}; --quick: {QUICK_OUT})")
    p.add_argument("--figures", default=None, help="plots folder (default "
                   f"{FIGURES.relative_to(ROOT)}; --quick: the results folder)")
    args = p.parse_args(argv)
    out = Path(args.out) if args.out else (QUICK_OUT if args.quick else OUT)
    figures = Path(args.figures) if args.figures else (out if args.quick else FIGURES)

    def rel(path: Path) -> str:
        return (str(path.relative_to(ROOT / "docs")) if path.is_relative_to(ROOT / "docs")
                else str(path))

    if args.experiment == "report":
        summaries = read_summaries(out)
        if not summaries:
            raise SystemExit(f"No Fig. 3 results under {out}: run `python -m "
                             "benchmarks.seed002_mnist fig3a` (and fig3b, fig3c) first.")
        made = {fig: rel(PLOTS[fig](s, figures / FIGURE_NAMES[fig]))
                for fig, s in summaries.items()}
        print(markdown(summaries, {**{k: f"results/{v}" for k, v in FIGURE_NAMES.items()},
                                   **made}))
        return 0
    if args.threads < 1:
        raise SystemExit(f"--threads must be >= 1. Got {args.threads}.")
    torch.set_num_threads(args.threads)
    fig = args.experiment
    seeds = parse_seeds(args.seeds or DEFAULT_SEEDS[fig])
    if not seeds:
        raise SystemExit("--seeds is empty.")
    cfg = (QUICK if args.quick else CONFIG)[fig]
    runs = Runs(fig, cfg, out, args.quick, lambda s: print(s, flush=True))
    t0 = time.perf_counter()
    result = FIGURE_FUNCS[fig](cfg, seeds, runs)
    summary = {"experiment": f"seed002-{fig}", "paper": PAPER["claims"][fig], "config": cfg,
               "seeds": seeds, "quick": args.quick, "result": result,
               "seconds": runs.seconds(), "ran": runs.ran, "skipped": runs.skipped,
               "command": command("seed002_mnist", argv), "environment": environment(),
               "wall_seconds": time.perf_counter() - t0}
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{fig}.json"
    path.write_text(json.dumps(_plain(summary), indent=1) + "\n")
    print(f"wrote {path} ({runs.ran} runs run, {runs.skipped} read)")
    print(f"wrote {PLOTS[fig](summary, figures / FIGURE_NAMES[fig])}")
    verdicts = {"fig3a": lambda: fig3a_verdicts(result), "fig3b": lambda: fig3b_verdicts(result),
                "fig3c": lambda: fig3c_verdicts(result, cfg)}[fig]()
    for _, finding, ok in verdicts:
        print(f"[{ok}] {finding}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
