"""torch.distributed support: importances summed over ranks, DDP-wrapped models accepted.

Under an initialised process group (`is_distributed`), the estimators `fisher`, `mas` and
`signal` sum their per-sample sums and their sample counts over every rank before dividing, so
every rank holds the same importance, equal to one process's on the union of the ranks' data.
Every rank must call the estimator (it is a collective); each passes its own shard, shards may
differ in size. `reduce_over_ranks` is the one place this happens; it first makes the ranks
agree on failures (a rank whose local pass raised still takes part, so the others raise
instead of waiting for it) and on the parameters (`check_same_names`).

A model wrapped in `DistributedDataParallel` (or `DataParallel`) is accepted everywhere a model
is: `unwrap` takes its ``.module``. So parameter names never carry the wrapper's ``module.``
prefix: an importance or a consolidator's state made from ``DDP(model)`` has the names of
``model`` and fits either. Estimators run the inner module, never the wrapper's forward (whose
buffer broadcasts and gradient hooks are collectives of their own, and would not match on
shards of different sizes).

What needs no communication, and why:

* Synaptic Intelligence accumulates ω = −Σ g ⊙ Δθ after each optimizer step. Under DDP the
  gradients are already averaged over ranks when the optimizer steps and the parameters are
  identical, so every rank accumulates the same ω: it is the path integral of the global loss.
* EWC, L2 and WVA store the anchor θ* (identical under DDP), and Ω or A computed from an
  importance that is identical after the reduction: their state is the same on every rank, and
  the penalty's gradient (or WVA's attenuation) is the same on every rank too.

Nothing saved depends on the number of ranks (the reduced importance is the union's, the
consolidators' state is every rank's), so state saved under one world size loads under any
other, or in a single process; the world size is recorded in an importance's ``meta`` (as
``world_size``, when > 1) and in a saved consolidator's metadata for the record only.
Sharded parameters (FSDP, tensor parallelism) are not supported: every rank must hold whole
parameters.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DataParallel, DistributedDataParallel

__all__ = ["all_reduce_sums", "check_same_names", "is_distributed", "rank",
           "reduce_over_ranks", "reduced_world_size", "unwrap", "world_size"]

Layout = dict[str, tuple[tuple[int, ...], str]]


def is_distributed() -> bool:
    """True if torch.distributed is available and a default process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """The number of ranks in the default process group; 1 without one."""
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    """The rank of this process in the default process group; 0 without one."""
    return dist.get_rank() if is_distributed() else 0


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a `DistributedDataParallel` / `DataParallel` wrapper; others unchanged.

    Its parameters are the wrapper's (the same tensors), named without the ``module.`` prefix.
    """
    while isinstance(model, (DistributedDataParallel, DataParallel)):
        model = model.module
    return model


def _layout(tensors: Mapping[str, Tensor]) -> Layout:
    """Name -> (shape, dtype) of every tensor."""
    return {n: (tuple(t.shape), str(t.dtype).removeprefix("torch.")) for n, t in tensors.items()}


def _digest(layout: Layout) -> str:
    return hashlib.sha256(json.dumps(sorted(layout.items())).encode()).hexdigest()


def _gather(obj: Any) -> list[Any]:
    """`obj` from every rank, in rank order (a collective)."""
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _difference(layouts: list[Layout], what: str) -> str:
    """Every rank's departures from rank 0's parameters, for the error message."""
    ref = layouts[0]
    lines = []
    for r, mine in enumerate(layouts[1:], start=1):
        if mine == ref:
            continue
        only_0 = sorted(set(ref) - set(mine))
        only_r = sorted(set(mine) - set(ref))
        changed = [f"{n}: rank 0 {ref[n][0]} {ref[n][1]} vs rank {r} {mine[n][0]} {mine[n][1]}"
                   for n in sorted(set(ref) & set(mine)) if ref[n] != mine[n]]
        lines.append(f"rank {r} differs from rank 0 — parameters only on rank 0: {only_0}, "
                     f"only on rank {r}: {only_r}, different shape or dtype: {changed}")
    return (f"{what}: the ranks' models have different trainable parameters (a model built "
            f"differently on some rank?); every rank must hold the same model. "
            + "; ".join(lines) + ".")


def check_same_names(tensors: Mapping[str, Tensor], what: str = "importance") -> None:
    """Raise ValueError on every rank unless all ranks hold the same names, shapes and dtypes.

    A collective (every rank must call it): one all-gather of a hash of the layout, and a
    second of the layouts themselves only if the hashes differ. A no-op without a process group.

    Args:
        tensors: Name -> tensor of any shape; only names, shapes and dtypes are compared.
        what: Who is checking, for the error message.

    Raises:
        ValueError: Naming each rank that differs from rank 0, the parameters only one of them
            has, and those whose shape or dtype differ.
    """
    if not is_distributed():
        return
    layout = _layout(tensors)
    if len(set(_gather(_digest(layout)))) == 1:
        return
    raise ValueError(_difference(_gather(layout), what))


def all_reduce_sums(sums: Mapping[str, Tensor], count: int) -> tuple[dict[str, Tensor], int]:
    """Sum every tensor and `count` over all ranks (a collective); the tensors in place.

    The ranks must hold the same names, shapes and dtypes (`check_same_names`). Tensors keep
    their dtype (float64 sums are summed in float64) and device (CPU tensors for gloo, CUDA
    tensors for NCCL). A no-op without a process group.

    Args:
        sums: Name -> tensor of any shape, this rank's sum.
        count: This rank's number of samples.

    Returns:
        (name -> Σ over ranks, of the same shape), and Σ over ranks of `count`.
    """
    if not is_distributed():
        return dict(sums), count
    out: dict[str, Tensor] = {}
    for name in sorted(sums):            # the same order on every rank
        t = sums[name]
        if not t.is_contiguous():
            t = t.contiguous()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        out[name] = t
    device = next(iter(out.values())).device if out else torch.device("cpu")
    total = torch.tensor([count], dtype=torch.int64, device=device)
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return {n: out[n] for n in sums}, int(total.item())


def reduce_over_ranks(local: Callable[[], tuple[dict[str, Tensor], int]], what: str,
                      enabled: bool = True) -> tuple[dict[str, Tensor], int]:
    """Run this rank's `local` pass, then sum its (sums, count) over all ranks.

    Without a process group, or with ``enabled=False``, just ``local()``. Otherwise a
    collective: every rank must call it. A rank whose `local` raises still takes part in one
    all-gather, then raises its own error; the other ranks raise RuntimeError naming it and its
    error (instead of waiting forever for it). Then `check_same_names` and `all_reduce_sums`.

    Args:
        local: Computes this rank's ``(name -> sum tensor, number of samples)``.
        what: The caller (e.g. "fisher"), for error messages.
        enabled: False: this rank's data only, no communication.

    Returns:
        (name -> Σ over ranks of the sums, Σ over ranks of the counts).

    Raises:
        RuntimeError: Another rank's `local` raised (its rank and error are named).
        ValueError: The ranks' tensors differ in names, shapes or dtypes (`check_same_names`).
    """
    if not (enabled and is_distributed()):
        return local()
    error: Exception | None = None
    try:
        sums, count = local()
    except Exception as exc:   # re-raised below, once the other ranks know
        error = exc
    reports = _gather(None if error is None else f"{type(error).__name__}: {error}")
    if error is not None:
        raise error
    failed = [(r, msg) for r, msg in enumerate(reports) if msg is not None]
    if failed:
        names = ", ".join(f"rank {r} ({msg})" for r, msg in failed)
        raise RuntimeError(f"{what} failed on {names}; rank {rank()} stops too rather than "
                           "wait for it.")
    check_same_names(sums, what)
    return all_reduce_sums(sums, count)


def reduced_world_size(enabled: bool = True) -> int:
    """The number of ranks `reduce_over_ranks` sums over: `world_size`, or 1 if not enabled."""
    return world_size() if enabled else 1
