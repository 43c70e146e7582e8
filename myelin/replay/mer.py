"""Meta-Experience Replay (MER), Algorithm 1 of Riemer et al. 2019.

"Learning to Learn without Forgetting by Maximizing Transfer and Minimizing Interference".

For every incoming example (x, y), in stream order::

    θ_A0 ← θ
    repeat batches_per_example times:
        B ← [(x, y)] + up to replay_batch samples drawn from the reservoir (with replacement)
        θ_W0 ← θ
        for each sample of B, in order: one SGD step on that sample alone
        θ ← θ_W0 + β (θ − θ_W0)                 # within-batch Reptile
    θ ← θ_A0 + γ (θ − θ_A0)                     # across-batch Reptile
    offer (x, y) to the reservoir

so a stream batch of n examples costs ``n × batches_per_example × (1 + replay_batch)``
single-sample steps. This is the official code's Algorithm 1 (mattriemer/MER,
``model/meralg1.py``), not the shortcut that trains one SGD step on the concatenated batch
and scales it by β·γ (that is plain SGD with a smaller learning rate: the per-sample steps,
whose gradients are taken at different points, are what lets Reptile's update carry the
gradient-alignment term).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import Tensor

from ..losses import LossFn
from ..methods import METHODS, Context, Method
from .base import Replay, task_loss
from .memory import batch_rows, batch_size, positive_int

__all__ = ["MER", "mer"]


def _check_rate(name: str, value: Any) -> float:
    bad = isinstance(value, bool) or not isinstance(value, (int, float))
    if bad or not math.isfinite(value) or not 0 < value <= 1:
        raise ValueError(f"{name} must be a number in (0, 1] (an interpolation factor of the "
                         f"Reptile meta-update). Got {value!r}.")
    return float(value)


class MER(Replay):
    """Meta-Experience Replay, Algorithm 1: per-sample SGD steps inside two Reptile updates.

    MER owns the training step (`train_step`): each example of the incoming batch is trained
    on, one at a time, as in the paper's stream of batch size 1 (see the module docstring for
    the algorithm). Every single-sample step is ``ctx.optimizer.zero_grad()``, backward of
    that sample's loss, ``ctx.optimizer.step()`` — so an optimizer wrapper installed by another
    method (WVA, EWC's penalty) acts on every inner step. Stored samples are trained under
    their own task's class mask; the incoming example under the current task's loss.

    The memory is a reservoir over the whole stream (all tasks, the current one included),
    updated after every example, so the next example of the same incoming batch can already
    replay it. Memories are drawn uniformly *with* replacement, ``min(replay_batch, stored)``
    of them per batch, placed after the incoming example (as the official code does).

    Learning rate: the optimizer's (the paper's α; 0.03 in its MNIST runs). The paper uses
    plain SGD. With momentum or Adam the optimizer's state advances at every inner
    single-sample step and is *not* rewound by the Reptile interpolations (only the parameters
    are), so the velocity of the un-interpolated inner trajectory carries into the next batch
    and example; `setup` warns about it. Parameters and floating-point buffers (e.g. batch-norm
    running statistics) are interpolated, as the original interpolates the whole state dict;
    integer buffers keep their latest value. β = 1 (γ = 1) skips the within- (across-) batch
    interpolation, which is then the identity.

    Composition: MER owns the step, so the `loss` and `after_backward` hooks of methods
    composed with it do not run; their `after_step` runs once per incoming batch.

    Args:
        memory: Total samples stored (or give `memory_per_task`).
        memory_per_task: Samples stored per task (total = this × the number of tasks).
        replay_batch: Memories drawn per batch (the batch is the example plus these).
        batches_per_example: Batches (within-batch Reptile updates) per incoming example.
        beta: Within-batch Reptile interpolation β in (0, 1].
        gamma: Across-batch Reptile interpolation γ in (0, 1].

    Attributes:
        last_draws: The memories drawn by the latest `train_step`, ``(batch, tasks)`` per batch
            (None when the memory was empty), in training order — for inspection and tests.
    """

    name = "mer"

    def __init__(self, memory: int | None = None, memory_per_task: int | None = None,
                 replay_batch: int = 100, batches_per_example: int = 10,
                 beta: float = 0.03, gamma: float = 1.0):
        super().__init__(memory, memory_per_task, "reservoir")
        self.replay_batch = positive_int("replay_batch", replay_batch)
        self.batches_per_example = positive_int("batches_per_example",
                                                       batches_per_example)
        self.beta = _check_rate("beta", beta)
        self.gamma = _check_rate("gamma", gamma)
        if memory is not None and replay_batch > memory:
            raise ValueError(f"mer: replay_batch={replay_batch} exceeds the memory's {memory} "
                             "samples.")
        self.config.update(replay_batch=replay_batch, batches_per_example=batches_per_example,
                           beta=self.beta, gamma=self.gamma)
        self.last_draws: list[tuple[Any, Tensor] | None] = []

    def setup(self, ctx: Context) -> None:
        """Allocate the reservoir; refuse a replay batch larger than it; warn about momentum."""
        super().setup(ctx)
        if self.replay_batch > self.memory.capacity:
            raise ValueError(f"mer: replay_batch={self.replay_batch} exceeds the memory's "
                             f"{self.memory.capacity} samples.")
        stateful = [g for g in ctx.optimizer.param_groups
                    if g.get("momentum", 0) or "betas" in g or "alpha" in g]
        if stateful:
            warnings.warn("mer: the optimizer keeps state (momentum, Adam or RMSprop moments) "
                          "that advances at every inner single-sample step and is not rewound "
                          "by the Reptile interpolations; MER (Algorithm 1) is defined with "
                          "plain SGD.", UserWarning, stacklevel=2)

    # the algorithm -----------------------------------------------------------------------------
    def _state(self, ctx: Context) -> list[Tensor]:
        """The tensors the Reptile updates interpolate: parameters and float buffers."""
        return [p for p in ctx.model.parameters()] + [
            b for b in ctx.model.buffers() if b.is_floating_point()]

    @staticmethod
    def _interpolate(state: list[Tensor], start: list[Tensor], factor: float) -> None:
        """In place: state ← start + factor · (state − start)."""
        with torch.no_grad():
            for s, s0 in zip(state, start, strict=True):
                s.copy_(s0 + (s - s0) * factor)

    def _draw(self) -> tuple[Any, Tensor] | None:
        """``min(replay_batch, stored)`` memories drawn uniformly with replacement."""
        slots = self.memory.slots()
        if len(slots) == 0:
            return None
        n = min(self.replay_batch, len(slots))
        pick = torch.randint(len(slots), (n,), generator=self.memory.generator)
        chosen = slots[pick]
        return self.memory.get(chosen), self.memory.task[chosen.to(self.memory.task.device)].cpu()

    def _sgd(self, ctx: Context, loss_fn: LossFn, sample: Any) -> Tensor:
        """One optimizer step on a single sample; its loss before the step (detached)."""
        ctx.optimizer.zero_grad()
        loss = loss_fn(ctx.model, sample)
        loss.backward()
        ctx.optimizer.step()
        return loss.detach()

    def train_step(self, ctx: Context, batch: Any) -> Tensor:
        """Algorithm 1 on every example of `batch` in turn; the mean loss of the examples.

        The loss of an example is measured at its first inner step, before MER trained on it.
        """
        state = self._state(ctx)
        losses: dict[int, LossFn] = {}

        def loss_of(task: int) -> LossFn:
            if task not in losses:
                losses[task] = task_loss(ctx, task)
            return losses[task]

        self.last_draws = []
        first_losses = []
        for i in range(batch_size(batch)):
            example = batch_rows(batch, slice(i, i + 1))
            across = [s.detach().clone() for s in state] if self.gamma != 1 else None
            for b in range(self.batches_per_example):
                within = [s.detach().clone() for s in state] if self.beta != 1 else None
                drawn = self._draw()
                self.last_draws.append(drawn)
                loss = self._sgd(ctx, ctx.loss, example)
                if b == 0:
                    first_losses.append(loss)
                if drawn is not None:
                    stored, tasks = drawn
                    for j, t in enumerate(tasks.tolist()):
                        self._sgd(ctx, loss_of(t), batch_rows(stored, slice(j, j + 1)))
                if within is not None:
                    self._interpolate(state, within, self.beta)
            if across is not None:
                self._interpolate(state, across, self.gamma)
            self.store(ctx, example)
        return torch.stack(first_losses).mean()


@METHODS.register("mer", "Meta-Experience Replay (Algorithm 1): per-sample steps inside Reptile")
def mer(memory: int | None = None, memory_per_task: int | None = None,
        replay_batch: int = 100, batches_per_example: int = 10,
        beta: float = 0.03, gamma: float = 1.0) -> Method:
    """Meta-Experience Replay (Riemer et al. 2019, Algorithm 1); the learning rate is lr.

    Args:
        memory: Total samples stored in the reservoir (default 5120 when neither is given).
        memory_per_task: Samples stored per task (total = this x number of tasks).
        replay_batch: Memories drawn per batch, beside the incoming example.
        batches_per_example: Batches, each with a within-batch Reptile update, per example.
        beta: Within-batch Reptile interpolation, in (0, 1].
        gamma: Across-batch Reptile interpolation, in (0, 1].
    """
    if memory is None and memory_per_task is None:
        memory = 5120
    return MER(memory, memory_per_task, replay_batch, batches_per_example, beta, gamma)
