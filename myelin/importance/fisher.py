"""Diagonal Fisher information from exact per-sample gradients."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..distributed import rank, reduced_world_size, unwrap
from ..losses import IGNORE_INDEX, default_loss
from ._persample import per_sample_sum
from .base import Importance, loss_view, token_rows

__all__ = ["check_labels", "draw_labels", "fisher"]


def check_labels(y: Tensor | None, logits: Tensor) -> Tensor:
    """Validate integer labels of shape logits.shape[:-1] with values in [0, C) or -100 (ignored).

    Returns the labels as int64 with ignored positions set to class 0 (their cotangent is
    zeroed by the per-sample machinery, which sees the original labels).
    """
    if y is None:
        raise ValueError("This estimator needs labels, but the data yields inputs only. Pass "
                         "(x, y) batches, or use empirical=False (labels sampled from the model).")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise TypeError(f"Labels must be integer class indices. Got dtype {y.dtype}.")
    if tuple(y.shape) != tuple(logits.shape[:-1]):
        raise ValueError(f"Labels of shape {tuple(y.shape)} do not match model outputs of shape "
                         f"{tuple(logits.shape)} (expected labels of shape "
                         f"{tuple(logits.shape[:-1])}).")
    c = logits.shape[-1]
    counted = y[y != IGNORE_INDEX]
    if counted.numel() and (int(counted.min()) < 0 or int(counted.max()) >= c):
        raise ValueError(f"Labels must lie in [0, {c}) for a model with {c} outputs (or be "
                         f"{IGNORE_INDEX}, ignored); a batch has labels in "
                         f"[{int(counted.min())}, {int(counted.max())}].")
    return y.long().clamp(min=0)


def draw_labels(p: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One label per row of probabilities, by inverse CDF: (..., C) -> (...,) int64.

    Row r gets the first class c whose float64 cumulative probability exceeds u_r · Σ_c p_rc,
    u_r ~ U[0, 1) drawn (float64, one per row, in row order) from `generator`. Exactly
    distributed as ``torch.multinomial(p, 1)``, which is ~10× slower on a language model's
    (N·T, vocabulary) rows (over a second per 512 × 49 152 here).
    """
    c = p.shape[-1]
    rows = p.reshape(-1, c)
    u = torch.rand(rows.shape[0], 1, generator=generator, dtype=torch.float64, device=p.device)
    out = torch.empty(rows.shape[0], dtype=torch.long, device=p.device)
    step = max(1, (1 << 20) // c)           # float64 CDFs of ~8 MB at a time
    for i in range(0, rows.shape[0], step):
        cdf = rows[i:i + step].cumsum(-1, dtype=torch.float64)
        picked = torch.searchsorted(cdf, u[i:i + step] * cdf[:, -1:], right=True)
        out[i:i + step] = picked.squeeze(-1).clamp_(max=c - 1)
    return out.reshape(p.shape[:-1])


def fisher(
    model: nn.Module,
    data: Any,
    *,
    empirical: bool = True,
    exact: bool = False,
    seed: int | None = None,
    batch_size: int = 256,
    max_samples: int | None = None,
    fallback: str = "functional",
    progress: bool | None = None,
    loss: Any = None,
    per_token: bool = False,
    distributed: bool = True,
) -> Importance:
    """Estimate the diagonal Fisher information, F = mean_n (∂ log p(y_n | x_n) / ∂θ)².

    Exact per-sample gradients (never the squared mini-batch gradient), computed in one batched
    forward and backward pass per batch; see `myelin.importance` for how.

    Args:
        model: Classifier giving logits of shape (N, C), or (N, ..., C) for per-position labels
            (log-likelihoods summed over positions). Its train/eval mode is restored.
        data: A DataLoader or iterable of (x, y) batches, a Dataset, or an (X, Y) pair;
            x of shape (N, ...), integer y of shape (N,) or (N, ...).
        empirical: True: y is the true label (empirical Fisher). False: the "true" Fisher, with
            y drawn from the model's own softmax, once per sample (labels in `data` unused).
        exact: With ``empirical=False``, take the exact expectation over all C classes,
            Σ_c p(c|x) (∂ log p(c|x)/∂θ)², instead of one sample (logits of shape (N, C) only).
        seed: Seed for the sampled labels (``empirical=False, exact=False``).
        batch_size: Batch size for pairs, tensors and datasets (loaders keep their own).
        max_samples: Use at most this many samples (the closing set's size).
        fallback: "functional" computes layers without a per-sample rule via torch.func;
            "error" raises for them instead.
        progress: Progress bar over batches (None: only on a terminal).
        loss: The training loss whose predictive distribution to use (its
            ``logits(output)``, e.g. a class-masked `myelin.losses.CrossEntropy`); None:
            `myelin.losses.default_loss` (`CausalLM` for a Hugging Face causal LM: labels
            shifted, -100 and padding ignored), else the model's output as logits.
        per_token: For dict batches with per-position labels (language models): each token is
            a sample (mean over tokens of the per-token squared gradient) instead of each
            sequence. Exact, at one sequence pass per token (`token_rows`).
        distributed: Under an initialised torch.distributed process group (every rank calls,
            each with its own shard; `max_samples` is per rank), sum over all ranks: every rank
            gets the union's Fisher (`myelin.distributed`). Sampled labels are drawn with
            ``seed + rank``. False: this rank's data only. A DDP-wrapped model is accepted
            (its inner module's parameter names).

    Returns:
        Importance with one tensor per trainable parameter, ``meta`` recording the variant;
        float32 for a half-precision model (float64 for a float64 one): the per-sample terms
        are formed and summed in it (EWC and WVA cast to the parameters' dtype themselves).

    Raises:
        ValueError: Empty data, NaN/inf, labels out of range, contradictory options.
        TypeError: Data of an unsupported form, or non-integer labels.

    """
    if exact and empirical:
        raise ValueError("exact=True takes the expectation over the model's own labels; "
                         "it needs empirical=False.")
    model = unwrap(model)
    # each rank draws its own labels: one stream per rank, not the same draws on every shard
    offset = rank() if distributed else 0
    generator: list[torch.Generator] = []

    def cotangent(logits: Tensor, y: Tensor | None) -> Tensor:
        c = logits.shape[-1]
        if exact:
            if logits.dim() != 2:
                raise ValueError("exact=True needs logits of shape (N, C); got "
                                 f"{tuple(logits.shape)}. Use the sampled Fisher instead.")
            p = F.log_softmax(logits, dim=-1).exp()
            eye = torch.eye(c, dtype=p.dtype, device=p.device)
            # row c: sqrt(p_c) (e_c - p), so Σ_c (row·J)² = Σ_c p_c (∂ log p_c/∂θ)²
            return p.sqrt().t().unsqueeze(-1) * (eye.unsqueeze(1) - p.unsqueeze(0))
        # e_y - p, built in the one tensor softmax returns: a language model's logits are
        # (N, T, vocabulary), and every fresh tensor of that size costs page faults
        grad = F.softmax(logits, dim=-1)
        if empirical:
            labels = check_labels(y, logits)
        else:
            if not generator:
                g = torch.Generator(device=logits.device)
                base = seed if seed is not None else int(torch.randint(2**31, ()).item())
                g.manual_seed(base + offset)
                generator.append(g)
            labels = draw_labels(grad, generator[0])
        grad.neg_().scatter_add_(-1, labels.unsqueeze(-1),
                                 torch.ones(1, dtype=grad.dtype, device=grad.device)
                                 .expand(*labels.shape, 1))
        return grad.unsqueeze(0)

    loss = default_loss(model) if loss is None else loss
    if per_token:
        data = token_rows(data, loss, batch_size=batch_size)
    with loss_view(model, loss):
        sums, n = per_sample_sum(model, data, cotangent, reduce="square",
                                 batch_size=batch_size, max_samples=max_samples,
                                 fallback=fallback, progress=progress, desc="fisher",
                                 targets=getattr(loss, "targets", None),
                                 distributed=distributed)
    variant = "empirical" if empirical else ("exact" if exact else "sampled")
    meta = {"estimator": "fisher", "labels": variant, "n_samples": n}
    if per_token:
        meta["per_token"] = True
    if variant == "sampled":
        meta["seed"] = seed
    if reduced_world_size(distributed) > 1:
        meta["world_size"] = reduced_world_size(distributed)
    return Importance({k: v.div_(n) for k, v in sums.items()}, meta)  # ours: in place
