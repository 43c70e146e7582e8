"""Episodic memories for replay: stored samples on the training device, no object per sample.

A memory keeps whole batches' fields in preallocated tensors (one per field of the batch:
``(x, y)`` pairs or dicts of tensors), plus the task index of every slot. Two filling rules:

* `ReservoirMemory` — reservoir sampling over the whole stream (Vitter's algorithm R): the
  n-th item seen (0-based) replaces slot ``randint(0, n)`` *inclusive* of n when it is below
  the capacity, so every item seen so far is in the memory with probability capacity / (n + 1).
* `RingMemory` — a ring buffer per task (GEM, A-GEM, CTN): the last `per_task` samples of
  each task.

Shapes: a stored batch is what the dataset yields, with a leading sample dimension N; the
memory holds ``capacity`` rows of every field.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["Memory", "ReservoirMemory", "RingMemory", "batch_rows", "batch_size", "positive_int"]


def _tensor_state(state: Mapping[str, Any], key: str, what: str) -> Tensor:
    value = state.get(key)
    if not isinstance(value, Tensor):
        raise ValueError(f"The saved {what} lacks the tensor {key!r}.")
    return value


def _fields(batch: Any) -> tuple[list[str] | None, list[Tensor]]:
    """(keys or None, tensors) of an ``(x, y)`` / tuple batch or a dict batch."""
    if isinstance(batch, Mapping):
        keys = list(batch)
        tensors = [batch[k] for k in keys]
    elif isinstance(batch, (tuple, list)):
        keys, tensors = None, list(batch)
    else:
        raise TypeError(f"A memory stores (x, y) or dict batches; got {type(batch).__name__}.")
    if not tensors or not all(isinstance(t, Tensor) for t in tensors):
        raise TypeError("Every field of a batch to store must be a tensor.")
    n = tensors[0].shape[0] if tensors[0].dim() else -1
    if n < 0 or any(t.dim() == 0 or t.shape[0] != n for t in tensors):
        raise ValueError("The fields of a batch to store must share their first (sample) "
                         f"dimension; got shapes {[tuple(t.shape) for t in tensors]}.")
    return keys, tensors


def positive_int(name: str, value: Any) -> int:
    """`value` if it is a positive int (not a bool); ValueError naming `name` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer. Got {value!r}.")
    return value


def batch_size(batch: Any) -> int:
    """Number of samples N of an ``(x, y)`` / tuple batch or a dict batch."""
    first = next(iter(batch.values())) if isinstance(batch, Mapping) else batch[0]
    return int(first.shape[0])


def batch_rows(batch: Any, index: Tensor | slice) -> Any:
    """The rows `index` of every field of a batch (tuple batches come back as tuples)."""
    def pick(v: Tensor) -> Tensor:
        return v[index] if isinstance(index, slice) else v[index.to(v.device)]
    if isinstance(batch, Mapping):
        return {k: pick(v) for k, v in batch.items()}
    return tuple(pick(v) for v in batch)


class Memory:
    """Stored samples: `capacity` rows of every batch field, and each row's task.

    Args:
        capacity: Number of samples the memory can hold.
        generator: Random generator for sampling and replacement (seeded by the caller).
    """

    def __init__(self, capacity: int, generator: torch.Generator | None = None):
        self.capacity = positive_int("memory capacity", capacity)
        self.generator = generator if generator is not None else torch.Generator()
        self._keys: list[str] | None = None
        self._data: list[Tensor] | None = None
        self.task = torch.full((self.capacity,), -1, dtype=torch.long)
        self.filled = torch.zeros(self.capacity, dtype=torch.bool)

    # storage -----------------------------------------------------------------------------------
    def _allocate(self, keys: list[str] | None, tensors: list[Tensor]) -> None:
        self._keys = keys
        self._data = [torch.zeros((self.capacity, *t.shape[1:]), dtype=t.dtype, device=t.device)
                      for t in tensors]
        device = tensors[0].device
        self.task, self.filled = self.task.to(device), self.filled.to(device)

    def _write(self, slots: Tensor, rows: Tensor, batch: Any, task: int) -> None:
        """Write rows `rows` of `batch` into memory slots `slots`."""
        keys, tensors = _fields(batch)
        if self._data is None:
            self._allocate(keys, tensors)
        elif keys != self._keys or len(tensors) != len(self._data) or any(
                t.shape[1:] != d.shape[1:] or t.dtype != d.dtype
                for t, d in zip(tensors, self._data, strict=True)):
            raise ValueError("A batch to store differs in fields, shapes or dtypes from the "
                             "batches already in memory (" + self._describe() + ").")
        if len(slots) == 0:
            return
        slots = slots.to(self.task.device)
        for d, t in zip(self._data, tensors, strict=True):
            d[slots] = t[rows.to(t.device)].detach().to(d.device)
        self.task[slots] = task
        self.filled[slots] = True

    def _describe(self) -> str:
        if self._data is None:
            return "empty"
        names = self._keys or [f"field {i}" for i in range(len(self._data))]
        return ", ".join(f"{n}: {tuple(d.shape[1:])} {d.dtype}"
                         for n, d in zip(names, self._data, strict=True))

    def get(self, slots: Tensor) -> Any:
        """The stored samples at `slots`, as a batch of the stored form."""
        if self._data is None:
            raise ValueError("The memory is empty.")
        slots = slots.to(self._data[0].device)
        tensors = [d[slots] for d in self._data]
        if self._keys is None:
            return tuple(tensors)
        return dict(zip(self._keys, tensors, strict=True))

    # queries -----------------------------------------------------------------------------------
    def __len__(self) -> int:
        """Samples stored."""
        return int(self.filled.sum())

    def slots(self, tasks: Sequence[int] | None = None, exclude: int | None = None) -> Tensor:
        """Indices of filled slots (of `tasks` only, and not of task `exclude`), ascending."""
        keep = self.filled.clone()
        if tasks is not None:
            keep &= torch.isin(self.task, torch.as_tensor(list(tasks), device=self.task.device))
        if exclude is not None:
            keep &= self.task != exclude
        return keep.nonzero().flatten().cpu()

    def sample(self, n: int, tasks: Sequence[int] | None = None,
               exclude: int | None = None) -> tuple[Any, Tensor] | None:
        """Up to `n` stored samples drawn without replacement, and their tasks (None if none).

        Args:
            n: Number of samples wanted (fewer if fewer are stored).
            tasks: Draw only from these tasks' samples (None: any).
            exclude: Never draw samples of this task.

        Returns:
            (batch, tasks of shape (m,)) with m = min(n, eligible samples), or None.
        """
        slots = self.slots(tasks, exclude)
        if len(slots) == 0:
            return None
        if len(slots) > n:
            slots = slots[torch.randperm(len(slots), generator=self.generator)[:n]]
        return self.get(slots), self.task[slots.to(self.task.device)].cpu()

    def nbytes(self) -> int:
        """Bytes of the stored tensors (allocated capacity; 0 before the first sample)."""
        if self._data is None:
            return 0
        return sum(d.numel() * d.element_size() for d in self._data)

    def bytes_per_sample(self) -> int:
        """Bytes one stored sample takes (all its fields)."""
        return self.nbytes() // self.capacity

    # checkpoints -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything the memory holds: stored rows, their tasks, and its generator's state.

        Tensors, ints, strings and lists only (a checkpoint loads with ``weights_only=True``).
        """
        return {"kind": type(self).__name__, "capacity": self.capacity, "keys": self._keys,
                "data": None if self._data is None else [d.detach().clone() for d in self._data],
                "task": self.task.clone(), "filled": self.filled.clone(),
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Any],
                        device: torch.device | str | None = None) -> None:
        """Restore `state_dict`; the stored rows go to `device` (default: where they were saved).

        Raises:
            ValueError: The state is another kind of memory's or of another capacity.
        """
        what = f"{type(self).__name__} state"
        if state.get("kind") != type(self).__name__ or state.get("capacity") != self.capacity:
            raise ValueError(f"The saved memory is a {state.get('kind')} of capacity "
                             f"{state.get('capacity')!r}; this is a {type(self).__name__} of "
                             f"capacity {self.capacity}.")
        task, filled = _tensor_state(state, "task", what), _tensor_state(state, "filled", what)
        data = state.get("data")
        if data is not None and (not isinstance(data, list) or any(
                not isinstance(d, Tensor) or d.shape[:1] != (self.capacity,) for d in data)):
            raise ValueError(f"The saved {what} has stored rows of the wrong shape.")
        move = (lambda t: t) if device is None else (lambda t: t.to(device))
        self._keys = None if state.get("keys") is None else list(state["keys"])
        self._data = None if data is None else [move(d.clone()) for d in data]
        self.task, self.filled = move(task.clone()), move(filled.clone())
        self.generator.set_state(_tensor_state(state, "generator", what).cpu())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(capacity={self.capacity}, stored={len(self)})"


class ReservoirMemory(Memory):
    """Reservoir sampling over the whole stream: a uniform sample of everything seen.

    Args:
        capacity: Total samples the memory holds.
        generator: Random generator (replacement draws and `sample`).
    """

    def __init__(self, capacity: int, generator: torch.Generator | None = None):
        super().__init__(capacity, generator)
        self.seen = 0

    def add(self, batch: Any, task: int) -> None:
        """Offer every sample of `batch` (in order) to the reservoir."""
        _, tensors = _fields(batch)
        slots, rows = [], []
        for i in range(tensors[0].shape[0]):
            n = self.seen
            self.seen += 1
            if n < self.capacity:
                j = n
            else:
                j = int(torch.randint(0, n + 1, (1,), generator=self.generator))   # inclusive
                if j >= self.capacity:
                    continue
            if j in slots:                        # a later sample of the batch wins the slot
                k = slots.index(j)
                del slots[k], rows[k]
            slots.append(j)
            rows.append(i)
        self._write(torch.tensor(slots, dtype=torch.long), torch.tensor(rows, dtype=torch.long),
                    batch, task)

    def state_dict(self) -> dict[str, Any]:
        """The memory's state plus how many samples the reservoir has seen."""
        return {**super().state_dict(), "seen": self.seen}

    def load_state_dict(self, state: Mapping[str, Any],
                        device: torch.device | str | None = None) -> None:
        """Restore `state_dict` (see `Memory.load_state_dict`)."""
        super().load_state_dict(state, device)
        self.seen = int(state["seen"])


class RingMemory(Memory):
    """A ring buffer per task: the last `per_task` samples seen of each task.

    Args:
        per_task: Samples kept per task.
        n_tasks: Number of tasks (the capacity is ``per_task * n_tasks``).
        generator: Random generator for `sample`.
    """

    def __init__(self, per_task: int, n_tasks: int, generator: torch.Generator | None = None):
        self.per_task = positive_int("memory per task", per_task)
        self.n_tasks = positive_int("number of tasks", n_tasks)
        super().__init__(self.per_task * self.n_tasks, generator)
        self._next = [0] * self.n_tasks

    def add(self, batch: Any, task: int) -> None:
        """Append the samples of `batch` to task `task`'s ring (overwriting its oldest)."""
        if not 0 <= task < self.n_tasks:
            raise ValueError(f"Task {task} is outside this memory's {self.n_tasks} tasks.")
        _, tensors = _fields(batch)
        n = tensors[0].shape[0]
        rows = torch.arange(max(0, n - self.per_task), n)      # only the last per_task fit
        pos = (self._next[task] + torch.arange(len(rows))) % self.per_task
        self._next[task] = int((self._next[task] + len(rows)) % self.per_task)
        self._write(task * self.per_task + pos, rows, batch, task)

    def task_slots(self, task: int) -> Tensor:
        """The filled slots of `task`."""
        return self.slots(tasks=[task])

    def state_dict(self) -> dict[str, Any]:
        """The memory's state plus each task ring's write position."""
        return {**super().state_dict(), "next": list(self._next)}

    def load_state_dict(self, state: Mapping[str, Any],
                        device: torch.device | str | None = None) -> None:
        """Restore `state_dict` (see `Memory.load_state_dict`)."""
        if len(state.get("next", ())) != self.n_tasks:
            raise ValueError(f"The saved RingMemory state has {len(state.get('next', ()))} "
                             f"task rings; this one has {self.n_tasks}.")
        super().load_state_dict(state, device)
        self._next = [int(v) for v in state["next"]]
