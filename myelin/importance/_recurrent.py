"""RNN, GRU and LSTM layers in plain tensor operations, so that torch.func can vmap them.

The per-sample gradients of a recurrent layer's parameters come from the generic torch.func
path (vmap over samples of a vector-Jacobian product): the weights are shared over time steps,
so no rule of the form Σ_n f(δ_n xₙᵀ) applies. PyTorch's fused kernels have no batching rule
(``_VF.gru`` and ``_VF.rnn_tanh`` fail inside vmap; ``_VF.lstm`` falls back to a loop over the
samples), so while that path runs, `vmappable_recurrent_layers` gives each stock `nn.RNN`,
`nn.GRU` and `nn.LSTM` a forward written in `F.linear`, sigmoid and tanh, step by step: the
same equations as the PyTorch documentation's, hence the same gradients up to rounding.

Covered: any number of layers, bidirectional, ``batch_first``, no bias, ``nonlinearity="relu"``,
LSTM ``proj_size``, unbatched inputs, an initial state passed by the model. Not covered:
`PackedSequence` inputs (the generic path then falls back to one sample at a time, exact) and
inter-layer dropout in training mode (estimators run in eval mode, where it is off).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

__all__ = ["recurrent_forward", "vmappable_recurrent_layers"]

_STOCK = (nn.RNN.forward, nn.GRU.forward, nn.LSTM.forward)


def _step(mode: str, gi: Tensor, h: Tensor, c: Tensor | None, w_hh: Tensor,
          b_hh: Tensor | None, w_hr: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """One time step: gi = W_ih x_t + b_ih precomputed, (h, c) the previous state."""
    gh = F.linear(h, w_hh, b_hh)
    if mode == "LSTM":
        i, f, g, o = (gi + gh).chunk(4, -1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return (h if w_hr is None else F.linear(h, w_hr)), c
    if mode == "GRU":
        i_r, i_z, i_n = gi.chunk(3, -1)
        h_r, h_z, h_n = gh.chunk(3, -1)
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)
        return (1 - z) * n + z * h, None
    pre = gi + gh
    return (torch.tanh(pre) if mode == "RNN_TANH" else torch.relu(pre)), None


def recurrent_forward(module: nn.RNNBase, input: Any, hx: Any = None) -> tuple[Tensor, Any]:
    """What ``module(input, hx)`` computes, for a stock `nn.RNN`, `nn.GRU` or `nn.LSTM`."""
    if isinstance(input, PackedSequence):
        # the message names vmap: the generic path then runs one sample at a time instead
        raise RuntimeError(f"vmap of {type(module).__name__} with a PackedSequence input is "
                           "not supported.")
    mode = module.mode
    batched = input.dim() == 3
    x = input if batched else input.unsqueeze(1)             # unbatched: (T, I) -> (T, 1, I)
    if batched and module.batch_first:
        x = x.transpose(0, 1)                                # (T, N, I)
    steps, n = x.shape[0], x.shape[1]
    dirs = 2 if module.bidirectional else 1
    out_size = module.proj_size if module.proj_size > 0 else module.hidden_size
    h0: Any
    c0: Any = None
    if hx is None:
        h0 = x.new_zeros(module.num_layers * dirs, n, out_size)
        if mode == "LSTM":
            c0 = x.new_zeros(module.num_layers * dirs, n, module.hidden_size)
    else:
        h0, c0 = hx if mode == "LSTM" else (hx, None)
        if not batched:                                      # (L·D, H) -> (L·D, 1, H)
            h0 = h0.unsqueeze(1)
            c0 = None if c0 is None else c0.unsqueeze(1)
    layer_input = x
    h_last: list[Tensor] = []
    c_last: list[Tensor] = []
    for layer in range(module.num_layers):
        outputs = []
        for direction in range(dirs):
            suffix = f"_l{layer}" + ("_reverse" if direction else "")
            w_ih = getattr(module, f"weight_ih{suffix}")
            w_hh = getattr(module, f"weight_hh{suffix}")
            b_ih = getattr(module, f"bias_ih{suffix}") if module.bias else None
            b_hh = getattr(module, f"bias_hh{suffix}") if module.bias else None
            w_hr = getattr(module, f"weight_hr{suffix}") if module.proj_size > 0 else None
            k = layer * dirs + direction
            h, c = h0[k], (None if c0 is None else c0[k])
            gi = F.linear(layer_input, w_ih, b_ih)            # every step's input part at once
            ys: list[Tensor] = [h] * steps
            for t in (range(steps) if direction == 0 else range(steps - 1, -1, -1)):
                h, c = _step(mode, gi[t], h, c, w_hh, b_hh, w_hr)
                ys[t] = h
            outputs.append(torch.stack(ys) if steps else x.new_zeros(0, n, out_size))
            h_last.append(h)
            if c is not None:
                c_last.append(c)
        layer_input = outputs[0] if dirs == 1 else torch.cat(outputs, -1)
    output, h_n = layer_input, torch.stack(h_last)
    c_n = torch.stack(c_last) if c_last else None
    if batched and module.batch_first:
        output = output.transpose(0, 1)
    if not batched:
        output, h_n = output.squeeze(1), h_n.squeeze(1)
        c_n = None if c_n is None else c_n.squeeze(1)
    return output, ((h_n, c_n) if mode == "LSTM" else h_n)


@contextlib.contextmanager
def vmappable_recurrent_layers(model: nn.Module) -> Iterator[None]:
    """Within the block, every stock RNN/GRU/LSTM of `model` runs `recurrent_forward`."""
    patched = [m for m in model.modules() if isinstance(m, nn.RNNBase)
               and type(m).forward in _STOCK and "forward" not in vars(m)]
    for m in patched:
        m.forward = lambda input, hx=None, m=m: recurrent_forward(m, input, hx)
    try:
        yield
    finally:
        for m in patched:
            del m.forward
