"""Losses as the training loop and the importance estimators both see them.

A loss is any callable ``loss(model, batch) -> scalar tensor`` (the mean over the batch). The two
built-in ones also say how to turn the model's output into logits, which is what an importance
estimator needs (per-sample log-likelihoods), so "Fisher of this model on this data" means the
same thing in training and in estimation:

* `CrossEntropy` — a classifier on ``(x, y)`` batches, optionally restricted to some classes
  (the scenario's class mask: other classes' logits are set to `MASKED_LOGIT`);
* `ModelLoss` — the model's own ``.loss`` on dict batches (the Hugging Face form:
  ``{"input_ids", "attention_mask", "labels"}``), logits from its ``.logits``;
* `CausalLM` — next-token cross-entropy of a causal language model on dict batches: position t
  predicts token t + 1, labels -100 (and padding) ignored; estimators see the shifted logits and
  targets, so a "sample" is a sequence.

`default_loss(model)` picks `CausalLM` for a Hugging Face causal LM (also inside PEFT) and
`ModelLoss` for other models returning an output object.

Example:
    >>> def loss(model, batch):          # any callable trains; batches {"x": ..., "labels": ...}
    ...     return F.cross_entropy(model(batch["x"]), batch["labels"], label_smoothing=0.1)
    >>> myelin.fit(scenario, model, "l2", loss=loss)    # estimators need a loss with logits()
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["IGNORE_INDEX", "MASKED_LOGIT", "CausalLM", "CrossEntropy", "LogitLoss", "LossFn",
           "ModelLoss", "call_model", "default_loss", "is_causal_lm"]

MASKED_LOGIT = -1e9      # logit given to classes a task may not use (finite: no NaN gradients)
IGNORE_INDEX = -100      # a label position that takes no part (PyTorch's and Hugging Face's value)

LossFn = Callable[[nn.Module, Any], Tensor]


@runtime_checkable
class LogitLoss(Protocol):
    """A loss that also maps the model's output to logits (what importance estimators need)."""

    def __call__(self, model: nn.Module, batch: Any) -> Tensor:
        """Scalar loss (mean over the batch)."""
        ...

    def logits(self, output: Any) -> Tensor:
        """Logits (N, C) or (N, ..., C) from the model's raw output."""
        ...


def call_model(model: nn.Module, inputs: Any) -> Any:
    """``model(**inputs)`` for a dict batch, else ``model(inputs)``."""
    return model(**inputs) if isinstance(inputs, Mapping) else model(inputs)


class CrossEntropy:
    """Mean cross-entropy of a classifier on ``(x, y)`` batches, over the allowed classes.

    Args:
        classes: The classes the prediction may use (the rest get `MASKED_LOGIT`); None: all.

    Shapes: x (N, *input_shape) -> model -> logits (N, C); y (N,) integer classes.
    """

    def __init__(self, classes: Sequence[int] | None = None):
        self.classes = None if classes is None else sorted(int(c) for c in classes)
        self._blocked: dict[tuple[int, torch.device], Tensor] = {}

    def restrict(self, classes: Sequence[int] | None) -> CrossEntropy:
        """The same loss restricted to `classes` (None: all)."""
        return CrossEntropy(classes)

    def blocked(self, n_classes: int, device: torch.device) -> Tensor | None:
        """Boolean (n_classes,) mask of the classes this loss excludes (None: none)."""
        if self.classes is None:
            return None
        key = (n_classes, device)
        if key not in self._blocked:
            if self.classes and not 0 <= max(self.classes) < n_classes:
                raise ValueError(f"classes {self.classes} are outside the model's "
                                 f"{n_classes} outputs.")
            mask = torch.ones(n_classes, dtype=torch.bool, device=device)
            mask[torch.as_tensor(self.classes, device=device)] = False
            self._blocked[key] = mask
        return self._blocked[key]

    def logits(self, output: Any) -> Tensor:
        """The output with excluded classes set to `MASKED_LOGIT` (unchanged if none)."""
        if not isinstance(output, Tensor):
            raise TypeError("CrossEntropy needs a model returning a logits tensor; got "
                            f"{type(output).__name__}. Use myelin.losses.ModelLoss or your own "
                            "loss for other outputs.")
        blocked = self.blocked(output.shape[-1], output.device)
        return output if blocked is None else output.masked_fill(blocked, MASKED_LOGIT)

    def __call__(self, model: nn.Module, batch: Any) -> Tensor:
        """F.cross_entropy(logits(model(x)), y) for a batch ``(x, y)``."""
        if not isinstance(batch, (tuple, list)) or len(batch) != 2:
            raise TypeError("CrossEntropy takes (x, y) batches; got "
                            f"{type(batch).__name__}. For dict batches pass loss=ModelLoss() "
                            "or a callable (model, batch) -> scalar.")
        x, y = batch
        return F.cross_entropy(self.logits(model(x)), y)

    def __repr__(self) -> str:
        return "CrossEntropy()" if self.classes is None else f"CrossEntropy(classes={self.classes})"


class ModelLoss:
    """The model's own loss on dict batches: ``model(**batch).loss`` (Hugging Face models).

    The batch passes through untouched (``input_ids``, ``attention_mask``, ``labels``, ...);
    the model computes its loss from the labels in it (for causal LMs: shifted, -100 ignored).
    """

    def __call__(self, model: nn.Module, batch: Any) -> Tensor:
        """``model(**batch).loss``."""
        if not isinstance(batch, Mapping):
            raise TypeError(f"ModelLoss takes dict batches; got {type(batch).__name__}.")
        out = model(**batch)
        loss = out.get("loss") if isinstance(out, Mapping) else getattr(out, "loss", None)
        if loss is None:
            raise ValueError("The model returned no .loss: does the batch hold 'labels'?")
        return loss

    def logits(self, output: Any) -> Tensor:
        """``output.logits`` (or ``output["logits"]``)."""
        return _output_logits(output)

    def __repr__(self) -> str:
        return "ModelLoss()"


def _output_logits(output: Any) -> Tensor:
    logits = output.get("logits") if isinstance(output, Mapping) \
        else getattr(output, "logits", output)
    if not isinstance(logits, Tensor):
        raise TypeError(f"The model's output has no logits tensor ({type(output).__name__}).")
    return logits


class CausalLM:
    """Next-token cross-entropy of a causal language model on dict batches.

    Shapes: ``input_ids`` (N, T) -> model -> logits (N, T, V); position t predicts token t + 1,
    so the loss and the estimators use logits[:, :-1] (N, T-1, V) against targets (N, T-1): the
    batch's ``labels`` shifted by one, or, without labels, ``input_ids`` shifted with padding
    (``attention_mask`` 0) ignored. Targets equal to `ignore_index` take no part. The loss is the
    mean over all counted tokens of the batch, as Hugging Face models compute it.

    Args:
        ignore_index: Label value of positions to skip (-100, Hugging Face's convention).
    """

    def __init__(self, ignore_index: int = IGNORE_INDEX):
        self.ignore_index = int(ignore_index)

    def logits(self, output: Any) -> Tensor:
        """Shifted logits (N, T-1, V) from the model's output (a tensor or ``.logits``)."""
        logits = _output_logits(output)
        if logits.dim() != 3:
            raise ValueError(f"CausalLM expects logits of shape (N, T, V); got "
                             f"{tuple(logits.shape)}.")
        return logits[:, :-1]

    def targets(self, inputs: Any, labels: Tensor | None) -> Tensor:
        """Shifted targets (N, T-1): ``labels[:, 1:]``, else ``input_ids[:, 1:]`` minus padding."""
        if labels is None:
            if not isinstance(inputs, Mapping) or "input_ids" not in inputs:
                raise ValueError("CausalLM needs 'labels' or 'input_ids' in the batch; got "
                                 + (f"keys {sorted(inputs)}." if isinstance(inputs, Mapping)
                                    else f"a {type(inputs).__name__}."))
            labels = inputs["input_ids"]
            mask = inputs.get("attention_mask")
            if mask is not None:
                labels = labels.masked_fill(mask == 0, self.ignore_index)
        if labels.dim() != 2:
            raise ValueError(f"CausalLM labels must have shape (N, T); got {tuple(labels.shape)}.")
        return labels[:, 1:]

    def __call__(self, model: nn.Module, batch: Any) -> Tensor:
        """Mean next-token cross-entropy over the batch's counted tokens."""
        if not isinstance(batch, Mapping):
            raise TypeError(f"CausalLM takes dict batches; got {type(batch).__name__}.")
        inputs = {k: v for k, v in batch.items() if k not in ("labels", "label")}
        targets = self.targets(inputs, batch.get("labels"))
        logits = self.logits(model(**inputs))
        if targets.shape != logits.shape[:-1]:
            raise ValueError(f"labels of shape {tuple(targets.shape)} (shifted) do not match "
                             f"logits of shape {tuple(logits.shape)} (shifted).")
        if not (targets != self.ignore_index).any():
            raise ValueError("Every label of the batch is ignored (-100 or padding): there is "
                             "no token to learn from.")
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                               targets.reshape(-1), ignore_index=self.ignore_index)

    def __repr__(self) -> str:
        return "CausalLM()" if self.ignore_index == IGNORE_INDEX \
            else f"CausalLM(ignore_index={self.ignore_index})"


def is_causal_lm(model: nn.Module) -> bool:
    """True for a Hugging Face causal language model, also wrapped by PEFT.

    Recognised by class name: ``*ForCausalLM``, ``*LMHeadModel``.
    """
    names = [type(m).__name__ for m in (model, getattr(model, "base_model", None),
                                        getattr(getattr(model, "base_model", None), "model",
                                                None)) if m is not None]
    return any(n.endswith("ForCausalLM") or n.endswith("LMHeadModel") for n in names)


def default_loss(model: nn.Module) -> LogitLoss | None:
    """The loss an estimator uses when none is given.

    `CausalLM` for a causal LM, `ModelLoss` for another model with a Hugging Face style
    ``config``, None (the raw output) otherwise.
    """
    if is_causal_lm(model):
        return CausalLM()
    if hasattr(model, "config") and hasattr(model, "forward"):
        return ModelLoss()
    return None
