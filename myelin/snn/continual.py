"""CoLaNET on myelin's continual-learning scenarios: the same runner, matrix and metrics."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..runner import Learner, Result, run
from ..scenarios import Scenario, Task
from .colanet import CoLaNET, as_pixels

__all__ = ["CoLaNETLearner", "fit_scenario"]


class CoLaNETLearner(Learner):
    """A `CoLaNET` as a `myelin.runner.Learner`: one online pass per task, no gradients.

    Args:
        net: A CoLaNET whose `n_classes` is the scenario's label space and `n_inputs` its pixels.
        eval_samples: Evaluate on at most this many test samples per task (None: all).
        progress: Progress bars.
    """

    def __init__(self, net: CoLaNET, *, eval_samples: int | None = None,
                 progress: bool | None = None):
        self.net, self.eval_samples, self.progress = net, eval_samples, progress

    def begin(self, scenario: Scenario, result: Result) -> None:
        """Check the label space; convert every test set to pixels once."""
        if self.net.n_classes != scenario.n_classes:
            raise ValueError(f"The network has {self.net.n_classes} columns; the scenario needs "
                             f"{scenario.n_classes}.")
        self._tests: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for t in scenario.tasks:
            n = len(t.test) if self.eval_samples is None else min(self.eval_samples, len(t.test))
            self._tests[id(t)] = (as_pixels(t.test)[:n], t.test.targets[:n].numpy())

    def learn(self, k: int, task: Task) -> dict[str, float]:
        """One online pass over the task's training set; returns its images per second."""
        t0 = time.perf_counter()
        self.net.fit(as_pixels(task.train), task.train.targets.numpy(), progress=self.progress)
        return {"train_images_per_s": len(task.train) / max(time.perf_counter() - t0, 1e-9)}

    def evaluate(self, task: Task, after: int | None) -> float:
        """Accuracy (argmax of OUT spike counts over all columns; no spike counts as wrong)."""
        x, y = self._tests[id(task)]
        return self.net.score(x, y)

    def config(self) -> dict[str, Any]:
        """The network's settings."""
        return {"model": repr(self.net), "colanet": {**self.net.get_params()},
                "eval_samples": self.eval_samples}


def fit_scenario(net: CoLaNET, scenario: Scenario, *, eval_samples: int | None = None,
                 progress: bool | None = None) -> Result:
    """Train `net` on each task in order (one online pass each) and fill the accuracy matrix.

    Args:
        net: A CoLaNET whose `n_classes` is the scenario's label space and `n_inputs` its pixels.
        scenario: Any myelin scenario (permuted, split, sequence ...). Task-IL masks are not
            applied: CoLaNET answers with the argmax over all columns.
        eval_samples: Evaluate on at most this many test samples per task (None: all).
        progress: Progress bars.

    Returns:
        A `myelin.Result`: accuracy[k][j] after task k on task j, metrics (AA, FM, BWT, ...),
        per-task timings and the network's settings in `config`.
    """
    return run(scenario, CoLaNETLearner(net, eval_samples=eval_samples, progress=progress))
