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
Parameters sharded by FSDP2 (``torch.distributed.fsdp.fully_shard``: DTensors) are supported
by the consolidators EWC, L2 and WVA, whose state is then sharded like the parameters
(`is_sharded`, `local`, `shard_like`, `full_tensor`; see "Sharded parameters" in
`myelin.consolidation`). The importance estimators need whole parameters: estimate on the
unsharded model (or with DDP), then consolidate the sharded one.

Training under torchrun (``torchrun --nproc-per-node N -m myelin run ...``, or `myelin.fit`
called on every rank of a process group): `torchrun_group` initialises the process group from
torchrun's environment (gloo for CPU tensors, NCCL for CUDA ones when CUDA is available; a
timeout on every collective), the loop (`myelin.train`) wraps the model in
`DistributedDataParallel` for its training forward pass only and trains every rank on its
slice of the same global batch:

* Every rank draws the same global batch (the same seed, the same batch order) and takes its
  contiguous slice (`shard_bounds`: the first ``B mod N`` ranks take one sample more). Its mean
  loss is multiplied by ``N * b_r / B`` (`shard_batch`), so DDP's average of the ranks'
  gradients is the mean gradient of the whole batch B, as in one process (the factor is 1 when
  N divides B). This assumes a loss that is a mean over samples (`CrossEntropy`, `ModelLoss`);
  a per-token mean (`CausalLM`) is weighted by samples, not tokens.
* Evaluation: each rank scores its slice of the test set and the correct counts are summed
  (integers: exact). The importance at a task's end: each rank its slice of the closing set,
  reduced as above (an estimator without a ``distributed`` option gets the whole closing set on
  every rank). The logged loss is the whole batch's mean.
* So the accuracy matrix equals one process's up to the rounding of the reductions, except
  where randomness is drawn per rank: sampled Fisher labels (seed + rank), dropout.
* Only rank 0 writes (results, plots, checkpoints, progress bars). A checkpoint records the
  world size and is resumed only under the same one (the reductions' rounding depends on it).
* A method must declare ``supports_distributed = True`` (`myelin.methods.Method`): plain
  fine-tuning, the consolidating methods (EWC, SI, MAS, L2, WVA) and joint training do; the
  replay methods (their memories are filled from per-rank batches) are refused.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DataParallel, DistributedDataParallel

__all__ = ["TORCHRUN_VARIABLES", "all_reduce_sums", "check_same_names", "full_tensor",
           "gather_errors", "is_distributed", "is_sharded", "launched_by_torchrun", "like",
           "local", "rank", "reduce_over_ranks", "reduced_world_size", "shard_batch",
           "shard_bounds", "shard_like", "sum_over_ranks", "together", "torchrun_group",
           "unwrap", "world_size", "wrap"]

#: The environment variables torchrun sets in every process it starts.
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
#: How long a collective may wait for the other ranks (seconds), unless $MYELIN_DIST_TIMEOUT.
DEFAULT_TIMEOUT = 600.0

Layout = dict[str, tuple[tuple[int, ...], str]]
T = TypeVar("T")


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

    def elsewhere(failed: list[tuple[int, str]]) -> Exception:
        names = ", ".join(f"rank {r} ({msg})" for r, msg in failed)
        return RuntimeError(f"{what} failed on {names}; rank {rank()} stops too rather than "
                            "wait for it.")

    sums, count = together(local, elsewhere)
    check_same_names(sums, what)
    return all_reduce_sums(sums, count)


def reduced_world_size(enabled: bool = True) -> int:
    """The number of ranks `reduce_over_ranks` sums over: `world_size`, or 1 if not enabled."""
    return world_size() if enabled else 1


# training under torchrun -----------------------------------------------------------------------
def launched_by_torchrun() -> bool:
    """True if torchrun started this process (RANK, WORLD_SIZE and LOCAL_RANK are set)."""
    return all(v in os.environ for v in TORCHRUN_VARIABLES)


def _timeout() -> datetime.timedelta:
    text = os.environ.get("MYELIN_DIST_TIMEOUT")
    if text is None:
        return datetime.timedelta(seconds=DEFAULT_TIMEOUT)
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ValueError(f"MYELIN_DIST_TIMEOUT must be a positive number of seconds. Got "
                         f"{text!r}.")
    return datetime.timedelta(seconds=seconds)


@contextlib.contextmanager
def torchrun_group() -> Iterator[bool]:
    """Under torchrun, a process group from its environment for the duration; yields if so.

    The backend is gloo, or ``cpu:gloo,cuda:nccl`` when CUDA is available (each rank then uses
    the GPU numbered LOCAL_RANK); a collective waits at most $MYELIN_DIST_TIMEOUT seconds
    (default `DEFAULT_TIMEOUT`) for the other ranks, then raises. Without torchrun, or if a
    process group is already initialised (it is then left as it is), nothing happens. When the
    body returns, the ranks meet at a barrier before the group is destroyed (a rank that raised
    destroys it at once: the others' barrier then fails instead of waiting).

    Raises:
        ValueError: A torchrun variable is not an integer, or MYELIN_DIST_TIMEOUT is not a
            positive number.
    """
    if is_distributed() or not launched_by_torchrun():
        yield is_distributed()
        return
    try:
        local = int(os.environ["LOCAL_RANK"])
        int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    except ValueError:
        shown = {v: os.environ[v] for v in TORCHRUN_VARIABLES}
        raise ValueError(f"torchrun's variables must be integers. Got {shown}.") from None
    timeout = _timeout()
    backend = "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(local % torch.cuda.device_count())
        backend = "cpu:gloo,cuda:nccl"
    dist.init_process_group(backend, init_method="env://", timeout=timeout)
    try:
        yield True
        dist.barrier()      # no rank tears its connections down while another still uses them
    finally:
        dist.destroy_process_group()


def shard_bounds(n: int) -> tuple[int, int]:
    """[start, stop) of n items for this rank: contiguous, the first n mod N ranks get one more.

    Without a process group, (0, n).
    """
    size, r = world_size(), rank()
    base, extra = divmod(n, size)
    start = r * base + min(r, extra)
    return start, start + base + int(r < extra)


def shard_batch(index: Tensor) -> tuple[Tensor, float]:
    """The slice of a global batch's `index` for this rank, and the factor for its mean loss.

    The factor ``N * b / B`` (b this rank's samples, B the batch's, N the world size) makes
    DDP's average of the ranks' gradients the mean gradient over the whole batch. Without a
    process group, (`index`, 1.0).

    Raises:
        ValueError: The batch has fewer samples than there are ranks.
    """
    size, n = world_size(), len(index)
    if size == 1:
        return index, 1.0
    if n < size:
        raise ValueError(f"A batch of {n} sample(s) cannot be split over {size} ranks: every "
                         "rank needs at least one. Use a batch size of at least the world size "
                         "(--batch-size), or fewer ranks.")
    start, stop = shard_bounds(n)
    return index[start:stop], size * (stop - start) / n


def sum_over_ranks(values: Tensor) -> Tensor:
    """A copy of `values` summed over all ranks (a collective); `values` itself without one."""
    if not is_distributed():
        return values
    out = values.detach().clone().contiguous()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def gather_errors(error: BaseException | None) -> list[tuple[int, str]]:
    """(rank, "Type: message") of every rank whose `error` is not None (a collective).

    Lets the ranks agree to stop: each passes what it raised (or None), and all then see the
    same list. Without a process group, only this process's.
    """
    text = None if error is None else f"{type(error).__name__}: {error}"
    reports = _gather(text) if is_distributed() else [text]
    return [(r, t) for r, t in enumerate(reports) if t is not None]


def together(fn: Callable[[], T], elsewhere: Callable[[list[tuple[int, str]]], BaseException],
             catch: type[BaseException] | tuple[type[BaseException], ...] = Exception) -> T:
    """``fn()`` on this rank, the ranks agreeing to stop if it raised on any (a collective).

    An error of type `catch` raised here is re-raised only after every rank has reported
    (`gather_errors`), so none is left waiting in a later collective; a rank where `fn`
    succeeded raises ``elsewhere(failed)`` instead, `failed` being (rank, "Type: message") of
    the ranks where it raised. Without a process group, just ``fn()``.
    """
    error: BaseException | None = None
    result: Any = None
    try:
        result = fn()
    except catch as exc:           # re-raised below, once the other ranks know
        error = exc
    failed = gather_errors(error)
    if error is not None:
        raise error
    if failed:
        raise elsewhere(failed)
    return result


def wrap(model: nn.Module) -> DistributedDataParallel:
    """`model` in `DistributedDataParallel` (on its GPU if it is on one); needs a process group.

    The wrapper's constructor broadcasts rank 0's parameters and buffers (a collective).
    """
    device = next(model.parameters()).device
    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


# sharded parameters (FSDP2) ---------------------------------------------------------------------
def is_sharded(t: Any) -> bool:
    """True if `t` is a DTensor, e.g. a parameter of a model wrapped by FSDP2's `fully_shard`.

    torch.distributed.tensor is not imported for this (it takes a second): a DTensor exists
    only once something else has imported it.
    """
    module = sys.modules.get("torch.distributed.tensor")
    return module is not None and isinstance(t, module.DTensor)


def local(t: Tensor) -> Tensor:
    """The shard of a DTensor this rank holds (a view sharing its memory); others as they are."""
    return t.to_local() if is_sharded(t) else t


def like(shard: Tensor, param: Tensor) -> Tensor:
    """`shard`, this rank's part of a tensor shaped like `param`, as a DTensor placed like it.

    `param` not a DTensor: `shard` itself (it is then the whole tensor). No communication.
    """
    if not is_sharded(param):
        return shard
    from torch.distributed.tensor import DTensor

    return DTensor.from_local(shard, param.device_mesh, param.placements, run_check=False,
                              shape=param.shape, stride=param.stride())


def shard_like(full: Tensor, param: Tensor) -> Tensor:
    """The part of `full` (of `param`'s global shape) that this rank holds of `param`.

    The slicing is DTensor's (FSDP2 chunks dim 0 as ``torch.chunk`` does: on uneven sizes the
    first ranks hold one row more, the last ones may hold none), done locally from the whole
    tensor that every rank holds: no communication. A DTensor `full` placed like `param` gives
    its own shard. `param` not a DTensor: `full` itself.

    Raises:
        ValueError: `full` is not of `param`'s global shape.
    """
    if not is_sharded(param):
        return full
    if tuple(full.shape) != tuple(param.shape):
        raise ValueError(f"A tensor of shape {tuple(full.shape)} cannot be sharded like a "
                         f"parameter of shape {tuple(param.shape)}.")
    if is_sharded(full):
        if full.device_mesh == param.device_mesh and full.placements == param.placements:
            return full.to_local()
        full = full.full_tensor()            # another placement: a collective
    from torch.distributed.tensor import distribute_tensor

    mine = local(param)
    full = full.detach().to(mine.device)
    out = distribute_tensor(full, param.device_mesh, param.placements,
                            src_data_rank=None).to_local()
    if out.shape != mine.shape:                        # pragma: no cover - DTensor's invariant
        raise ValueError(f"The shard of a {tuple(full.shape)} tensor is {tuple(out.shape)} "
                         f"on rank {rank()}, the parameter's is {tuple(mine.shape)}.")
    return out


def full_tensor(t: Tensor) -> Tensor:
    """The whole tensor of a DTensor, gathered from every rank (a collective); others as is."""
    return t.full_tensor() if is_sharded(t) else t
