"""Consolidation methods: make important weights hard to move.

* `EWC` — quadratic pull to anchor weights, weighted by importance (accumulate / separate /
  online modes, optional stabilized coefficient);
* `WVA` — weight velocity attenuation, an optimizer wrapper scaling updates by 1/(1 + λΩ);
* `L2` — uniform quadratic pull (baseline);
* `PenalizedOptimizer` — ``EWC.wrap(opt)`` / ``L2.wrap(opt)``: the penalty applied by the step.

All follow the `Consolidator` protocol: ``consolidate(importance)``, ``penalty()``,
``state_dict()``/``load_state_dict()``, ``save(path)``/``load(path)``, ``memory_bytes()``.
"""

from .base import Consolidator
from .ewc import EWC
from .l2 import L2
from .penalized import PenalizedOptimizer
from .wva import WVA, attenuation

__all__ = ["EWC", "L2", "WVA", "Consolidator", "PenalizedOptimizer", "attenuation"]
