"""Training by gradients: `fit` = the runner (`myelin.runner.run`) with a `GradientLearner`.

The loop knows no method by name: it calls the hooks of the `myelin.methods.Method` protocol
(see that module for the order) and differentiates whatever loss it is given — cross-entropy
under the scenario's class mask by default, or any ``loss(model, batch) -> scalar``. Batches
are what the task's dataset yields: ``(x, y)`` pairs, or dicts (the Hugging Face form) that
pass through untouched.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import default_collate

from ._progress import progress_bar
from .data.datasets import ArrayDataset
from .importance import eval_mode
from .losses import CrossEntropy, LossFn, ModelLoss, call_model
from .methods import Context, Method, make_method
from .runner import Learner, Result, run

if TYPE_CHECKING:
    from .scenarios import Scenario, Task

__all__ = ["OPTIMIZERS", "GradientLearner", "Result", "evaluate", "fit"]

OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
    "rmsprop": torch.optim.RMSprop,
}
CLOSINGS = ("tail", "holdout", "random")


def _to(batch: Any, device: torch.device) -> Any:
    """`batch` (a tensor, or tuples / lists / dicts of them) on `device`."""
    if isinstance(batch, Tensor):
        return batch.to(device)
    if isinstance(batch, Mapping):
        return {k: _to(v, device) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to(v, device) for v in batch)
    return batch


def draw(dataset: Any, index: Tensor | slice) -> Any:
    """The batch of `dataset` at `index`.

    An `ArrayDataset` gives ``dataset.batch(index)``; any other dataset its items collated by
    ``torch.utils.data.default_collate`` (dict items become a dict batch).
    """
    if isinstance(dataset, ArrayDataset):
        return dataset.batch(index)
    if isinstance(index, slice):
        index = torch.arange(len(dataset))[index]
    return default_collate([dataset[int(i)] for i in index])


def split_batch(batch: Any) -> tuple[Any, Tensor]:
    """(model inputs, integer labels) of an ``(x, y)`` or a ``{..., "labels": y}`` batch."""
    if isinstance(batch, Mapping):
        if "labels" not in batch:
            raise ValueError("A dict batch needs 'labels' to be scored.")
        return {k: v for k, v in batch.items() if k != "labels"}, batch["labels"]
    x, y = batch
    return x, y


def _logits(output: Any) -> Tensor:
    return output if isinstance(output, Tensor) else ModelLoss().logits(output)


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Any, classes: Sequence[int] | None = None,
             batch_size: int = 1000, max_samples: int | None = None) -> float:
    """Accuracy of `model` on `dataset` (prediction restricted to `classes` if given).

    `dataset` yields ``(x, y)`` or dicts with ``"labels"``; the model's output (or its
    ``.logits``) has shape (N, C).
    """
    n = len(dataset) if max_samples is None else min(max_samples, len(dataset))
    if n == 0:
        raise ValueError(f"Cannot evaluate on an empty dataset ({dataset!r}).")
    correct = 0
    mask = CrossEntropy(classes)
    device = next(model.parameters()).device
    with eval_mode(model):
        for i in range(0, n, batch_size):
            inputs, y = split_batch(draw(dataset, slice(i, min(i + batch_size, n))))
            logits = mask.logits(_logits(call_model(model, _to(inputs, device))))
            correct += int((logits.argmax(-1).cpu() == y).sum())
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


def _check_model(model: nn.Module, scenario: Scenario) -> None:
    if not isinstance(model, nn.Module) or not any(p.requires_grad for p in model.parameters()):
        raise ValueError("model must be an nn.Module with trainable parameters.")
    inputs, _ = split_batch(draw(scenario.tasks[0].train, slice(0, 2)))
    device = next(model.parameters()).device
    shape = tuple(inputs.shape[1:]) if isinstance(inputs, Tensor) else sorted(inputs)
    try:
        with eval_mode(model), torch.no_grad():
            out = _logits(call_model(model, _to(inputs, device)))
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"The model cannot take the scenario's inputs ({shape}): {exc}") \
            from exc
    if out.dim() != 2 or out.shape[1] != scenario.n_classes:
        raise ValueError(f"The model must return logits of shape (N, {scenario.n_classes}) for "
                         f"this scenario; it returned {tuple(out.shape)}.")


def _check_positive(name: str, value: Any, kind: type = int) -> None:
    bad = isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int)
    if bad or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive {kind.__name__}. Got {value!r}.")


class GradientLearner(Learner):
    """A network trained by an optimizer with a continual-learning `Method` (see `fit`)."""

    def __init__(self, model: nn.Module, method: Method,
                 optimizer: str | Callable[..., torch.optim.Optimizer] = "sgd", *,
                 loss: LossFn | None = None, lr: float = 0.1, epochs: float = 1,
                 iterations: int | None = None, batch_size: int = 100,
                 eval_every: int | None = None, eval_samples: int | None = None,
                 closing_samples: int = 1000, closing: str = "tail",
                 importance_options: Mapping[str, Any] | None = None, seed: int = 0,
                 progress: bool | None = None):
        if not isinstance(method, Method):
            raise TypeError(f"method must be a myelin.methods.Method. Got {method!r}.")
        _check_positive("batch_size", batch_size)
        _check_positive("closing_samples", closing_samples)
        if iterations is None:
            _check_positive("epochs", epochs, float)
        else:
            _check_positive("iterations", iterations)
        _check_positive("lr", lr, float)
        if closing not in CLOSINGS:
            raise ValueError(f"closing must be one of {CLOSINGS}. Got {closing!r}.")
        if loss is not None and not callable(loss):
            raise TypeError(f"loss must be a callable (model, batch) -> scalar. Got {loss!r}.")
        self.model, self.method, self.optimizer = model, method, optimizer
        self.loss = CrossEntropy() if loss is None else loss
        self.lr, self.epochs, self.iterations = lr, epochs, iterations
        self.batch_size, self.eval_every, self.eval_samples = batch_size, eval_every, eval_samples
        self.closing_samples, self.closing = closing_samples, closing
        self.importance_options = dict(importance_options or {})
        self.seed, self.progress = seed, progress

    # the runner's hooks ------------------------------------------------------------------------
    def begin(self, scenario: Scenario, result: Result) -> None:
        """Check the model, build the optimizer and let the method set itself up."""
        _check_model(self.model, scenario)
        self.scenario, self.result = scenario, result
        self.device = next(self.model.parameters()).device
        self.ctx = Context(self.model, _optimizer(self.optimizer, self.model, self.lr), scenario,
                           self.loss, seed=self.seed, device=self.device,
                           closing_samples=self.closing_samples, closing=self.closing,
                           importance_options=self.importance_options,
                           generator=torch.Generator().manual_seed(self.seed))
        self.method.setup(self.ctx)
        self._window: list[float] = []

    def evaluate(self, task: Task, after: int | None) -> float:
        """Accuracy on the task's test set under the scenario's prediction mask."""
        self.method.before_eval(self.ctx, self.scenario.index(task))
        return evaluate(self.model, task.test, self.scenario.eval_mask(task, after=after))

    def learn(self, k: int, task: Task) -> None:
        """Train task `k` with the method's hooks."""
        ctx = self.ctx
        ctx.task_index, ctx.train_data = k, task.train
        ctx.loss = self._task_loss(task)
        self.method.begin_task(ctx)
        self._train(k)

    def end_task(self, k: int, task: Task, row: list[float]) -> None:
        """Record the end-of-task curve point, then the method's end_task (consolidation)."""
        if self._window or not self.eval_every:
            self._record(k, row[:k + 1] if self.eval_samples is None else None)
        self.method.end_task(self.ctx)

    def config(self) -> dict[str, Any]:
        """The configuration for ``Result.config``."""
        optimizer = self.optimizer
        return {
            "method": {"name": self.method.name, **self.method.config},
            "importance": self.method.importance,
            "importance_options": self.importance_options,
            "optimizer": optimizer if isinstance(optimizer, str) else repr(optimizer),
            "loss": repr(self.loss),
            "lr": self.lr, "epochs": None if self.iterations is not None else self.epochs,
            "iterations": self.iterations, "batch_size": self.batch_size,
            "eval_every": self.eval_every, "eval_samples": self.eval_samples,
            "closing_samples": self.closing_samples, "closing": self.closing,
            "seed": self.seed, "model": repr(self.model),
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "torch": torch.__version__,
        }

    # the loop ----------------------------------------------------------------------------------
    def _task_loss(self, task: Task) -> LossFn:
        """The training loss of `task`: cross-entropy restricted to its classes by default."""
        if isinstance(self.loss, CrossEntropy):
            return self.loss.restrict(self.scenario.train_mask(task))
        return self.loss

    def _train(self, k: int) -> None:
        ctx, model, method = self.ctx, self.model, self.method
        data, held_out, generator = ctx.train_data, ctx.held_out(), ctx.generator
        n = len(data) - held_out
        if n <= 0:
            raise ValueError(f"Task {ctx.task.name!r} has no training samples"
                             + (f" besides the {held_out} held out for the closing set."
                                if held_out else "."))
        steps = self.iterations if self.iterations is not None \
            else max(1, math.ceil(self.epochs * n / self.batch_size))
        order = torch.randperm(n, generator=generator)
        pos = 0
        model.train()
        for _ in progress_bar(range(steps), progress=self.progress,
                              desc=f"task {k + 1}/{len(self.scenario)}", unit="step"):
            if pos + self.batch_size > n and pos > 0:
                order, pos = torch.randperm(n, generator=generator), 0
            idx = order[pos:pos + self.batch_size]
            pos += self.batch_size
            ctx.incoming = _to(draw(data, idx), self.device)
            batch = method.prepare_batch(ctx, ctx.incoming)
            loss = method.train_step(ctx, batch)
            if loss is None:
                loss = self._step(batch)
            value = float(loss)
            if not math.isfinite(value):
                raise FloatingPointError(
                    f"The loss became {value} at step {ctx.step + 1} (task {k + 1}): training "
                    "diverged. Lower lr or the method's strength (lam), or use a stabilized "
                    "form of the method.")
            method.after_step(ctx, batch)
            self._window.append(value)
            ctx.step += 1
            if self.eval_every and ctx.step % self.eval_every == 0:
                self._record(k)

    def _step(self, batch: Any) -> Tensor:
        """The standard step: zero_grad, loss (+ the method's terms), backward, step."""
        ctx = self.ctx
        ctx.optimizer.zero_grad()
        loss = ctx.loss(self.model, batch)
        total = self.method.loss(ctx, batch, loss)
        if total is not loss and not math.isfinite(float(total.detach())):
            raise FloatingPointError(f"The loss with the method's terms became {float(total)} "
                                     f"at step {ctx.step + 1}: lower lr or lam.")
        total.backward()
        self.method.after_backward(ctx, batch)
        ctx.optimizer.step()
        return loss.detach()

    def _record(self, k: int, accs: list[float] | None = None) -> None:
        """Append a curve point (and the mean loss of the window); `accs` if already measured."""
        if accs is None:
            accs = []
            for j, t in enumerate(self.scenario.tasks[:k + 1]):
                self.method.before_eval(self.ctx, j)
                accs.append(evaluate(self.model, t.test, self.scenario.eval_mask(t, after=k),
                                     max_samples=self.eval_samples))
        self.result.curves.append({"iteration": self.ctx.step, "task": k, "accuracies": accs})
        if self._window:
            self.result.losses.append({"iteration": self.ctx.step, "task": k,
                                       "loss": float(np.mean(self._window))})
        self._window = []


def fit(
    scenario: Scenario,
    model: nn.Module,
    method: str | Method | None = None,
    optimizer: str | Callable[..., torch.optim.Optimizer] = "sgd",
    *,
    loss: LossFn | None = None,
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
        model: Maps a batch's inputs — x of shape (N, *scenario.input_shape), or the keyword
            arguments of a dict batch — to logits (N, scenario.n_classes) (or an output with
            ``.logits``).
        method: A `myelin.methods.Method`, a registered name (`myelin.methods.METHODS`,
            options in `method_options`), ``"a+b"`` or ``"package.module:factory"``; None:
            plain fine-tuning.
        optimizer: "sgd", "adam", "adamw", "rmsprop", or a callable params -> Optimizer.
        loss: The training loss, ``loss(model, batch) -> scalar``. None: cross-entropy under
            the scenario's class mask (`myelin.losses.CrossEntropy`); `myelin.losses.ModelLoss`
            for models computing their own ``.loss`` from dict batches. Importance estimators
            get the same loss.
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
        method_options: Options for a method given by name (its factory's keyword arguments).
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
    elif method is None:
        method = Method()
    learner = GradientLearner(
        model, method, optimizer, loss=loss, lr=lr, epochs=epochs, iterations=iterations,
        batch_size=batch_size, eval_every=eval_every, eval_samples=eval_samples,
        closing_samples=closing_samples, closing=closing,
        importance_options=importance_options, seed=seed, progress=progress)
    torch_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return run(scenario, learner)
    finally:
        torch.random.set_rng_state(torch_state)

