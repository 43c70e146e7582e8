"""Exact per-sample gradient reductions in one batched forward and backward pass.

For every batch: one forward pass with hooks that keep each handled layer's input and output;
the estimator turns the logits into cotangents (the gradient of each sample's objective w.r.t.
its logits, shape (M, N, ..., C)); one backward pass from the logits to the kept layer outputs
gives δ for every layer; each layer's rule (`_rules.py`) turns (input, δ) into Σ_n f(g_n) for the
per-sample parameter gradients g_n. Parameters of layers without a rule go through a generic
`torch.func` path (vmap over samples of a vector-Jacobian product), so every model works:
stock RNN/GRU/LSTM layers run a step-by-step forward there (`_recurrent.py`), and a model vmap
cannot batch at all (data-dependent control flow, PackedSequence) is run one sample at a time.

Rules assume each layer sees the samples on its first dimension. A layer whose output's first
dimension differs from the batch size (e.g. a Linear applied to a time-first (T, N, I) tensor)
is detected and moved to the torch.func path; one whose time dimension happens to equal the
batch size cannot be told apart, so time-first models should use batches whose size differs
from their sequence length.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, vjp, vmap

from .._progress import progress_bar
from ..distributed import reduce_over_ranks, unwrap
from ..losses import IGNORE_INDEX, call_model
from ._recurrent import vmappable_recurrent_layers
from ._rules import Rule, find_rule
from .base import (
    accumulation_dtype,
    all_finite,
    batch_len,
    check_token_ids,
    eval_mode,
    iter_batches,
    model_error,
    trainable_parameters,
)

__all__ = ["CHUNK_ELEMENTS", "REDUCTIONS", "Cotangent", "per_sample_sum"]

Cotangent = Callable[[Tensor, "Tensor | None"], Tensor]
Targets = Callable[[Any, "Tensor | None"], "Tensor | None"]
REDUCTIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "square": torch.square,   # Σ_n g_n²  (Fisher)
    "abs": torch.abs,         # Σ_n |g_n| (MAS)
    "sum": lambda t: t,       # Σ_n g_n   (gradient of the summed objective)
}
#: Bound on the per-sample gradient elements materialised at once (layers without a rule).
CHUNK_ELEMENTS = 1 << 24


@dataclass
class _Layer:
    module: nn.Module
    rule: Rule
    names: dict[str, str]            # local parameter name -> model parameter name
    shared: bool                     # some parameter also belongs to another layer


@dataclass
class _Plan:
    layers: list[_Layer]
    fallback: list[str]              # parameter names computed by the torch.func path
    fallback_modules: list[str]


@dataclass
class _Record:
    layer: _Layer
    inputs: tuple[Any, ...]
    output: Tensor
    version: int                     # output._version when recorded


@dataclass
class _Capture:
    records: list[_Record] = field(default_factory=list)
    active: bool = False
    batch: int = 0
    misfits: set[int] = field(default_factory=set)   # layers routed to the fallback
    unused: set[int] = field(default_factory=set)    # layers whose parameters get no gradient
    expanded: set[int] = field(default_factory=set)  # broadcast layers expanded this forward
    cloned: set[int] = field(default_factory=set)    # layers whose output is changed in place


class _NotBatchFirst(Exception):
    pass


def _plan(model: nn.Module, params: dict[str, nn.Parameter], fallback: str,
          force: set[int]) -> _Plan:
    id2name = {id(p): n for n, p in params.items()}
    owners: Counter[int] = Counter()
    candidates: list[tuple[str, nn.Module, dict[str, str]]] = []
    for mod_name, module in model.named_modules():
        own = {ln: id2name[id(p)] for ln, p in module.named_parameters(recurse=False)
               if p.requires_grad and id(p) in id2name}
        if own:
            candidates.append((mod_name, module, own))
            owners.update(id(params[n]) for n in own.values())
    layers, fb, fb_modules = [], set(), []
    for mod_name, module, own in candidates:
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is None:
            raise ValueError(
                f"Layer {mod_name!r} ({type(module).__name__}) has track_running_stats=False, so "
                "it normalises with batch statistics even in eval mode: samples are not "
                "independent and per-sample importances are undefined."
            )
        rule = None if id(module) in force else find_rule(module)
        if rule is None:
            fb.update(own.values())
            fb_modules.append(f"{mod_name or '<model>'} ({type(module).__name__})")
        else:
            shared = any(owners[id(params[n])] > 1 for n in own.values())
            layers.append(_Layer(module, rule, own, shared))
    if fb and fallback != "functional":
        raise TypeError(
            f"No per-sample rule for {', '.join(fb_modules)}, which hold trainable parameters. "
            "Pass fallback='functional' (torch.func, slower) or call "
            "myelin.importance.register_rule."
        )
    # a parameter with any owner on the fallback path is computed there entirely
    for layer in layers:
        layer.names = {ln: n for ln, n in layer.names.items() if n not in fb}
    return _Plan([la for la in layers if la.names], sorted(fb), fb_modules)


def _grads_to_outputs(logits: Tensor, outputs: list[Tensor],
                      cot: Tensor) -> list[list[Tensor] | None]:
    """δ for each kept output, one (1, *output.shape) tensor per objective (None if unused)."""
    # One backward per objective: as fast as is_grads_batched on MLPs and twice as fast on
    # CNNs (batched max-pool backward has no batching rule: it loops and concatenates).
    m = cot.shape[0]
    per_m = [torch.autograd.grad(logits, outputs, c, allow_unused=True, retain_graph=j < m - 1)
             for j, c in enumerate(cot)]
    return [None if per_m[0][i] is None else [g[i].unsqueeze(0) for g in per_m]
            for i in range(len(outputs))]


def _widen(t: Any) -> Any:
    """A half-precision floating tensor in float32; anything else as it is."""
    if isinstance(t, Tensor) and t.is_floating_point() and t.element_size() < 4:
        return t.float()
    return t


def _widen_all(inputs: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(_widen(a) for a in inputs)


def _slice_inputs(inputs: tuple[Any, ...], sl: slice) -> tuple[Any, ...]:
    return tuple(a[sl] if isinstance(a, Tensor) and a.dim() > 0 else a for a in inputs)


def _logits_of(output: Any) -> Any:
    """The logits of a model's output: the tensor itself, or its ``.logits`` / ``["logits"]``."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, dict):
        return output.get("logits", output)
    return getattr(output, "logits", output)


def _functional_sums(model: nn.Module, names: list[str], x: Any, cot: Tensor,
                     f: Callable[[Tensor], Tensor]) -> dict[str, Tensor]:
    """Σ_m Σ_n f(g) for the named parameters via vmap over samples of a VJP."""
    all_params = dict(model.named_parameters())
    diff = {n: all_params[n].detach() for n in names}
    rest = {n: p.detach() for n, p in all_params.items() if n not in diff}
    if isinstance(x, dict):     # keyword inputs: the tensors are vmapped, the rest held fixed
        fixed = {k: v for k, v in x.items() if not (isinstance(v, Tensor) and v.dim())}
        x = {k: v for k, v in x.items() if k not in fixed}

    def one(p: dict[str, Tensor], xk: Any, ck: Tensor) -> dict[str, Tensor]:
        def forward(q: dict[str, Tensor]) -> Tensor:
            if isinstance(xk, dict):
                out = functional_call(model, {**rest, **q}, (),
                                      {**fixed, **{k: v.unsqueeze(0) for k, v in xk.items()}})
            else:
                out = functional_call(model, {**rest, **q}, (xk.unsqueeze(0),))
            return _logits_of(out).squeeze(0)
        _, pull = vjp(forward, p)
        return vmap(pull)(ck)[0]

    numel = max(1, sum(diff[n].numel() for n in names) * cot.shape[0])
    step = max(1, CHUNK_ELEMENTS // numel)
    sums = {n: torch.zeros_like(diff[n], dtype=accumulation_dtype(diff[n].dtype)) for n in names}
    for i in range(0, batch_len(x), step):
        xi = ({k: v[i:i + step] for k, v in x.items()} if isinstance(x, dict)
              else x[i:i + step])
        try:
            with vmappable_recurrent_layers(model):
                g = vmap(one, in_dims=(None, 0, 1))(diff, xi, cot[:, i:i + step])
        except RuntimeError as err:
            # the model ran on this batch already, so this is vmap's limit: data-dependent
            # control flow (e.g. Hugging Face attention masks), an op without a batching rule,
            # a PackedSequence. One sample at a time with plain autograd — the naive loop,
            # exact, slower
            _warn_loop(names, err)
            for n, v in _looped_sums(model, names, xi, cot[:, i:i + step], f).items():
                sums[n] += v
            continue
        for n in names:
            sums[n] += f(_widen(g[n])).sum((0, 1))
    return sums


_WARNED: set[str] = set()


def _warn_loop(names: list[str], err: Exception) -> None:
    key = ",".join(names)
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(f"torch.func cannot vmap this model ({str(err).splitlines()[0][:120]}); "
                      f"per-sample gradients of {len(names)} parameter(s) without a per-sample "
                      f"rule ({names[0]}{', ...' if len(names) > 1 else ''}) are computed one "
                      "sample at a time (exact, slower). register_rule for their layer type "
                      "makes them fast.", stacklevel=4)


def _looped_sums(model: nn.Module, names: list[str], x: Any, cot: Tensor,
                 f: Callable[[Tensor], Tensor]) -> dict[str, Tensor]:
    """Σ_m Σ_n f(g) for the named parameters, one sample and one objective at a time."""
    all_params = dict(model.named_parameters())
    params = [all_params[n] for n in names]
    sums = {n: torch.zeros_like(p, dtype=accumulation_dtype(p.dtype))
            for n, p in zip(names, params)}
    for k in range(cot.shape[1]):
        xk = ({key: (v[k:k + 1] if isinstance(v, Tensor) and v.dim() else v)
               for key, v in x.items()} if isinstance(x, dict) else x[k:k + 1])
        out = _logits_of(call_model(model, xk))
        for j in range(cot.shape[0]):
            grads = torch.autograd.grad(out, params, cot[j, k:k + 1], allow_unused=True,
                                        retain_graph=j < cot.shape[0] - 1)
            for n, g in zip(names, grads):
                if g is not None:
                    sums[n] += f(_widen(g))
    return sums


def per_sample_sum(
    model: nn.Module,
    data: Any,
    cotangent: Cotangent,
    *,
    reduce: str,
    batch_size: int = 256,
    max_samples: int | None = None,
    fallback: str = "functional",
    progress: bool | None = None,
    desc: str = "importance",
    targets: Targets | None = None,
    distributed: bool = True,
) -> tuple[dict[str, Tensor], int]:
    """Σ over samples (and objectives) of f(per-sample gradient), for every trainable parameter.

    Args:
        model: Maps x of shape (N, ...) — or a dict batch's keyword inputs — to logits of shape
            (N, ..., C) (or an output with ``.logits``). Mode restored after.
        data: Any form accepted by `iter_batches`.
        cotangent: ``(logits, y) -> (M, *logits.shape)``, the gradient of each sample's
            objective(s) with respect to its logits. Positions whose integer label is
            `IGNORE_INDEX` (-100) get a zero cotangent whatever it returns.
        reduce: Key of `REDUCTIONS`: "square", "abs" or "sum".
        batch_size: Batch size used when `data` is a pair, tensor or dataset.
        max_samples: Use at most this many samples.
        fallback: "functional" (torch.func for layers without a rule) or "error".
        progress: Show a progress bar (None: only on a terminal).
        desc: Progress bar label.
        targets: ``(inputs, labels) -> y`` given to `cotangent` (e.g. `CausalLM.targets`,
            which shifts the labels); None: the batch's labels as they are.
        distributed: Under an initialised torch.distributed process group, sum the sums and
            the sample counts over every rank (`myelin.distributed.reduce_over_ranks`: every
            rank must call, each with its own shard of the data). False: this rank's data only.

    Returns:
        (sums, n): name -> tensor of the parameter's shape, and the number of samples used
        (over all ranks under a process group). The sums are float32 for a half-precision
        parameter (`accumulation_dtype`): the rules get their inputs and δ in float32 and every
        batch is added to a float32 sum.

    """
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {sorted(REDUCTIONS)}. Got {reduce!r}.")
    if fallback not in ("functional", "error"):
        raise ValueError(f"fallback must be 'functional' or 'error'. Got {fallback!r}.")
    model = unwrap(model)     # run the inner module: DDP's forward has collectives of its own
    return reduce_over_ranks(
        lambda: _local_sums(model, data, cotangent, REDUCTIONS[reduce], batch_size=batch_size,
                            max_samples=max_samples, fallback=fallback, progress=progress,
                            desc=desc, targets=targets), desc, distributed)


def _local_sums(model: nn.Module, data: Any, cotangent: Cotangent,
                f: Callable[[Tensor], Tensor], *, batch_size: int, max_samples: int | None,
                fallback: str, progress: bool | None, desc: str,
                targets: Targets | None) -> tuple[dict[str, Tensor], int]:
    """`per_sample_sum` on this process's data alone."""
    params = trainable_parameters(model)
    if not params:
        raise ValueError("model has no trainable parameters (all have requires_grad=False).")
    first = next(iter(params.values()))
    sums = {n: torch.zeros_like(p, dtype=accumulation_dtype(p.dtype),
                                memory_format=torch.contiguous_format)
            for n, p in params.items()}
    capture = _Capture()
    plan = _plan(model, params, fallback, capture.misfits)
    workspace: dict[str, Tensor] = {}     # per-sample gradient buffers, reused across batches

    def hook(module: nn.Module, args: tuple[Any, ...], output: Any, layer: _Layer) -> Any:
        if not capture.active:
            return None
        n = capture.batch
        if isinstance(output, Tensor) and output.dim() and output.shape[0] == 1 and n > 1:
            # one row broadcast over the batch (e.g. position embeddings of ids (1, T)): give
            # each sample its own copy, so its gradient is per sample
            capture.expanded.add(id(module))
            output = output.expand(n, *output.shape[1:])
            args = tuple(a.expand(n, *a.shape[1:]) if isinstance(a, Tensor) and a.dim()
                         and a.shape[0] == 1 else a for a in args)
        if not isinstance(output, Tensor) or output.dim() == 0 or output.shape[0] != n:
            capture.misfits.add(id(module))
            raise _NotBatchFirst
        inputs = tuple(a.detach() if isinstance(a, Tensor) else a for a in args)
        capture.records.append(_Record(layer, inputs, output, output._version))
        if id(module) in capture.cloned or id(module) in capture.expanded:
            # a later in-place op (ReLU(inplace=True)) must not touch the recorded `output`
            return output.clone()
        # no copy (a language model's logits are hundreds of MB): the forward is re-run with
        # one if something changes `output` in place (`_changed_in_place`)
        return None

    n_seen = 0
    with eval_mode(model), torch.enable_grad():
        handles: list[Any] = []

        def install(p: _Plan) -> None:
            for h in handles:
                h.remove()
            handles.clear()
            for layer in p.layers:
                handles.append(layer.module.register_forward_hook(
                    lambda m, a, o, layer=layer: hook(m, a, o, layer)))

        install(plan)
        try:
            batches = iter_batches(data, batch_size=batch_size, max_samples=max_samples,
                                   device=first.device, dtype=first.dtype)
            for x, y in progress_bar(batches, progress=progress, desc=desc, unit="batch"):
                check_token_ids(model, x)
                if targets is not None:
                    y = targets(x, y)
                while True:
                    capture.records.clear()
                    capture.expanded.clear()
                    capture.batch, capture.active = batch_len(x), True
                    try:
                        logits = _logits_of(call_model(model, x))
                    except RuntimeError as err:
                        if not capture.expanded - capture.misfits:
                            if type(err) is not RuntimeError:
                                raise
                            raise model_error(err, x, n_seen) from err
                        # the model needed the broadcast row as it was: those layers go to
                        # the generic path
                        capture.misfits.update(capture.expanded)
                        plan = _plan(model, params, fallback, capture.misfits)
                        install(plan)
                        continue
                    except _NotBatchFirst:
                        if fallback != "functional":
                            raise ValueError(
                                "A layer's output does not have the samples on its first "
                                "dimension; use fallback='functional'.") from None
                        plan = _plan(model, params, fallback, capture.misfits)
                        install(plan)
                        continue
                    finally:
                        capture.active = False
                    if _route_silent_layers(plan, capture, logits, params):
                        plan = _plan(model, params, fallback, capture.misfits)
                        install(plan)
                        continue
                    if _changed_in_place(capture):
                        continue
                    break
                cot = _checked_cotangent(cotangent, logits, y, n_seen)
                _accumulate_rules(plan, capture.records, logits, cot, f, sums, workspace)
                capture.records.clear()
                if plan.fallback:
                    for n, v in _functional_sums(model, plan.fallback, x, cot, f).items():
                        sums[n] += v
                n_seen += batch_len(x)
        finally:
            for h in handles:
                h.remove()
    for n, v in sums.items():
        if not all_finite(v):
            raise ValueError(f"Per-sample gradients of parameter {n!r} are NaN or inf; the "
                             "model produces non-finite gradients on this data.")
    return sums, n_seen


def _changed_in_place(capture: _Capture) -> bool:
    """Mark layers whose recorded output a later op modified in place; True if any (re-run)."""
    changed = {id(r.layer.module) for r in capture.records
               if r.output._version != r.version and id(r.layer.module) not in capture.cloned}
    capture.cloned |= changed
    return bool(changed)


def _route_silent_layers(plan: _Plan, capture: _Capture, logits: Tensor,
                         params: dict[str, nn.Parameter]) -> bool:
    """Send layers whose hook did not fire but whose parameters were used to the fallback.

    E.g. MultiheadAttention reads its ``out_proj`` weights without calling ``out_proj``. A layer
    whose parameters get no gradient at all is simply unused (zero importance). Returns True if
    the plan must change.
    """
    fired = {id(r.layer.module) for r in capture.records}
    silent = [la for la in plan.layers
              if id(la.module) not in fired and id(la.module) not in capture.unused]
    if not silent or not logits.requires_grad:
        return False
    tensors = [params[n] for la in silent for n in la.names.values()]
    grads = iter(torch.autograd.grad(logits.sum(), tensors, allow_unused=True, retain_graph=True))
    changed = False
    for la in silent:
        used = [g is not None for g in (next(grads) for _ in la.names)]
        if any(used):
            capture.misfits.add(id(la.module))
            changed = True
        else:
            capture.unused.add(id(la.module))
    return changed


def _checked_cotangent(cotangent: Cotangent, logits: Any, y: Tensor | None, start: int) -> Tensor:
    if not isinstance(logits, Tensor) or logits.dim() < 2:
        raise TypeError(
            "The model must return a logits tensor of shape (N, C) or (N, ..., C); got "
            + (f"shape {tuple(logits.shape)}." if isinstance(logits, Tensor)
               else f"{type(logits).__name__}.")
        )
    if not all_finite(logits.detach()):
        raise ValueError(f"The model's outputs are NaN or inf for the batch at sample {start}.")
    # the objective's gradient in float32 for half-precision logits, cast back for the backward
    cot = cotangent(_widen(logits.detach()), y)
    if not all_finite(cot):
        raise ValueError(f"Gradients w.r.t. the outputs are NaN or inf at sample {start}.")
    cot = cot.to(logits.dtype)
    if y is not None and not y.is_floating_point() and tuple(y.shape) == tuple(logits.shape[:-1]):
        ignored = y == IGNORE_INDEX                  # a label -100 takes no part
        if bool(ignored.any()):
            cot = cot.masked_fill(ignored.unsqueeze(-1), 0.0)
    return cot


def _accumulate_rules(plan: _Plan, records: list[_Record], logits: Tensor, cot: Tensor,
                      f: Callable[[Tensor], Tensor], sums: dict[str, Tensor],
                      workspace: dict[str, Tensor]) -> None:
    if not records:
        return
    deltas = _grads_to_outputs(logits, [r.output for r in records], cot)
    # rules compute in float32 for half-precision layers: no underflow of δ², no fp16 overflow
    deltas = [None if d is None else [_widen(t) for t in d] for d in deltas]
    calls = Counter(id(r.layer.module) for r in records)
    slow: list[tuple[_Record, list[Tensor]]] = []
    for rec, delta in zip(records, deltas):
        if delta is None:
            continue
        layer = rec.layer
        res = None
        if layer.rule.reduce is not None and calls[id(layer.module)] == 1 and not layer.shared:
            stacked = delta[0] if len(delta) == 1 else torch.cat(delta)
            res = layer.rule.reduce(layer.module, _widen_all(rec.inputs), stacked, f)
        if res is None:
            slow.append((rec, delta))
            continue
        for local, name in layer.names.items():
            sums[name] += res[local]
    if not slow:
        return
    # a parameter reached by one call of one layer is reduced right after that layer, from a
    # scratch buffer every such layer reuses (hot in cache, no page faults); parameters summed
    # over several calls (tied weights, a layer called twice) first add up in buffers of their
    # own, reduced when every call is in
    reached = Counter(name for rec, _ in slow for name in rec.layer.names.values())
    alone = [(rec, d) for rec, d in slow
             if all(reached[name] == 1 for name in rec.layer.names.values())]
    joint = [(rec, d) for rec, d in slow
             if any(reached[name] > 1 for name in rec.layer.names.values())]
    m, n = cot.shape[0], cot.shape[1]
    for rec, delta in alone:
        layer = rec.layer
        params = {local: getattr(layer.module, local) for local in layer.names}
        numel = sum(p.numel() for p in params.values())
        step = max(1, CHUNK_ELEMENTS // max(1, numel))
        for j in range(m):
            for i in range(0, n, step):
                sl = slice(i, min(i + step, n))
                out = _scratch_views(workspace, params, sl.stop - sl.start)
                _layer_into(rec, delta, j, sl, out, frozenset(out))
                for local, buf in out.items():
                    _reduce_into(sums[layer.names[local]], buf, f)
    if not joint:
        return
    numel = max(sum(p.numel() for p in rec.layer.module.parameters(recurse=False))
                for rec, _ in joint)
    step = max(1, CHUNK_ELEMENTS // max(1, numel))
    params = {name: p for rec, _ in joint for local, name in rec.layer.names.items()
              for p in (getattr(rec.layer.module, local),)}
    for j in range(m):               # one objective at a time: no (M, N, *shape) tensor
        for i in range(0, n, step):
            sl = slice(i, min(i + step, n))
            # per-sample gradients summed over every call of a layer (tied weights), in
            # buffers reused across chunks and batches: fresh tensors of this size cost as
            # much in page faults as the matmuls that fill them. A buffer's first writer
            # overwrites it (no zeroing pass); later layers go first, so a tied output head
            # writes densely before the embedding adds its rows
            acc = {name: _buffer(workspace, name, p, min(step, n))[:sl.stop - sl.start]
                   for name, p in params.items()}
            written: set[str] = set()
            for rec, delta in reversed(joint):
                layer = rec.layer
                out = {local: acc[name] for local, name in layer.names.items()}
                stale = frozenset(local for local, name in layer.names.items()
                                  if name not in written)
                written.update(layer.names.values())
                _layer_into(rec, delta, j, sl, out, stale)
            for name in written:
                _reduce_into(sums[name], acc[name], f)


def _layer_into(rec: _Record, delta: list[Tensor], j: int, sl: slice, out: dict[str, Tensor],
                stale: frozenset[str]) -> None:
    """Write (`stale` names) or add objective `j`'s per-sample gradients of samples `sl`."""
    layer = rec.layer
    inputs = _widen_all(_slice_inputs(rec.inputs, sl))
    if layer.rule.accumulate is not None:
        layer.rule.accumulate(layer.module, inputs, delta[j][0, sl], out, stale)
        return
    grads = layer.rule.per_sample(layer.module, inputs, delta[j][:, sl])
    for local, buf in out.items():
        (buf.copy_ if local in stale else buf.add_)(grads[local][0])


def _work_dtype(param: Tensor) -> torch.dtype:
    """The dtype a parameter's per-sample gradients are formed in (float32 for half)."""
    return torch.float32 if param.is_floating_point() and param.element_size() < 4 \
        else param.dtype


def _scratch_views(workspace: dict[str, Tensor], params: dict[str, Tensor],
                   rows: int) -> dict[str, Tensor]:
    """(rows, *shape) views for each of `params` into one flat buffer reused by every layer."""
    views: dict[str, Tensor] = {}
    offsets: dict[torch.dtype, int] = {}
    wanted: dict[torch.dtype, int] = {}
    for p in params.values():
        dtype = _work_dtype(p)
        wanted[dtype] = wanted.get(dtype, 0) + rows * p.numel()
    for dtype, size in wanted.items():
        key = f"<scratch {dtype}>"     # not a parameter name: those never contain "<"
        buf = workspace.get(key)
        if buf is None or buf.numel() < size:
            workspace[key] = torch.empty(size, dtype=dtype, device=next(iter(params.values()))
                                         .device)
        offsets[dtype] = 0
    for local, p in params.items():
        dtype = _work_dtype(p)
        start = offsets[dtype]
        offsets[dtype] = start + rows * p.numel()
        views[local] = workspace[f"<scratch {dtype}>"][start:offsets[dtype]].view(rows, *p.shape)
    return views


def _buffer(workspace: dict[str, Tensor], name: str, param: Tensor, rows: int) -> Tensor:
    """A (rows, *param.shape) buffer for `name`'s per-sample gradients (float32 for half)."""
    dtype = _work_dtype(param)
    buf = workspace.get(name)
    if buf is None or buf.shape[0] < rows or buf.dtype != dtype:
        buf = workspace[name] = torch.empty(rows, *param.shape, dtype=dtype, device=param.device)
    return buf


def _reduce_into(total: Tensor, g: Tensor, f: Callable[[Tensor], Tensor]) -> None:
    """Add Σ_n f(g_n) to `total` for per-sample gradients g (N, *shape); may overwrite g."""
    if f is torch.square:
        for gn in g:
            total.addcmul_(gn, gn)
    elif f is torch.abs:
        for gn in g:
            total.add_(gn.abs_())
    else:
        total.add_(f(g).sum(0))
