"""Bridges to other training ecosystems (optional extras).

* `myelin.integrations.hf` — Hugging Face ``transformers.Trainer`` (``pip install myelin[hf]``):
  `ConsolidationCallback` applies EWC / L2 through the optimizer step and keeps its state in the
  Trainer's checkpoints; WVA is a torch optimizer and goes in ``Trainer(optimizers=...)``.
"""
