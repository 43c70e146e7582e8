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
* **after loss-scale unscaling** in fp16: ``torch.amp.GradScaler.step`` unscales the gradients
  and then calls the optimizer's ``step()`` only if they are finite, so a step the scaler skips
  gets no pull either and leaves the weights, the optimizer's state and the consolidator's
  state unchanged (tested with a ``GradScaler`` directly: on a CPU-only machine accelerate runs
  ``fp16=True`` as plain float32, with neither autocast nor a scaler); in bf16 autocast the
  master weights, gradients, Ω and θ* are float32.

Its state (Ω, θ*, configuration) is written into every checkpoint folder as
``myelin-consolidation.safetensors`` and read back when the Trainer resumes
(``trainer.train(resume_from_checkpoint=...)``), so a resumed run pulls toward the same anchor
without recomputing the importance.

WVA is an optimizer wrapper, so it *is* the Trainer's optimizer::

    adamw = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    wva = WVA(model, lam=100.0, optimizer=adamw)
    wva.consolidate(fisher(model, old_batches))
    trainer = Trainer(model=model, args=args, train_dataset=new_data, optimizers=(wva, None))

Its ``state_dict`` holds the base optimizer's state and the stored attenuation, so the
Trainer's own optimizer checkpoint restores both. ``fused=True`` is what the Trainer's own
default AdamW uses; on the CPU WVA then takes the attenuated step as one compiled pass per
parameter, as torch's fused step does (a foreach AdamW gets torch's foreach arithmetic).
On the CPU under Linux, `myelin.memory.keep_freed_memory()` before training keeps each step's
activations from faulting in as fresh pages (measured: up to +1 s on a 3.5 s SmolLM2 step once
a consolidator's state is resident).

No old data? `self_generated` samples text from the model itself (a few generic prompts): the
sampled Fisher on it estimates what the model's own distribution depends on.
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
from ..importance.base import input_vocabulary, trainable_parameters

__all__ = ["STATE_FILE", "ConsolidationCallback", "self_generated"]

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
            resume, if no saved state is found, or if the saved state was made for another
            model (parameter names or shapes differ; both named).
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
        try:
            self.consolidator.load(path)
        except ValueError as err:
            raise ValueError(
                f"The Trainer resumed at step {state.global_step}, but the consolidation state "
                f"at {str(path)!r} cannot be loaded into the {type(self.consolidator).__name__} "
                f"of the Trainer's model: {err} Pass ConsolidationCallback(..., "
                "restore='<checkpoint folder of this model>'), or restore=False to keep the "
                "consolidator as built."
            ) from err


def _check_vocabulary(model: nn.Module, tokenizer: Any) -> None:
    """Refuse a tokenizer that can produce ids the model's input embedding has no row for."""
    rows = input_vocabulary(model)
    try:
        size = len(tokenizer)                   # with the added (special) tokens
    except TypeError:
        size = getattr(tokenizer, "vocab_size", None)
    if rows is not None and isinstance(size, int) and size > rows:
        raise ValueError(
            f"The tokenizer has {size} tokens but the model's input embedding has {rows} rows: "
            f"token ids {rows}..{size - 1} have no embedding. Is it another model's tokenizer? "
            "(If tokens were added on purpose, call model.resize_token_embeddings(len(tokenizer)) "
            "first.)")


@torch.no_grad()
def self_generated(model: nn.Module, tokenizer: Any, prompts: list[str], *,
                   samples_per_prompt: int = 4, max_new_tokens: int = 64, seed: int = 0,
                   temperature: float = 1.0, top_p: float | None = None, chat: bool = False,
                   batch_size: int = 8) -> list[dict[str, torch.Tensor]]:
    """Text the model writes itself, as dict batches for the importance estimators.

    For a downloaded model whose training data is not at hand: sample continuations of generic
    prompts from the model and estimate importance on them (e.g. ``fisher(model, batches,
    empirical=False)``, the sampled Fisher). Prompt tokens get label -100, so only the model's
    own tokens count; padding (right) is masked.

    Args:
        model: A Hugging Face causal LM (``generate``).
        tokenizer: Its tokenizer (a pad token is taken from EOS if it has none).
        prompts: The prompts, e.g. a few generic questions.
        samples_per_prompt: Continuations sampled per prompt.
        max_new_tokens: Length of each continuation.
        seed: Seed of the sampling (the global RNG is restored afterwards).
        temperature: Sampling temperature (> 0).
        top_p: Nucleus sampling threshold, or None for plain sampling.
        chat: Wrap each prompt in the tokenizer's chat template as a user turn.
        batch_size: Sequences per returned batch.

    Returns:
        A list of ``{"input_ids": (B, T), "attention_mask": (B, T), "labels": (B, T)}``.

    Raises:
        ValueError: No prompts, non-positive counts or temperature, a model without
            ``generate``, or a tokenizer with more tokens than the model's input embedding has
            rows (another model's tokenizer; both sizes named).
    """
    if not prompts or not all(isinstance(p, str) and p for p in prompts):
        raise ValueError("prompts must be a non-empty list of non-empty strings.")
    for name, value in (("samples_per_prompt", samples_per_prompt),
                        ("max_new_tokens", max_new_tokens), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int. Got {value!r}.")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0. Got {temperature!r}.")
    if not callable(getattr(model, "generate", None)):
        raise ValueError(f"{type(model).__name__} cannot generate text (no .generate).")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None \
        else tokenizer.eos_token_id
    if pad is None:
        raise ValueError("The tokenizer has neither a pad nor an EOS token.")
    _check_vocabulary(model, tokenizer)
    device = next(model.parameters()).device
    sequences: list[tuple[torch.Tensor, int]] = []
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for prompt in prompts:
                if chat:
                    ids = tokenizer.apply_chat_template(
                        [{"role": "user", "content": prompt}], add_generation_prompt=True,
                        return_tensors="pt")
                    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(
                        ids, "keys") else ids
                else:
                    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
                ids = ids.to(device)
                out = model.generate(
                    input_ids=ids.expand(samples_per_prompt, -1),
                    attention_mask=torch.ones_like(ids).expand(samples_per_prompt, -1),
                    do_sample=True, temperature=temperature, top_p=top_p,
                    max_new_tokens=max_new_tokens, pad_token_id=pad)
                for row in out:
                    sequences.append((row.cpu(), ids.shape[1]))
    finally:
        model.train(was_training)
    eos = tokenizer.eos_token_id
    batches = []
    for i in range(0, len(sequences), batch_size):
        chunk = sequences[i:i + batch_size]
        lengths = []
        for row, start in chunk:
            length = len(row)
            if eos is not None:          # keep up to and including the first EOS it wrote
                hits = (row[start:] == eos).nonzero()
                if len(hits):
                    length = start + int(hits[0]) + 1
            lengths.append(length)
        width = max(lengths)
        input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        labels = torch.full((len(chunk), width), -100, dtype=torch.long)
        for j, ((row, start), length) in enumerate(zip(chunk, lengths)):
            input_ids[j, :length] = row[:length]
            mask[j, :length] = 1
            labels[j, start:length] = row[start:length]
        batches.append({"input_ids": input_ids, "attention_mask": mask, "labels": labels})
    return batches
