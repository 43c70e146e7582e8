"""The scenario types: a `Scenario` is an ordered list of `Task`s plus how they share labels."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from ..data.datasets import ArrayDataset

__all__ = ["SETTINGS", "Scenario", "Task"]

SETTINGS = ("task", "domain", "class")


@dataclass
class Task:
    """One task of a scenario.

    Attributes:
        name: Short description.
        train: Training set (images (N, C, H, W), labels in the scenario's label space).
        test: Test set.
        classes: The label values this task uses.
    """

    name: str
    train: ArrayDataset
    test: ArrayDataset
    classes: list[int]


@dataclass
class Scenario:
    """An ordered list of tasks plus how the labels are shared between them.

    Attributes:
        name: Short description, e.g. "permuted-mnist-10".
        tasks: The tasks, in training order.
        n_classes: Size of the model's output layer.
        setting: "task", "domain" or "class".
        labels_trick: Restrict the training loss to the current task's classes (class-IL).
        config: How the scenario was built (for the result JSON).
        seen_classes: Class-IL: the loss and the prediction use only the classes of the tasks
            seen so far (Hsu et al. 2018's class-IL); unseen classes' outputs stay untrained.
    """

    name: str
    tasks: list[Task]
    n_classes: int
    setting: str
    labels_trick: bool = False
    config: dict = field(default_factory=dict)
    seen_classes: bool = False

    def __post_init__(self) -> None:
        if self.setting not in SETTINGS:
            raise ValueError(f"setting must be one of {SETTINGS}. Got {self.setting!r}.")
        if not self.tasks:
            raise ValueError("A scenario needs at least one task.")
        if self.seen_classes and (self.setting != "class" or self.labels_trick):
            raise ValueError("seen_classes applies to class-IL without the labels trick.")

    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self) -> Iterator[Task]:
        return iter(self.tasks)

    def __getitem__(self, i: int) -> Task:
        return self.tasks[i]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input sample, e.g. (1, 28, 28)."""
        return self.tasks[0].train.shape

    def train_mask(self, task: Task) -> list[int] | None:
        """Classes the training loss may use for `task` (None: all)."""
        if self.setting == "task" or (self.setting == "class" and self.labels_trick):
            return task.classes
        if self.seen_classes:
            return self._seen(self.index(task))
        return None

    def eval_mask(self, task: Task, after: int | None = None) -> list[int] | None:
        """Classes prediction may choose from on `task` after training task `after` (None: all).

        With `seen_classes`, the classes of tasks 0..after; otherwise `after` does not matter.
        """
        if self.setting == "task":
            return task.classes
        if self.seen_classes and after is not None:
            return self._seen(after)
        return None

    def index(self, task: Task) -> int:
        """Position of `task` (by identity) in the scenario."""
        for i, t in enumerate(self.tasks):
            if t is task:
                return i
        raise ValueError(f"Task {task.name!r} is not in this scenario.")

    def _seen(self, k: int) -> list[int]:
        return sorted({c for t in self.tasks[:k + 1] for c in t.classes})
