"""Training by gradients: `fit` = the runner (`myelin.runner.run`) with a `GradientLearner`.

The loop knows no method by name: it calls the hooks of the `myelin.methods.Method` protocol
(see that module for the order) and differentiates whatever loss it is given — cross-entropy
under the scenario's class mask by default, or any ``loss(model, batch) -> scalar``. Batches
are what the task's dataset yields: ``(x, y)`` pairs, or dicts (the Hugging Face form) that
pass through untouched.

Checkpoints (``fit(..., checkpoint_dir=...)``): after every task (and every `checkpoint_every`
steps) one file, ``<checkpoint_dir>/checkpoint.pt``, is replaced atomically (written to a
temporary file in the same directory, then ``os.replace``). It holds the model's and the
optimizer's ``state_dict``, the method's state (``Method.state_dict``: importances, anchors,
replay memories and their generators, ...), the random states (torch's global generator, the
loop's ``torch.Generator``, numpy's and Python's), the loop's position (batch order, step) and
the partial result; it loads with ``torch.load(..., weights_only=True)`` (tensors, numbers,
strings, lists and dicts only). ``resume=True`` continues from it and gives the accuracy matrix
of an uninterrupted run (same seed, same thread count); it refuses a checkpoint made for another
scenario, method, options, seed or model, naming what differs.

Under a torch.distributed process group (``torchrun ... -m myelin run``, or `fit` called on
every rank) the loop trains a `DistributedDataParallel` wrapper on each rank's slice of every
batch and reduces evaluation, importances and the logged loss over the ranks; only rank 0
writes. See `myelin.distributed` for the rules.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import re
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import default_collate

from ._progress import progress_bar
from .data.datasets import ArrayDataset
from .distributed import (
    check_same_names,
    is_distributed,
    rank,
    shard_batch,
    shard_bounds,
    sum_over_ranks,
    together,
    world_size,
    wrap,
)
from .importance import eval_mode
from .losses import CrossEntropy, LossFn, ModelLoss, call_model
from .methods import Context, Method, check_supports_distributed, make_method
from .runner import Learner, Result, _scenario_config, run

if TYPE_CHECKING:
    from .scenarios import Scenario, Task

__all__ = ["CHECKPOINT_FILE", "OPTIMIZERS", "GradientLearner", "Result", "check_finite_parameters",
           "evaluate", "fit", "read_checkpoint"]

OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
    "rmsprop": torch.optim.RMSprop,
}
CLOSINGS = ("tail", "holdout", "random")
#: The file a checkpoint directory holds.
CHECKPOINT_FILE = "checkpoint.pt"
_CHECKPOINT_FORMAT, _CHECKPOINT_VERSION = "myelin.checkpoint", 1
_TEMP_PREFIX = ".checkpoint-"
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")       # in the repr of a function or an object


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
             batch_size: int = 1000, max_samples: int | None = None, *,
             distributed: bool = False) -> float:
    """Accuracy of `model` on `dataset` (prediction restricted to `classes` if given).

    `dataset` yields ``(x, y)`` or dicts with ``"labels"``; the model's output (or its
    ``.logits``) has shape (N, C). With `distributed` under a process group, each rank scores
    its contiguous slice of the samples (`myelin.distributed.shard_bounds`) and the correct
    counts are summed over the ranks: a collective every rank must call, with the same model.
    """
    n = len(dataset) if max_samples is None else min(max_samples, len(dataset))
    if n == 0:
        raise ValueError(f"Cannot evaluate on an empty dataset ({dataset!r}).")
    start, stop = shard_bounds(n) if distributed else (0, n)
    correct = 0
    mask = CrossEntropy(classes)
    device = next(model.parameters()).device
    with eval_mode(model):
        for i in range(start, stop, batch_size):
            inputs, y = split_batch(draw(dataset, slice(i, min(i + batch_size, stop))))
            logits = mask.logits(_logits(call_model(model, _to(inputs, device))))
            correct += int((logits.argmax(-1).cpu() == y).sum())
    if distributed:
        correct = int(sum_over_ranks(torch.tensor([correct], dtype=torch.int64)).item())
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


def _check_optional_positive(name: str, value: Any, meaning: str, none: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                              or value <= 0):
        raise ValueError(f"{name} must be a positive int ({meaning}) or None ({none}). "
                         f"Got {value!r}.")


def _check_seed(seed: Any) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int. Got {seed!r}.")


def check_finite_parameters(model: nn.Module, where: str = "") -> None:
    """Raise FloatingPointError naming the first parameter of `model` holding NaN or inf.

    One pass over the parameters and a single synchronisation; the search for the parameter
    to name runs only when something is wrong.

    Args:
        model: The network to check.
        where: When, for the message (e.g. "after task 2").
    """
    params = [(n, p) for n, p in model.named_parameters() if p.is_floating_point()]
    if not params:
        return
    with torch.no_grad():
        finite = torch.stack([torch.isfinite(p).all() for _, p in params]).all()
    if bool(finite):
        return
    name, p = next((n, p) for n, p in params if not bool(torch.isfinite(p).all()))
    bad = int((~torch.isfinite(p)).sum())
    raise FloatingPointError(
        f"Parameter {name!r} of the model became non-finite ({bad} of {p.numel()} values NaN "
        f"or inf){' ' + where if where else ''}: training diverged. Lower lr or the method's "
        "strength (lam), or use its stabilized form (stabilized=True, --stabilized).")


class GradientLearner(Learner):
    """A network trained by an optimizer with a continual-learning `Method` (see `fit`)."""

    def __init__(self, model: nn.Module, method: Method,
                 optimizer: str | Callable[..., torch.optim.Optimizer] = "sgd", *,
                 loss: LossFn | None = None, lr: float = 0.1, epochs: float = 1,
                 iterations: int | None = None, batch_size: int = 100,
                 eval_every: int | None = None, eval_samples: int | None = None,
                 closing_samples: int = 1000, closing: str = "tail",
                 importance_options: Mapping[str, Any] | None = None, seed: int = 0,
                 progress: bool | None = None,
                 checkpoint_dir: str | os.PathLike[str] | None = None,
                 checkpoint_every: int | None = None, resume: bool = False):
        if not isinstance(method, Method):
            raise TypeError(f"method must be a myelin.methods.Method. Got {method!r}.")
        _check_seed(seed)
        _check_positive("batch_size", batch_size)
        _check_optional_positive("eval_every", eval_every,
                                 "evaluate the seen tasks every N steps",
                                 "only at the end of each task")
        _check_optional_positive("eval_samples", eval_samples,
                                 "test samples per task for the curves", "all of them")
        _check_optional_positive("checkpoint_every", checkpoint_every,
                                 "also save a checkpoint every N steps",
                                 "only after each task")
        if checkpoint_dir is not None and not isinstance(checkpoint_dir, (str, os.PathLike)):
            raise TypeError(f"checkpoint_dir must be a path (str or os.PathLike) or None. "
                            f"Got {checkpoint_dir!r}.")
        if checkpoint_dir is None and (checkpoint_every is not None or resume):
            given = "checkpoint_every" if checkpoint_every is not None else "resume=True"
            raise ValueError(f"{given} needs checkpoint_dir (the directory the checkpoints "
                             "are saved in and resumed from).")
        if not isinstance(resume, bool):
            raise TypeError(f"resume must be True or False. Got {resume!r}.")
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
        self.seed, self.progress = int(seed), progress
        self.checkpoint_dir = None if checkpoint_dir is None else Path(checkpoint_dir)
        self.checkpoint_every, self.resume = checkpoint_every, resume
        self.resumed_from: dict[str, int] | None = None
        self._pending: dict[str, Any] | None = None       # a mid-task checkpoint to continue
        self._ddp: nn.Module | None = None                # under a process group (begin)

    # the runner's hooks ------------------------------------------------------------------------
    def begin(self, scenario: Scenario, result: Result) -> None:
        """Check the model, build the optimizer and let the method set itself up."""
        if is_distributed():
            self._ddp = self._wrap_for_ranks(scenario)
        else:
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
        self._order: Tensor | None = None
        self._pos = self._task_step = 0

    def evaluate(self, task: Task, after: int | None) -> float:
        """Accuracy on the task's test set under the scenario's prediction mask."""
        self.method.before_eval(self.ctx, self.scenario.index(task))
        return evaluate(self.model, task.test, self.scenario.eval_mask(task, after=after),
                        distributed=self._ddp is not None)

    def learn(self, k: int, task: Task) -> None:
        """Train task `k` with the method's hooks (from a mid-task checkpoint if resuming)."""
        ctx = self.ctx
        ctx.task_index, ctx.train_data = k, task.train
        ctx.loss = self._task_loss(task)
        self.method.begin_task(ctx)
        pending, self._pending = self._pending, None
        if pending is not None:
            self._load_state(pending)
        self._train(k, resumed=pending is not None)
        check_finite_parameters(self.model, f"after task {k + 1} (step {ctx.step})")

    def end_task(self, k: int, task: Task, row: list[float]) -> None:
        """Record the end-of-task curve point, then the method's end_task (consolidation)."""
        if self._window or not self.eval_every:
            self._record(k, row[:k + 1] if self.eval_samples is None else None)
        self.method.end_task(self.ctx)

    def restore(self, result: Result) -> int:
        """Continue from the checkpoint in `checkpoint_dir` if `resume`; tasks already done.

        Without a checkpoint there the run starts afresh (with `resume` too); a checkpoint
        there without `resume` is refused, so that a new run never overwrites one silently.

        Raises:
            ValueError: A checkpoint exists but `resume` is False; the checkpoint is unreadable,
                or was made for another scenario, method, options, seed, model or number of
                ranks (the message names every difference). Under a process group, on every
                rank if on one.
        """
        if self.checkpoint_dir is None:
            return 0
        return together(lambda: self._restore(result), lambda failed: ValueError(
            f"Rank {failed[0][0]} cannot resume ({failed[0][1]}); rank {rank()} stops too."),
            catch=(ValueError, OSError))

    def _restore(self, result: Result) -> int:
        """`restore` on this rank alone."""
        assert self.checkpoint_dir is not None
        path = self._checkpoint_path()
        if rank() == 0:                          # under torchrun, only rank 0 writes
            try:
                self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ValueError(f"checkpoint_dir {str(self.checkpoint_dir)!r}: cannot create "
                                 f"the directory ({exc.strerror or exc}).") from None
            for stale in self.checkpoint_dir.glob(f"{_TEMP_PREFIX}*.tmp"):   # left by a kill
                with contextlib.suppress(OSError):
                    stale.unlink()
        if not path.exists():
            return 0
        if not self.resume:
            info = read_checkpoint(self.checkpoint_dir)
            raise ValueError(f"checkpoint_dir {str(self.checkpoint_dir)!r} already holds a "
                             f"checkpoint ({_describe_position(info)}); pass resume=True "
                             "(--resume) to continue it, or choose another checkpoint_dir.")
        state = _load_checkpoint(path)
        saved_ranks = int(state.get("world_size", 1))
        if saved_ranks != world_size():
            def ranks(n: int) -> str:
                return "one process" if n == 1 else f"{n} ranks (torchrun --nproc-per-node {n})"
            raise ValueError(f"Cannot resume from {str(path)!r}: it was saved by a run of "
                             f"{ranks(saved_ranks)}; this run has {ranks(world_size())}. The "
                             "reductions over ranks round differently with another number of "
                             "ranks: resume with the same number, or choose another "
                             "checkpoint_dir.")
        self._check_fingerprint(state, path)
        if state["threads"] != torch.get_num_threads():
            warnings.warn(f"{str(path)!r} was saved with {state['threads']} torch thread(s); "
                          f"this process has {torch.get_num_threads()}. The resumed run may "
                          "differ from an uninterrupted one in the last bits "
                          "(torch.set_num_threads).", RuntimeWarning, stacklevel=2)
        saved = state["result"]
        result.accuracy[:], result.random_init[:] = saved["accuracy"], saved["random_init"]
        result.curves[:], result.losses[:] = saved["curves"], saved["losses"]
        result.timings[:] = saved["timings"]
        position = state["position"]
        self.resumed_from = dict(position)
        if position["task_step"]:
            self._pending = state                 # restored in learn(), after begin_task
        else:
            self._load_state(state)
        return int(position["tasks_done"])

    def checkpoint(self, k: int, result: Result) -> None:
        """Save the checkpoint of the end of task `k` (if `checkpoint_dir` is set)."""
        if self.checkpoint_dir is not None:
            self._save_checkpoint(tasks_done=k + 1, task_step=0)

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
            **({"world_size": world_size()} if world_size() > 1 else {}),
            **({"resumed_from": self.resumed_from} if self.resumed_from is not None else {}),
        }

    # the loop ----------------------------------------------------------------------------------
    def _wrap_for_ranks(self, scenario: Scenario) -> nn.Module:
        """Under a process group: check the method and the ranks' models, wrap in DDP.

        Raises:
            ValueError: The method does not declare ``supports_distributed``, a rank's model
                cannot take the scenario's inputs, or the ranks' models differ in their
                trainable parameters (on every rank, naming the rank and the parameters).
        """
        check_supports_distributed(self.method)
        together(lambda: _check_model(self.model, scenario), lambda failed: ValueError(
            f"The model of rank {failed[0][0]} does not fit the scenario ({failed[0][1]}); "
            "every rank must hold the same model."), catch=ValueError)
        check_same_names({n: p for n, p in self.model.named_parameters() if p.requires_grad},
                         "myelin.fit")
        return wrap(self.model)

    def _task_loss(self, task: Task) -> LossFn:
        """The training loss of `task`: cross-entropy restricted to its classes by default."""
        if isinstance(self.loss, CrossEntropy):
            return self.loss.restrict(self.scenario.train_mask(task))
        return self.loss

    def _train(self, k: int, resumed: bool = False) -> None:
        ctx, model, method = self.ctx, self.model, self.method
        data, held_out, generator = ctx.train_data, ctx.held_out(), ctx.generator
        n = len(data) - held_out
        if n <= 0:
            raise ValueError(f"Task {ctx.task.name!r} has no training samples"
                             + (f" besides the {held_out} held out for the closing set."
                                if held_out else "."))
        steps = self.iterations if self.iterations is not None \
            else max(1, math.ceil(self.epochs * n / self.batch_size))
        if not resumed:                          # else: the order and position were restored
            self._order, self._pos, self._task_step = torch.randperm(n, generator=generator), 0, 0
        model.train()
        for _ in progress_bar(range(self._task_step, steps),
                              progress=self.progress if rank() == 0 else False,
                              desc=f"task {k + 1}/{len(self.scenario)}", unit="step"):
            if self._pos + self.batch_size > n and self._pos > 0:
                self._order, self._pos = torch.randperm(n, generator=generator), 0
            idx = self._order[self._pos:self._pos + self.batch_size]
            self._pos += self.batch_size
            scale = 1.0
            if self._ddp is not None:            # this rank's slice of the global batch
                idx, scale = shard_batch(idx)
            ctx.incoming = _to(draw(data, idx), self.device)
            batch = method.prepare_batch(ctx, ctx.incoming)
            loss = method.train_step(ctx, batch)
            if loss is None:
                loss = self._step(batch, scale)
            value = float(loss)
            if self._ddp is not None:            # the whole batch's mean, on every rank
                value = float(sum_over_ranks(torch.tensor([value * scale], dtype=torch.float64))
                              ) / world_size()
            if not math.isfinite(value):
                raise FloatingPointError(
                    f"The loss became {value} at step {ctx.step + 1} (task {k + 1}): training "
                    "diverged. Lower lr or the method's strength (lam), or use a stabilized "
                    "form of the method.")
            method.after_step(ctx, batch)
            self._window.append(value)
            ctx.step += 1
            self._task_step += 1
            if self.eval_every and ctx.step % self.eval_every == 0:
                self._record(k)
            if self.checkpoint_every and ctx.step % self.checkpoint_every == 0 \
                    and self._task_step < steps:     # at the task's end: the task's checkpoint
                self._save_checkpoint(tasks_done=k, task_step=self._task_step)

    def _step(self, batch: Any, scale: float = 1.0) -> Tensor:
        """The standard step: zero_grad, loss (+ the method's terms), backward, step.

        Under a process group the forward pass runs through the DDP wrapper (which averages
        the gradients over the ranks) and the loss of this rank's slice is multiplied by
        `scale` (`myelin.distributed.shard_batch`) first; the returned loss is not.
        """
        ctx = self.ctx
        ctx.optimizer.zero_grad()
        loss = ctx.loss(self.model if self._ddp is None else self._ddp, batch)
        total = self.method.loss(ctx, batch, loss if scale == 1.0 else loss * scale)
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
                                     max_samples=self.eval_samples,
                                     distributed=self._ddp is not None))
        self.result.curves.append({"iteration": self.ctx.step, "task": k, "accuracies": accs})
        if self._window:
            self.result.losses.append({"iteration": self.ctx.step, "task": k,
                                       "loss": float(np.mean(self._window))})
        self._window = []

    # checkpoints -------------------------------------------------------------------------------
    def _checkpoint_path(self) -> Path:
        assert self.checkpoint_dir is not None
        return self.checkpoint_dir / CHECKPOINT_FILE

    def _fingerprint(self) -> dict[str, Any]:
        """What a checkpoint must share with this run to be resumed by it (JSON, no addresses).

        The scenario's and the learner's configuration (method and options, optimizer, loss,
        training options, seed, the model's repr) and every state-dict entry's shape; not the
        torch version, nor how often checkpoints are saved.
        """
        config = {"scenario": _scenario_config(self.scenario), **self.config()}
        config.pop("torch", None)
        config.pop("resumed_from", None)
        config.pop("world_size", None)         # checked on its own, with a clearer message
        config["model_state"] = {n: list(v.shape) for n, v in self.model.state_dict().items()}
        return json.loads(_ADDRESS.sub("", json.dumps(config, sort_keys=True, default=repr)))

    def _check_fingerprint(self, state: Mapping[str, Any], path: Path) -> None:
        diffs = _differences(json.loads(state["fingerprint"]), self._fingerprint())
        if diffs:
            shown = "; ".join(diffs[:8]) + (f"; and {len(diffs) - 8} more" if len(diffs) > 8
                                             else "")
            raise ValueError(f"Cannot resume from {str(path)!r}: it was saved for a different "
                             f"run ({shown}). Resume with the same scenario, method, options, "
                             "seed and model, or choose another checkpoint_dir.")

    def _save_checkpoint(self, tasks_done: int, task_step: int) -> None:
        """Write the run's whole state atomically (see the module docstring)."""
        ctx = self.ctx
        check_finite_parameters(self.model, f"at step {ctx.step} (task {ctx.task_index + 1})")
        if rank() != 0:                          # every rank holds the same state
            return
        state = {
            "format": _CHECKPOINT_FORMAT, "version": _CHECKPOINT_VERSION,
            "fingerprint": json.dumps(self._fingerprint(), sort_keys=True),
            "threads": torch.get_num_threads(), "torch": str(torch.__version__),
            "position": {"tasks_done": tasks_done, "task_step": task_step, "step": ctx.step,
                         "n_tasks": len(self.scenario.tasks)},
            "result": {"accuracy": self.result.accuracy, "random_init": self.result.random_init,
                       "curves": self.result.curves, "losses": self.result.losses,
                       "timings": self.result.timings},
            "model": self.model.state_dict(),
            "optimizer": ctx.optimizer.state_dict(),
            "method": self.method.state_dict(),
            "loop": {"step": ctx.step, "window": list(self._window), "order": self._order,
                     "pos": self._pos, "task_step": self._task_step},
            "rng": _rng_state(ctx.generator),
        }
        if world_size() > 1:
            state["world_size"] = world_size()
        _atomic_save(state, self._checkpoint_path())

    def _load_state(self, state: Mapping[str, Any]) -> None:
        """Put a checkpoint's model, optimizer, method, loop and random states in place."""
        ctx = self.ctx
        self.model.load_state_dict(state["model"])
        ctx.optimizer.load_state_dict(state["optimizer"])
        self.method.load_state_dict(state["method"])
        loop = state["loop"]
        ctx.step, self._window = int(loop["step"]), [float(v) for v in loop["window"]]
        self._order, self._pos = loop["order"], int(loop["pos"])
        self._task_step = int(loop["task_step"])
        _set_rng_state(state["rng"], ctx.generator)


def _differences(saved: Any, current: Any, key: str = "") -> list[str]:
    """'key: checkpoint X, now Y' for every leaf where two JSON values differ."""
    if isinstance(saved, dict) and isinstance(current, dict):
        out = []
        for k in sorted(set(saved) | set(current), key=str):
            sub = f"{key}.{k}" if key else str(k)
            if k not in saved:
                out.append(f"{sub}: not in the checkpoint, now {_short(current[k])}")
            elif k not in current:
                out.append(f"{sub}: checkpoint {_short(saved[k])}, not in this run")
            else:
                out.extend(_differences(saved[k], current[k], sub))
        return out
    if saved == current:
        return []
    return [f"{key}: checkpoint {_short(saved)}, now {_short(current)}"]


def _short(value: Any, width: int = 60) -> str:
    text = " ".join(repr(value).split())
    return text if len(text) <= width else text[:width - 3] + "..."


def _rng_state(generator: torch.Generator | None) -> dict[str, Any]:
    """The random states a run draws from, as tensors and plain values."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {"torch": torch.random.get_rng_state(),
            "generator": None if generator is None else generator.get_state(),
            "numpy": {"name": name, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                      "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
            "python": {"version": version, "internal": list(internal), "gauss": gauss},
            "cuda": (torch.cuda.get_rng_state_all() if torch.cuda.is_available()
                     and torch.cuda.is_initialized() else [])}


def _set_rng_state(state: Mapping[str, Any], generator: torch.Generator | None) -> None:
    torch.random.set_rng_state(state["torch"])
    if generator is not None and state["generator"] is not None:
        generator.set_state(state["generator"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _atomic_save(state: Mapping[str, Any], path: Path) -> None:
    """torch.save `state` to `path` through a temporary file in its directory and os.replace."""
    fd, tmp = tempfile.mkstemp(prefix=_TEMP_PREFIX, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(dict(state), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    with contextlib.suppress(OSError):               # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _load_checkpoint(path: Path, mmap: bool = False) -> dict[str, Any]:
    """A checkpoint file's contents (tensors on the CPU); ValueError if it is not one.

    `mmap` maps the tensors instead of reading them (to look at the position only).
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:      # torch raises pickle, zip and runtime errors of many types
        text = (str(exc).strip().splitlines() or [""])[0]
        why = ("damaged, or not tensors and plain values only"
               if text.startswith("Weights only load failed") else
               f"{type(exc).__name__}: {text[:100]}")
        raise ValueError(f"{str(path)!r} is not a readable myelin checkpoint ({why}). Delete "
                         "it to start afresh.") from None
    if not isinstance(state, dict) or state.get("format") != _CHECKPOINT_FORMAT:
        raise ValueError(f"{str(path)!r} is not a myelin checkpoint.")
    if state.get("version") != _CHECKPOINT_VERSION:
        raise ValueError(f"{str(path)!r} is a checkpoint of format version "
                         f"{state.get('version')!r}; this myelin reads version "
                         f"{_CHECKPOINT_VERSION}.")
    return state


def read_checkpoint(checkpoint_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Where the checkpoint in `checkpoint_dir` stands, or None if there is none.

    Returns:
        {"tasks_done", "n_tasks", "task_step" (steps into the next task; 0 at a task's end),
        "step" (steps over all tasks)}.

    Raises:
        ValueError: The file exists but is not a readable myelin checkpoint.
    """
    path = Path(checkpoint_dir) / CHECKPOINT_FILE
    if not path.exists():
        return None
    try:
        return dict(_load_checkpoint(path, mmap=True)["position"])
    except ValueError:                       # (not a zip file, ...): read it to say why
        return dict(_load_checkpoint(path)["position"])


def _describe_position(position: Mapping[str, Any] | None) -> str:
    if position is None:
        return "none"
    done, total = position["tasks_done"], position["n_tasks"]
    if done == total:
        return f"all {total} tasks done"
    text = f"{done} of {total} tasks done"
    return text + (f", {position['task_step']} steps into task {done + 1}"
                   if position["task_step"] else "")


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
    checkpoint_dir: str | os.PathLike[str] | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
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
        checkpoint_dir: Save a checkpoint (``checkpoint.pt``, replaced atomically) in this
            directory after every task: model, optimizer, the method's state, random states and
            the partial result (see the module docstring). A directory that already holds one
            is refused unless `resume`. Methods you write keep their state in checkpoints
            through ``Method.state_dict`` / ``load_state_dict``.
        checkpoint_every: Also save one every this many steps (None: only after each task).
        resume: Continue from the checkpoint in `checkpoint_dir` (start afresh if there is
            none). Build the model as for the first run (its weights are replaced) and pass the
            same arguments: a checkpoint of another scenario, method, options, seed or model is
            refused with the differences named. A finished run's checkpoint gives its result
            at once.

    Returns:
        A `Result` with the accuracy matrix, curves, losses, timings, metrics and config.

    Raises:
        FloatingPointError: The loss or a parameter became NaN or inf (training diverged).
        ValueError: An argument is out of range, or the checkpoint cannot be resumed.
        TypeError: An argument has the wrong type (e.g. a seed that is not an int).
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
        importance_options=importance_options, seed=seed, progress=progress,
        checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every, resume=resume)
    torch_state = torch.random.get_rng_state()
    np_state, py_state = np.random.get_state(), random.getstate()   # a resume sets them
    torch.manual_seed(seed)
    try:
        return run(scenario, learner)
    finally:
        torch.random.set_rng_state(torch_state)
        if learner.resumed_from is not None:
            np.random.set_state(np_state)
            random.setstate(py_state)

