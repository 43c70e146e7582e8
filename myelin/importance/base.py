"""The `Importance` container and the plumbing shared by every estimator.

An importance is one non-negative (SI: signed) number per trainable parameter element, telling how
much the network's past behaviour depends on that element. Estimators return an `Importance`; the
consolidation methods consume them.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .._state import read_state, write_state
from ..distributed import unwrap

__all__ = ["Importance", "accumulation_dtype", "all_finite", "batch_len", "check_token_ids",
           "eval_mode", "iter_batches", "loss_view", "token_rows", "trainable_parameters"]


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype importances are summed and returned in: float32, or float64 for float64.

    A bfloat16 sum stops growing once it is 2⁸ times its increments (8-bit mantissa), so over
    hundreds of batches a half-precision sum falls far below the true one; the estimators keep
    their sums, and return their importances, in at least float32 whatever the model's dtype.
    """
    return torch.promote_types(dtype, torch.float32)


def all_finite(t: Tensor) -> bool:
    """True if no element is NaN or ±inf.

    One sum (NaN and inf propagate through it) instead of an elementwise test: 3× cheaper, which
    matters on every input batch. A finite sum proves every element finite; a sum that is not
    (NaN or inf present, or finite elements whose total overflows) is settled by the
    elementwise test, so large finite values are never called NaN. Half-precision tensors are
    summed in float32.
    """
    if not t.is_floating_point():
        return True
    dtype = torch.float32 if t.element_size() < 4 else t.dtype
    return bool(torch.isfinite(t.sum(dtype=dtype))) or bool(torch.isfinite(t).all())

_META_KEY = "myelin.importance"


class Importance(Mapping[str, Tensor]):
    """A mapping parameter name -> importance tensor of the parameter's shape.

    Supports ``a + b`` (accumulation across tasks, the seeds' Ω = Σ_t I_t), ``c * a`` and ``a / c``
    (scaling), `stats` (per-parameter statistics), and `save`/`load` (safetensors, no pickle).

    Args:
        values: Parameter name -> tensor. Every tensor must be finite.
        meta: JSON-serialisable description of how the values were made (estimator, options,
            number of samples, number of tasks accumulated). Saved with the tensors.

    Raises:
        TypeError: A value is not a tensor.
        ValueError: A value holds NaN or inf.

    """

    def __init__(self, values: Mapping[str, Tensor], meta: Mapping[str, Any] | None = None):
        self._values: dict[str, Tensor] = {}
        for name, value in values.items():
            if not isinstance(value, Tensor):
                raise TypeError(
                    f"Importance values must be tensors; {name!r} is {type(value).__name__}."
                )
            if not all_finite(value):
                raise ValueError(
                    f"Importance for parameter {name!r} contains NaN or inf; an estimator saw "
                    "non-finite activations or gradients (check the data and the model's weights)."
                )
            self._values[name] = value
        self.meta: dict[str, Any] = dict(meta or {})

    # Mapping protocol ------------------------------------------------------------------------
    def __getitem__(self, name: str) -> Tensor:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        est = self.meta.get("estimator", "?")
        n = sum(v.numel() for v in self._values.values())
        return f"Importance(estimator={est!r}, parameters={len(self)}, elements={n})"

    # Arithmetic ------------------------------------------------------------------------------
    def _check_same_layout(self, other: Importance) -> None:
        if set(self) != set(other):
            missing = sorted(set(self) - set(other))
            extra = sorted(set(other) - set(self))
            raise ValueError(
                "Cannot combine importances over different parameters: "
                f"only in the left operand {missing}, only in the right {extra}."
            )
        for name, value in self.items():
            if value.shape != other[name].shape:
                raise ValueError(
                    f"Cannot combine importances: parameter {name!r} has shape "
                    f"{tuple(value.shape)} on the left and {tuple(other[name].shape)} on the right."
                )

    def __add__(self, other: Importance) -> Importance:
        """Accumulate two importances elementwise (Ω ← Ω + I_t)."""
        if not isinstance(other, Importance):
            return NotImplemented
        self._check_same_layout(other)
        tasks = int(self.meta.get("tasks", 1)) + int(other.meta.get("tasks", 1))
        est_a, est_b = self.meta.get("estimator"), other.meta.get("estimator")
        meta = {"estimator": est_a if est_a == est_b else f"{est_a}+{est_b}", "tasks": tasks}
        return Importance({n: v + other[n].to(v) for n, v in self.items()}, meta)

    def __radd__(self, other: object) -> Importance:
        if isinstance(other, int) and other == 0:  # sum([...]) starts from 0
            return self
        return NotImplemented

    def __mul__(self, factor: float) -> Importance:
        """Scale every value by a finite number."""
        if isinstance(factor, bool) or not isinstance(factor, (int, float)):
            return NotImplemented
        if not math.isfinite(factor):
            raise ValueError(f"Importance can only be scaled by a finite number. Got {factor!r}.")
        return Importance({n: v * factor for n, v in self.items()}, self.meta)

    __rmul__ = __mul__

    def __truediv__(self, divisor: float) -> Importance:
        if isinstance(divisor, bool) or not isinstance(divisor, (int, float)):
            return NotImplemented
        if divisor == 0 or not math.isfinite(divisor):
            raise ValueError(f"Importance can only be divided by a finite non-zero number. "
                             f"Got {divisor!r}.")
        return self * (1.0 / divisor)

    def normalised(self) -> Importance:
        """Scaled to mean 1 over every element of every tensor (one λ scale for any estimator).

        ``meta["normalised_by"]`` records the mean it was divided by. Raises ValueError if the
        importance is all zero (or not finite), which no scale can make mean 1.
        """
        total = sum(float(v.double().sum()) for v in self.values())
        count = sum(v.numel() for v in self.values())
        if not (total > 0 and math.isfinite(total)):
            raise ValueError(f"{self.meta.get('estimator', 'this')} importance sums to {total}: "
                             "it cannot be normalised to mean 1.")
        out = self * (count / total)
        out.meta = {**self.meta, "normalised_by": total / count}
        return out

    # Utilities -------------------------------------------------------------------------------
    def to(self, *args: Any, **kwargs: Any) -> Importance:
        """Return a copy with every tensor moved/cast as by `Tensor.to`."""
        return Importance({n: v.to(*args, **kwargs) for n, v in self.items()}, self.meta)

    @classmethod
    def zeros_like(cls, model: nn.Module, meta: Mapping[str, Any] | None = None) -> Importance:
        """All-zero importance for every trainable parameter of `model` (float32 or wider)."""
        return cls({n: torch.zeros_like(p, dtype=accumulation_dtype(p.dtype))
                    for n, p in trainable_parameters(model).items()}, meta)

    def stats(self) -> dict[str, dict[str, float]]:
        """Per-parameter statistics: numel, mean, std, min, max, sum and fraction of zeros."""
        out: dict[str, dict[str, float]] = {}
        for name, v in self.items():
            v64 = v.detach().double()
            out[name] = {
                "numel": float(v64.numel()),
                "mean": float(v64.mean()),
                "std": float(v64.std(unbiased=False)),
                "min": float(v64.min()),
                "max": float(v64.max()),
                "sum": float(v64.sum()),
                "zero_fraction": float((v64 == 0).double().mean()),
            }
        return out

    def summary(self) -> str:
        """A human-readable table of `stats`, one line per parameter."""
        rows = [f"{'parameter':<32} {'shape':>16} {'mean':>11} {'max':>11} {'zeros':>6}"]
        for name, s in self.stats().items():
            shape = "x".join(str(d) for d in self[name].shape)
            rows.append(f"{name:<32} {shape:>16} {s['mean']:>11.4g} {s['max']:>11.4g} "
                        f"{s['zero_fraction']:>6.1%}")
        return "\n".join(rows)

    def check_compatible(self, model: nn.Module) -> None:
        """Raise `ValueError` unless names and shapes match `model`'s trainable parameters."""
        params = trainable_parameters(model)
        missing = sorted(set(params) - set(self))
        extra = sorted(set(self) - set(params))
        wrong = [
            f"{n}: importance {tuple(v.shape)} vs parameter {tuple(params[n].shape)}"
            for n, v in self.items()
            if n in params and v.shape != params[n].shape
        ]
        if missing or extra or wrong:
            parts = []
            if missing:
                parts.append(f"parameters without importance: {missing}")
            if extra:
                parts.append(f"importances for parameters the model lacks: {extra}")
            if wrong:
                parts.append("shape mismatches: " + "; ".join(wrong))
            raise ValueError("Importance does not match the model — " + " | ".join(parts))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the tensors and `meta` to a safetensors file (atomically: no partial file)."""
        write_state(path, self._values, _META_KEY, self.meta)

    @classmethod
    def load(cls, path: str | os.PathLike[str], model: nn.Module | None = None,
             device: str | torch.device = "cpu") -> Importance:
        """Read an importance saved by `save`; with `model`, check names and shapes match it."""
        values, meta = read_state(path, _META_KEY, "importance", device)
        imp = cls(values, meta)
        if model is not None:
            imp.check_compatible(model)
        return imp


def trainable_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Name -> parameter for every parameter with ``requires_grad`` (shared ones once).

    A `DistributedDataParallel` model's names are its inner module's (no ``module.`` prefix,
    `myelin.distributed.unwrap`).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module. Got {type(model).__name__}.")
    return {n: p for n, p in unwrap(model).named_parameters() if p.requires_grad}


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode for the block, then restore each one's own mode."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


@contextlib.contextmanager
def loss_view(model: nn.Module, loss: Any) -> Iterator[nn.Module]:
    """Within the block, ``model(x)`` returns ``loss.logits(output)``: the loss's own view.

    So an estimator sees the same predictive distribution the training loss uses (e.g. the
    scenario's class mask of a `myelin.losses.CrossEntropy`). `loss` None: no change.

    Raises:
        TypeError: `loss` has no ``logits(output)`` (a plain callable loss gives a scalar, not
            the per-sample log-likelihoods an estimator needs).
    """
    if loss is None:
        yield model
        return
    from ..losses import LogitLoss

    if not isinstance(loss, LogitLoss):
        raise TypeError(f"An importance estimator needs per-sample logits; the loss {loss!r} is "
                        "a plain callable. Pass a loss with a logits(output) method "
                        "(myelin.losses.CrossEntropy, myelin.losses.ModelLoss).")
    handle = model.register_forward_hook(lambda module, args, output: loss.logits(output))
    try:
        yield model
    finally:
        handle.remove()


def _as_tensor(value: Any, what: str) -> Tensor:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    raise TypeError(f"{what} must be a torch.Tensor or numpy array. Got {type(value).__name__}.")


LABEL_KEYS = ("labels", "label")   # what a dict batch's labels are called (Hugging Face names)


def batch_len(x: Any) -> int:
    """Samples in a batch: ``len(x)`` for a tensor, the shared first dimension for a dict."""
    if isinstance(x, Mapping):
        sizes = {k: int(v.shape[0]) for k, v in x.items() if isinstance(v, Tensor) and v.dim()}
        if not sizes:
            raise ValueError(f"A dict batch needs at least one tensor with a sample dimension; "
                             f"got keys {sorted(x)}.")
        if len(set(sizes.values())) > 1:
            raise ValueError(f"A dict batch's tensors disagree on the number of samples: {sizes}.")
        return next(iter(sizes.values()))
    return len(x)


def describe_batch(x: Any) -> str:
    """Shapes and dtypes of a batch's inputs, for error messages."""
    def one(t: Any) -> str:
        return (f"shape {tuple(t.shape)} {str(t.dtype).removeprefix('torch.')}"
                if isinstance(t, Tensor) else type(t).__name__)
    if isinstance(x, Mapping):
        return ", ".join(f"{k}: {one(v)}" for k, v in x.items())
    return f"x: {one(x)}"


def model_error(err: RuntimeError, x: Any, start: int) -> RuntimeError:
    """The model's RuntimeError again, naming the batch that caused it.

    Typically data of the wrong shape (``mat1 and mat2 shapes cannot be multiplied``). Callers
    re-raise RuntimeError subclasses (e.g. out-of-memory) unchanged.
    """
    return RuntimeError(f"The model failed on the batch of data starting at sample {start} "
                        f"({describe_batch(x)}): {err}")


def input_vocabulary(model: nn.Module) -> int | None:
    """Rows of a Hugging Face model's input embedding (``get_input_embeddings``), or None."""
    get = getattr(model, "get_input_embeddings", None)
    try:
        embedding = get() if callable(get) else None
    except (NotImplementedError, AttributeError):
        embedding = None
    rows = getattr(embedding, "num_embeddings", None)
    return rows if isinstance(rows, int) else None


def check_token_ids(model: nn.Module, x: Any) -> None:
    """Refuse a dict batch whose ``input_ids`` fall outside the model's vocabulary.

    Raises:
        ValueError: naming the largest id and the vocabulary size (a tokenizer that does not
            belong to the model), instead of an IndexError deep inside the embedding.
    """
    if not isinstance(x, Mapping) or not isinstance(x.get("input_ids"), Tensor):
        return
    vocab = input_vocabulary(model)
    ids = x["input_ids"]
    if vocab is None or ids.numel() == 0:
        return
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= vocab:
        raise ValueError(f"input_ids hold token ids in [{low}, {high}] but the model's "
                         f"vocabulary has {vocab} entries: was the batch made by another "
                         "model's tokenizer?")


def token_rows(data: Any, loss: Any = None, *, batch_size: int = 256,
               ignore_index: int = -100) -> Iterator[dict[str, Any]]:
    """Dict batches whose samples are tokens: one row per counted label position.

    Row (n, t) is sequence n whole, with every label but position t set to `ignore_index`, so
    a per-sample estimator on these rows gives per-token quantities exactly (a causal model's
    prediction at t does not see later tokens; any model's token-t objective is the loss at t
    alone). Costs as many sequence passes as there are counted tokens.

    Args:
        data: Dict batches (or one dict) with ``input_ids`` (N, T) and, unless `loss` derives
            them (`myelin.losses.CausalLM` without labels: ``input_ids`` minus padding),
            ``labels`` (N, T).
        loss: The loss whose targets are expanded (its ``targets`` decides which positions
            count: for `CausalLM` positions 1..T-1, the shift).
        batch_size: Rows per yielded batch.
        ignore_index: The label of positions that take no part.

    Yields:
        Dict batches of at most `batch_size` rows, each with ``labels`` (rows, T).
    """
    from ..losses import CausalLM

    causal = isinstance(loss, CausalLM)
    for x, y in iter_batches(data, batch_size=batch_size, check_finite=False):
        if not isinstance(x, Mapping):
            raise TypeError("per_token=True needs dict batches (input_ids, labels, ...).")
        if y is None and causal:
            shifted = loss.targets(x, None)
            y = torch.cat([torch.full_like(shifted[:, :1], ignore_index), shifted], 1)
        if y is None or y.dim() != 2:
            raise ValueError("per_token=True needs per-position labels of shape (N, T); got "
                             + ("none." if y is None else f"shape {tuple(y.shape)}."))
        counted = y != ignore_index
        if causal:
            counted[:, 0] = False                    # position 0 is never a target
        seq, pos = counted.nonzero(as_tuple=True)
        for i in range(0, len(seq), batch_size):
            s_i, p_i = seq[i:i + batch_size], pos[i:i + batch_size]
            rows = {k: (v[s_i] if isinstance(v, Tensor) and v.dim() else v) for k, v in x.items()}
            labels = torch.full_like(y[s_i], ignore_index)
            labels[torch.arange(len(s_i)), p_i] = y[s_i, p_i]
            rows["labels"] = labels
            yield rows


def _split_dict(batch: Mapping[str, Any]) -> tuple[dict[str, Any], Tensor | None]:
    """A dict batch as (model inputs, labels): the labels key is taken out of the inputs."""
    inputs = {k: (torch.from_numpy(v) if isinstance(v, np.ndarray) else v)
              for k, v in batch.items()}
    labels = None
    for key in LABEL_KEYS:
        if key in inputs:
            labels = _as_tensor(inputs.pop(key), f"batch[{key!r}]")
            break
    return inputs, labels


def _slice_dict(d: Mapping[str, Any], sl: slice) -> dict[str, Any]:
    return {k: (v[sl] if isinstance(v, Tensor) and v.dim() else v) for k, v in d.items()}


def _is_pair(data: Any) -> bool:
    """True for an (X, Y) pair of tensors/arrays, False for anything else.

    Raises:
        ValueError: X and Y differ in length, unless they have the same dtype and the same
            shape past the first dimension: then `data` is taken for a list of two input
            batches (the last one shorter), as before.
    """
    if not (isinstance(data, (tuple, list)) and len(data) == 2
            and all(isinstance(d, (Tensor, np.ndarray)) for d in data)
            and all(d.ndim > 0 for d in data)):
        return False
    x, y = data
    if len(x) != len(y):
        if x.dtype == y.dtype and tuple(x.shape[1:]) == tuple(y.shape[1:]):
            return False   # two batches of inputs, e.g. [x[:256], x[256:300]]
        raise ValueError(f"data is an (X, Y) pair of different lengths: X has {len(x)} samples "
                         f"(shape {tuple(x.shape)}), Y has {len(y)} (shape {tuple(y.shape)}).")
    return len(x) > 0


def iter_batches(
    data: Any,
    *,
    batch_size: int = 256,
    max_samples: int | None = None,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
    check_finite: bool = True,
) -> Iterator[tuple[Tensor, Tensor | None]]:
    """Yield ``(x, y)`` batches from any of the accepted data forms.

    Args:
        data: A ``(X, Y)`` pair of tensors/arrays (X of shape (N, ...), Y of shape (N, ...)), a
            tensor X alone, a `torch.utils.data.Dataset` of ``(x, y)`` items, any iterable
            (e.g. a DataLoader) of ``(x, y)`` batches or of bare ``x`` batches, or dict batches
            (the Hugging Face form: ``{"input_ids": (N, T), "attention_mask": (N, T),
            "labels": ...}``) — one dict of tensors (cut into batches) or an iterable of them.
        batch_size: Chunk size for pairs, tensors and datasets.
        max_samples: Stop after this many samples (the last batch is cut).
        device: Move batches here.
        dtype: Cast floating-point inputs to this dtype (integer inputs, e.g. token ids, are kept).
        check_finite: Raise on NaN/inf inputs (callers that check the outputs may skip it).

    Yields:
        x of shape (B, ...) and y of shape (B, ...) or None when the data has no labels. For
        dict batches x is the dict without its ``labels`` (the model's keyword inputs) and y
        those labels.

    Raises:
        ValueError: Bad batch_size/max_samples, mismatched x/y lengths, or non-finite inputs.
        TypeError: Data of an unsupported form.

    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int. Got {batch_size!r}.")
    if max_samples is not None and (isinstance(max_samples, bool)
                                    or not isinstance(max_samples, int) or max_samples < 1):
        raise ValueError(f"max_samples must be a positive int or None. Got {max_samples!r}.")

    def raw() -> Iterator[Any]:
        if isinstance(data, Mapping):
            inputs, labels = _split_dict(data)
            n = batch_len(inputs)
            for i in range(0, n, batch_size):
                sl = slice(i, i + batch_size)
                yield _slice_dict(inputs, sl), (None if labels is None else labels[sl])
        elif _is_pair(data):
            xs, ys = _as_tensor(data[0], "X"), _as_tensor(data[1], "Y")
            for i in range(0, len(xs), batch_size):
                yield xs[i:i + batch_size], ys[i:i + batch_size]
        elif isinstance(data, (Tensor, np.ndarray)):
            xs = _as_tensor(data, "X")
            for i in range(0, len(xs), batch_size):
                yield xs[i:i + batch_size]
        elif isinstance(data, torch.utils.data.Dataset) and hasattr(data, "__len__"):
            yield from _dataset_batches(data, batch_size)
        elif isinstance(data, Iterable) and not isinstance(data, (str, bytes, Mapping)):
            yield from data
        else:
            raise TypeError(
                "data must be a DataLoader, an iterable of (x, y) batches, a Dataset, or an "
                f"(X, Y) pair of tensors. Got {type(data).__name__}."
            )

    seen = 0
    for batch in raw():
        if isinstance(batch, Mapping):
            batch = _split_dict(batch)
        if isinstance(batch, tuple) and len(batch) == 2 and isinstance(batch[0], Mapping):
            x, y = batch
            yield from _dict_batch(x, y, seen, max_samples, device, dtype, check_finite)
            seen += batch_len(x) if max_samples is None else min(batch_len(x),
                                                                 max_samples - seen)
            if max_samples is not None and seen >= max_samples:
                return
            continue
        if isinstance(batch, (tuple, list)) and len(batch) >= 2:
            x, y = _as_tensor(batch[0], "x"), _as_tensor(batch[1], "y")
        elif isinstance(batch, (tuple, list)) and len(batch) == 1:
            x, y = _as_tensor(batch[0], "x"), None
        else:
            x, y = _as_tensor(batch, "x"), None
        if x.dim() == 0:
            raise ValueError("Each batch x must have a leading sample dimension; got a scalar.")
        if y is not None and len(y) != len(x):
            raise ValueError(f"data: the batch starting at sample {seen} has {len(x)} inputs but "
                             f"{len(y)} labels.")
        if len(x) == 0:
            continue
        if max_samples is not None and seen + len(x) > max_samples:
            keep = max_samples - seen
            x, y = x[:keep], (None if y is None else y[:keep])
        x = _prepared(x, "the input batch", seen, device, dtype, check_finite)
        if device is not None:
            y = None if y is None else y.to(device)
        seen += len(x)
        yield x, y
        if max_samples is not None and seen >= max_samples:
            return
    if seen == 0:
        raise ValueError("data yielded no samples; an importance needs at least one.")


def _dataset_batches(data: torch.utils.data.Dataset, batch_size: int) -> Iterator[Any]:
    """Batches of a map-style Dataset; items that cannot be stacked into a batch are named."""
    items = iter(torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False))
    start = 0
    while True:
        try:
            batch = next(items)
        except StopIteration:
            return
        except RuntimeError as err:
            if "stack expects" not in str(err) and "equal size" not in str(err):
                raise
            raise ValueError(f"data ({type(data).__name__}) yields items of different shapes "
                             f"among samples {start}..{start + batch_size - 1}, which cannot be "
                             f"stacked into a batch: {str(err).splitlines()[0]}") from err
        start += batch_size
        yield batch


def _prepared(t: Tensor, what: str, seen: int, device: torch.device | None,
              dtype: torch.dtype | None, check_finite: bool) -> Tensor:
    """One input tensor checked for NaN/inf, cast to `dtype` if floating, moved to `device`."""
    if t.is_floating_point():
        if check_finite and not all_finite(t):
            raise ValueError(f"data: {what} starting at sample {seen} contains NaN or inf.")
        if dtype is not None:
            t = t.to(dtype)
    return t if device is None else t.to(device)


def _dict_batch(x: dict[str, Any], y: Tensor | None, seen: int, max_samples: int | None,
                device: torch.device | None, dtype: torch.dtype | None,
                check_finite: bool) -> Iterator[tuple[dict[str, Any], Tensor | None]]:
    """One dict batch, cut to `max_samples`, checked and moved (iter_batches' dict branch)."""
    n = batch_len(x)
    if y is not None and len(y) != n:
        raise ValueError(f"data: the batch starting at sample {seen} has {n} samples but "
                         f"{len(y)} labels.")
    if n == 0:
        return
    if max_samples is not None and seen + n > max_samples:
        keep = max_samples - seen
        x, y = _slice_dict(x, slice(0, keep)), (None if y is None else y[:keep])
    out = {key: _prepared(value, f"input {key!r} of the batch", seen, device, dtype,
                          check_finite) if isinstance(value, Tensor) else value
           for key, value in x.items()}
    if device is not None and y is not None:
        y = y.to(device)
    yield out, y
