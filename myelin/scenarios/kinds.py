"""Scenario kinds and the named scenarios of the command line, generated from kind × dataset.

A *kind* (`KINDS`) is a registered factory ``(dataset, **options) -> Scenario`` whose keyword
options have type annotations, defaults and an ``Args:`` docstring entry, like the methods'
factories: the command line builds its scenario flags (``--tasks``, ``--seen-classes``, ...)
from them. A *named scenario* (`SCENARIOS`, e.g. ``"split-mnist-class"``) is a kind bound to a
dataset (and, for ``split``, a setting); it takes the kind's remaining options::

    SCENARIOS.get("split-digits-class")(5, labels_trick=True)
    == KINDS.get("split")("digits", setting="class", n_tasks=5, labels_trick=True)

An option a scenario does not take is an error (`ValueError`), and an option given as None
means the kind's default.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from .._registry import Registry
from .base import SETTINGS, Scenario
from .builders import _check_tasks, permuted, rotated, sequence, split

__all__ = ["CATALOGUE", "KINDS", "SCENARIOS", "NamedScenario"]

KINDS: Registry[Callable[..., Scenario]] = Registry("scenario kind")


@KINDS.register("permuted", "{dataset} with a fixed pixel permutation per task (domain-IL; "
                "default {n_tasks} tasks)")
def permuted_kind(dataset: str, n_tasks: int = 10, seed: int = 0, *, root: str | None = None,
                  per_task_samples: int | None = None) -> Scenario:
    """Task t applies a fixed random pixel permutation to `dataset`; task 1 is the original.

    Args:
        dataset: Dataset name ("mnist", "fashion-mnist", "digits", ...).
        n_tasks: Number of tasks.
        seed: Seed of the permutations and of any subsampling.
        root: Directory with the dataset files.
        per_task_samples: Training samples per task (default: all).
    """
    return permuted(dataset, n_tasks, seed, per_task_samples=per_task_samples, root=root)


@KINDS.register("rotated", "{dataset} rotated by k·180/T degrees in task k (domain-IL; "
                "default {n_tasks} tasks)")
def rotated_kind(dataset: str, n_tasks: int = 5, seed: int = 0, *, root: str | None = None,
                 per_task_samples: int | None = None) -> Scenario:
    """Task k rotates every image of `dataset` by k·180/T degrees.

    Args:
        dataset: Dataset name.
        n_tasks: Number of tasks.
        seed: Seed of any subsampling.
        root: Directory with the dataset files.
        per_task_samples: Training samples per task (default: all).
    """
    _check_tasks(n_tasks)
    return rotated(dataset, [i * 180.0 / n_tasks for i in range(n_tasks)],
                   per_task_samples=per_task_samples, seed=seed, root=root)


@KINDS.register("split", "{dataset} split into class groups, {setting}-incremental (default "
                "{n_tasks} tasks)")
def split_kind(dataset: str, setting: str = "task", n_tasks: int = 5, seed: int = 0, *,
               root: str | None = None, per_task_samples: int | None = None,
               labels_trick: bool = False, seen_classes: bool = False) -> Scenario:
    """The 10 classes of `dataset` in `n_tasks` equal groups of consecutive classes.

    Args:
        dataset: Dataset name (10 classes).
        setting: "task", "domain" or "class" incremental.
        n_tasks: Number of tasks (10 classes: 1, 2, 5 or 10).
        seed: Seed of any subsampling.
        root: Directory with the dataset files.
        per_task_samples: Training samples per task (default: all).
        labels_trick: Class-IL: the loss uses only the current task's classes.
        seen_classes: Class-IL: loss and prediction use only the classes seen so far.
    """
    _check_tasks(n_tasks)
    if 10 % n_tasks:
        raise ValueError(f"split scenarios divide 10 classes into 1, 2, 5 or 10 tasks; "
                         f"got {n_tasks}.")
    size = 10 // n_tasks
    groups = [list(range(i * size, (i + 1) * size)) for i in range(n_tasks)]
    return split(dataset, groups, setting, labels_trick=labels_trick, seen_classes=seen_classes,
                 per_task_samples=per_task_samples, seed=seed, root=root)


@KINDS.register("sequence", "{dataset}, labels offset (class-IL)")
def sequence_kind(dataset: str, *, seed: int = 0, root: str | None = None,
                  per_task_samples: int | None = None) -> Scenario:
    """One task per dataset of ``"a+b"``, each task's labels after the previous task's.

    Args:
        dataset: Dataset names joined by "+", e.g. "mnist+fashion-mnist".
        seed: Seed of any subsampling.
        root: Directory with the dataset files.
        per_task_samples: Training samples per task (default: all).
    """
    return sequence(*dataset.split("+"), per_task_samples=per_task_samples, seed=seed,
                    root=root)


class NamedScenario:
    """A scenario kind bound to a dataset (and options): calling it builds the scenario.

    Its signature (`inspect.signature`) is the kind's without `dataset` and the bound options.

    Args:
        name: The registered name, e.g. "split-mnist-class".
        kind: The kind's registered name.
        dataset: The dataset given to the kind.
        bound: Options fixed by the name, e.g. ``{"setting": "class"}``.
    """

    def __init__(self, name: str, kind: str, dataset: str, bound: Mapping[str, Any] = ()):
        self.name, self.kind, self.dataset, self.bound = name, kind, dataset, dict(bound)
        factory = KINDS.get(kind)
        sig = inspect.signature(factory, eval_str=True)
        self.__signature__ = sig.replace(parameters=[
            p for n, p in sig.parameters.items() if n != "dataset" and n not in self.bound])
        self.__doc__ = factory.__doc__

    def options(self) -> list[str]:
        """The names of the options this scenario takes."""
        return list(self.__signature__.parameters)

    def check(self, *args: Any, **options: Any) -> dict[str, Any]:
        """The kind's arguments for these options, checked without loading any data.

        None-valued options take the kind's default; an option this scenario does not take is
        a ValueError, and so is an `n_tasks` that is not a positive int.
        """
        options = {k: v for k, v in options.items() if v is not None}
        unknown = sorted(set(options) - set(self.options()))
        if unknown:
            raise ValueError(f"Scenario {self.name!r} takes no option(s) {unknown}. "
                             f"Its options: {self.options()}.")
        try:
            arguments = self.__signature__.bind(*args, **options).arguments
        except TypeError as exc:
            raise TypeError(f"Scenario {self.name!r}: {exc}") from exc
        if "n_tasks" in arguments:
            _check_tasks(arguments["n_tasks"])
        return arguments

    def __call__(self, *args: Any, **options: Any) -> Scenario:
        """Build the scenario (see `check` for the options)."""
        return KINDS.get(self.kind)(self.dataset, **self.bound, **self.check(*args, **options))

    def summary(self) -> str:
        """One line for `myelin info`, from the kind's summary and defaults."""
        params = inspect.signature(KINDS.get(self.kind)).parameters
        defaults = {n: p.default for n, p in params.items() if p.default is not p.empty}
        template = next(e.summary for e in KINDS.entries() if e.name == self.kind)
        return template.format(**{**defaults, **self.bound,
                                  "dataset": " then ".join(self.dataset.split("+"))})

    def __repr__(self) -> str:
        return f"NamedScenario({self.name!r})"


IMAGE_DATASETS = ("mnist", "fashion-mnist", "digits")

#: The named scenarios: (name pattern, kind, datasets, bound options). A name is the pattern
#: formatted with the dataset ("+" in a sequence becomes "-") and the bound options.
CATALOGUE: list[tuple[str, str, tuple[str, ...], dict[str, Any]]] = [
    ("permuted-{dataset}", "permuted", IMAGE_DATASETS, {}),
    ("rotated-{dataset}", "rotated", IMAGE_DATASETS, {}),
    *[("split-{dataset}-{setting}", "split", IMAGE_DATASETS, {"setting": s}) for s in SETTINGS],
    ("{dataset}", "sequence", ("mnist+fashion-mnist", "mnist+emnist-letters"), {}),
]

SCENARIOS: Registry[NamedScenario] = Registry("scenario")
for _pattern, _kind, _datasets, _bound in CATALOGUE:
    for _dataset in _datasets:
        _name = _pattern.format(dataset=_dataset.replace("+", "-"), **_bound)
        _named = NamedScenario(_name, _kind, _dataset, _bound)
        SCENARIOS.add(_name, _named, _named.summary())
