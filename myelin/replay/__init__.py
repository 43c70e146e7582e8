"""Replay baselines: methods that store samples of earlier tasks and train on them again.

Registered methods (``myelin run --method NAME``, `myelin.fit`, composable with ``+``):

* ``er`` — experience replay (reservoir sampling; CTN's per-task ring as an option);
* ``agem`` — A-GEM: the gradient projected when it conflicts with the memory's;
* ``gem`` — GEM: one constraint per past task, the original's dual QP;
* ``mer`` — Meta-Experience Replay (Riemer et al., Algorithm 1);
* ``mir`` — Maximally Interfered Retrieval;
* ``ctn`` — Contextual Transformation Networks (task-aware).

Memory is counted in samples, given as ``memory=`` (total) or ``memory_per_task=``; it lives on
the training device in preallocated tensors (`myelin.replay.memory`).
"""

from __future__ import annotations

from . import ctn, er, gem, mer, mir
from .base import Replay, budget, per_sample_losses, replay_loss, task_loss
from .ctn import CTN, CTNNet, ctn_mlp
from .er import ER
from .gem import AGEM, GEM, gem_dual, gem_project
from .memory import Memory, ReservoirMemory, RingMemory
from .mer import MER
from .mir import MIR, ScoredReservoir

__all__ = ["AGEM", "CTN", "ER", "GEM", "MER", "MIR", "CTNNet", "Memory", "Replay",
           "ReservoirMemory", "RingMemory", "ScoredReservoir", "budget", "ctn", "ctn_mlp", "er",
           "gem", "gem_dual", "gem_project", "mer", "mir", "per_sample_losses", "replay_loss",
           "task_loss"]
