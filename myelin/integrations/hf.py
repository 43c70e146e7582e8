"""Hugging Face ``transformers.Trainer`` integration: EWC / L2 as a callback, WVA as the optimizer.

EWC and L2 (any consolidator with ``apply_to_grad``) run through `ConsolidationCallback`::

    from myelin.consolidation import EWC
    from myelin.importance import fisher
    from myelin.integrations.hf import ConsolidationCallback

    ewc = EWC(model, lam=1e4)                       # after get_peft_model, if any
    ewc.consolidate(fisher(model, old_batches))     # dict batches; causal LMs shift labels
    trainer = Trainer(model=model, args=args, train_dataset=new_data,
                      callbacks=[ConsolidationCallback(ewc)])

The penalty's gradient 2c(θ − θ*) is added inside the optimizer's ``step()`` (a step pre-hook
on the torch optimizer), so it is

* **outside gradient clipping**: ``max_grad_norm`` clips the loss gradient only; the pull
  toward the anchor is never clipped (add ``ewc.penalty()`` to the loss in a ``compute_loss``
  override if you want it clipped with the rest);
* **once per optimizer step** under gradient accumulation (the accumulated gradient is the mean
  over micro-batches, the pull is added once);
* **after loss-scale unscaling** in fp16 (a step the scaler skips gets no pull either); in bf16
  autocast the master weights, gradients, Ω and θ* are float32.

Its state (Ω, θ*, configuration) is written into every checkpoint folder as
``myelin-consolidation.safetensors`` and read back when the Trainer resumes
(``trainer.train(resume_from_checkpoint=...)``), so a resumed run pulls toward the same anchor
without recomputing the importance.

WVA is an optimizer wrapper, so it *is* the Trainer's optimizer::

    wva = WVA(model, lam=100.0, optimizer=torch.optim.AdamW(model.parameters(), lr=1e-4))
    wva.consolidate(fisher(model, old_batches))
    trainer = Trainer(model=model, args=args, train_dataset=new_data, optimizers=(wva, None))

Its ``state_dict`` holds the base optimizer's state and the stored attenuation, so the
Trainer's own optimizer checkpoint restores both.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

try:
    from transformers import TrainerCallback
except ImportError as err:   # pragma: no cover - the hf extra is installed in CI
    raise ImportError("myelin.integrations.hf needs transformers: pip install 'myelin[hf]'") \
        from err

from ..consolidation.base import Consolidator
from ..importance.base import trainable_parameters

__all__ = ["STATE_FILE", "ConsolidationCallback"]

STATE_FILE = "myelin-consolidation.safetensors"


def _torch_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """The torch optimizer under accelerate's ``AcceleratedOptimizer`` (if any)."""
    inner = getattr(optimizer, "optimizer", optimizer)
    if not isinstance(inner, torch.optim.Optimizer):
        raise TypeError(f"ConsolidationCallback needs a torch optimizer; the Trainer has "
                        f"{type(optimizer).__name__}.")
    return inner


class ConsolidationCallback(TrainerCallback):
    """Apply a consolidator's penalty (EWC, L2) in a ``transformers.Trainer`` and checkpoint it.

    Args:
        consolidator: An `EWC` or `L2` (anything with ``apply_to_grad()``) built on the model
            the Trainer trains — after PEFT wrapping, so it covers the trainable parameters.
        restore: On resume, read the state saved in the checkpoint the Trainer resumes from:
            True (look in ``output_dir/checkpoint-<step>``), a path to a state file or to a
            checkpoint folder, or False (keep the consolidator as it is).

    Raises:
        TypeError: `consolidator` cannot add a penalty gradient (WVA: use it as the optimizer).
        ValueError: At the start of training, if the consolidator protects parameters the
            Trainer's model does not train (e.g. it was built before ``get_peft_model``); on
            resume, if no saved state is found (with ``restore=True``).
    """

    def __init__(self, consolidator: Consolidator, *,
                 restore: bool | str | os.PathLike[str] = True):
        if not callable(getattr(consolidator, "apply_to_grad", None)):
            raise TypeError(
                f"ConsolidationCallback applies a penalty gradient (EWC, L2); "
                f"{type(consolidator).__name__} has no apply_to_grad. A WVA is an optimizer: "
                "pass it as Trainer(optimizers=(wva, None)).")
        self.consolidator = consolidator
        self.restore = restore
        self._handle: Any = None
        self._restored = False

    # training ---------------------------------------------------------------------------------
    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Check the consolidator matches the model; hook the optimizer's step."""
        model = kwargs.get("model")
        if isinstance(model, nn.Module):
            self._check_model(model)
        self._restored = False
        optimizer = kwargs.get("optimizer")
        if optimizer is not None:
            self._hook(optimizer)

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """On the first step of a resumed run, restore the checkpoint's state."""
        if self._handle is None and kwargs.get("optimizer") is not None:
            self._hook(kwargs["optimizer"])
        if not self._restored:
            self._restored = True
            if state.global_step > 0 and self.restore is not False:
                self._restore(args, state)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Remove the optimizer hook."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Write the consolidator's state into the checkpoint folder just saved."""
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir():
            self.consolidator.save(folder / STATE_FILE)

    # helpers ----------------------------------------------------------------------------------
    def _hook(self, optimizer: Any) -> None:
        inner = _torch_optimizer(optimizer)
        consolidator = self.consolidator

        def pre_step(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            consolidator.apply_to_grad()

        self._handle = inner.register_step_pre_hook(pre_step)

    def _check_model(self, model: nn.Module) -> None:
        trainable = {id(p) for p in trainable_parameters(model).values()}
        protected = self.consolidator.params.params
        outside = [n for n, p in protected.items() if id(p) not in trainable]
        if outside:
            raise ValueError(
                f"{type(self.consolidator).__name__} protects {len(outside)} parameter(s) the "
                f"Trainer's model does not train (e.g. {outside[0]!r}). Was it built before "
                "get_peft_model (which freezes the base weights and renames them)? Build the "
                "consolidator on the model you pass to the Trainer.")

    def _restore(self, args: Any, state: Any) -> None:
        if self.restore is True:
            path = Path(args.output_dir) / f"checkpoint-{state.global_step}" / STATE_FILE
        else:
            path = Path(self.restore)
            if path.is_dir():
                path = path / STATE_FILE
        if not path.is_file():
            raise ValueError(
                f"The Trainer resumed at step {state.global_step}, but there is no saved "
                f"consolidation state at {str(path)!r}. Pass ConsolidationCallback(..., "
                "restore='<checkpoint folder>') for a checkpoint saved elsewhere, or "
                "restore=False to keep the consolidator as built.")
        self.consolidator.load(path)
