"""The training loop: a scenario, a model and a method -> an accuracy matrix and curves.

The loop knows no method by name. Each method is a consolidator (its ``penalty()`` is added to
the loss, or its gradient to ``.grad``; or an optimizer wrapper applies it: WVA, ``EWC.wrap``)
plus the name of the importance estimator run on a closing set after each task (or the online
SI tracker).
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import metrics
from ._progress import progress_bar
from .data.datasets import ArrayDataset
from .importance import ESTIMATORS, SynapticIntelligence, eval_mode
from .methods import Method, make_method
from .scenarios import Scenario, Task

__all__ = ["OPTIMIZERS", "Result", "evaluate", "fit"]

OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
    "rmsprop": torch.optim.RMSprop,
}
_MASKED = -1e9           # logit given to classes a task may not use (finite: no NaN gradients)


@dataclass
class Result:
    """Everything a run produced; `save` writes it as JSON.

    Attributes:
        accuracy: a[k][j], test accuracy on task j after training task k (T x T).
        random_init: Accuracy on each task before any training (for forward transfer).
        curves: One entry per evaluation: {"iteration", "task", "accuracies"} where
            accuracies[j] is the accuracy on seen task j (the seeds' figures plot these).
        losses: Mean training cross-entropy (without any consolidation penalty) per evaluation
            window: {"iteration", "task", "loss"}.
        timings: Seconds spent training, estimating importance and evaluating, per task.
        metrics: AA, FM, BWT, FWT, LA, two-task FM (see `myelin.metrics`).
        config: The full configuration, seeds included.
    """

    accuracy: list[list[float]]
    random_init: list[float]
    curves: list[dict[str, Any]] = field(default_factory=list)
    losses: list[dict[str, Any]] = field(default_factory=list)
    timings: list[dict[str, float]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the result as JSON."""
        tmp = f"{os.fspath(path)}.tmp"
        with open(tmp, "w") as f:
            json.dump(asdict(self), f, indent=1)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Result:
        """Read a result written by `save`."""
        with open(path) as f:
            data = json.load(f)
        missing = {"accuracy", "random_init"} - set(data)
        if missing:
            raise ValueError(f"{os.fspath(path)!r} is not a myelin result (missing {missing}).")
        return cls(**data)

    @property
    def average_accuracy(self) -> float:
        """AA: mean accuracy over all tasks after the last one."""
        return metrics.average_accuracy(self.accuracy)


def _blocked(classes: list[int] | None, n_classes: int, device: torch.device) -> Tensor | None:
    """Boolean (n_classes,) mask of the classes a task may not use (None: all allowed)."""
    if classes is None:
        return None
    blocked = torch.ones(n_classes, dtype=torch.bool, device=device)
    blocked[torch.as_tensor(classes, device=device)] = False
    return blocked


def _mask(logits: Tensor, blocked: Tensor | None) -> Tensor:
    return logits if blocked is None else logits.masked_fill(blocked, _MASKED)


@torch.no_grad()
def evaluate(model: nn.Module, dataset: ArrayDataset, classes: list[int] | None = None,
             batch_size: int = 1000, max_samples: int | None = None) -> float:
    """Accuracy of `model` on `dataset` (prediction restricted to `classes` if given)."""
    n = len(dataset) if max_samples is None else min(max_samples, len(dataset))
    if n == 0:
        raise ValueError(f"Cannot evaluate on an empty dataset ({dataset.name!r}).")
    correct, blocked = 0, None
    device = next(model.parameters()).device
    with eval_mode(model):
        for i in range(0, n, batch_size):
            x, y = dataset.batch(slice(i, min(i + batch_size, n)))
            logits = model(x.to(device))
            if classes is not None and blocked is None:
                blocked = _blocked(classes, logits.shape[-1], device)
            correct += int((_mask(logits, blocked).argmax(-1).cpu() == y).sum())
    return correct / n


def _optimizer(optimizer: str | Callable[..., torch.optim.Optimizer], model: nn.Module,
               lr: float) -> torch.optim.Optimizer:
    if callable(optimizer) and not isinstance(optimizer, str):
        opt = optimizer(model.parameters())
        if not isinstance(opt, torch.optim.Optimizer):
            raise TypeError("optimizer(params) must return a torch.optim.Optimizer.")
        return opt
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"Unknown optimizer {optimizer!r}. Available: "
                         f"{', '.join(OPTIMIZERS)}, or a callable params -> Optimizer.")
    return OPTIMIZERS[optimizer](model.parameters(), lr=lr)


def _closing_set(task: Task, n: int, how: str) -> ArrayDataset:
    ds = task.train
    n = min(n, len(ds))
    if how in ("tail", "holdout"):   # the last n training samples (2021), or held out (2020)
        return ds.subset(torch.arange(len(ds) - n, len(ds)))
    if how == "random":
        g = torch.Generator().manual_seed(0)
        return ds.subset(torch.randperm(len(ds), generator=g)[:n])
    raise ValueError(f"closing must be 'tail', 'holdout' or 'random'. Got {how!r}.")


def fit(
    scenario: Scenario,
    model: nn.Module,
    method: str | Method = "finetune",
    optimizer: str | Callable[..., torch.optim.Optimizer] = "sgd",
    *,
    lr: float = 0.1,
    epochs: float = 1,
    iterations: int | None = None,
    batch_size: int = 100,
    eval_every: int | None = None,
    eval_samples: int | None = None,
    closing_samples: int = 1000,
    closing: str = "tail",
    method_options: dict[str, Any] | None = None,
    importance_options: dict[str, Any] | None = None,
    seed: int = 0,
    progress: bool | None = None,
) -> Result:
    """Train `model` on the scenario's tasks in order and measure what it keeps.

    Args:
        scenario: The task sequence (see `myelin.scenarios`).
        model: Maps x of shape (N, *scenario.input_shape) to logits (N, scenario.n_classes).
        method: A registered name ("finetune", "ewc", "wva", "l2", "si", "mas") or a `Method`.
        optimizer: "sgd", "adam", "adamw", "rmsprop", or a callable params -> Optimizer.
        lr: Learning rate for a named optimizer.
        epochs: Passes over each task's training set (ignored when `iterations` is given).
        iterations: Optimizer steps per task (the seeds' protocol, e.g. 1500 of batch 100).
        batch_size: Training batch size.
        eval_every: Evaluate all seen tasks every this many steps (for the curves); None: only
            at the end of each task.
        eval_samples: Use at most this many test samples per task for the curves (the accuracy
            matrix always uses the full test sets).
        closing_samples: Size of the closing set the importance is estimated on.
        closing: "tail" (the task's last training samples, trained on too), "holdout" (the
            last `closing_samples` training samples, never trained on: the 2020 papers'
            validation split) or "random".
        method_options: Options for a named method, e.g. {"lam": 41, "importance": "fisher"}.
        importance_options: Keyword options for the estimator, e.g. {"batch_size": 500}.
        seed: Seeds model-independent randomness (batch order, sampled labels). Seed the model's
            initialisation yourself (``torch.manual_seed``) before building it.
        progress: Progress bars (None: only on a terminal; False: quiet).

    Returns:
        A `Result` with the accuracy matrix, curves, losses, timings, metrics and config.
    """
    if isinstance(method, str):
        method = make_method(method, **(method_options or {}))
    elif method_options:
        raise ValueError("method_options applies to a method given by name.")
    if not isinstance(method, Method):
        raise TypeError(f"method must be a name or a myelin.methods.Method. Got {method!r}.")
    for name, value in (("batch_size", batch_size), ("closing_samples", closing_samples)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int. Got {value!r}.")
    if iterations is None and (not isinstance(epochs, (int, float)) or epochs <= 0):
        raise ValueError(f"epochs must be > 0. Got {epochs!r}.")
    if closing not in ("tail", "holdout", "random"):
        raise ValueError(f"closing must be 'tail', 'holdout' or 'random'. Got {closing!r}.")
    if iterations is not None and (isinstance(iterations, bool) or iterations < 1):
        raise ValueError(f"iterations must be a positive int. Got {iterations!r}.")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) \
            or lr <= 0:
        raise ValueError(f"lr must be a finite float > 0. Got {lr!r}.")
    _check_model(model, scenario)
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    torch_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        base_opt = _optimizer(optimizer, model, lr)
        consolidator, opt = method.build(model, base_opt)
        tracker = None
        if method.importance == "si":
            tracker = SynapticIntelligence(model)
            tracker.attach(opt)
        tasks = scenario.tasks
        random_init = [evaluate(model, t.test, scenario.eval_mask(t)) for t in tasks]
        result = Result(accuracy=[], random_init=random_init)
        step = 0
        for k, task in enumerate(tasks):
            t0 = time.perf_counter()
            step, window = _train_task(scenario, k, model, opt, consolidator, task, epochs,
                                       iterations, batch_size, generator, device, eval_every,
                                       eval_samples, result, step, progress,
                                       closing_samples if closing == "holdout" else 0)
            t1 = time.perf_counter()
            # the accuracy-matrix row, at the weights the task ended with; the end-of-task
            # curve point reuses it unless the curves use a subset of the test sets
            row = [evaluate(model, t.test, scenario.eval_mask(t, after=k)) for t in tasks]
            if window or not eval_every:
                _record(result, model, scenario, k, step, window, eval_samples,
                        row[:k + 1] if eval_samples is None else None)
            t2 = time.perf_counter()
            if consolidator is not None and k < len(tasks) - 1:
                if tracker is not None:
                    importance = tracker.importance()
                    tracker.reset()
                elif consolidator.needs_importance:
                    importance = _estimate(method.importance, model, task, scenario,
                                           closing_samples, closing, importance_options, seed)
                else:
                    importance = None
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)  # SI's negatives are clipped
                    consolidator.consolidate(importance)
            t3 = time.perf_counter()
            result.accuracy.append(row)
            result.timings.append({"train": t1 - t0, "importance": t3 - t2, "eval": t2 - t1})
        result.metrics = metrics.summary(result.accuracy, random_init)
        result.config = {
            "scenario": {"name": scenario.name, "setting": scenario.setting,
                         "n_classes": scenario.n_classes, "labels_trick": scenario.labels_trick,
                         "tasks": [t.name for t in tasks], **scenario.config},
            "method": {"name": method.name, **method.config},
            "importance": method.importance, "importance_options": importance_options or {},
            "optimizer": optimizer if isinstance(optimizer, str) else repr(optimizer),
            "lr": lr, "epochs": None if iterations is not None else epochs,
            "iterations": iterations, "batch_size": batch_size, "eval_every": eval_every,
            "eval_samples": eval_samples, "closing_samples": closing_samples,
            "closing": closing, "seed": seed, "model": repr(model),
            "parameters": sum(p.numel() for p in model.parameters()),
            "torch": torch.__version__,
        }
        return result
    finally:
        torch.random.set_rng_state(torch_state)


def _check_model(model: nn.Module, scenario: Scenario) -> None:
    if not isinstance(model, nn.Module) or not any(p.requires_grad for p in model.parameters()):
        raise ValueError("model must be an nn.Module with trainable parameters.")
    x, _ = scenario.tasks[0].train.batch(slice(0, 2))
    device = next(model.parameters()).device
    try:
        with eval_mode(model), torch.no_grad():
            out = model(x.to(device))
    except RuntimeError as exc:
        raise ValueError(f"The model cannot take the scenario's inputs of shape "
                         f"{tuple(x.shape[1:])}: {exc}") from exc
    if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[1] != scenario.n_classes:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"The model must return logits of shape (N, {scenario.n_classes}) for "
                         f"this scenario; it returned {shape}.")


def _estimate(name: str | None, model: nn.Module, task: Task, scenario: Scenario, n: int,
              how: str, options: dict[str, Any] | None, seed: int):
    if name is None:
        raise ValueError("This method needs an importance estimator.")
    estimator = ESTIMATORS.get(name)
    data = _closing_set(task, n, how)
    kwargs = {"progress": False, **(options or {})}
    if name == "fisher-sampled":
        kwargs.setdefault("seed", seed)
    blocked = _blocked(scenario.train_mask(task), scenario.n_classes,
                       next(model.parameters()).device)
    handle = None
    if blocked is not None:   # the task's own predictive distribution
        handle = model.register_forward_hook(lambda m, a, out: _mask(out, blocked))
    try:
        return estimator(model, data.tensors(), **kwargs)
    finally:
        if handle is not None:
            handle.remove()


def _train_task(scenario: Scenario, k: int, model: nn.Module, opt: torch.optim.Optimizer,
                consolidator, task: Task, epochs: float, iterations: int | None,
                batch_size: int, generator: torch.Generator, device: torch.device,
                eval_every: int | None, eval_samples: int | None, result: Result, step: int,
                progress: bool | None, held_out: int = 0) -> tuple[int, list[float]]:
    """Train one task; returns the global step and the losses not yet recorded in a curve."""
    n = len(task.train) - held_out
    if n <= 0:
        raise ValueError(f"Task {task.name!r} has no training samples"
                         + (f" besides the {held_out} held out for the closing set."
                            if held_out else "."))
    steps = iterations if iterations is not None else max(1, math.ceil(epochs * n / batch_size))
    blocked = _blocked(scenario.train_mask(task), scenario.n_classes, device)
    order = torch.randperm(n, generator=generator)
    pos, window = 0, []
    # the optimizer may apply the method itself (WVA; EWC.wrap): then the loop adds nothing
    in_step = consolidator is not None and (
        opt is consolidator or getattr(opt, "consolidator", None) is consolidator)
    closed_form = not in_step and hasattr(consolidator, "apply_to_grad")
    model.train()
    for _ in progress_bar(range(steps), progress=progress,
                          desc=f"task {k + 1}/{len(scenario)}", unit="step"):
        if pos + batch_size > n and pos > 0:
            order, pos = torch.randperm(n, generator=generator), 0
        idx = order[pos:pos + batch_size]
        pos += batch_size
        x, y = task.train.batch(idx)
        x, y = x.to(device), y.to(device)
        opt.zero_grad()
        loss = F.cross_entropy(_mask(model(x), blocked), y)
        if consolidator is not None and not closed_form and not in_step:
            loss = loss + consolidator.penalty()
        value = loss.item()
        if not math.isfinite(value):
            raise FloatingPointError(
                f"The loss became {value} at step {step + 1} (task {k + 1}): training "
                "diverged. Lower lr or lam, or use EWC(stabilized=True).")
        loss.backward()
        if closed_form:             # the penalty's gradient in closed form: no graph, same update
            consolidator.apply_to_grad()
        opt.step()
        window.append(value)
        step += 1
        if eval_every and step % eval_every == 0:
            _record(result, model, scenario, k, step, window, eval_samples)
            window = []
    return step, window


def _record(result: Result, model: nn.Module, scenario: Scenario, k: int, step: int,
            window: list[float], eval_samples: int | None,
            accs: list[float] | None = None) -> None:
    """Append a curve point (and the mean loss of `window`); `accs` if already measured."""
    if accs is None:
        accs = [evaluate(model, t.test, scenario.eval_mask(t, after=k),
                         max_samples=eval_samples)
                for t in scenario.tasks[:k + 1]]
    result.curves.append({"iteration": step, "task": k, "accuracies": accs})
    if window:
        result.losses.append({"iteration": step, "task": k, "loss": float(np.mean(window))})
