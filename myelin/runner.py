"""The continual-learning runner: a scenario and a learner -> an accuracy matrix and its metrics.

A *learner* is anything that learns tasks one after another and can be scored on a task's test
set: a network trained by gradients with a method (`myelin.train.GradientLearner`, what
`myelin.fit` builds), CoLaNET (`myelin.snn`), or your own. The runner owns the protocol that
makes their numbers comparable — accuracy on every task before training, then after each task
the full row of the accuracy matrix, timings, metrics and the configuration — and writes it all
into one `Result`.

The `Learner` protocol (every hook but `learn` and `evaluate` may be omitted by subclassing
`Learner`, whose defaults do nothing):

* ``begin(scenario, result)`` — once, before anything is evaluated;
* ``learn(k, task)`` — train on task k (may return extra numbers for ``Result.timings``);
* ``evaluate(task, after)`` — accuracy in [0, 1] on ``task.test`` (``after``: index of the last
  task trained, None before any training);
* ``end_task(k, task, row)`` — after the row of task k was measured (e.g. consolidate);
* ``config()`` — JSON-serialisable settings, merged into ``Result.config``;
* ``restore(result)`` — right after `begin`: load a saved state (a checkpoint) into the
  learner and the partial `result`, and return how many tasks it had finished (0: start
  afresh); the runner then skips those tasks, and the random-init evaluation if the restored
  result holds it;
* ``checkpoint(k, result)`` — after task k's row and timings were added to `result` (e.g. save
  a checkpoint a later `restore` continues from).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

from . import metrics

if TYPE_CHECKING:
    from .scenarios import Scenario, Task

__all__ = ["Learner", "Result", "run"]


@dataclass
class Result:
    """Everything a run produced; `save` writes it as JSON.

    Attributes:
        accuracy: a[k][j], test accuracy on task j after training task k (T x T).
        random_init: Accuracy on each task before any training (for forward transfer).
        curves: One entry per evaluation: {"iteration", "task", "accuracies"} where
            accuracies[j] is the accuracy on seen task j (the seeds' figures plot these).
        losses: Mean training loss (without any consolidation penalty) per evaluation
            window: {"iteration", "task", "loss"}.
        timings: Seconds per task: "train" (`learn`), "eval" (the accuracy-matrix row) and
            "importance" (`end_task`: consolidation, and for `fit` the end-of-task curve point).
        metrics: AA, FM, BWT, FWT, LA, two-task FM (see `myelin.metrics`).
        config: The full configuration, seeds included.
    """

    accuracy: list[list[float]]
    random_init: list[float]
    curves: list[dict[str, Any]] = field(default_factory=list)
    losses: list[dict[str, Any]] = field(default_factory=list)
    timings: list[dict[str, float]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the result as JSON (atomically)."""
        tmp = f"{os.fspath(path)}.tmp"
        with open(tmp, "w") as f:
            json.dump(asdict(self), f, indent=1)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Result:
        """Read a result written by `save` (or a sweep's record, which also holds its spec).

        Raises:
            FileNotFoundError: No such file.
            ValueError: The file is not JSON, or not a result: keys missing, the accuracy
                matrix not T x T finite numbers, `random_init` not T of them, or malformed
                curves (the message names the file and what is wrong).
        """
        where = repr(os.fspath(path))
        with open(path) as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where} is not a myelin result: not valid JSON ({exc})."
                                 ) from None
        if not isinstance(data, dict):
            raise ValueError(f"{where} is not a myelin result (a JSON {type(data).__name__}, "
                             "not an object).")
        missing = {"accuracy", "random_init"} - set(data)
        if missing:
            raise ValueError(f"{where} is not a myelin result (missing {missing}).")
        known = {f.name for f in fields(cls)}       # a record may carry more (e.g. its "spec")
        result = cls(**{k: v for k, v in data.items() if k in known})
        try:
            metrics.summary(result.accuracy, result.random_init)     # checks shape and values
            if not isinstance(result.random_init, list) \
                    or len(result.random_init) != len(result.accuracy):
                raise ValueError(f"random_init must hold one accuracy per task "
                                 f"({len(result.accuracy)}); got {result.random_init!r:.80}.")
            _check_curves(result.curves)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where} is not a valid myelin result: {exc}") from None
        return result

    @property
    def average_accuracy(self) -> float:
        """AA: mean accuracy over all tasks after the last one."""
        return metrics.average_accuracy(self.accuracy)


def _check_curves(curves: Any) -> None:
    """Raise ValueError unless `curves` is a list of {"iteration", "task", "accuracies"}."""
    if not isinstance(curves, list):
        raise ValueError(f"curves must be a list; got a {type(curves).__name__}.")
    for i, c in enumerate(curves):
        if not (isinstance(c, dict) and isinstance(c.get("iteration"), (int, float))
                and isinstance(c.get("task"), int) and isinstance(c.get("accuracies"), list)
                and all(isinstance(v, (int, float)) for v in c["accuracies"])):
            raise ValueError(f"curves[{i}] must be {{'iteration': number, 'task': int, "
                             f"'accuracies': [numbers]}}; got {str(c)[:80]}.")


class Learner:
    """Base class of what `run` trains; override `learn` and `evaluate`, the rest is optional."""

    def begin(self, scenario: Scenario, result: Result) -> None:
        """Called once before the random-init evaluation (`result` receives curves, losses)."""

    def learn(self, k: int, task: Task) -> dict[str, float] | None:
        """Train on task `k`; may return extra per-task numbers for ``Result.timings``."""
        raise TypeError(f"{type(self).__name__} must implement learn(k, task).")

    def evaluate(self, task: Task, after: int | None) -> float:
        """Accuracy on ``task.test`` after training task `after` (None: before any)."""
        raise TypeError(f"{type(self).__name__} must implement evaluate(task, after).")

    def end_task(self, k: int, task: Task, row: list[float]) -> None:
        """After task `k`'s row of the accuracy matrix was measured (e.g. consolidate)."""

    def config(self) -> dict[str, Any]:
        """JSON-serialisable settings for ``Result.config``."""
        return {}

    def restore(self, result: Result) -> int:
        """Load a saved state into the learner and `result`; tasks already done (default 0)."""
        return 0

    def checkpoint(self, k: int, result: Result) -> None:
        """After task `k`'s row was added to `result` (e.g. save a checkpoint)."""


def _scenario_config(scenario: Scenario) -> dict[str, Any]:
    return {"name": scenario.name, "setting": scenario.setting,
            "n_classes": scenario.n_classes, "labels_trick": scenario.labels_trick,
            "tasks": [t.name for t in scenario.tasks], **scenario.config}


def run(scenario: Scenario, learner: Learner) -> Result:
    """Train `learner` on the scenario's tasks in order and measure what it keeps.

    Args:
        scenario: The task sequence (see `myelin.scenarios`).
        learner: What learns (see the module docstring).

    Returns:
        A `Result`: the accuracy matrix (T x T), random-init accuracies, per-task timings
        ("train", "eval", and "importance" — the time of `end_task`), metrics and config.
        A run resumed by ``learner.restore`` keeps the restored rows and timings (the "train"
        time of a task resumed mid-way counts only its resumed part).
    """
    tasks = scenario.tasks
    result = Result(accuracy=[], random_init=[])
    learner.begin(scenario, result)
    done = learner.restore(result)
    if isinstance(done, bool) or not isinstance(done, int) or not 0 <= done <= len(tasks) \
            or len(result.accuracy) != done:
        raise ValueError(f"{type(learner).__name__}.restore must return the number of tasks "
                         f"done (0..{len(tasks)}), one row of result.accuracy each; it returned "
                         f"{done!r} with {len(result.accuracy)} rows.")
    if not result.random_init:
        result.random_init = [learner.evaluate(t, None) for t in tasks]
    for k in range(done, len(tasks)):
        task = tasks[k]
        t0 = time.perf_counter()
        extra = learner.learn(k, task) or {}
        t1 = time.perf_counter()
        row = [learner.evaluate(t, k) for t in tasks]
        t2 = time.perf_counter()
        learner.end_task(k, task, row)
        t3 = time.perf_counter()
        result.accuracy.append(row)
        result.timings.append({"train": t1 - t0, "importance": t3 - t2, "eval": t2 - t1,
                               **extra})
        learner.checkpoint(k, result)
    result.metrics = metrics.summary(result.accuracy, result.random_init)
    result.config = {"scenario": _scenario_config(scenario), **learner.config()}
    return result
