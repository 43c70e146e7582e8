"""Continual-learning methods: one small protocol the training loop calls without knowing names.

A method is a little state plus a few hooks, each a no-op unless overridden (in the spirit of
optax: small pieces that compose). The loop (`myelin.train`) runs, for every task::

    method.setup(ctx)                        # once, before the first task
    method.begin_task(ctx)                   # may replace ctx.train_data / ctx.loss (joint)
    for each step:
        batch = method.prepare_batch(ctx, batch)      # may change the batch (replay)
        loss = method.train_step(ctx, batch)          # a method may own the whole step (MER)
        if loss is None:                              # ... otherwise the standard step:
            optimizer.zero_grad()
            loss = ctx.loss(model, batch)
            total = method.loss(ctx, batch, loss)     # may add a penalty
            total.backward()
            method.after_backward(ctx, batch)         # may transform gradients (A-GEM, GEM)
            ctx.optimizer.step()                      # setup may have wrapped it (WVA, EWC)
        method.after_step(ctx, batch)                 # online importance, memory update
    method.end_task(ctx)                     # after the task's accuracy row: consolidate

and ``method.before_eval(ctx, j)`` before the model is evaluated on task j's test set (a
task-aware model, such as CTN's, selects task j's context there).

`ctx` is a `Context`: the model, the optimizer the loop steps, the current task's loss and
training data, the task index, and helpers (`ctx.closing_set()`, `ctx.estimate(estimator)`).
Methods compose: ``er(...) + ewc(...)`` (or ``Compose(a, b)``) calls each hook of `a`, then of
`b`; the batch and the loss are threaded through in that order; at most one part may own the
step.

A method that keeps state across steps or tasks (importances, anchors, memories, counters)
returns it from ``state_dict()`` and takes it back in ``load_state_dict(state)``, so a run saved
with ``fit(..., checkpoint_dir=...)`` resumes exactly; the default keeps nothing.

Under torchrun (`myelin.distributed`) each rank trains on its slice of every batch, so a method
runs only if it declares ``supports_distributed = True``: its state must be the same on every
rank (built from the DDP-averaged step, the reduced importances, or data every rank holds).
Plain fine-tuning, `Consolidate` (EWC, SI, MAS, L2, WVA) and `Joint` do; the replay methods do
not (their memories would be filled from different slices), nor does a subclass that does not
set it.

Registered factories (`METHODS`, ``myelin run --method NAME``) take keyword options with type
annotations, defaults and an ``Args:`` docstring section: the command line builds its flags
from them. `make_method` builds a method from a registered name, from ``"a+b"`` (composition)
or from ``"package.module:factory"``.
"""

from __future__ import annotations

import copy
import difflib
import importlib
import inspect
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.utils.data import ConcatDataset, Subset

from ._registry import Registry
from .consolidation import EWC, L2, WVA, Consolidator
from .consolidation.base import check_lam
from .consolidation.ewc import MODES
from .consolidation.wva import CURVES, PLACEMENTS
from .data.datasets import ArrayDataset
from .distributed import is_distributed, shard_bounds, world_size
from .importance import ESTIMATORS, Importance, SynapticIntelligence
from .losses import CrossEntropy, LogitLoss, LossFn

if TYPE_CHECKING:
    from .scenarios import Scenario, Task

__all__ = ["HOOKS", "METHODS", "Compose", "Context", "Estimated", "ImportanceSource", "Method",
           "PathIntegral", "check_supports_distributed", "make_method"]

HOOKS = ("setup", "begin_task", "prepare_batch", "train_step", "loss", "after_backward",
         "after_step", "end_task", "before_eval")

Estimator = Callable[..., Importance]


@dataclass
class Context:
    """What a method sees of a run.

    The loop fills it; methods read it and may replace `optimizer` (in `setup`), `train_data`
    and `loss` (in `begin_task`).

    Attributes:
        model: The network being trained.
        optimizer: The optimizer the loop steps (after `setup`: possibly a wrapper).
        scenario: The task sequence.
        loss: The current task's training loss, ``loss(model, batch) -> scalar``.
        train_data: The dataset the loop draws this task's batches from.
        task_index: Index k of the current task (0-based).
        step: Optimizer steps taken so far over all tasks.
        seed: The run's seed (batch order, sampled labels).
        device: Where the model lives.
        closing_samples: Size of the closing set importances are estimated on.
        closing: How the closing set is chosen: "tail", "holdout" or "random".
        importance_options: Keyword options for importance estimators.
        generator: The loop's random generator (batch order); methods may draw from it.
        incoming: The batch the loop drew for the current step, before any method's
            `prepare_batch` (what a replay method stores, whatever another part replays).
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scenario: Scenario
    loss: LossFn
    train_data: Any = None
    task_index: int = 0
    step: int = 0
    seed: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    closing_samples: int = 1000
    closing: str = "tail"
    importance_options: Mapping[str, Any] = field(default_factory=dict)
    generator: torch.Generator | None = None
    incoming: Any = None

    @property
    def task(self) -> Task:
        """The current task."""
        return self.scenario.tasks[self.task_index]

    @property
    def is_last_task(self) -> bool:
        """True while training the scenario's last task (nothing to protect after it)."""
        return self.task_index == len(self.scenario.tasks) - 1

    @property
    def lr(self) -> float:
        """The learning rate of the optimizer's first parameter group."""
        return float(self.optimizer.param_groups[0]["lr"])

    def held_out(self) -> int:
        """Training samples of the current task kept out of training (the "holdout" set)."""
        return self.closing_samples if self.closing == "holdout" else 0

    def closing_set(self) -> Any:
        """The current task's closing set: the samples importances are estimated on."""
        ds = self.task.train
        n = min(self.closing_samples, len(ds))
        if self.closing in ("tail", "holdout"):   # the last n samples (2021), or held out (2020)
            index = torch.arange(len(ds) - n, len(ds))
        else:
            index = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))[:n]
        return ds.subset(index) if isinstance(ds, ArrayDataset) else Subset(ds, index.tolist())

    def estimate(self, estimator: Estimator, **options: Any) -> Importance:
        """Run `estimator` on the closing set under the current task's loss.

        The estimator is called as ``estimator(model, (X, Y), loss=..., seed=..., progress=False,
        **importance_options, **options)``. Under a process group, an estimator with a
        ``distributed`` option (fisher, mas, signal: they sum over the ranks) gets this rank's
        contiguous slice of the closing set (`myelin.distributed.shard_bounds`); any other
        the whole set on every rank.
        """
        kwargs = {"progress": False, "seed": self.seed, **self.importance_options, **options}
        data = self.closing_set()
        if is_distributed() and kwargs.get("distributed", True) \
                and "distributed" in _parameters(estimator):
            start, stop = shard_bounds(len(data))
            if start == stop:
                raise ValueError(f"The closing set ({len(data)} samples) is smaller than the "
                                 f"{world_size()} ranks it is split over; raise "
                                 "closing_samples (--closing-samples) or use fewer ranks.")
            index = torch.arange(start, stop)
            data = data.subset(index) if isinstance(data, ArrayDataset) \
                else Subset(data, index.tolist())
        data = data.tensors() if isinstance(data, ArrayDataset) else data
        return estimator(self.model, data, loss=self.loss, **kwargs)


def _parameters(function: Callable[..., Any]) -> Mapping[str, inspect.Parameter]:
    """The parameters of `function` (none if its signature cannot be read)."""
    try:
        return inspect.signature(function).parameters
    except (TypeError, ValueError):
        return {}


class Method:
    """Base class of continual-learning methods: every hook does nothing.

    Override the hooks you need (see the module docstring for when each runs). A subclass
    defining a method whose name is close to a hook's but not equal (``end_tsk``) is refused,
    so a misspelt hook cannot silently never run.

    Attributes:
        name: Short name, for the result JSON (default: the class name; the base class itself,
            which adds nothing to the loop's step, is plain fine-tuning).
        config: The method's options, for the result JSON.
        importance: Name of the importance it uses, or None.
        supports_distributed: True if the method keeps the same state on every rank under
            torchrun (see the module docstring); a subclass is False unless it sets it.
    """

    name: str = "finetune"          # the base class trains plainly; subclasses: their class name
    config: Mapping[str, Any] = MappingProxyType({})
    importance: str | None = None
    supports_distributed: bool = True   # the base class; subclasses must say so themselves

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in vars(cls):
            cls.name = cls.__name__
        if "supports_distributed" not in vars(cls):
            cls.supports_distributed = False
        for attr in vars(cls):
            if attr.startswith("_") or attr in HOOKS:
                continue
            close = difflib.get_close_matches(attr, HOOKS, n=1, cutoff=0.85)
            if close:
                raise TypeError(f"{cls.__name__}.{attr} looks like a misspelt hook "
                                f"{close[0]!r}; hooks: {', '.join(HOOKS)}.")

    def setup(self, ctx: Context) -> None:
        """Once, before the first task: build state, wrap ``ctx.optimizer`` if needed."""

    def begin_task(self, ctx: Context) -> None:
        """Before task ``ctx.task_index`` is trained."""

    def prepare_batch(self, ctx: Context, batch: Any) -> Any:
        """The batch the step trains on (default: the incoming batch unchanged)."""
        return batch

    def train_step(self, ctx: Context, batch: Any) -> Tensor | None:
        """Own the whole step and return its (detached) loss; None: the loop's standard step."""
        return None

    def loss(self, ctx: Context, batch: Any, loss: Tensor) -> Tensor:
        """The loss to differentiate (default: the task loss unchanged)."""
        return loss

    def after_backward(self, ctx: Context, batch: Any) -> None:
        """After ``backward()``, before the optimizer step (e.g. project the gradients)."""

    def after_step(self, ctx: Context, batch: Any) -> None:
        """After the optimizer step."""

    def end_task(self, ctx: Context) -> None:
        """After the task's accuracy row was measured (e.g. consolidate)."""

    def before_eval(self, ctx: Context, task_index: int) -> None:
        """Before the model is evaluated on task `task_index`'s test set."""

    # checkpoints (not loop hooks) ---------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The state the method changes during a run, for a checkpoint (default: none).

        Override it in a method that keeps state across steps or tasks (importances, anchors,
        memories, counters, random generators): what is not returned here is lost when a run
        resumes. Use tensors, numbers, strings, None, lists and dicts only (checkpoints load
        with ``torch.load(..., weights_only=True)``). Derived state that `setup` rebuilds
        identically need not be saved.
        """
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore `state_dict`; called after `setup` (and, mid-task, after `begin_task`)."""

    def __add__(self, other: Method) -> Compose:
        return Compose(self, other)

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.config.items())
        return f"{self.name}({options})"


class Compose(Method):
    """Several methods as one: each hook runs the parts' hooks in order.

    ``prepare_batch`` and ``loss`` are threaded through the parts; ``train_step`` is the first
    part's that returns a loss (at most one part should own the step).
    """

    def __init__(self, *parts: Method):
        flat: list[Method] = []
        for p in parts:
            if not isinstance(p, Method):
                raise TypeError(f"Compose takes myelin.methods.Method objects; got {p!r}.")
            flat.extend(p.parts if isinstance(p, Compose) else [p])
        if not flat:
            raise ValueError("Compose needs at least one method.")
        self.parts = flat
        self.name = "+".join(p.name for p in flat)
        self.importance = next((p.importance for p in flat if p.importance), None)

    @property
    def supports_distributed(self) -> bool:     # type: ignore[override]
        """True if every part supports torchrun."""
        return all(p.supports_distributed for p in self.parts)

    @property
    def config(self) -> dict[str, Any]:         # type: ignore[override]
        """Each part's options (read when asked: a part may record more in `setup`)."""
        return {p.name: dict(p.config) for p in self.parts}

    def setup(self, ctx: Context) -> None:
        """Each part's setup, in order (wrappers nest: the last part's is outermost)."""
        for p in self.parts:
            p.setup(ctx)

    def begin_task(self, ctx: Context) -> None:
        """Each part's begin_task."""
        for p in self.parts:
            p.begin_task(ctx)

    def prepare_batch(self, ctx: Context, batch: Any) -> Any:
        """The batch threaded through every part."""
        for p in self.parts:
            batch = p.prepare_batch(ctx, batch)
        return batch

    def train_step(self, ctx: Context, batch: Any) -> Tensor | None:
        """The first part that owns the step."""
        for p in self.parts:
            loss = p.train_step(ctx, batch)
            if loss is not None:
                return loss
        return None

    def loss(self, ctx: Context, batch: Any, loss: Tensor) -> Tensor:
        """The loss threaded through every part."""
        for p in self.parts:
            loss = p.loss(ctx, batch, loss)
        return loss

    def after_backward(self, ctx: Context, batch: Any) -> None:
        """Each part's after_backward."""
        for p in self.parts:
            p.after_backward(ctx, batch)

    def after_step(self, ctx: Context, batch: Any) -> None:
        """Each part's after_step."""
        for p in self.parts:
            p.after_step(ctx, batch)

    def end_task(self, ctx: Context) -> None:
        """Each part's end_task."""
        for p in self.parts:
            p.end_task(ctx)

    def before_eval(self, ctx: Context, task_index: int) -> None:
        """Each part's before_eval."""
        for p in self.parts:
            p.before_eval(ctx, task_index)

    def state_dict(self) -> dict[str, Any]:
        """Each part's state, in order."""
        return {"parts": [p.state_dict() for p in self.parts]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Give each part its state back."""
        parts = state.get("parts")
        if not isinstance(parts, list) or len(parts) != len(self.parts):
            raise ValueError(f"The saved state of {self.name!r} does not hold one state per "
                             f"part ({len(self.parts)}).")
        for p, part_state in zip(self.parts, parts, strict=True):
            p.load_state_dict(part_state)


# importance sources --------------------------------------------------------------------------
class ImportanceSource:
    """Where a consolidating method gets a finished task's importance."""

    name = "importance"

    def setup(self, ctx: Context) -> None:
        """Once, before the first task, after every method wrapped the optimizer."""

    def importance(self, ctx: Context) -> Importance:
        """The importance of the task that just ended."""
        raise TypeError(f"{type(self).__name__} must implement importance(ctx).")

    def state_dict(self) -> dict[str, Any] | None:
        """State accumulated during a task, for a checkpoint (None: none)."""
        return None

    def load_state_dict(self, state: Mapping[str, Any] | None) -> None:
        """Restore `state_dict` (after `setup`)."""


class Estimated(ImportanceSource):
    """An estimator run on the task's closing set (`Context.estimate`).

    Args:
        estimator: A registered name ("fisher", "fisher-sampled", "mas", "signal", ...) or a
            callable ``(model, data, *, loss, seed, progress, **options) -> Importance``.
    """

    def __init__(self, estimator: str | Estimator):
        if isinstance(estimator, str):
            self.name, self.estimator = estimator, ESTIMATORS.get(estimator)
        elif callable(estimator):
            self.name = getattr(estimator, "__name__", type(estimator).__name__)
            self.estimator = estimator
        else:
            raise TypeError(f"importance must be a name or a callable; got {estimator!r}.")

    def setup(self, ctx: Context) -> None:
        """Refuse, before any training, a loss an estimator cannot use (no per-sample logits)."""
        if not isinstance(ctx.loss, LogitLoss):
            raise TypeError(f"Importance {self.name!r} needs per-sample logits, but the loss "
                            f"{ctx.loss!r} is a plain callable. Pass a loss with a "
                            "logits(output) method (myelin.losses.CrossEntropy, ModelLoss), or "
                            "a method that estimates no importance.")

    def importance(self, ctx: Context) -> Importance:
        """The estimator's importance on the closing set."""
        return ctx.estimate(self.estimator)


class PathIntegral(ImportanceSource):
    """Synaptic Intelligence's online path integral, tracked after every optimizer step."""

    name = "si"

    def setup(self, ctx: Context) -> None:
        """Track the path of every step of ``ctx.optimizer`` (attached to the outermost one)."""
        self.tracker = SynapticIntelligence(ctx.model)
        self.tracker.attach(ctx.optimizer)

    def importance(self, ctx: Context) -> Importance:
        """ω / ((Δθ)² + ξ) of the task, then a new window for the next one."""
        importance = self.tracker.importance()
        self.tracker.reset()
        return importance

    def state_dict(self) -> dict[str, Any]:
        """The task's running path integral ω, θ at its start and at the latest step."""
        t = self.tracker
        return {"omega": {n: v.clone() for n, v in t.omega_path_.items()},
                "start": {n: v.clone() for n, v in t._start.items()},
                "prev": {n: v.clone() for n, v in t._prev.items()}, "steps": t.steps_}

    @torch.no_grad()
    def load_state_dict(self, state: Mapping[str, Any] | None) -> None:
        """Restore `state_dict` into the tracker (same parameters and shapes)."""
        if state is None:
            return
        t = self.tracker
        for key, mine in (("omega", t.omega_path_), ("start", t._start), ("prev", t._prev)):
            saved = state[key]
            if set(saved) != set(mine) or any(saved[n].shape != v.shape
                                              for n, v in mine.items()):
                raise ValueError(f"The saved SI path integral ({key!r}) was made for other "
                                 "parameters than the model's.")
            for n, v in mine.items():
                v.copy_(saved[n])
        t.steps_ = int(state["steps"])


ONLINE_SOURCES: dict[str, Callable[[], ImportanceSource]] = {"si": PathIntegral}


def importance_source(spec: str | Estimator | ImportanceSource) -> ImportanceSource:
    """An `ImportanceSource` from a name ("si" or an estimator's), a callable or a source."""
    if isinstance(spec, ImportanceSource):
        return spec
    if isinstance(spec, str) and spec in ONLINE_SOURCES:
        return ONLINE_SOURCES[spec]()
    return Estimated(spec)


def _importance_name(spec: str | Estimator | ImportanceSource) -> str:
    return spec if isinstance(spec, str) else importance_source(spec).name


# the built-in methods ----------------------------------------------------------------------
class Consolidate(Method):
    """Protect what was learned with a consolidator (EWC, L2, WVA) fed by an importance source.

    `setup` builds the consolidator for the model and lets it wrap the optimizer (the penalty
    or the attenuation is then applied by ``optimizer.step()``); `end_task` consolidates the
    finished task's importance (not after the last task: nothing follows it).

    Args:
        name: Method name.
        make: ``(model, lr) -> consolidator`` with a ``wrap(optimizer)`` method.
        importance: Where the importance comes from (None: the consolidator needs none).
        config: The options, for the result JSON.
    """

    supports_distributed = True    # anchors and Ω (or A) are the same on every rank

    def __init__(self, name: str, make: Callable[[nn.Module, float], Any],
                 importance: str | Estimator | ImportanceSource | None,
                 config: Mapping[str, Any]):
        self.name, self.make, self.config = name, make, dict(config)
        self.source = None if importance is None else importance_source(importance)
        self.importance = None if importance is None else _importance_name(importance)
        self.consolidator: Consolidator | None = None

    def setup(self, ctx: Context) -> None:
        """Build the consolidator and wrap the optimizer with it."""
        self.consolidator = self.make(ctx.model, ctx.lr)
        ctx.optimizer = self.consolidator.wrap(ctx.optimizer)
        self._source_ready = False
        self._source_state: Mapping[str, Any] | None = None

    def begin_task(self, ctx: Context) -> None:
        """Set the importance source up before the first task.

        By then every part of a composition has wrapped the optimizer, so an online source
        (SI) attaches to the outermost one and sees the step actually taken.
        """
        if self.source is not None and not self._source_ready:
            self.source.setup(ctx)
            self._source_ready = True
            if self._source_state is not None:      # saved before the source was set up
                self.source.load_state_dict(self._source_state)
                self._source_state = None

    def end_task(self, ctx: Context) -> None:
        """Consolidate the finished task (skipped after the last task)."""
        if ctx.is_last_task:
            return
        importance = None if self.source is None else self.source.importance(ctx)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)      # SI's negatives are clipped
            self.consolidator.consolidate(importance)

    def state_dict(self) -> dict[str, Any]:
        """The consolidator's state (Ω, anchors, ...) and the importance source's (SI's path)."""
        source = self.source.state_dict() if self.source is not None and self._source_ready \
            else self._source_state
        return {"consolidator": self.consolidator.consolidation_state(), "source": source}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore `state_dict` after `setup` (the source's once it is set up)."""
        self.consolidator.load_consolidation_state(state["consolidator"], "checkpoint")
        source = state.get("source")
        if self.source is not None and self._source_ready:
            self.source.load_state_dict(source)
        else:
            self._source_state = source


METHODS: Registry[Callable[..., Method]] = Registry("method")


def _check_importance(importance: str | Estimator) -> str | Estimator:
    if isinstance(importance, str) and importance not in ONLINE_SOURCES:
        ESTIMATORS.get(importance)            # raises with suggestions
    elif not isinstance(importance, str) and not callable(importance):
        raise TypeError(f"importance must be a name or a callable; got {importance!r}.")
    return importance


def _check_choice(value: str, choices: tuple[str, ...], what: str) -> None:
    if value not in choices:
        raise ValueError(f"The {what!r} option must be one of {choices}. Got {value!r}.")


def _importance_config(importance: str | Estimator) -> str:
    return importance if isinstance(importance, str) else _importance_name(importance)


@METHODS.register("finetune", "plain fine-tuning, no protection (the lower bound)")
def finetune() -> Method:
    """Plain fine-tuning: the loop's standard step, nothing else."""
    return Method()


@METHODS.register("ewc", "EWC: quadratic pull to the anchor, importance-weighted")
def ewc(lam: float = 41.0, importance: str = "fisher", mode: str = "accumulate",
        gamma: float = 1.0, stabilized: bool = False) -> Method:
    """EWC with any importance estimator, applied by the optimizer step.

    Args:
        lam: λ ≥ 0, the consolidation strength.
        importance: fisher, fisher-sampled, fisher-exact, mas, signal, si (or a callable
            estimator).
        mode: EWC mode: accumulate, separate or online.
        gamma: Online EWC's decay of the old importance, 0 < γ ≤ 1.
        stabilized: Kutalev & Lapina's stabilized coefficient (λΩ/2)/(1 + lr·λΩ).
    """
    check_lam(lam, "ewc")
    _check_choice(mode, MODES, "mode")
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) \
            or not math.isfinite(gamma) or not 0 < gamma <= 1:
        raise ValueError(f"The 'gamma' option must be in (0, 1]. Got {gamma!r}.")
    _check_importance(importance)

    def make(model: nn.Module, lr: float) -> EWC:
        return EWC(model, lam, mode=mode, gamma=gamma, stabilized=stabilized,
                   lr=lr if stabilized else None)

    return Consolidate("ewc", make, importance,
                       {"lam": lam, "importance": _importance_config(importance), "mode": mode,
                        "gamma": gamma, "stabilized": stabilized})


def _ewc_named(name: str, importance: str, lam: float, stabilized: bool) -> Method:
    """EWC's accumulated penalty with a fixed importance, under its own name and options."""
    method = ewc(lam=lam, importance=importance, stabilized=stabilized)
    method.name, method.config = name, {"lam": lam, "stabilized": stabilized}
    return method


@METHODS.register("si", "Synaptic Intelligence: EWC-style penalty with path-integral importance")
def si(lam: float = 1.0, stabilized: bool = False) -> Method:
    """SI (Zenke et al. 2017): the accumulated penalty with the online SI importance.

    Args:
        lam: λ ≥ 0, the consolidation strength.
        stabilized: Kutalev & Lapina's stabilized coefficient (λΩ/2)/(1 + lr·λΩ).
    """
    return _ewc_named("si", "si", lam, stabilized)


@METHODS.register("mas", "MAS: EWC-style penalty with MAS importance")
def mas(lam: float = 4.5, stabilized: bool = False) -> Method:
    """MAS (Aljundi et al. 2018): the accumulated penalty with MAS importance.

    Args:
        lam: λ ≥ 0, the consolidation strength.
        stabilized: Kutalev & Lapina's stabilized coefficient (λΩ/2)/(1 + lr·λΩ).
    """
    return _ewc_named("mas", "mas", lam, stabilized)


@METHODS.register("l2", "uniform quadratic pull to the last anchor (baseline)")
def l2(lam: float = 1.0) -> Method:
    """The L2 baseline: EWC with uniform importance, anchored after the latest task.

    Args:
        lam: λ ≥ 0, the consolidation strength.
    """
    check_lam(lam, "l2")
    return Consolidate("l2", lambda model, lr: L2(model, lam), None, {"lam": lam})


@METHODS.register("wva", "weight velocity attenuation: updates scaled by 1/(1 + lam*omega)")
def wva(lam: float = 1000.0, importance: str = "signal", curve: str = "hyperbolic",
        on: str = "step") -> Method:
    """WVA around the loop's optimizer: each update scaled by 1/(1 + λΩ) or exp(−λΩ).

    Args:
        lam: λ ≥ 0, the consolidation strength.
        importance: signal, fisher, fisher-sampled, fisher-exact, mas, si (or a callable
            estimator).
        curve: WVA curve: hyperbolic or exponential.
        on: WVA placement: step (after the optimizer's step) or grad (before it).
    """
    check_lam(lam, "wva")
    _check_choice(curve, CURVES, "curve")
    _check_choice(on, PLACEMENTS, "on")
    _check_importance(importance)
    return Consolidate("wva", lambda model, lr: WVA(model, lam, curve=curve, on=on), importance,
                       {"lam": lam, "importance": _importance_config(importance),
                        "curve": curve, "on": on})


class Joint(Method):
    """Joint training: task k trains on the union of tasks 0..k (the offline upper bound).

    With `restart` the model and optimizer go back to their initial state before each task,
    so row k of the accuracy matrix is a model trained from scratch on all data seen so far;
    without it, training continues from the previous task's weights ("cumulative"). The loss
    allows the classes of every task seen (task-IL: trained over their union, evaluated per
    task). Stores every training set: this is a reference point, not a continual method. With
    ``closing="holdout"`` only the current task's tail is held out of the union.
    """

    name = "joint"
    supports_distributed = True    # every rank holds every task's data

    def __init__(self, restart: bool = True):
        self.restart = bool(restart)
        self.config = {"restart": self.restart}

    def setup(self, ctx: Context) -> None:
        """Keep the initial weights and optimizer state."""
        self._initial = (copy.deepcopy(ctx.model.state_dict()),
                         copy.deepcopy(ctx.optimizer.state_dict()))

    def state_dict(self) -> dict[str, Any]:
        """The initial weights and optimizer state every task restarts from."""
        return {"model": dict(self._initial[0]), "optimizer": self._initial[1]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore `state_dict` after `setup`."""
        self._initial = (copy.deepcopy(dict(state["model"])),
                         copy.deepcopy(dict(state["optimizer"])))

    def begin_task(self, ctx: Context) -> None:
        """Train on everything seen so far (from the initial state if `restart`)."""
        if self.restart:
            ctx.model.load_state_dict(self._initial[0])
            ctx.optimizer.load_state_dict(copy.deepcopy(self._initial[1]))
        seen = ctx.scenario.tasks[:ctx.task_index + 1]
        parts = [t.train for t in seen]
        ctx.train_data = (ArrayDataset.concat(parts, name="joint")
                          if all(isinstance(p, ArrayDataset) for p in parts)
                          else ConcatDataset(parts))
        masks = [ctx.scenario.train_mask(t) for t in seen]
        classes = None if any(m is None for m in masks) else sorted({c for m in masks for c in m})
        if isinstance(ctx.loss, CrossEntropy):
            ctx.loss = ctx.loss.restrict(classes)


@METHODS.register("joint", "joint training on all data seen so far (the offline upper bound)")
def joint(restart: bool = True) -> Method:
    """Joint training on the union of the tasks seen so far.

    Args:
        restart: Retrain from the initial weights for each task (False: continue training).
    """
    return Joint(restart)


def check_supports_distributed(method: Method) -> None:
    """Raise unless `method` may train under a process group (``supports_distributed``).

    Raises:
        ValueError: Naming the parts that do not support it, and why.
    """
    if method.supports_distributed:
        return
    from .replay import Replay

    parts = method.parts if isinstance(method, Compose) else [method]
    bad = ", ".join(repr(p.name) for p in parts if not p.supports_distributed)
    why = (f"{bad} keeps a replay memory filled from each rank's own slice of the batches, "
           "which would differ between the ranks" if any(isinstance(p, Replay) for p in parts)
           else f"{bad} does not declare supports_distributed = True (a method must keep the "
           "same state on every rank; see myelin.distributed)")
    raise ValueError(f"Method {method.name!r} is not supported under torch.distributed "
                     f"(torchrun) yet: {why}. Run it in one process, or use finetune, ewc, si, "
                     "mas, l2, wva or joint.")


# building methods by name -------------------------------------------------------------------
def method_factory(spec: str) -> Callable[..., Method]:
    """The factory of a registered name or of ``"package.module:factory"``."""
    if ":" not in spec:
        return METHODS.get(spec)
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"Method {spec!r}: cannot import module {module_name!r} ({exc}).") \
            from exc
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        raise ValueError(f"Method {spec!r}: module {module_name!r} has no callable {attr!r}.")
    return factory


def method_parts(spec: str) -> list[tuple[str, Callable[..., Method]]]:
    """The factories of a method spec: a name, ``"a+b"`` (composed) or ``"package.module:f"``."""
    return [(s, method_factory(s)) for s in (p.strip() for p in spec.split("+"))]


def factory_options(factory: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    """A method factory's keyword options (name -> parameter)."""
    return {n: p for n, p in inspect.signature(factory).parameters.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def make_method(spec: str, **options: Any) -> Method:
    """Build a method: ``make_method("ewc", lam=41, importance="fisher")``.

    `spec` is a registered name, ``"package.module:factory"``, or several joined by ``+``
    (``"er+ewc"``: composed in that order; each option goes to every part that takes it).

    Raises:
        ValueError: Unknown method or option, or a bad option value.
    """
    factories = method_parts(spec)
    parts = [s for s, _ in factories]
    accepted = {s: factory_options(f) for s, f in factories}
    unknown = sorted(set(options) - {o for opts in accepted.values() for o in opts})
    if unknown:
        known = {s: sorted(o) for s, o in accepted.items()}
        raise ValueError(f"Method {spec!r} takes no option(s) {unknown}. Its options: "
                         f"{known if len(parts) > 1 else (known[spec] or 'none')}.")
    built = []
    for s, f in factories:
        method = f(**{k: v for k, v in options.items() if k in accepted[s]})
        if not isinstance(method, Method):
            raise TypeError(f"Method factory {s!r} returned {type(method).__name__}, not a "
                            "myelin.methods.Method.")
        built.append(method)
    return built[0] if len(built) == 1 else Compose(*built)


from . import replay as _replay  # noqa: E402,F401  (registers er, agem, gem, mer, mir, ctn)
