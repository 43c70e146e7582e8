"""Continual-learning scenarios: sequences of tasks, each with train/test sets and its classes.

Settings (van de Ven & Tolias): ``"task"`` — the task identity is known, so training and
prediction are restricted to the task's classes (equivalent to one output head per task);
``"domain"`` — every task uses the same labels 0..k−1; ``"class"`` — one shared head over all
classes seen so far. ``labels_trick=True`` (class-IL) restricts only the training loss to the
current task's classes; ``seen_classes=True`` (class-IL, Hsu et al. 2018) restricts the loss and
the prediction to the classes of the tasks seen so far.

Modules: `base` (`Scenario`, `Task`), `builders` (`permuted`, `split`, `rotated`, `sequence`),
`kinds` (the registry of scenario kinds, `KINDS`, and the named scenarios of the command line,
`SCENARIOS`, generated from kind × dataset).
"""

from __future__ import annotations

from .base import SETTINGS, Scenario, Task
from .builders import permuted, rotated, sequence, split
from .kinds import KINDS, SCENARIOS, NamedScenario

__all__ = ["KINDS", "SCENARIOS", "SETTINGS", "NamedScenario", "Scenario", "Task", "permuted",
           "rotated", "sequence", "split"]
