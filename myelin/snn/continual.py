"""CoLaNET on myelin's continual-learning scenarios: the same accuracy matrix and metrics."""

from __future__ import annotations

import time

import numpy as np

from .. import metrics
from ..scenarios import Scenario
from ..train import Result
from .colanet import CoLaNET, as_pixels

__all__ = ["fit_scenario"]


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
    if net.n_classes != scenario.n_classes:
        raise ValueError(f"The network has {net.n_classes} columns; the scenario needs "
                         f"{scenario.n_classes}.")
    tests = []
    for t in scenario.tasks:
        n = len(t.test) if eval_samples is None else min(eval_samples, len(t.test))
        tests.append((as_pixels(t.test)[:n], t.test.targets[:n].numpy()))
    random_init = [net.score(x, y) for x, y in tests]
    result = Result(accuracy=[], random_init=random_init)
    for k, task in enumerate(scenario.tasks):
        t0 = time.perf_counter()
        net.fit(as_pixels(task.train), task.train.targets.numpy(), progress=progress)
        t1 = time.perf_counter()
        result.accuracy.append([net.score(x, y) for x, y in tests])
        t2 = time.perf_counter()
        result.timings.append({"train": t1 - t0, "importance": 0.0, "eval": t2 - t1,
                               "train_images_per_s": len(task.train) / max(t1 - t0, 1e-9)})
        if progress:
            print(f"task {k + 1}/{len(scenario)}: {np.round(result.accuracy[-1], 4).tolist()}",
                  flush=True)
    result.metrics = metrics.summary(result.accuracy, random_init)
    result.config = {"scenario": {"name": scenario.name, "setting": scenario.setting,
                                  **scenario.config},
                     "model": repr(net), "colanet": {**net.get_params()},
                     "eval_samples": eval_samples}
    return result
