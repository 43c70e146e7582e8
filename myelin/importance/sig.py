"""SIG: the total absolute signal through each connection (Kutalev 2020), forward passes only.

Definitions (n samples, k the sample index):

* Dense weight w_ji (input i -> neuron j): S = |w_ji| · (1/n) Σ_k |x_k,i|. With token inputs
  (N, T, I) the signal of every token passes the same weight, so |x| is summed over tokens.
* Bias b_j: S = (1/n) Σ_k |y_k,j|, the neuron's output *after its activation* when the layer's
  output goes straight into an activation module (ReLU, LeakyReLU, GELU, Tanh, Softmax, ... —
  Dropout/Identity are looked through); the softmax probabilities when the layer's output is the
  model's output (a classifier's last layer, ``last_layer="softmax"``); otherwise the layer's own
  output |y| (e.g. a conv followed by BatchNorm, or an activation applied with ``torch.relu``
  inside ``forward``, which hooks cannot see; an output changed in place by such an operation,
  ``F.relu_(y)`` or ``y += r``, is read after the change). Summed over tokens/positions.
* Conv weight w[o, c, u, v]: the same weight carries signal at every output position p, from
  input pixel x[c, p·s + (u, v)·d] (zero-padded as the layer pads), so
  S = |w[o, c, u, v]| · (1/n) Σ_k Σ_p |x_k[c, p·s + (u, v)·d]|: |w| times the summed |input|
  seen by that kernel tap. Σ_k commutes with the unfold, so this costs one unfold of Σ_k |x_k|.
  Grouped convs read the input channels of their own group. Conv bias: Σ over positions.
* Embedding row v: the input is one-hot, so S[v, :] = |w[v, :]| · (1/n) Σ_k count_k(v). Ids
  looked up once for a whole batch of token ids (position ids of shape (1, T), as GPT-2 and
  BERT build them) serve every sample: counted once per sample, padding excluded.
* BatchNorm/LayerNorm/GroupNorm affine: y = γ ⊙ x̂ + β, so S_γ = |γ| · (1/n) Σ_k Σ |x̂_k| and
  S_β like a bias (x̂ as the layer normalises it in eval mode).
* MultiheadAttention: the q/k/v projections are dense layers on query/key/value; their biases
  use |projection output|; the output projection's input (the concatenated heads, not visible to
  hooks) is recomputed by the attention with an identity output projection; its bias uses
  |attention output|.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._progress import progress_bar
from ..distributed import reduce_over_ranks, reduced_world_size, unwrap
from ..losses import call_model, default_loss
from ._rules import (
    batchnorm_xhat,
    conv_patches,
    groupnorm_xhat,
    hf_rmsnorm_xhat,
    is_hf_conv1d,
    is_hf_rmsnorm,
    layernorm_xhat,
    lookup_by_type,
    rmsnorm_xhat,
)
from .base import (
    Importance,
    accumulation_dtype,
    all_finite,
    batch_len,
    check_token_ids,
    eval_mode,
    iter_batches,
    loss_view,
    model_error,
    trainable_parameters,
)

__all__ = ["signal"]

ACTIVATIONS: dict[type[nn.Module], Callable[[Tensor], Tensor]] = {
    t: (lambda y: y) for t in (
        nn.ReLU, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid,
        nn.Tanh, nn.Softplus, nn.Hardtanh, nn.ReLU6, nn.Hardswish, nn.Hardsigmoid, nn.Softsign,
        nn.Tanhshrink, nn.LogSigmoid, nn.Softmax, nn.Softmin)
}
ACTIVATIONS[nn.LogSoftmax] = torch.exp  # report probabilities, as for the last layer
PASS_THROUGH = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
                nn.Identity)

Reducer = Callable[[Tensor], Tensor]


# Measured on 2 cores: for column sums of (N, I), abs().sum(0) is 7x faster than
# vector_norm(ord=1); for (N, C, H, W) over (0, 2, 3), the fused vector_norm is 2x faster.
# Every sum is taken in float32 or wider (`accumulation_dtype`): a bfloat16 model's signal
# summed in bfloat16 over many batches stalls far below the true total.
def _sum_last(y: Tensor) -> Tensor:
    """Σ |y| over every dimension but the last."""
    return y.abs().sum(tuple(range(y.dim() - 1)), dtype=accumulation_dtype(y.dtype))


def _sum_channel1(y: Tensor) -> Tensor:
    """Σ |y| over every dimension but dim 1."""
    return torch.linalg.vector_norm(y, 1, dim=(0, *range(2, y.dim())),
                                    dtype=accumulation_dtype(y.dtype))


@dataclass
class _Signal:
    """Per-layer signal sums: factors multiply |param|; bias sums are used as they are."""

    factors: dict[str, Tensor]                 # local name -> Σ_k |input| broadcastable to param
    sums: dict[str, Tensor] = field(default_factory=dict)  # local name -> Σ_k |output|
    bias: str | None = None                    # local name whose sum comes from `reducer`
    reducer: Reducer | None = None


def _linear(module: nn.Linear, args, kwargs, output) -> _Signal:
    return _Signal({"weight": _sum_last(args[0])}, bias="bias", reducer=_sum_last)


def _conv(module: nn.Conv1d | nn.Conv2d, args, kwargs, output) -> _Signal:
    x = args[0]
    if x.dim() == module.weight.dim() - 1:  # unbatched
        x = x.unsqueeze(0)
    total = torch.linalg.vector_norm(x, 1, dim=0, keepdim=True,  # Σ_k |x_k|, (1, C, *S)
                                     dtype=accumulation_dtype(x.dtype))
    taps = conv_patches(module, total).sum(-1).reshape(-1)       # (C*kk,)
    g, out_ch = module.groups, module.weight.shape[0]
    taps = taps.reshape(g, 1, -1).expand(g, out_ch // g, -1)     # group's own input channels
    return _Signal({"weight": taps.reshape(module.weight.shape)}, bias="bias",
                   reducer=_sum_channel1 if output.dim() == x.dim() else _sum_last)


def _embedding(module: nn.Embedding, args, kwargs, output,
               mask: Tensor | None = None) -> _Signal:
    ids = args[0].reshape(-1)
    dtype = accumulation_dtype(module.weight.dtype)   # bfloat16 counts are exact only to 256
    weights = None if mask is None else mask.reshape(-1).to(dtype)
    counts = torch.bincount(ids, weights=weights, minlength=module.num_embeddings)
    return _Signal({"weight": counts.to(dtype).unsqueeze(1)})


def _hf_conv1d(module: nn.Module, args, kwargs, output) -> _Signal:
    # weight (in, out): the signal of input i passes every w[i, :]
    return _Signal({"weight": _sum_last(args[0]).unsqueeze(1)}, bias="bias", reducer=_sum_last)


def _rmsnorm(module: nn.Module, args, kwargs, output) -> _Signal:
    x = args[0]
    if isinstance(module, nn.RMSNorm):
        shape = tuple(module.normalized_shape)
        x_hat = rmsnorm_xhat(module, x)
        return _Signal({"weight": x_hat.abs().sum(tuple(range(x.dim() - len(shape))),
                                                  dtype=accumulation_dtype(x_hat.dtype))})
    return _Signal({"weight": _sum_last(hf_rmsnorm_xhat(module, x))})


def _batchnorm(module, args, kwargs, output) -> _Signal:
    x = args[0]
    if module.running_mean is None:
        x_hat = F.batch_norm(x, None, None, None, None, True, 0.0, module.eps)
    else:
        x_hat = batchnorm_xhat(module, x)
    return _Signal({"weight": _sum_channel1(x_hat)}, bias="bias", reducer=_sum_channel1)


def _groupnorm(module: nn.GroupNorm, args, kwargs, output) -> _Signal:
    return _Signal({"weight": _sum_channel1(groupnorm_xhat(module, args[0]))}, bias="bias",
                   reducer=_sum_channel1)


def _layernorm(module: nn.LayerNorm, args, kwargs, output) -> _Signal:
    shape = tuple(module.normalized_shape)

    def reducer(y: Tensor) -> Tensor:
        return y.abs().sum(tuple(range(y.dim() - len(shape))), dtype=accumulation_dtype(y.dtype))

    return _Signal({"weight": reducer(layernorm_xhat(module, args[0]))}, bias="bias",
                   reducer=reducer)


_MHA_SIGNATURE = inspect.signature(nn.MultiheadAttention.forward)


def _mha(module: nn.MultiheadAttention, args, kwargs, output) -> _Signal:
    if module.bias_k is not None:
        raise TypeError("SIG is not defined for MultiheadAttention(add_bias_kv=True): the "
                        "learned key/value tokens carry no input signal.")
    a = _MHA_SIGNATURE.bind(module, *args, **kwargs)
    a.apply_defaults()
    q, k, v = a.arguments["query"], a.arguments["key"], a.arguments["value"]
    e = module.embed_dim
    if module._qkv_same_embed_dim:
        wq, wk, wv = module.in_proj_weight.split(e)
    else:
        wq, wk, wv = module.q_proj_weight, module.k_proj_weight, module.v_proj_weight
    bq = bk = bv = None
    if module.in_proj_bias is not None:
        bq, bk, bv = module.in_proj_bias.split(e)
    fq, fk, fv = _sum_last(q), _sum_last(k), _sum_last(v)
    factors: dict[str, Tensor] = {}
    sums: dict[str, Tensor] = {}
    if module._qkv_same_embed_dim:
        factors["in_proj_weight"] = torch.cat([fq.expand(e, -1), fk.expand(e, -1),
                                               fv.expand(e, -1)])
    else:
        factors.update(q_proj_weight=fq, k_proj_weight=fk, v_proj_weight=fv)
    if bq is not None:
        sums["in_proj_bias"] = torch.cat([_sum_last(F.linear(q, wq, bq)),
                                          _sum_last(F.linear(k, wk, bk)),
                                          _sum_last(F.linear(v, wv, bv))])
    # the heads' concatenation, via the same attention with an identity output projection
    qq, kk, vv = q, k, v
    if module.batch_first and q.dim() == 3:
        qq, kk, vv = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)
    eye = torch.eye(e, dtype=q.dtype, device=q.device)
    heads, _ = F.multi_head_attention_forward(
        qq, kk, vv, e, module.num_heads, module.in_proj_weight, module.in_proj_bias,
        None, None, module.add_zero_attn, 0.0, eye, torch.zeros_like(eye[0]), training=False,
        key_padding_mask=a.arguments["key_padding_mask"], need_weights=False,
        attn_mask=a.arguments["attn_mask"],
        use_separate_proj_weight=not module._qkv_same_embed_dim,
        q_proj_weight=module.q_proj_weight, k_proj_weight=module.k_proj_weight,
        v_proj_weight=module.v_proj_weight, is_causal=a.arguments["is_causal"])
    factors["out_proj.weight"] = _sum_last(heads)
    if module.out_proj.bias is not None:
        sums["out_proj.bias"] = _sum_last(output[0])
    return _Signal(factors, sums)


HANDLERS: dict[type[nn.Module], Callable[..., _Signal]] = {
    nn.Linear: _linear, nn.Conv1d: _conv, nn.Conv2d: _conv, nn.Embedding: _embedding,
    nn.BatchNorm1d: _batchnorm, nn.BatchNorm2d: _batchnorm, nn.BatchNorm3d: _batchnorm,
    nn.LayerNorm: _layernorm, nn.GroupNorm: _groupnorm, nn.MultiheadAttention: _mha,
    nn.RMSNorm: _rmsnorm,
}
# layers recognised by structure (Hugging Face's copies of one layer under many class names)
STRUCTURAL_HANDLERS: list[tuple[Callable[[nn.Module], bool], Callable[..., _Signal]]] = [
    (is_hf_conv1d, _hf_conv1d), (is_hf_rmsnorm, _rmsnorm)]


@dataclass
class _Layer:
    name: str
    module: nn.Module
    handler: Callable[..., _Signal]
    params: dict[str, str]                     # local name -> model parameter name
    calls: int = 0


def _plan(model: nn.Module, params: dict[str, nn.Parameter]) -> list[_Layer]:
    id2name = {id(p): n for n, p in params.items()}
    layers: list[_Layer] = []
    covered: set[str] = set()
    for mod_name, module in model.named_modules():
        own = {ln: id2name[id(p)] for ln, p in module.named_parameters(recurse=False)
               if id(p) in id2name}
        handler = lookup_by_type(HANDLERS, module)
        if handler is None:
            handler = next((h for match, h in STRUCTURAL_HANDLERS if match(module)), None)
        if handler is _mha:  # owns its out_proj's parameters too
            own = {ln: id2name[id(p)] for ln, p in module.named_parameters() if id(p) in id2name}
        # (a parameter shared by two layers, e.g. tied input/output embeddings, carries the
        # signal of both: their factors add up)
        own = {ln: n for ln, n in own.items() if n not in covered}
        if not own:
            continue
        if handler is None and isinstance(module, nn.RNNBase):
            raise TypeError(
                f"SIG is not defined for recurrent layers: layer {mod_name or '<model>'!r} "
                f"({type(module).__name__}) holds trainable parameters {sorted(own)}, and "
                "the signal through a weight reused at every time step has no definition in "
                "the method (Kutalev 2020). Use fisher or mas for this model."
            )
        if handler is None:
            raise TypeError(
                f"SIG has no rule for layer {mod_name or '<model>'!r} "
                f"({type(module).__name__}), which holds trainable parameters "
                f"{sorted(own)}. Supported: {', '.join(t.__name__ for t in HANDLERS)}."
            )
        if handler is _mha:
            covered.update(own.values())
        layers.append(_Layer(mod_name, module, handler, own))
    return layers


def _output_logits(output: Any) -> Tensor:
    """The model's output tensor, or the ``.logits`` of a Hugging Face style output."""
    if isinstance(output, Tensor):
        return output
    logits = output.get("logits") if isinstance(output, Mapping) else getattr(output, "logits",
                                                                                None)
    if isinstance(logits, Tensor):
        return logits
    raise TypeError(f"signal needs a model returning a tensor of outputs (or an output with a "
                    f".logits tensor, as Hugging Face models return); this model returned "
                    f"{type(output).__name__}. Wrap it so that it returns the output tensor, or "
                    "pass loss= with a logits(output) method.")


def _raise_non_finite(x: Any, start: int) -> None:
    """Name the NaN/inf source: the input batch (the data), else the weights."""
    inputs = x.values() if isinstance(x, Mapping) else [x]
    if not all(all_finite(t) for t in inputs if isinstance(t, Tensor)):
        raise ValueError(f"data: the input batch starting at sample {start} contains NaN or "
                         "inf.")
    raise ValueError(f"The model's outputs are NaN or inf for the batch at sample {start} "
                     "although its inputs are finite: check the model's weights.")


def signal(
    model: nn.Module,
    data: Any,
    *,
    last_layer: str = "softmax",
    batch_size: int = 512,
    max_samples: int | None = None,
    progress: bool | None = None,
    loss: Any = None,
    seed: int | None = None,
    distributed: bool = True,
) -> Importance:
    """Estimate SIG, the mean total absolute signal through each weight and bias.

    Forward passes only (no gradients), batched; see the module docstring for every layer's form.

    Args:
        model: Any network built from Linear, Conv1d/2d, Embedding, BatchNorm, LayerNorm,
            GroupNorm, RMSNorm and MultiheadAttention layers (a layer of another kind holding
            trainable parameters, e.g. an RNN/GRU/LSTM, raises TypeError), returning an output
            tensor or an output with ``.logits``. Its train/eval mode is restored.
        data: A DataLoader or iterable of batches, a Dataset, an (X, Y) pair or a tensor X of
            shape (N, ...). Labels are not used.
        last_layer: "softmax": a Linear layer whose output is the model's output reports the
            mean softmax probability as its bias signal (the authors' choice); "linear": |y|.
        batch_size: Batch size for pairs, tensors and datasets.
        max_samples: Use at most this many samples.
        progress: Progress bar over batches (None: only on a terminal).
        loss: The training loss whose view of the output to use (its ``logits(output)``,
            e.g. a class-masked `myelin.losses.CrossEntropy`); None: the raw output.
        seed: Unused (this estimator draws no random numbers); accepted so that every
            registered estimator takes the same arguments.
        distributed: Under an initialised torch.distributed process group (every rank calls,
            each with its own shard; `max_samples` is per rank), sum the signal and the sample
            counts over all ranks: every rank gets the union's SIG (`myelin.distributed`).
            False: this rank's data only. A DDP-wrapped model is accepted (its inner module's
            parameter names).

    Returns:
        Importance with one non-negative tensor per trainable parameter, in float32 for a
        half-precision model (float64 for a float64 one): the sums are accumulated in it.

    Raises:
        TypeError: A layer SIG has no definition for (named), or a model output that is
            neither a tensor nor has ``.logits`` (its type named).
        ValueError: Empty data, NaN/inf inputs or outputs, no trainable parameters, bad
            batch_size/max_samples, an (X, Y) pair of different lengths.

    """
    if last_layer not in ("softmax", "linear"):
        raise ValueError(f"last_layer must be 'softmax' or 'linear'. Got {last_layer!r}.")
    model = unwrap(model)     # run the inner module: DDP's forward has collectives of its own
    loss = default_loss(model) if loss is None else loss
    unused: list[str] = []

    def rank_sums() -> tuple[dict[str, Tensor], int]:
        """Σ_k |p| ⊙ factor (or Σ_k of the bias signal) per parameter, on this rank's data."""
        params = trainable_parameters(model)
        if not params:
            raise ValueError("model has no trainable parameters (all have requires_grad=False).")
        layers = _plan(model, params)
        first = next(iter(params.values()))
        factors: dict[str, Tensor] = {}
        sums: dict[str, Tensor] = {}
        # id(tensor) -> (tensor, key into `pending`, already activated?) for the current batch
        live: dict[int, tuple[Tensor, int, bool]] = {}
        # per layer call: the bias signal once known, else the raw output, reduced after the forward
        # only if no activation claimed it (saves a pass over every activated output)
        pending: list[tuple[_Layer, _Signal, Tensor | None, Tensor]] = []

        def add(store: dict[str, Tensor], name: str, value: Tensor) -> None:
            value = value.to(accumulation_dtype(value.dtype))
            store[name] = value if name not in store else store[name] + value

        def tracked(t: Any) -> tuple[int, bool] | None:
            entry = live.get(id(t)) if isinstance(t, Tensor) else None
            return None if entry is None or entry[0] is not t else entry[1:]

        token_mask: list[Tensor] = []            # the batch's attention_mask (N, T), if any
        token_shape: list[tuple[int, ...]] = []  # the batch's token ids shape (N, T), if any

        def masked(t: Any) -> Any:
            """Padding positions zeroed: they carry no signal of a sample."""
            if not token_mask or not isinstance(t, Tensor) or not t.is_floating_point():
                return t
            m = token_mask[0]
            if t.dim() < 2 or tuple(t.shape[:2]) != tuple(m.shape):
                return t
            return t * m.reshape(*m.shape, *([1] * (t.dim() - 2))).to(t.dtype)

        def layer_hook(layer: _Layer, module, args, kwargs, output) -> None:
            layer.calls += 1
            if layer.handler is _embedding:
                ids = args[0]
                if token_shape and ids.dim() == 2 and ids.shape[0] == 1 \
                        and token_shape[0][0] > 1 and ids.shape[1] == token_shape[0][1]:
                    # one row of ids for the whole batch (GPT-2's and BERT's position ids):
                    # its lookup is broadcast to, and carries signal for, every sample
                    ids = ids.expand(token_shape[0])
                mask = token_mask[0] if token_mask and tuple(ids.shape) == tuple(
                    token_mask[0].shape) else None
                sig = _embedding(module, (ids, *args[1:]), kwargs, output, mask)
            else:
                sig = layer.handler(module, tuple(masked(a) for a in args), kwargs, masked(output))
            for local, v in sig.factors.items():
                if local in layer.params:
                    add(factors, layer.params[local], v)
            for local, v in sig.sums.items():
                if local in layer.params:
                    add(sums, layer.params[local], v)
            if sig.bias in layer.params and isinstance(output, Tensor):
                live[id(output)] = (output, len(pending), False)
                pending.append((layer, sig, None, masked(output)))

        def act_hook(transform, module, args, output) -> None:
            entry = tracked(args[0]) if args else None
            if entry is None or not isinstance(output, Tensor):
                return
            key, activated = entry
            if transform is not None:
                layer, sig, _, raw = pending[key]
                pending[key] = (layer, sig, sig.reducer(masked(transform(output))), raw)
                activated = True
            live[id(output)] = (output, key, activated)

        handles = []
        try:
            for layer in layers:
                handles.append(layer.module.register_forward_hook(
                    lambda m, a, kw, o, layer=layer: layer_hook(layer, m, a, kw, o),
                    with_kwargs=True))
            for module in model.modules():
                act = ACTIVATIONS.get(type(module))
                if act is not None or isinstance(module, PASS_THROUGH):
                    handles.append(module.register_forward_hook(
                        lambda m, a, o, act=act: act_hook(act, m, a, o)))
            n = 0
            with eval_mode(model), torch.no_grad(), loss_view(model, loss):
                # NaN/inf inputs surface in the outputs, checked below: one pass fewer over x
                batches = iter_batches(data, batch_size=batch_size, max_samples=max_samples,
                                       device=first.device, dtype=first.dtype, check_finite=False)
                for x, _ in progress_bar(batches, progress=progress, desc="signal", unit="batch"):
                    live.clear()
                    pending.clear()
                    token_mask.clear()
                    token_shape.clear()
                    check_token_ids(model, x)
                    if isinstance(x, dict) and isinstance(x.get("attention_mask"), Tensor) \
                            and x["attention_mask"].dim() == 2:
                        token_mask.append(x["attention_mask"])
                        token_shape.append(tuple(x["attention_mask"].shape))
                    else:
                        ids = x.get("input_ids") if isinstance(x, dict) else x
                        if isinstance(ids, Tensor) and ids.dim() == 2 \
                                and not ids.is_floating_point():
                            token_shape.append(tuple(ids.shape))
                    try:
                        out = _output_logits(call_model(model, x))
                    except RuntimeError as err:
                        if type(err) is not RuntimeError:
                            raise
                        raise model_error(err, x, n) from err
                    if not all_finite(out):
                        _raise_non_finite(x, n)
                    entry = tracked(out)
                    if last_layer == "softmax" and entry is not None and not entry[1]:
                        layer, sig, _, raw = pending[entry[0]]
                        if isinstance(layer.module, nn.Linear):
                            prob = F.softmax(out, dim=-1, dtype=accumulation_dtype(out.dtype))
                            pending[entry[0]] = (layer, sig, sig.reducer(prob), raw)
                    for layer, sig, value, raw in pending:
                        add(sums, layer.params[sig.bias],
                            sig.reducer(raw) if value is None else value)
                    n += batch_len(x)
        finally:
            for h in handles:
                h.remove()
            live.clear()
            pending.clear()
        totals: dict[str, Tensor] = {}
        for name, p in params.items():
            if name in factors:
                totals[name] = p.detach().abs() * factors[name]
            elif name in sums:
                totals[name] = sums[name]
            else:
                totals[name] = torch.zeros_like(p, dtype=accumulation_dtype(p.dtype))
        unused.extend(la.name for la in layers if la.calls == 0)
        return totals, n

    totals, n = reduce_over_ranks(rank_sums, "signal", distributed)
    values = {name: total / n for name, total in totals.items()}
    if unused:
        warnings.warn(f"Layers never called in the forward pass get zero signal: {unused}",
                      stacklevel=2)
    meta = {"estimator": "signal", "last_layer": last_layer, "n_samples": n}
    if reduced_world_size(distributed) > 1:
        meta["world_size"] = reduced_world_size(distributed)
    return Importance(values, meta)
