"""CTN: Contextual Transformation Networks (Pham, Liu & Hoi, ICLR 2021), task-aware.

A base network is shared by all tasks; a small controller — a task embedding and one FiLM
layer per hidden layer — turns the base's features into task-specific ones. `CTNNet` is the
paper's MLP (784-256-256-10 on permuted MNIST, embedding size 16): after every hidden Linear,

    h ← relu(h) + relu(γ_t ⊙ h + β_t),   (γ_t, β_t) = FiLM(emb(t)), each scaled to unit L2 norm

and the `ctn` method trains it with the bilevel step of the official code
(``model/ctn.py`` of phquang/Contextual-Transformation-Network, ``Net.observe``), per incoming
batch of task t:

1. the batch's first sample goes to task t's *semantic* memory (a ring of
   ``semantic_fraction`` of the per-task memory); the base trains on the other samples plus
   the previous batch's held-out sample (held out one step, then trained on); that training
   batch is appended to task t's *episodic* memory (a ring of the rest of the budget);
2. ``outer_steps`` times (the original's ``n_meta``):

   a. ``inner_steps`` SGD steps of the base parameters θ (the loop's optimizer, lr) on
      CE(incoming) + [t > 0] (CE(replay) + kd_weight · KL(soft targets ‖ softmax(z/T))), a
      replay batch drawn afresh per step from the episodic memory of tasks < t, every stored
      sample under its own task's context; the soft targets softmax(z/T) of a task's episodic
      memory are recorded when the task ends;
   b. one SGD step (lr ``context_lr``, the original's β) of the controller φ on the
      cross-entropy of the whole semantic memory of tasks ≤ t, each sample under its task's
      context, at the updated θ (first order: no gradient through the inner steps), with the
      gradient divided by ``outer_steps`` and clamped to ±``context_clip``.

The model is evaluated on task j with task j's context (`CTN.before_eval`).

Interpretations of the official code: the incoming-batch loss is recomputed at every inner
step (the original reuses one graph per outer step whose saved activations predate its
in-place ``.data`` updates); the rings keep exactly the last samples of each task (the
original fills an empty ring with copies of the first sample and drops part of a batch at its
wrap-around); the KL term averages over every (sample, class) entry of the tasks' classes
(``nn.KLDivLoss()``'s old ``"mean"``, no T² factor); the replay batch is capped at one task's
episodic memory, as ``min(n_memories, replay_batch_size)`` does in the original.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..losses import MASKED_LOGIT, CrossEntropy
from ..methods import METHODS, Context, Method
from ..models import MODELS
from .base import Replay, budget, task_loss
from .memory import RingMemory, positive_int

__all__ = ["CONTEXT_INTERFACE", "CTN", "CTNNet", "check_context_model", "ctn", "ctn_mlp"]

CONTEXT_INTERFACE = ("n_tasks", "task", "base_parameters", "context_parameters")


def _positive_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0. Got {value!r}.")
    return float(value)


# the model ------------------------------------------------------------------------------------
class CTNNet(nn.Module):
    """CTN's MLP: a base MLP whose hidden features a task-conditioned controller transforms.

    After each hidden Linear layer, with e = emb(t) and (γ, β) = FiLM_l(e) scaled to unit L2
    norm: h ← relu(h) + relu(γ ⊙ h + β). Base parameters: the Linear layers and the head;
    context (controller) parameters: the task embedding and the FiLM layers. Linear and FiLM
    weights are Xavier-uniform with zero biases; the embedding is N(0, 1) (the original's).

    The task is the attribute `task` (an int, set by the `ctn` method: the training task in
    `begin_task`, task j before evaluating task j), or ``forward(x, task=...)``: an int or a
    (N,) tensor of per-sample task indices.

    Args:
        input_shape: Shape of one input sample (flattened), e.g. (1, 28, 28).
        n_classes: Number of output logits.
        hidden: Hidden layer widths (the paper: 256, 256).
        n_tasks: Number of task contexts (rows of the embedding); at least the scenario's tasks.
        emb_dim: Size of the task embedding (the paper: 16 for MNIST, 64 for CIFAR).

    Shapes: x (N, *input_shape) -> logits (N, n_classes).
    """

    def __init__(self, input_shape: Sequence[int] | int, n_classes: int,
                 hidden: Sequence[int] = (256, 256), n_tasks: int = 20, emb_dim: int = 16):
        super().__init__()
        shape = (input_shape,) if isinstance(input_shape, int) else tuple(input_shape)
        if not shape or any(isinstance(s, bool) or not isinstance(s, int) or s <= 0
                            for s in shape):
            raise ValueError(f"input_shape must be positive integers. Got {input_shape!r}.")
        positive_int("n_classes", n_classes)
        hidden = list(hidden)
        if not hidden:
            raise ValueError("CTNNet needs at least one hidden layer (the FiLM transforms act "
                             "on hidden features).")
        for w in hidden:
            positive_int("every hidden width", w)
        self.n_tasks = positive_int("n_tasks", n_tasks)
        self.emb_dim = positive_int("emb_dim", emb_dim)
        self.hidden = tuple(hidden)
        self.layers = nn.ModuleList()
        self.films = nn.ModuleList()
        n_in = math.prod(shape)
        for w in hidden:
            self.layers.append(nn.Linear(n_in, w))
            self.films.append(nn.Linear(emb_dim, 2 * w))
            n_in = w
        self.head = nn.Linear(n_in, n_classes)
        self.embedding = nn.Embedding(n_tasks, emb_dim)
        for m in (*self.layers, *self.films, self.head):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
        self._task = 0

    # the context interface ---------------------------------------------------------------------
    @property
    def task(self) -> int:
        """The task whose context `forward` uses when given no `task`."""
        return self._task

    @task.setter
    def task(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) \
                or not 0 <= value < self.n_tasks:
            raise ValueError(f"task must be an integer in 0..{self.n_tasks - 1} (this CTNNet "
                             f"has {self.n_tasks} task contexts). Got {value!r}.")
        self._task = value

    @contextmanager
    def task_context(self, task: int) -> Iterator[CTNNet]:
        """``with model.task_context(j): model(x)`` uses task j's context, then restores."""
        previous = self._task
        self.task = task
        try:
            yield self
        finally:
            self._task = previous

    def base_parameters(self) -> list[nn.Parameter]:
        """The base network's parameters (hidden layers and head)."""
        return [*self.layers.parameters(), *self.head.parameters()]

    def context_parameters(self) -> list[nn.Parameter]:
        """The controller's parameters (task embedding and FiLM layers)."""
        return [*self.embedding.parameters(), *self.films.parameters()]

    # forward -------------------------------------------------------------------------------------
    def _task_ids(self, task: int | Tensor | None, n: int, device: torch.device) -> Tensor:
        if task is None:
            task = self._task
        if isinstance(task, Tensor):
            ids = task.to(device=device, dtype=torch.long).reshape(-1)
            if ids.numel() != n:
                raise ValueError(f"task holds {ids.numel()} indices for {n} samples.")
        elif isinstance(task, int) and not isinstance(task, bool):
            ids = torch.full((n,), task, dtype=torch.long, device=device)
        else:
            raise TypeError(f"task must be an int or a tensor of task indices. Got {task!r}.")
        if n and (int(ids.min()) < 0 or int(ids.max()) >= self.n_tasks):
            raise ValueError(f"task indices must lie in 0..{self.n_tasks - 1}; got "
                             f"{sorted(set(ids.tolist()))}.")
        return ids

    def forward(self, x: Tensor, task: int | Tensor | None = None) -> Tensor:
        """(N, *input_shape) -> logits (N, n_classes), under `task`'s context (default: .task)."""
        h = x.reshape(x.shape[0], -1)
        e = self.embedding(self._task_ids(task, h.shape[0], h.device))
        for layer, film in zip(self.layers, self.films, strict=True):
            h = layer(h)
            gamma, beta = film(e).chunk(2, dim=-1)
            gamma, beta = F.normalize(gamma, dim=-1), F.normalize(beta, dim=-1)
            h = F.relu(h) + F.relu(gamma * h + beta)
        return self.head(h)

    def extra_repr(self) -> str:
        """The context sizes."""
        return f"n_tasks={self.n_tasks}, emb_dim={self.emb_dim}"


def ctn_mlp(input_shape: Sequence[int], n_classes: int, widths: Sequence[int] = (256, 256), *,
            max_tasks: int = 20, emb_dim: int = 16) -> CTNNet:
    """CTN's MLP (`CTNNet`): hidden layers transformed by a task-conditioned controller.

    For the ``ctn`` method. Input (N, *input_shape) -> logits (N, n_classes).

    Args:
        input_shape: Shape of one input sample, e.g. (1, 28, 28).
        n_classes: Number of output logits.
        widths: Hidden layer widths, e.g. 256,256 (the paper's).
        max_tasks: Task contexts (embedding rows) the model has; at least the scenario's tasks.
        emb_dim: Size of the task embedding (the paper: 16).
    """
    return CTNNet(input_shape, n_classes, tuple(widths), n_tasks=max_tasks, emb_dim=emb_dim)


MODELS.add("ctn-mlp", ctn_mlp, "CTN's MLP with task-conditioned FiLM controller (for --method ctn)")


def check_context_model(model: nn.Module) -> tuple[list[Tensor], list[Tensor]]:
    """(base, context) parameters of a model exposing CTN's context interface; TypeError if not.

    The interface (`CTNNet` has it): an int attribute ``n_tasks``, a settable int ``task``,
    ``base_parameters()`` and ``context_parameters()`` (disjoint, non-empty), and
    ``forward(x, task=...)`` taking an int or a (N,) tensor of per-sample task indices.
    """
    missing = [a for a in CONTEXT_INTERFACE if not hasattr(model, a)]
    if missing:
        raise TypeError(f"ctn needs a task-aware model with a context interface (e.g. "
                        f"myelin.replay.ctn.CTNNet(input_shape, n_classes, hidden, n_tasks)); "
                        f"{type(model).__name__} lacks {', '.join(missing)}.")
    base = [p for p in model.base_parameters() if p.requires_grad]
    context = [p for p in model.context_parameters() if p.requires_grad]
    if not base or not context:
        raise TypeError("ctn: the model's base_parameters() and context_parameters() must both "
                        "hold trainable parameters.")
    if {id(p) for p in base} & {id(p) for p in context}:
        raise TypeError("ctn: base_parameters() and context_parameters() share parameters.")
    return base, context


# the method -----------------------------------------------------------------------------------
def _blocked_rows(ctx: Context, tasks: Tensor, n_classes: int,
                  device: torch.device) -> Tensor | None:
    """(N, C) True where a row's task may not use the class (None: every class allowed)."""
    masks = {t: task_loss(ctx, t).blocked(n_classes, device) for t in tasks.unique().tolist()}
    if all(m is None for m in masks.values()):
        return None
    table = torch.zeros(max(masks) + 1, n_classes, dtype=torch.bool, device=device)
    for t, m in masks.items():
        if m is not None:
            table[t] = m
    return table[tasks.to(device)]


class CTN(Replay):
    """Contextual Transformation Networks: bilevel base / controller updates, two memories.

    See the module docstring for the step. The per-task memory (``memory_per_task``, or
    ``memory`` / number of tasks) is split as in the original: ``int(m · semantic_fraction)``
    semantic samples (outer loss), the rest episodic (replay and distillation).

    Args:
        memory: Total samples stored (or give `memory_per_task`).
        memory_per_task: Samples stored per task, semantic and episodic together (default 50
            when neither is given).
        semantic_fraction: Share of the per-task memory kept as semantic memory (0 < f < 1).
        replay_batch: Episodic samples replayed per inner step (capped at one task's episodic
            memory, as in the original).
        inner_steps: Base-network SGD steps per outer step.
        outer_steps: Outer steps (controller updates) per incoming batch (the original n_meta).
        context_lr: Learning rate of the controller's SGD (the original β).
        temperature: Distillation temperature T.
        kd_weight: Weight of the distillation term (the original memory_strength).
        context_clip: Clamp of the controller's gradient entries (None: no clamp).
    """

    name = "ctn"

    def __init__(self, memory: int | None = None, memory_per_task: int | None = None,
                 semantic_fraction: float = 0.2, replay_batch: int = 64, inner_steps: int = 2,
                 outer_steps: int = 2, context_lr: float = 0.1, temperature: float = 5.0,
                 kd_weight: float = 100.0, context_clip: float | None = 1.0):
        if memory is None and memory_per_task is None:
            memory_per_task = 50
        super().__init__(memory, memory_per_task, "ring")
        if isinstance(semantic_fraction, bool) or not isinstance(semantic_fraction, (int, float)) \
                or not 0 < semantic_fraction < 1:
            raise ValueError("semantic_fraction must be a number strictly between 0 and 1. "
                             f"Got {semantic_fraction!r}.")
        self.semantic_fraction = float(semantic_fraction)
        self.replay_batch = positive_int("replay_batch", replay_batch)
        self.inner_steps = positive_int("inner_steps", inner_steps)
        self.outer_steps = positive_int("outer_steps", outer_steps)
        self.context_lr = _positive_float("context_lr", context_lr)
        self.temperature = _positive_float("temperature", temperature)
        if isinstance(kd_weight, bool) or not isinstance(kd_weight, (int, float)) \
                or not math.isfinite(kd_weight) or kd_weight < 0:
            raise ValueError(f"kd_weight must be a finite number >= 0. Got {kd_weight!r}.")
        self.kd_weight = float(kd_weight)
        self.context_clip = None if context_clip is None \
            else _positive_float("context_clip", context_clip)
        del self.config["buffer"]
        self.config.update(semantic_fraction=self.semantic_fraction,
                           replay_batch=self.replay_batch, inner_steps=self.inner_steps,
                           outer_steps=self.outer_steps, context_lr=self.context_lr,
                           temperature=self.temperature, kd_weight=self.kd_weight,
                           context_clip=self.context_clip)
        self.semantic: RingMemory | None = None
        self._soft: Tensor | None = None
        self._pending: tuple[Tensor, Tensor] | None = None

    # setup ----------------------------------------------------------------------------------------
    def setup(self, ctx: Context) -> None:
        """Check the model and loss; allocate the two memories and the controller's optimizer."""
        self._base, self._context = check_context_model(ctx.model)
        if not isinstance(ctx.loss, CrossEntropy):
            raise TypeError("ctn needs the cross-entropy loss (myelin.losses.CrossEntropy, the "
                            f"default) on (x, y) batches; got {ctx.loss!r}.")
        n_tasks = len(ctx.scenario.tasks)
        if ctx.model.n_tasks < n_tasks:
            raise ValueError(f"ctn: the model has {ctx.model.n_tasks} task contexts but the "
                             f"scenario has {n_tasks} tasks; build it with n_tasks >= {n_tasks}.")
        _, per_task = budget(self.memory_size, self.memory_per_task, n_tasks)
        n_semantic = int(per_task * self.semantic_fraction)
        n_episodic = per_task - n_semantic
        if n_semantic < 1 or n_episodic < 1:
            raise ValueError(f"ctn: a per-task memory of {per_task} samples with "
                             f"semantic_fraction={self.semantic_fraction} leaves "
                             f"{n_semantic} semantic and {n_episodic} episodic samples; both "
                             "need at least one (raise the memory or change the fraction).")
        generator = torch.Generator().manual_seed(ctx.seed + 7919)
        self.memory = RingMemory(n_episodic, n_tasks, generator)
        self.semantic = RingMemory(n_semantic, n_tasks, generator)
        self._soft = None
        self._pending = None
        self.replay_used = min(self.replay_batch, n_episodic)
        self.context_optimizer = torch.optim.SGD(self._context, lr=self.context_lr)
        self.config.update(memory_total=(n_episodic + n_semantic) * n_tasks,
                           memory_unit="samples",
                           episodic_per_task=n_episodic, semantic_per_task=n_semantic,
                           replay_batch_used=self.replay_used)
        self._check_sizes(ctx, per_task)

    def begin_task(self, ctx: Context) -> None:
        """Select the task's context for training; no held-out sample carries over."""
        ctx.model.task = ctx.task_index
        self._pending = None

    def before_eval(self, ctx: Context, task_index: int) -> None:
        """Select task `task_index`'s context."""
        ctx.model.task = task_index

    # losses ---------------------------------------------------------------------------------------
    def _masked(self, ctx: Context, out: Tensor, tasks: Tensor) -> tuple[Tensor, Tensor | None]:
        blocked = _blocked_rows(ctx, tasks, out.shape[-1], out.device)
        return (out if blocked is None else out.masked_fill(blocked, MASKED_LOGIT)), blocked

    def _stored_loss(self, ctx: Context, x: Tensor, y: Tensor, tasks: Tensor,
                     soft: Tensor | None = None) -> Tensor:
        """Mean CE of stored samples under their tasks' contexts and masks (+ the KD term)."""
        logits, blocked = self._masked(ctx, ctx.model(x, task=tasks), tasks)
        loss = F.cross_entropy(logits, y)
        if soft is not None:
            log_p = F.log_softmax(logits / self.temperature, dim=-1)
            kl = F.kl_div(log_p, soft, reduction="none")          # soft·(log soft − log p)
            entries = kl.numel() if blocked is None else int((~blocked).sum())
            kl = kl if blocked is None else kl.masked_fill(blocked, 0.0)
            loss = loss + self.kd_weight * kl.sum() / entries
        return loss

    def _replay(self, ctx: Context) -> tuple[Tensor, Tensor, Tensor, Tensor] | None:
        """A replay batch from the episodic memory of tasks < t: (x, y, tasks, soft targets)."""
        slots = self.memory.slots(tasks=range(ctx.task_index))
        if len(slots) == 0:
            return None
        if len(slots) > self.replay_used:
            slots = slots[torch.randperm(len(slots), generator=self.memory.generator)
                          [:self.replay_used]]
        x, y = self.memory.get(slots)
        slots = slots.to(self.memory.task.device)
        return x, y, self.memory.task[slots], self._soft[slots]

    def _inner_loss(self, ctx: Context, x: Tensor, y: Tensor) -> Tensor:
        t = ctx.task_index
        loss = F.cross_entropy(ctx.loss.logits(ctx.model(x, task=t)), y)
        if t > 0:
            drawn = self._replay(ctx)
            if drawn is not None:
                loss = loss + self._stored_loss(ctx, *drawn)
        return loss

    def _outer_loss(self, ctx: Context) -> Tensor:
        slots = self.semantic.slots(tasks=range(ctx.task_index + 1))
        x, y = self.semantic.get(slots)
        return self._stored_loss(ctx, x, y, self.semantic.task[slots.to(self.semantic.task.device)])

    # the step -------------------------------------------------------------------------------------
    def train_step(self, ctx: Context, batch: Any) -> Tensor:
        """Update the memories; `outer_steps` × (`inner_steps` base steps, 1 controller step)."""
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise TypeError(f"ctn trains on (x, y) batches; got {type(batch).__name__}.")
        x, y = batch
        if len(y) < 2:
            raise ValueError("ctn holds the first sample of every batch out for the semantic "
                             "memory, so it needs batches of at least 2 samples; raise "
                             "batch_size.")
        t = ctx.task_index
        ctx.model.task = t                        # an evaluation may have selected another
        held = (x[:1].detach().clone(), y[:1].detach().clone())
        x, y = x[1:], y[1:]
        if self._pending is not None:
            x, y = torch.cat([x, self._pending[0]]), torch.cat([y, self._pending[1]])
        self.semantic.add(held, t)
        self.memory.add((x, y), t)
        self._pending = held

        loss = torch.zeros(())
        for _ in range(self.outer_steps):
            for _ in range(self.inner_steps):
                loss = self._inner_loss(ctx, x, y)
                grads = torch.autograd.grad(loss, self._base)
                ctx.optimizer.zero_grad(set_to_none=True)
                for p, g in zip(self._base, grads, strict=True):
                    p.grad = g
                ctx.optimizer.step()
            outer = self._outer_loss(ctx)
            grads = torch.autograd.grad(outer, self._context, allow_unused=True)
            self.context_optimizer.zero_grad(set_to_none=True)
            for p, g in zip(self._context, grads, strict=True):
                if g is not None:
                    g = g / self.outer_steps
                    p.grad = g if self.context_clip is None \
                        else g.clamp(-self.context_clip, self.context_clip)
            self.context_optimizer.step()
        ctx.optimizer.zero_grad(set_to_none=True)
        self.context_optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    def end_task(self, ctx: Context) -> None:
        """Record softmax(z / T) of the task's episodic memory, under its context (KD targets)."""
        if ctx.is_last_task:
            return
        t = ctx.task_index
        slots = self.memory.task_slots(t)
        if len(slots) == 0:
            return
        x, _ = self.memory.get(slots)
        tasks = torch.full((len(slots),), t, dtype=torch.long)
        with torch.no_grad():
            logits, _ = self._masked(ctx, ctx.model(x, task=t), tasks)
            soft = F.softmax(logits / self.temperature, dim=-1)
        if self._soft is None:
            self._soft = soft.new_zeros(self.memory.capacity, soft.shape[-1])
        self._soft[slots.to(self._soft.device)] = soft

    # checkpoints ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Both memories, the distillation targets, the held-out sample, the controller's SGD."""
        return {"memory": self.memory.state_dict(), "semantic": self.semantic.state_dict(),
                "soft": None if self._soft is None else self._soft.clone(),
                "pending": None if self._pending is None else list(self._pending),
                "context_optimizer": self.context_optimizer.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore `state_dict` after `setup` (tensors go to the training device)."""
        device = self._base[0].device
        self.memory.load_state_dict(state["memory"], device)
        self.semantic.load_state_dict(state["semantic"], device)
        soft, pending = state.get("soft"), state.get("pending")
        self._soft = None if soft is None else soft.to(device)
        self._pending = None if pending is None else (pending[0].to(device),
                                                      pending[1].to(device))
        self.context_optimizer.load_state_dict(state["context_optimizer"])


@METHODS.register("ctn", "CTN: task-aware controller (FiLM) trained bilevel on a semantic memory")
def ctn(memory: int | None = None, memory_per_task: int | None = None,
        semantic_fraction: float = 0.2, replay_batch: int = 64, inner_steps: int = 2,
        outer_steps: int = 2, context_lr: float = 0.1, temperature: float = 5.0,
        kd_weight: float = 100.0, context_clip: float | None = 1.0) -> Method:
    """Contextual Transformation Networks (Pham et al. 2021); needs a CTNNet (--model ctn-mlp).

    The base network's learning rate is lr (the paper's pMNIST run: lr 0.03, batch 10).

    Args:
        memory: Total samples stored (give this or memory_per_task).
        memory_per_task: Samples stored per task, semantic + episodic (default 50).
        semantic_fraction: Share of each task's memory kept as semantic memory (the
            controller's training set); the rest is replayed.
        replay_batch: Episodic samples replayed per inner step (at most one task's episodic
            memory).
        inner_steps: SGD steps of the base network per outer step.
        outer_steps: Outer steps (base steps, then one controller step) per incoming batch.
        context_lr: Learning rate of the controller (task embedding and FiLM layers).
        temperature: Temperature of the distillation on replayed samples.
        kd_weight: Weight of the distillation term.
        context_clip: Clamp on every entry of the controller's gradient.
    """
    if memory is None and memory_per_task is None:
        memory_per_task = 50
    return CTN(memory, memory_per_task, semantic_fraction, replay_batch, inner_steps,
               outer_steps, context_lr, temperature, kd_weight, context_clip)
