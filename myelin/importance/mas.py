"""Memory Aware Synapses (Aljundi et al. 2018) from exact per-sample gradients."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..distributed import reduced_world_size, unwrap
from ..losses import default_loss
from ._persample import per_sample_sum
from .base import Importance, loss_view, token_rows

__all__ = ["mas"]

_OUTPUTS = ("softmax", "logits")
_NORMS = ("squared", "l2")


def mas(
    model: nn.Module,
    data: Any,
    *,
    output: str = "softmax",
    norm: str = "squared",
    per_sample: bool = True,
    batch_size: int = 256,
    max_samples: int | None = None,
    fallback: str = "functional",
    progress: bool | None = None,
    loss: Any = None,
    seed: int | None = None,
    per_token: bool = False,
    distributed: bool = True,
) -> Importance:
    """Estimate MAS importance, mean_n |∂ ‖f(x_n)‖² / ∂θ| with f the softmax output.

    The default is the form of the seeds' authors' code (Kutalev & Lapina 2021): the output is
    the softmax, the objective its squared L2 norm Σ_c p_c², and the absolute value is taken per
    sample before averaging. Labels are not used.

    Args:
        model: Gives logits of shape (N, C) or (N, ..., C) (summed over positions).
        data: A DataLoader or iterable of batches, a Dataset, an (X, Y) pair or a tensor X.
        output: "softmax" (default) or "logits" (Aljundi's raw network output).
        norm: "squared" (Σ_c f_c², default) or "l2" (‖f‖₂, as FACIL and Avalanche use).
        per_sample: True: mean of |per-sample gradient| (exact). False: |gradient of the mean
            objective| over all samples (the 2022 WVA-MAS variant).
        batch_size: Batch size for pairs, tensors and datasets.
        max_samples: Use at most this many samples.
        fallback: "functional" (torch.func for layers without a rule) or "error".
        progress: Progress bar over batches (None: only on a terminal).
        loss: The training loss whose view of the output to use (its ``logits(output)``,
            e.g. a class-masked `myelin.losses.CrossEntropy`); None: the raw output.
        seed: Unused (this estimator draws no random numbers); accepted so that every
            registered estimator takes the same arguments.
        per_token: For dict batches with per-position labels: each counted token is a sample
            (`token_rows`), instead of each sequence.
        distributed: Under an initialised torch.distributed process group (every rank calls,
            each with its own shard; `max_samples` is per rank), sum over all ranks: every rank
            gets the union's MAS (`myelin.distributed`; with ``per_sample=False`` the signed
            sums are reduced before the absolute value). False: this rank's data only. A
            DDP-wrapped model is accepted (its inner module's parameter names).

    Returns:
        Importance with one non-negative tensor per trainable parameter; float32 for a
        half-precision model (float64 for a float64 one), as for `fisher`.

    """
    if output not in _OUTPUTS:
        raise ValueError(f"output must be one of {_OUTPUTS}. Got {output!r}.")
    if norm not in _NORMS:
        raise ValueError(f"norm must be one of {_NORMS}. Got {norm!r}.")
    model = unwrap(model)

    def cotangent(logits: Tensor, y: Tensor | None) -> Tensor:
        z = logits.detach().requires_grad_(True)
        with torch.enable_grad():
            f = F.softmax(z, dim=-1) if output == "softmax" else z
            objective = (f * f).sum(-1) if norm == "squared" else f.norm(dim=-1)
            (grad,) = torch.autograd.grad(objective.sum(), z)
        return grad.unsqueeze(0)

    loss = default_loss(model) if loss is None else loss
    if per_token:
        data = token_rows(data, loss, batch_size=batch_size)
    with loss_view(model, loss):
        sums, n = per_sample_sum(model, data, cotangent,
                                 reduce="abs" if per_sample else "sum", batch_size=batch_size,
                                 max_samples=max_samples, fallback=fallback, progress=progress,
                                 desc="mas", targets=getattr(loss, "targets", None),
                                 distributed=distributed)
    values = {k: (v if per_sample else v.abs_()).div_(n) for k, v in sums.items()}
    meta = {"estimator": "mas", "output": output, "norm": norm, "per_sample": per_sample,
            "n_samples": n}
    if per_token:
        meta["per_token"] = True
    if reduced_world_size(distributed) > 1:
        meta["world_size"] = reduced_world_size(distributed)
    return Importance(values, meta)
