"""Maximally Interfered Retrieval (MIR; Aljundi et al. 2019), its ER-MIR variant.

"Online Continual Learning with Maximally Interfered Retrieval"; the official code is
optimass/Maximally_Interfered_Retrieval, ``mir.py::retrieve_replay_update``.

Every step, after the loop's backward on the incoming batch (``.grad`` = g)::

    θ' ← θ − lr · g                               # a virtual SGD step; the model is untouched
    C  ← `candidates` stored samples of earlier tasks (never the current task's)
    s  ← loss(θ'; c) − loss(θ; c)  for c in C      # how much the step would hurt each of them
    R  ← the `replay_batch` candidates of largest s
    .grad += ∇ replay_loss(R)                      # incoming mean loss + replayed mean loss
    optimizer.step();  then the incoming batch is offered to the reservoir

With ``compare_to_old_logits`` (the original's flag, used for its MNIST runs) the score is
``loss(θ') − min(loss(θ), old)``, where `old` is the lowest loss each stored sample has had
when it was a candidate (the original keeps the logits of that moment; only their loss is
ever used, so the loss is kept).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..losses import LogitLoss
from ..methods import METHODS, Context, Method
from .base import Replay, per_sample_losses, replay_loss, task_loss
from .memory import ReservoirMemory, batch_rows, positive_int

__all__ = ["MIR", "mir"]


class ScoredReservoir(ReservoirMemory):
    """A reservoir that also keeps, per slot, the lowest loss its sample has had (NaN: none).

    A slot's old loss is reset to NaN whenever a new sample is written into it.
    """

    def __init__(self, capacity: int, generator: torch.Generator | None = None):
        super().__init__(capacity, generator)
        self.old_loss = torch.full((self.capacity,), math.nan)

    def _write(self, slots: Tensor, rows: Tensor, batch: Any, task: int) -> None:
        super()._write(slots, rows, batch, task)
        if self.old_loss.device != self.task.device:
            self.old_loss = self.old_loss.to(self.task.device)
        self.old_loss[slots.to(self.task.device)] = math.nan

    def state_dict(self) -> dict[str, Any]:
        """The reservoir's state plus each slot's lowest loss."""
        return {**super().state_dict(), "old_loss": self.old_loss.clone()}

    def load_state_dict(self, state: Mapping[str, Any],
                        device: torch.device | str | None = None) -> None:
        """Restore `state_dict` (see `Memory.load_state_dict`)."""
        old = state.get("old_loss")
        if not isinstance(old, Tensor) or old.shape != (self.capacity,):
            raise ValueError("The saved ScoredReservoir state lacks its (capacity,) old losses.")
        super().load_state_dict(state, device)
        self.old_loss = old.clone().to(self.task.device)


class MIR(Replay):
    """Maximally Interfered Retrieval (ER-MIR): replay the stored samples a step would hurt most.

    Runs in the loop's standard step: `after_backward` (``.grad`` holds the incoming batch's
    gradient g — plus the terms of methods composed before it) scores the candidates under the
    virtual step θ − lr·g, with lr the optimizer's (``ctx.lr``; a plain SGD step whatever the
    optimizer, as in the original), and adds the gradient of the top candidates' mean loss to
    ``.grad``; the loop's ``optimizer.step()`` then applies g + g_replay. Each stored sample is
    scored and trained under its own task's class mask.

    Candidates are drawn without replacement from the stored samples of every task but the
    current one — excluded by *task*, not by class (on permuted MNIST all tasks share the
    classes). No replay happens while no such sample exists (the whole first task): the step
    is then plain fine-tuning on the incoming batch. Fewer eligible samples than `candidates`:
    all are scored; fewer than `replay_batch`: all are replayed.

    With ``compare_to_old_logits`` a slot's old loss starts, when a sample is written into it,
    at the loss of all-zero logits under the sample's mask (the original's zero-initialised
    logits buffer: log C for C allowed classes), and becomes ``min(old, loss(θ))`` every time
    the sample is a candidate.

    Needs ``(x, y)`` batches and a loss with ``logits()`` (`myelin.losses.CrossEntropy`).

    Args:
        memory: Total samples stored (or give `memory_per_task`).
        memory_per_task: Samples stored per task (total = this × the number of tasks).
        candidates: Stored samples scored per step (the original's ``subsample``).
        replay_batch: Top-scored candidates replayed per step (``buffer_batch_size``).
        compare_to_old_logits: Score against the lowest loss each sample has had.

    Attributes:
        last_candidates: Memory slots scored at the latest step (None: no replay).
        last_scores: Their scores.
        last_replayed: The slots replayed (the top `replay_batch` by score, best first).
    """

    name = "mir"

    def __init__(self, memory: int | None = None, memory_per_task: int | None = None,
                 candidates: int = 50, replay_batch: int = 10,
                 compare_to_old_logits: bool = False):
        super().__init__(memory, memory_per_task, "reservoir")
        self.candidates = positive_int("candidates", candidates)
        self.replay_batch = positive_int("replay_batch", replay_batch)
        if not isinstance(compare_to_old_logits, bool):
            raise ValueError("compare_to_old_logits must be True or False. "
                             f"Got {compare_to_old_logits!r}.")
        if candidates < replay_batch:
            raise ValueError(f"mir: candidates={candidates} is fewer than replay_batch="
                             f"{replay_batch}: the replayed samples are chosen among the "
                             "candidates.")
        if memory is not None and replay_batch > memory:
            raise ValueError(f"mir: replay_batch={replay_batch} exceeds the memory's {memory} "
                             "samples.")
        self.compare_to_old_logits = compare_to_old_logits
        self.config.update(candidates=candidates, replay_batch=replay_batch,
                           compare_to_old_logits=compare_to_old_logits)
        self._incoming: Any = None
        self.last_candidates: Tensor | None = None
        self.last_scores: Tensor | None = None
        self.last_replayed: Tensor | None = None

    def setup(self, ctx: Context) -> None:
        """Allocate the (scored) reservoir; refuse sizes and losses MIR cannot work with."""
        super().setup(ctx)
        self.memory = ScoredReservoir(self.memory.capacity, self.memory.generator)
        if self.replay_batch > self.memory.capacity:
            raise ValueError(f"mir: replay_batch={self.replay_batch} exceeds the memory's "
                             f"{self.memory.capacity} samples.")
        if not isinstance(ctx.loss, LogitLoss):
            raise TypeError("mir scores stored samples one by one: it needs a loss with "
                            f"logits() (myelin.losses.CrossEntropy); got {ctx.loss!r}.")

    def prepare_batch(self, ctx: Context, batch: Any) -> Any:
        """Remember the incoming batch (stored after the step); the batch is unchanged."""
        self._incoming = batch
        return batch

    # retrieval ---------------------------------------------------------------------------------
    def _candidates(self, ctx: Context) -> Tensor | None:
        """Up to `candidates` filled slots of earlier tasks, drawn without replacement."""
        slots = self.memory.slots(exclude=ctx.task_index)
        if len(slots) == 0:
            return None
        if len(slots) > self.candidates:
            pick = torch.randperm(len(slots), generator=self.memory.generator)
            slots = slots[pick[:self.candidates]]
        return slots

    def virtual_parameters(self, ctx: Context) -> dict[str, Tensor]:
        """θ − lr·g for every parameter with a gradient (the others unchanged), detached."""
        lr = ctx.lr
        with torch.no_grad():
            return {name: p if p.grad is None else p - lr * p.grad
                    for name, p in ctx.model.named_parameters()}

    def _zero_logit_loss(self, ctx: Context, y: Tensor, tasks: Tensor) -> Tensor:
        """(N,) loss of all-zero logits under each sample's task mask."""
        out = torch.empty(len(y), device=y.device)
        zeros = torch.zeros(len(y), ctx.scenario.n_classes, device=y.device)
        for t in tasks.unique().tolist():
            index = (tasks == t).nonzero().flatten().to(y.device)
            logits = task_loss(ctx, t).logits(zeros[index])
            out[index] = F.cross_entropy(logits, y[index], reduction="none")
        return out

    def scores(self, ctx: Context, slots: Tensor) -> tuple[Any, Tensor, Tensor]:
        """(stored samples, their tasks, their interference scores) for memory slots `slots`.

        With ``compare_to_old_logits`` the slots' old losses are updated too.
        """
        stored = self.memory.get(slots)
        tasks = self.memory.task[slots.to(self.memory.task.device)].cpu()
        pre = per_sample_losses(ctx, stored, tasks)
        post = per_sample_losses(ctx, stored, tasks, params=self.virtual_parameters(ctx))
        if not self.compare_to_old_logits:
            return stored, tasks, post - pre
        where = slots.to(self.memory.old_loss.device)
        old = self.memory.old_loss[where].to(pre.device)
        unset = old.isnan()
        if unset.any():
            old[unset] = self._zero_logit_loss(ctx, stored[1], tasks)[unset]
        best = torch.minimum(pre, old)
        self.memory.old_loss[where] = best.to(self.memory.old_loss.device)
        return stored, tasks, post - best

    def after_backward(self, ctx: Context, batch: Any) -> None:
        """Score candidates under the virtual step; add the top ones' replay gradient."""
        self.last_candidates = self.last_scores = self.last_replayed = None
        slots = self._candidates(ctx)
        if slots is None:
            return
        stored, tasks, scores = self.scores(ctx, slots)
        order = torch.sort(scores.cpu(), descending=True, stable=True).indices
        top = order[:self.replay_batch]
        replay_loss(ctx, batch_rows(stored, top), tasks[top]).backward()
        self.last_candidates, self.last_scores, self.last_replayed = slots, scores, slots[top]

    def after_step(self, ctx: Context, batch: Any) -> None:
        """Offer the incoming batch to the reservoir."""
        self.store(ctx, None if ctx.incoming is not None
                   else self._incoming if self._incoming is not None else batch)
        self._incoming = None


@METHODS.register("mir", "Maximally Interfered Retrieval: replay what a virtual step hurts most")
def mir(memory: int | None = None, memory_per_task: int | None = None,
        candidates: int = 50, replay_batch: int = 10,
        compare_to_old_logits: bool = False) -> Method:
    """Maximally Interfered Retrieval (Aljundi et al. 2019), ER-MIR; the virtual step uses lr.

    Args:
        memory: Total samples stored in the reservoir (default 500 when neither is given).
        memory_per_task: Samples stored per task (total = this x number of tasks).
        candidates: Stored samples of earlier tasks scored per step.
        replay_batch: Most interfered candidates replayed per step.
        compare_to_old_logits: Score against the lowest loss each stored sample has had.
    """
    if memory is None and memory_per_task is None:
        memory = 500
    return MIR(memory, memory_per_task, candidates, replay_batch, compare_to_old_logits)
