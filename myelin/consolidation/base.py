"""What every consolidation method shares: the protocol, validation, and safetensors state."""

from __future__ import annotations

import abc
import math
import os
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from .._state import read_state, write_state
from ..distributed import (
    check_same_names,
    full_tensor,
    is_distributed,
    is_sharded,
    local,
    rank,
    together,
    unwrap,
    world_size,
)
from ..importance.base import Importance, trainable_parameters

__all__ = ["Consolidator", "ParameterSet", "check_lam", "clip_negative"]

_META_KEY = "myelin.consolidation"


def check_lam(lam: float, owner: str, name: str = "lam") -> float:
    """Return `lam` as a float, or raise ValueError unless it is a finite number >= 0."""
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not math.isfinite(lam) \
            or lam < 0:
        raise ValueError(f"The {name!r} parameter of {owner} must be a finite float >= 0. "
                         f"Got {lam!r} instead.")
    return float(lam)


def clip_negative(importance: Importance, owner: str) -> dict[str, Tensor]:
    """Importance values as tensors, negatives (SI can produce a few) set to 0 with a warning."""
    out, negative, total = {}, 0, 0
    for n, v in importance.items():
        v = v.detach()
        neg = int((v < 0).sum())
        if neg:
            negative += neg
            v = v.clamp_min(0)
        total += v.numel()
        out[n] = v
    if negative:
        warnings.warn(f"{owner}: {negative} of {total} importance values were negative "
                      "(typical of SI); they were set to 0.", stacklevel=4)
    return out


class ParameterSet:
    """The named trainable parameters a method protects, and checks that the model kept them."""

    def __init__(self, model_or_params: nn.Module | Iterable[Any], owner: str):
        self.owner = owner
        if isinstance(model_or_params, nn.Module):
            # a DDP model's inner module: parameter names without the "module." prefix
            self.model: nn.Module | None = unwrap(model_or_params)
            self.params: dict[str, nn.Parameter] = trainable_parameters(model_or_params)
        else:
            self.model = None
            items = list(model_or_params)
            if items and isinstance(items[0], tuple):
                self.params = {str(n): p for n, p in items}
            else:
                self.params = {str(i): p for i, p in enumerate(items)}
            if not all(isinstance(p, Tensor) for p in self.params.values()):
                raise TypeError(f"{owner} needs a model or an iterable of parameters "
                                "(or of (name, parameter) pairs).")
        if not self.params:
            raise ValueError(f"{owner}: the model has no trainable parameters.")
        # FSDP2 (fully_shard): DTensor parameters, each rank holding a shard; the state is
        # sharded likewise, and saving gathers it, so every rank must name the same parameters
        self.sharded = any(is_sharded(p) for p in self.params.values())
        if self.sharded and is_distributed():
            check_same_names(self.params, owner)
        self._count = len(self.params)
        self._calls = 0

    def check_unchanged(self, throttle: bool = False) -> None:
        """Raise ValueError if trainable parameters were added or removed since construction.

        With ``throttle`` (per-step callers), the walk over the model runs on the first call and
        then every 64th, so a change is caught within 64 steps at negligible cost.
        """
        if self.model is None:
            return
        self._calls = self._calls + 1 if throttle else 0
        if throttle and self._calls % 64 != 1:
            return
        current = trainable_parameters(self.model)
        if len(current) == self._count and all(
                self._same(current.get(n), p) for n, p in self.params.items()):
            return
        self._calls = 0                                   # keep checking until it is fixed
        added = sorted(set(current) - set(self.params))
        removed = sorted(set(self.params) - set(current))
        replaced = sorted(n for n in set(current) & set(self.params)
                          if not self._same(current[n], self.params[n]))
        peft = any("lora_" in n or "base_model.model." in n for n in added)
        raise ValueError(
            f"{self.owner}: the model's trainable parameters changed after it was created "
            f"(added {_few(added)}, removed {_few(removed)}, replaced {_few(replaced)}). "
            + (f"The model looks wrapped by peft (get_peft_model) after the {self.owner} was "
               f"built: build the {self.owner} on the wrapped model. " if peft else "")
            + f"Create a new {self.owner} for the new model, or load its saved state into one."
        )

    def _same(self, current: Tensor | None, param: Tensor) -> bool:
        """True if `current`, registered in the model now, is the parameter `param`.

        FSDP2 registers a whole (unsharded) tensor in place of its sharded parameter between a
        forward pass and the reshard (after the forward, or for the root module after the
        backward): a tensor of the sharded parameter's global shape, not a DTensor, stands for it.
        """
        if current is param:
            return True
        return (self.sharded and current is not None and is_sharded(param)
                and not is_sharded(current) and current.shape == param.shape)

    def check_importance(self, importance: Importance) -> None:
        """Raise unless `importance` covers exactly these parameters with the same shapes."""
        if not isinstance(importance, Importance):
            raise TypeError(f"{self.owner}.consolidate needs an Importance (from "
                            f"myelin.importance), got {type(importance).__name__}.")
        missing = sorted(set(self.params) - set(importance))
        extra = sorted(set(importance) - set(self.params))
        wrong = [f"{n}: {tuple(importance[n].shape)} vs {tuple(p.shape)}"
                 for n, p in self.params.items()
                 if n in importance and importance[n].shape != p.shape]
        if missing or extra or wrong:
            raise ValueError(f"{self.owner}: importance does not match the model's parameters — "
                             f"missing {missing}, unexpected {extra}, wrong shapes {wrong}.")

    def describe(self) -> dict[str, list[int]]:
        """Name -> shape, stored with saved state to refuse a different model on load."""
        return {n: list(p.shape) for n, p in self.params.items()}

    def check_description(self, saved: Mapping[str, list[int]], path: str) -> None:
        """Raise ValueError naming every parameter whose name or shape differs from `saved`."""
        mine = self.describe()
        missing = sorted(set(saved) - set(mine))
        extra = sorted(set(mine) - set(saved))
        wrong = [f"{n}: saved {tuple(saved[n])} vs model {tuple(mine[n])}"
                 for n in set(saved) & set(mine) if list(saved[n]) != mine[n]]
        if missing or extra or wrong:
            raise ValueError(f"{path!r} was saved for a different model: parameters only in the "
                             f"file {missing}, only in the model {extra}, shape differences "
                             f"{sorted(wrong)}.")


class Consolidator(abc.ABC):
    """The protocol every consolidation method follows, so a training loop needs no special case.

    * `consolidate(importance)` after a task;
    * `penalty()` — the scalar to add to the loss (zero for methods without a loss term);
    * `state_dict()` / `load_state_dict()`, `save(path)` / `load(path)` (safetensors);
    * `state_nbytes()` — the bytes of its state; `memory_bytes()` — all the extra memory it
      holds (the state plus caches derived from it).

    λ is the ``lam`` attribute, checked on every assignment (a finite float >= 0).
    """

    name = "consolidator"
    needs_importance = True      # False: consolidate() takes no importance (e.g. L2)
    params: ParameterSet
    _lam: float
    # what `load` says after a state saved with other settings replaced this one's
    _loaded_settings_note = "assign the attribute afterwards to use another value"

    @property
    def lam(self) -> float:
        """λ ≥ 0, the consolidation strength; assigning a negative or non-finite value raises."""
        return self._lam

    @lam.setter
    def lam(self, value: float) -> None:
        self._lam = check_lam(value, type(self).__name__)

    @abc.abstractmethod
    def consolidate(self, importance: Importance | None = None) -> None:
        """Fold a finished task's importance into the method's state."""

    def _task_importance(self, importance: Importance | None) -> dict[str, Tensor]:
        """Check a finished task's importance against the model; negatives clipped to 0."""
        owner = type(self).__name__
        self.params.check_unchanged()
        if importance is None:
            raise TypeError(f"{owner}.consolidate needs the finished task's Importance.")
        self.params.check_importance(importance)
        return clip_negative(importance, owner)

    def penalty(self) -> Tensor:
        """Scalar loss term; methods without one return 0."""
        p = next(iter(self.params.params.values()))
        return torch.zeros((), dtype=p.dtype, device=p.device)

    @abc.abstractmethod
    def _tensors(self) -> dict[str, Tensor]:
        """Name -> tensor of the method's state (what `save` writes)."""

    @abc.abstractmethod
    def _config(self) -> dict[str, Any]:
        """JSON-serialisable configuration (what `save` writes besides the tensors)."""

    @abc.abstractmethod
    def _restore(self, tensors: dict[str, Tensor], config: dict[str, Any]) -> None:
        """Inverse of `_tensors` and `_config`."""

    def _check_state(self, tensors: Mapping[str, Tensor], config: Mapping[str, Any],
                     source: str) -> None:
        """Raise ValueError unless saved state is usable: λ and n_tasks valid, tensors finite.

        Subclasses add their own settings and which tensors must be present.
        """
        owner = type(self).__name__
        check_lam(config.get("lam"), f"the {owner} state in {source!r}")
        n_tasks = config.get("n_tasks")
        if isinstance(n_tasks, bool) or not isinstance(n_tasks, int) or n_tasks < 0:
            raise ValueError(f"The 'n_tasks' entry of the {owner} state in {source!r} must be an "
                             f"int >= 0. Got {n_tasks!r} instead.")
        bad = sorted(k for k, v in tensors.items()
                     if not isinstance(v, Tensor) or not v.is_floating_point()
                     or not bool(torch.isfinite(local(v)).all()))
        if bad:
            raise ValueError(f"The {owner} state in {source!r} has tensors that are not finite "
                             f"floating-point tensors (NaN, inf or integer): {bad}.")

    def _check_tensor(self, tensors: Mapping[str, Tensor], key: str, name: str,
                      source: str) -> Tensor:
        """The saved tensor `key` for parameter `name`; raises if missing or of another shape."""
        owner = type(self).__name__
        if key not in tensors:
            raise ValueError(f"The {owner} state in {source!r} lacks the tensor {key!r}.")
        shape = tuple(self.params.params[name].shape)
        if tuple(tensors[key].shape) != shape:
            raise ValueError(f"The {owner} state in {source!r} has {key!r} of shape "
                             f"{tuple(tensors[key].shape)}; parameter {name!r} has {shape}.")
        return tensors[key]

    def state_nbytes(self) -> int:
        """Bytes of the method's state: the tensors `save` writes (Ω, θ*, A, ...).

        Sharded parameters (FSDP2): the bytes of this rank's shards of the state.
        """
        return sum(local(t).numel() * t.element_size() for t in self._tensors().values())

    def memory_bytes(self) -> int:
        """Bytes of the tensors the method keeps besides the model (`state_nbytes` + caches)."""
        return self.state_nbytes()

    def consolidation_state(self) -> dict[str, Any]:
        """The method's own state: configuration, parameter shapes, and tensors."""
        return {"config": self._config(), "parameters": self.params.describe(),
                "tensors": dict(self._tensors())}

    def load_consolidation_state(self, state: Mapping[str, Any], source: str = "state") -> None:
        """Restore from `consolidation_state`, refusing state made for a different model.

        The saved settings (λ, ...) replace this object's: a `UserWarning` names both values
        where they differ. Raises ValueError for state made for other parameters, invalid
        settings (λ < 0 or not finite, ...), non-finite tensors, or missing tensors.
        """
        self.params.check_description(state["parameters"], source)
        tensors, config = dict(state["tensors"]), dict(state["config"])
        self._check_state(tensors, config, source)
        mine = self._config()
        changed = [k for k in mine if k != "n_tasks" and k in config and config[k] != mine[k]]
        self._restore(tensors, config)
        if changed:
            owner = type(self).__name__
            warnings.warn(f"{owner}: {source!r} was saved with "
                          f"{', '.join(f'{k}={config[k]!r}' for k in changed)}; this {owner} "
                          f"had {', '.join(f'{k}={mine[k]!r}' for k in changed)}. The saved "
                          f"values are used ({self._loaded_settings_note}).", stacklevel=3)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the state to a safetensors file (atomically).

        Under torch.distributed the state is the same on every rank (`myelin.distributed`):
        save from one rank. The world size is recorded (``world_size``, when > 1) for the
        record only: the state loads under any world size, or in a single process.

        Sharded parameters (FSDP2): call it on every rank. The shards are gathered into whole
        tensors (a collective), rank 0 writes them, and every rank returns once the file is
        written (or raises rank 0's error). The file is a single process's: it loads under any
        world size, each rank taking its shards again, or in a single process.
        """
        state = self.consolidation_state()
        meta = {"class": type(self).__name__, "config": state["config"],
                "parameters": state["parameters"]}
        if world_size() > 1:
            meta["world_size"] = world_size()
        if not (self.params.sharded and is_distributed()):
            write_state(path, state["tensors"], _META_KEY, meta)
            return
        # the same tensors in the same order on every rank (same names: checked on creation)
        tensors = {k: full_tensor(v) for k, v in state["tensors"].items()}
        # also the barrier: the file exists on every rank's return
        together(lambda: rank() == 0 and write_state(path, tensors, _META_KEY, meta),
                 lambda failed: RuntimeError(f"{type(self).__name__}.save: rank 0 could not "
                                             f"write {os.fspath(path)!r} ({failed[0][1]})."))

    def load(self, path: str | os.PathLike[str]) -> None:
        """Restore state written by `save`; the model must have the same parameters.

        The saved settings, λ included, replace this object's; where they differ a
        `UserWarning` names both values (``EWC(model, 999).load(path)`` of a state saved with
        λ = 5 warns and uses λ = 5; assign ``.lam`` afterwards to use another).

        Raises:
            FileNotFoundError: No file at `path`.
            ValueError: The file holds another method's state or state for other parameters,
                or invalid state: λ < 0 or not finite, other invalid settings, NaN or inf
                tensors, missing or misshapen tensors. Nothing is changed then.
        """
        device = next(iter(self.params.params.values())).device
        tensors, meta = read_state(path, _META_KEY, "consolidation state", device)
        if meta["class"] != type(self).__name__:
            raise ValueError(f"{os.fspath(path)!r} holds {meta['class']} state; this is a "
                             f"{type(self).__name__}.")
        self.load_consolidation_state({"config": meta["config"],
                                       "parameters": meta["parameters"],
                                       "tensors": tensors}, os.fspath(path))


def _few(names: list[str], shown: int = 5) -> str:
    """`names` for an error message: the first `shown` and how many more."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return f"{names[:shown]}{more}"
