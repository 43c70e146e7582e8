"""Consolidation methods: make important weights hard to move.

* `EWC` — quadratic pull to anchor weights, weighted by importance (accumulate / separate /
  online modes, optional stabilized coefficient);
* `L2` — EWC with a uniform importance: the uniform quadratic pull (baseline);
* `WVA` — weight velocity attenuation, an optimizer wrapper scaling updates by 1/(1 + λΩ);
* `PenalizedOptimizer` — ``EWC.wrap(opt)`` / ``L2.wrap(opt)``: the penalty applied by the step.

Every consolidator is built the same way, ``Cls(model_or_params, lam, *, options...)``: the
model (or its parameters) first, λ second, everything else by keyword — ``EWC(model, 100,
mode="online")``, ``L2(model, 1.0)``, ``WVA(model, 300, on="step")``. ``wrap(optimizer)`` gives
the optimizer to step: ``EWC(model, lam).wrap(opt)`` returns a `PenalizedOptimizer`,
``WVA(model, lam).wrap(opt)`` binds the WVA to `opt` and returns the WVA itself
(``WVA(model, lam, optimizer=opt)`` is the same; the earlier ``WVA(opt, model, lam)`` is still
accepted).

All follow the `Consolidator` protocol: ``consolidate(importance)``, ``penalty()``,
``state_dict()``/``load_state_dict()``, ``save(path)``/``load(path)``, ``state_nbytes()``,
``memory_bytes()``. λ is the ``lam`` attribute, checked on assignment; ``load`` checks the saved
state (finite tensors, valid settings) and warns when its settings (λ, ...) replace different
ones. EWC and L2 take ``state_dtype=torch.bfloat16`` to keep their state in half the bytes.

Sharded parameters (FSDP2, ``torch.distributed.fsdp.fully_shard``): create the consolidator on
every rank after sharding the model. Its state (Ω, θ*, A) is then made of DTensors placed like
the parameters, so each rank stores its shards only (`state_nbytes` counts this rank's bytes),
and every step works on the local shards with no communication. `consolidate` takes a whole
importance (the same on every rank, estimated on an unsharded copy of the model or with DDP)
and keeps this rank's part; `penalty()` is this rank's share of the penalty, with the whole
penalty's gradient for its shards. `save` is a collective (call it on every rank): it gathers
whole tensors and rank 0 writes the same file one process would, so `load` accepts it under any
number of ranks, or in one process (a different world size is not an error), each rank taking
its shards. Ranks whose models name different parameters raise ValueError on every rank when
the consolidator is created. ``EWC.wrap``'s step is not fused then (the penalty's gradient is
added to the gradient shards, then the base step).
"""

from .base import Consolidator
from .ewc import EWC
from .l2 import L2
from .penalized import PenalizedOptimizer
from .wva import WVA, attenuation

__all__ = ["EWC", "L2", "WVA", "Consolidator", "PenalizedOptimizer", "attenuation"]
