"""Per-layer rules turning a layer's input and output-gradient into per-sample parameter gradients.

Conventions: ``inputs`` is the tuple of positional tensors the layer was called with (detached);
``delta`` is the gradient of each sample's objective w.r.t. the layer's output, with a leading
axis M for several objectives per sample (M = 1 except for the exact Fisher, M = C):
shape (M, N, *output.shape[1:]). A rule's ``per_sample`` returns, per local parameter name, a
tensor of shape (M, N, *param.shape) — the exact per-sample gradients. Its optional ``reduce``
returns Σ_m Σ_n f(g_mn) directly, for an elementwise ``f`` in {square, abs, identity} that is
multiplicative (f(ab) = f(a) f(b)); it returns None where no shortcut applies.

Linear (2-D input): g_n = δ_n x_nᵀ is rank one, so Σ_n f(g_n) = f(δ)ᵀ f(x): one matmul, no
per-sample tensor (BackPACK's observation). Conv: per-sample weight gradients by vmap of the
layer's weight-gradient op, which PyTorch runs as one grouped convolution (no unfold copy).
Embedding: row-sparse per-sample gradients summed per (sample, token id) with index_add.
Norm layers: per-sample gradients are (N, C), cheap to materialise.

For a half-precision layer (bfloat16, float16) ``inputs`` and ``delta`` arrive in float32 (the
layer's own parameters keep their dtype: cast them before a matmul with the inputs), so that
f(g) neither underflows (δ² in float16) nor is rounded to 8 bits before it is summed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import vmap

__all__ = ["RULES", "STRUCTURAL", "Rule", "find_rule", "hf_rmsnorm_xhat", "is_hf_conv1d",
           "is_hf_rmsnorm", "lookup_by_type", "register_rule", "rmsnorm_xhat", "same_code"]

T = TypeVar("T")

PerSample = Callable[[nn.Module, tuple[Tensor, ...], Tensor], dict[str, Tensor]]
Reduce = Callable[[nn.Module, tuple[Tensor, ...], Tensor, Callable[[Tensor], Tensor]],
                  "dict[str, Tensor] | None"]
Accumulate = Callable[[nn.Module, tuple[Tensor, ...], Tensor, dict[str, Tensor], frozenset[str]],
                      None]


@dataclass(frozen=True)
class Rule:
    """How to get per-sample gradients of one layer type's own parameters."""

    per_sample: PerSample
    reduce: Reduce | None = None
    supports: Callable[[nn.Module], bool] | None = None
    accumulate: Accumulate | None = None


RULES: dict[type[nn.Module], Rule] = {}
# layers recognised by what they are rather than by class: Hugging Face's many copies of one
# layer (LlamaRMSNorm, Qwen2RMSNorm, ...) and classes of an optional package (transformers)
STRUCTURAL: list[tuple[Callable[[nn.Module], bool], Rule]] = []


def register_rule(module_type: type[nn.Module], per_sample: PerSample,
                  reduce: Reduce | None = None,
                  supports: Callable[[nn.Module], bool] | None = None,
                  accumulate: Accumulate | None = None) -> None:
    """Teach the gradient estimators a layer type (used when its ``forward`` is not overridden).

    Args:
        module_type: The layer class.
        per_sample: ``(module, inputs, delta) -> {param_name: (M, N, *param.shape)}``
            (inputs and delta in float32 for a half-precision layer; see the module docstring).
        reduce: Optional shortcut ``(module, inputs, delta, f) -> {param_name: Σ f(g)}`` or None.
        supports: Optional predicate; a layer it rejects goes to the generic fallback.
        accumulate: Optional in-place form of `per_sample` for one objective:
            ``(module, inputs, delta (N, *output.shape[1:]), out, stale) -> None`` adds each
            sample's gradient into ``out[param_name]`` (N, *param.shape), a reused buffer, for
            the parameters ``out`` names (the trainable ones); a buffer named in ``stale``
            holds leftover values and is overwritten instead. Saves allocating per-sample
            tensors.

    """
    if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
        raise TypeError(f"module_type must be an nn.Module subclass. Got {module_type!r}.")
    RULES[module_type] = Rule(per_sample, reduce, supports, accumulate)


def lookup_by_type(table: Mapping[type[nn.Module], T], module: nn.Module) -> T | None:
    """The entry for `module`'s class or a base class whose ``forward`` it does not override.

    A subclass with its own ``forward`` may compute something else, so it gets no entry.
    """
    cls = type(module)
    for base in cls.__mro__:
        if base in table and cls.forward is base.forward:
            return table[base]
    return None


def find_rule(module: nn.Module) -> Rule | None:
    """The per-sample rule for `module`, if one applies to its class and configuration."""
    rule = lookup_by_type(RULES, module)
    if rule is None:
        rule = next((r for match, r in STRUCTURAL if match(module)), None)
    return rule if rule is None or rule.supports is None or rule.supports(module) else None


def same_code(fn: Any, reference: Callable[..., Any]) -> bool:
    """True if `fn` compiles to the same bytecode, names and constants as `reference`."""
    code, ref = getattr(fn, "__code__", None), reference.__code__
    return (code is not None and code.co_code == ref.co_code and code.co_names == ref.co_names
            and code.co_consts[1:] == ref.co_consts[1:] and code.co_varnames == ref.co_varnames)


def is_hf_conv1d(module: nn.Module) -> bool:
    """Hugging Face's GPT-2 style ``Conv1D`` (a dense layer with weight (in, out))."""
    cls = type(module)
    return (cls.__name__ == "Conv1D" and cls.__module__.startswith("transformers")
            and hasattr(module, "nf") and getattr(module, "weight", None) is not None
            and module.weight.dim() == 2)


def _llama_rmsnorm_forward(self, hidden_states):  # compared by bytecode: keep it verbatim
    input_dtype = hidden_states.dtype
    hidden_states = hidden_states.to(torch.float32)
    variance = hidden_states.pow(2).mean(-1, keepdim=True)
    hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
    return self.weight * hidden_states.to(input_dtype)


def is_hf_rmsnorm(module: nn.Module) -> bool:
    """A Hugging Face RMSNorm computing exactly Llama's ``weight * x̂`` (not Gemma's 1 + w)."""
    return (hasattr(module, "variance_epsilon") and isinstance(getattr(module, "weight", None),
                                                                 nn.Parameter)
            and same_code(type(module).forward, _llama_rmsnorm_forward))


def hf_rmsnorm_xhat(module: nn.Module, x: Tensor) -> Tensor:
    """x̂ of a Llama-style RMSNorm: x·rsqrt(mean x² + ε) in float32, cast back to x's dtype."""
    x32 = x.to(torch.float32)
    return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + module.variance_epsilon)).to(
        x.dtype)


def rmsnorm_xhat(module: nn.RMSNorm, x: Tensor, eps_dtype: torch.dtype | None = None) -> Tensor:
    """x̂ of ``torch.nn.RMSNorm`` over its trailing ``normalized_shape`` dims.

    With ``eps=None`` the layer uses the machine epsilon of the dtype it ran in: `eps_dtype`
    (default ``x.dtype``; the rules pass the layer's own dtype, as they get float32 inputs).
    """
    dims = tuple(range(x.dim() - len(module.normalized_shape), x.dim()))
    eps = module.eps if module.eps is not None else torch.finfo(eps_dtype or x.dtype).eps
    return x * torch.rsqrt(x.pow(2).mean(dims, keepdim=True) + eps)


# Linear ----------------------------------------------------------------------------------------
def _linear_per_sample(module: nn.Linear, inputs: tuple[Tensor, ...], delta: Tensor):
    x = inputs[0]
    x3 = x.reshape(x.shape[0], -1, x.shape[-1])                    # (N, T, I)
    d4 = delta.reshape(delta.shape[0], delta.shape[1], -1, delta.shape[-1])  # (M, N, T, O)
    out = {"weight": torch.einsum("mnto,nti->mnoi", d4, x3)}
    if module.bias is not None:
        out["bias"] = d4.sum(2)
    return out


def _linear_reduce(module: nn.Linear, inputs, delta, f):
    x = inputs[0]
    if x.dim() != 2:
        return None  # tokens: g_n = Σ_t δ_nt x_ntᵀ is not rank one
    fd = f(delta).sum(0)                                             # (N, O)
    out = {"weight": fd.t() @ f(x)}
    if module.bias is not None:
        out["bias"] = fd.sum(0)
    return out


def _linear_accumulate(module: nn.Linear, inputs, delta, out, stale):
    x = inputs[0]
    x3 = x.reshape(x.shape[0], -1, x.shape[-1])                    # (N, T, I)
    d3 = delta.reshape(delta.shape[0], -1, delta.shape[-1])        # (N, T, O)
    if "weight" in out:                                             # Σ_t δ_nt x_ntᵀ
        out["weight"].baddbmm_(d3.transpose(1, 2), x3, beta=0 if "weight" in stale else 1)
    if "bias" in out:
        _add_or_set(out["bias"], d3.sum(1), "bias" in stale)


def _add_or_set(buf: Tensor, value: Tensor, stale: bool) -> None:
    """Set `buf` to `value` if `stale`, else add `value` to it."""
    (buf.copy_ if stale else buf.add_)(value)


register_rule(nn.Linear, _linear_per_sample, _linear_reduce, accumulate=_linear_accumulate)


# Conv1d / Conv2d -------------------------------------------------------------------------------
def conv_patches(module: nn.Conv1d | nn.Conv2d, x: Tensor) -> Tensor:
    """Unfold the (padded) input into kernel patches: (N, C*prod(kernel), P)."""
    pad = module._reversed_padding_repeated_twice
    if any(pad):
        mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
        x = F.pad(x, pad, mode=mode)
    if isinstance(module, nn.Conv1d):
        x = x.unsqueeze(2)
        k, d, s = (1, *module.kernel_size), (1, *module.dilation), (1, *module.stride)
    else:
        k, d, s = module.kernel_size, module.dilation, module.stride
    return F.unfold(x, k, dilation=d, stride=s)


def _conv_per_sample(module: nn.Conv1d | nn.Conv2d, inputs, delta):
    x = inputs[0]
    if x.dim() == module.weight.dim() - 1:
        raise ValueError(f"{type(module).__name__} got an unbatched input; "
                         "importance estimation needs a leading sample dimension.")
    padding = module.padding
    if module.padding_mode != "zeros" or isinstance(padding, str):  # 'same' may be asymmetric
        mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
        x = F.pad(x, module._reversed_padding_repeated_twice, mode=mode)
        padding = (0,) * (x.dim() - 2)
    weight = module.weight.detach().to(x.dtype)   # float32 inputs for a half-precision layer

    def weight_grad(xn: Tensor, dn: Tensor) -> Tensor:
        # one sample's weight gradient, without re-running the forward; under vmap PyTorch
        # computes all samples as one grouped convolution
        return torch.ops.aten.convolution_backward(
            dn.unsqueeze(0), xn.unsqueeze(0), weight, None, module.stride, padding,
            module.dilation, False, [0] * len(padding), module.groups, [False, True, False])[1]

    per_sample = vmap(weight_grad)      # a vmap over M too would loop and concatenate
    res = {"weight": torch.stack([per_sample(x, d) for d in delta])}
    if module.bias is not None:
        res["bias"] = delta.reshape(*delta.shape[:3], -1).sum(-1)
    return res


register_rule(nn.Conv1d, _conv_per_sample)
register_rule(nn.Conv2d, _conv_per_sample)


# Embedding -------------------------------------------------------------------------------------
def _embedding_scatter(module: nn.Embedding, idx: Tensor, delta: Tensor) -> tuple[Tensor, Tensor]:
    """Per (objective, sample, id) summed gradient rows: keys (U,), rows (U, D)."""
    m, n = delta.shape[:2]
    vocab, dim = module.weight.shape
    idx = idx.reshape(n, -1)
    d = delta.reshape(m, n, -1, dim)
    if module.padding_idx is not None:
        d = d * (idx != module.padding_idx).unsqueeze(-1).to(d.dtype)
    sample_key = torch.arange(m * n, device=idx.device).reshape(m, n, 1) * vocab
    keys = (sample_key + idx.unsqueeze(0)).reshape(-1)
    uniq, inv = torch.unique(keys, return_inverse=True)
    rows = d.new_zeros(len(uniq), dim).index_add_(0, inv, d.reshape(-1, dim))
    return uniq, rows


def _embedding_per_sample(module: nn.Embedding, inputs, delta):
    m, n = delta.shape[:2]
    vocab, dim = module.weight.shape
    uniq, rows = _embedding_scatter(module, inputs[0], delta)
    out = delta.new_zeros(m * n * vocab, dim).index_copy_(0, uniq, rows)
    return {"weight": out.reshape(m, n, vocab, dim)}


def _embedding_reduce(module: nn.Embedding, inputs, delta, f):
    vocab, dim = module.weight.shape
    uniq, rows = _embedding_scatter(module, inputs[0], delta)
    return {"weight": delta.new_zeros(vocab, dim).index_add_(0, uniq % vocab, f(rows))}


def _embedding_accumulate(module: nn.Embedding, inputs, delta, out, stale):
    if "weight" not in out:
        return
    if "weight" in stale:
        out["weight"].zero_()
    n = delta.shape[0]
    vocab, dim = module.weight.shape
    idx = inputs[0].reshape(n, -1)
    d = delta.reshape(n, -1, dim)
    if module.padding_idx is not None:
        d = d * (idx != module.padding_idx).unsqueeze(-1).to(d.dtype)
    keys = (torch.arange(n, device=idx.device).unsqueeze(1) * vocab + idx).reshape(-1)
    out["weight"].view(n * vocab, dim).index_add_(0, keys, d.reshape(-1, dim))


register_rule(nn.Embedding, _embedding_per_sample, _embedding_reduce,
              supports=lambda m: not m.scale_grad_by_freq,  # per-batch counts mix samples
              accumulate=_embedding_accumulate)


# Normalisation layers (affine part) ------------------------------------------------------------
def _affine_per_sample(module: nn.Module, x_hat: Tensor, delta: Tensor, channel_dims: int,
                       channel_first: bool):
    """Per-sample grads of y = γ ⊙ x̂ + β; channel dims either at 1.. or at the end."""
    m, n = delta.shape[:2]
    prod = delta * x_hat.unsqueeze(0)
    if channel_first:     # (M, N, C, *spatial)
        gw, gb = prod.reshape(m, n, x_hat.shape[1], -1).sum(-1), delta.reshape(
            m, n, x_hat.shape[1], -1).sum(-1)
    else:                 # (M, N, *, *normalized_shape)
        shape = x_hat.shape[x_hat.dim() - channel_dims:]
        gw = prod.reshape(m, n, -1, *shape).sum(2)
        gb = delta.reshape(m, n, -1, *shape).sum(2)
    out = {}
    if getattr(module, "weight", None) is not None:
        out["weight"] = gw.reshape(m, n, *module.weight.shape)
    if getattr(module, "bias", None) is not None:
        out["bias"] = gb.reshape(m, n, *module.bias.shape)
    return out


def batchnorm_xhat(module: nn.modules.batchnorm._BatchNorm, x: Tensor) -> Tensor:
    """x̂ from the running statistics (eval mode), channels at dim 1."""
    shape = (1, -1) + (1,) * (x.dim() - 2)
    mean = module.running_mean.reshape(shape)
    var = module.running_var.reshape(shape)
    return (x - mean) / torch.sqrt(var + module.eps)


def layernorm_xhat(module: nn.LayerNorm, x: Tensor) -> Tensor:
    """x̂ normalised over the trailing ``normalized_shape`` dims."""
    dims = tuple(range(x.dim() - len(module.normalized_shape), x.dim()))
    mean = x.mean(dims, keepdim=True)
    var = x.var(dims, unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + module.eps)


def groupnorm_xhat(module: nn.GroupNorm, x: Tensor) -> Tensor:
    """x̂ normalised per sample and channel group."""
    n = x.shape[0]
    xg = x.reshape(n, module.num_groups, -1)
    mean = xg.mean(-1, keepdim=True)
    var = xg.var(-1, unbiased=False, keepdim=True)
    return ((xg - mean) / torch.sqrt(var + module.eps)).reshape(x.shape)


def _bn_per_sample(module, inputs, delta):
    return _affine_per_sample(module, batchnorm_xhat(module, inputs[0]), delta, 1, True)


def _ln_per_sample(module, inputs, delta):
    x_hat = layernorm_xhat(module, inputs[0])
    return _affine_per_sample(module, x_hat, delta, len(module.normalized_shape), False)


def _gn_per_sample(module, inputs, delta):
    return _affine_per_sample(module, groupnorm_xhat(module, inputs[0]), delta, 1, True)


def _rms_per_sample(module, inputs, delta):
    x_hat = rmsnorm_xhat(module, inputs[0], module.weight.dtype)
    return _affine_per_sample(module, x_hat, delta, len(module.normalized_shape), False)


def _hf_rms_per_sample(module, inputs, delta):
    return _affine_per_sample(module, hf_rmsnorm_xhat(module, inputs[0]), delta, 1, False)


for _bn in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d):
    register_rule(_bn, _bn_per_sample)
register_rule(nn.LayerNorm, _ln_per_sample)
register_rule(nn.GroupNorm, _gn_per_sample)
register_rule(nn.RMSNorm, _rms_per_sample)
STRUCTURAL.append((is_hf_rmsnorm, Rule(_hf_rms_per_sample)))


# Hugging Face Conv1D (GPT-2): y = x W + b with W of shape (in, out) ---------------------------
def _conv1d_per_sample(module: nn.Module, inputs, delta):
    x = inputs[0]
    x3 = x.reshape(x.shape[0], -1, x.shape[-1])                    # (N, T, I)
    d4 = delta.reshape(delta.shape[0], delta.shape[1], -1, delta.shape[-1])  # (M, N, T, O)
    out = {"weight": torch.einsum("mnto,nti->mnio", d4, x3)}
    if getattr(module, "bias", None) is not None:
        out["bias"] = d4.sum(2)
    return out


def _conv1d_reduce(module: nn.Module, inputs, delta, f):
    x = inputs[0]
    if x.dim() != 2:
        return None
    fd = f(delta).sum(0)                                             # (N, O)
    out = {"weight": f(x).t() @ fd}
    if getattr(module, "bias", None) is not None:
        out["bias"] = fd.sum(0)
    return out


def _conv1d_accumulate(module: nn.Module, inputs, delta, out, stale):
    x = inputs[0]
    x3 = x.reshape(x.shape[0], -1, x.shape[-1])                    # (N, T, I)
    d3 = delta.reshape(delta.shape[0], -1, delta.shape[-1])        # (N, T, O)
    if "weight" in out:                                             # W is (I, O)
        out["weight"].baddbmm_(x3.transpose(1, 2), d3, beta=0 if "weight" in stale else 1)
    if "bias" in out:
        _add_or_set(out["bias"], d3.sum(1), "bias" in stale)


STRUCTURAL.append((is_hf_conv1d, Rule(_conv1d_per_sample, _conv1d_reduce,
                                      accumulate=_conv1d_accumulate)))
