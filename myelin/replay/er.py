"""Experience replay: train on stored samples of earlier tasks beside every incoming batch."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from ..losses import CrossEntropy
from ..methods import METHODS, Context, Method
from .base import Replay, _positive_or_none, replay_loss, task_loss
from .memory import batch_size

__all__ = ["ER", "er"]


def _concat(a: Any, b: Any) -> Any:
    if isinstance(a, Mapping):
        return {k: torch.cat([a[k], b[k].to(a[k].device)]) for k in a}
    return type(a)(torch.cat([x, y.to(x.device)]) for x, y in zip(a, b, strict=True))


class ER(Replay):
    """Experience replay (ER): a memory batch beside every incoming batch, one step.

    ``buffer="reservoir"`` (default): reservoir sampling over the whole stream (every sample
    seen is kept with equal probability); the memory batch, drawn from everything stored
    (the current task's samples included), is concatenated with the incoming batch — the loss
    is the mean over both. ``buffer="ring"``: CTN's ER-Ring — a ring buffer per task, replay
    from past tasks only, loss = incoming loss + replay loss.

    Stored samples are scored under their own task's class mask (task-incremental scenarios);
    when every drawn sample shares the current task's loss the two batches go through the model
    as one concatenated batch. The incoming batch is stored after the step.

    Args:
        memory: Total samples stored (or give `memory_per_task`).
        memory_per_task: Samples stored per task.
        buffer: "reservoir" or "ring".
        replay_batch: Stored samples replayed per step (None: the incoming batch's size).
    """

    name = "er"

    def __init__(self, memory: int | None = None, memory_per_task: int | None = None,
                 buffer: str = "reservoir", replay_batch: int | None = None):
        super().__init__(memory, memory_per_task, buffer)
        self.replay_batch = _positive_or_none("replay_batch", replay_batch)
        self.config["replay_batch"] = replay_batch
        self._incoming: Any = None
        self._split: tuple[Any, Tensor] | None = None

    def setup(self, ctx: Context) -> None:
        """Allocate the memory; refuse a replay batch larger than it."""
        super().setup(ctx)
        if self.replay_batch is not None and self.replay_batch > self.memory.capacity:
            raise ValueError(f"er: replay_batch={self.replay_batch} exceeds the memory's "
                             f"{self.memory.capacity} samples.")

    def _draw(self, ctx: Context, n: int) -> tuple[Any, Tensor] | None:
        if self.buffer == "ring":
            if ctx.task_index == 0:
                return None
            return self.memory.sample(n, tasks=range(ctx.task_index))
        return self.memory.sample(n)

    def prepare_batch(self, ctx: Context, batch: Any) -> Any:
        """Draw the memory batch; concatenate it when it shares the current task's loss."""
        self._incoming, self._split = batch, None
        drawn = self._draw(ctx, self.replay_batch or batch_size(batch))
        if drawn is None:
            return batch
        stored, tasks = drawn
        same_loss = not isinstance(ctx.loss, CrossEntropy) or all(
            task_loss(ctx, t).classes == ctx.loss.classes for t in tasks.unique().tolist())
        if self.buffer == "reservoir" and same_loss:
            return _concat(batch, stored)
        self._split = (stored, tasks)
        return batch

    def loss(self, ctx: Context, batch: Any, loss: Tensor) -> Tensor:
        """Add the replay term when it was not concatenated into the batch."""
        if self._split is None:
            return loss
        stored, tasks = self._split
        replay = replay_loss(ctx, stored, tasks)
        if self.buffer == "ring":
            return loss + replay
        n, m = batch_size(self._incoming), len(tasks)
        return (n * loss + m * replay) / (n + m)

    def after_step(self, ctx: Context, batch: Any) -> None:
        """Store the incoming batch."""
        self.store(ctx, self._incoming if ctx.incoming is None else None)


@METHODS.register("er", "experience replay: a reservoir (or per-task ring) memory batch per step")
def er(memory: int | None = None, memory_per_task: int | None = None,
       buffer: str = "reservoir", replay_batch: int | None = None) -> Method:
    """Experience replay (reservoir sampling; ``buffer="ring"``: CTN's ER-Ring).

    Args:
        memory: Total samples stored (give this or memory_per_task).
        memory_per_task: Samples stored per task (total = this x number of tasks).
        buffer: Memory filling rule: reservoir or ring (per task, past tasks only).
        replay_batch: Stored samples replayed per step (default: the training batch size).
    """
    if memory is None and memory_per_task is None:
        memory_per_task = 50
    return ER(memory, memory_per_task, buffer, replay_batch)
