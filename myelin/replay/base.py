"""What every replay method shares: a memory budget, the memory itself, per-task replay losses."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..importance import eval_mode
from ..losses import CrossEntropy, LogitLoss, LossFn, call_model
from ..methods import Context, Method
from .memory import Memory, ReservoirMemory, RingMemory, batch_rows, positive_int

__all__ = ["Replay", "budget", "per_sample_losses", "replay_loss", "task_loss"]

BUFFERS = ("reservoir", "ring")


def _positive_or_none(name: str, value: Any) -> int | None:
    return None if value is None else positive_int(name, value)


def budget(memory: int | None, memory_per_task: int | None, n_tasks: int) -> tuple[int, int]:
    """(total, per task) of a budget given as one of `memory` (total) or `memory_per_task`.

    Raises:
        ValueError: Both or neither given, a non-positive size, or a total below one per task.
    """
    memory = _positive_or_none("memory", memory)
    memory_per_task = _positive_or_none("memory_per_task", memory_per_task)
    if (memory is None) == (memory_per_task is None):
        raise ValueError("Give the replay memory as exactly one of memory= (total samples) or "
                         f"memory_per_task=. Got memory={memory!r}, "
                         f"memory_per_task={memory_per_task!r}.")
    if memory_per_task is not None:
        return memory_per_task * n_tasks, memory_per_task
    if memory < n_tasks:
        raise ValueError(f"memory={memory} is fewer samples than the scenario's {n_tasks} "
                         "tasks: a per-task memory would hold nothing.")
    return memory, memory // n_tasks


def task_loss(ctx: Context, task: int) -> LossFn:
    """The loss a stored sample of task `task` is trained under.

    Task-incremental scenarios (and class-incremental ones with the labels trick) restrict
    each task to its own classes, so a stored sample keeps its task's mask; otherwise every
    sample is scored like the incoming ones, under the current loss (class-incremental with
    `seen_classes`: all classes seen so far, so replay pushes the newer classes down too).
    """
    scenario = ctx.scenario
    own_mask = scenario.setting == "task" or (scenario.setting == "class"
                                              and scenario.labels_trick)
    if isinstance(ctx.loss, CrossEntropy) and task != ctx.task_index and own_mask:
        return ctx.loss.restrict(scenario.train_mask(scenario.tasks[task]))
    return ctx.loss


def replay_loss(ctx: Context, batch: Any, tasks: Tensor) -> Tensor:
    """Mean loss of stored samples, each under its own task's loss (class mask).

    Args:
        ctx: The run's context.
        batch: Stored samples (N rows).
        tasks: (N,) task index of each row.
    """
    groups = tasks.unique()
    losses = [task_loss(ctx, t) for t in groups.tolist()]
    if len({getattr(f, "classes", None) and tuple(f.classes) for f in losses}) == 1:
        return losses[0](ctx.model, batch)            # one loss for all rows: one pass
    total = 0.0
    for t in groups.tolist():
        index = (tasks == t).nonzero().flatten()
        total = total + len(index) * task_loss(ctx, t)(ctx.model, batch_rows(batch, index))
    return total / len(tasks)


def per_sample_losses(ctx: Context, batch: Any, tasks: Tensor,
                      params: Mapping[str, Tensor] | None = None) -> Tensor:
    """(N,) loss of every sample of an ``(x, y)`` batch under its task's mask, no gradient.

    The model is scored in eval mode (no dropout noise, no BatchNorm statistics updated). With
    `params`, the model is evaluated with those parameters (``torch.func.functional_call``).
    """
    if not isinstance(ctx.loss, LogitLoss) or isinstance(batch, Mapping):
        raise TypeError("Scoring stored samples one by one needs (x, y) batches and a loss with "
                        "logits() (myelin.losses.CrossEntropy).")
    x, y = batch
    with torch.no_grad(), eval_mode(ctx.model):     # no dropout noise, no BatchNorm updates
        out = (call_model(ctx.model, x) if params is None
               else torch.func.functional_call(ctx.model, dict(params), (x,)))
        losses = torch.empty(len(y), dtype=out.dtype, device=y.device)
        for t in tasks.unique().tolist():
            index = (tasks == t).nonzero().flatten().to(y.device)
            logits = task_loss(ctx, t).logits(out[index])
            losses[index] = F.cross_entropy(logits, y[index], reduction="none")
    return losses


class Replay(Method):
    """Base of replay methods: builds the memory in `setup` from the budget.

    Args:
        memory: Total samples stored (None: use `memory_per_task`).
        memory_per_task: Samples stored per task (the total is this × the number of tasks).
        buffer: "reservoir" (a uniform sample of the whole stream) or "ring" (the last samples
            of each task).
    """

    name = "replay"

    def __init__(self, memory: int | None, memory_per_task: int | None, buffer: str):
        if buffer not in BUFFERS:
            raise ValueError(f"buffer must be one of {BUFFERS}. Got {buffer!r}.")
        _positive_or_none("memory", memory)
        _positive_or_none("memory_per_task", memory_per_task)
        if (memory is None) == (memory_per_task is None):
            budget(memory, memory_per_task, 1)            # raises the explanation
        self.memory_size, self.memory_per_task, self.buffer = memory, memory_per_task, buffer
        self.memory: Memory | None = None
        self.config = {"memory": memory, "memory_per_task": memory_per_task, "buffer": buffer}

    def setup(self, ctx: Context) -> None:
        """Allocate the memory for the scenario's tasks and record the resolved budget."""
        n_tasks = len(ctx.scenario.tasks)
        total, per_task = budget(self.memory_size, self.memory_per_task, n_tasks)
        generator = torch.Generator().manual_seed(ctx.seed + 7919)
        self.memory = (ReservoirMemory(total, generator) if self.buffer == "reservoir"
                       else RingMemory(per_task, n_tasks, generator))
        self.config.update(memory_total=self.memory.capacity, memory_unit="samples")
        self._device = ctx.device
        self._check_sizes(ctx, per_task)

    def state_dict(self) -> dict[str, Any]:
        """The memory (stored rows, their tasks, its generator's state), for a checkpoint."""
        return {"memory": self.memory.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore `state_dict` after `setup` (the rows go to the training device)."""
        self.memory.load_state_dict(state["memory"], getattr(self, "_device", None))

    def _check_sizes(self, ctx: Context, per_task: int) -> None:
        sizes = [len(t.train) for t in ctx.scenario.tasks]
        if self.buffer == "ring" and per_task > min(sizes):
            warnings.warn(f"{self.name}: memory per task ({per_task}) exceeds the smallest "
                          f"task's training set ({min(sizes)}); that task's memory holds all "
                          "of it.", UserWarning, stacklevel=3)

    def store(self, ctx: Context, batch: Any = None) -> None:
        """Offer `batch` (default: the loop's incoming batch) to the memory as the current task's.

        The default never stores the replayed rows another part of a composition added.
        """
        self.memory.add(ctx.incoming if batch is None else batch, ctx.task_index)
