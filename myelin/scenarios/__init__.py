"""Continual-learning scenarios: sequences of tasks, each with train/test sets and its classes.

Settings (van de Ven & Tolias): ``"task"`` — the task identity is known, so training and
prediction are restricted to the task's classes (equivalent to one output head per task);
``"domain"`` — every task uses the same labels 0..k−1; ``"class"`` — one shared head over all
classes seen so far. ``labels_trick=True`` (class-IL) restricts only the training loss to the
current task's classes; ``seen_classes=True`` (class-IL, Hsu et al. 2018) restricts the loss and
the prediction to the classes of the tasks seen so far.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ..data.datasets import ArrayDataset, load

__all__ = ["SETTINGS", "Scenario", "Task", "permuted", "rotated", "sequence", "split"]

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
            return self._seen(self._index(task))
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

    def _index(self, task: Task) -> int:
        for i, t in enumerate(self.tasks):
            if t is task:
                return i
        raise ValueError(f"Task {task.name!r} is not in this scenario.")

    def _seen(self, k: int) -> list[int]:
        return sorted({c for t in self.tasks[:k + 1] for c in t.classes})


def _datasets(dataset: object, root: str | os.PathLike[str] | None
              ) -> tuple[ArrayDataset, ArrayDataset, str]:
    if isinstance(dataset, str):
        return load(dataset, "train", root), load(dataset, "test", root), dataset
    if isinstance(dataset, (tuple, list)) and len(dataset) == 2 and all(
            isinstance(d, ArrayDataset) for d in dataset):
        return dataset[0], dataset[1], dataset[0].name.split("/")[0] or "data"
    raise TypeError("dataset must be a dataset name (e.g. 'mnist') or a (train, test) pair of "
                    f"ArrayDataset. Got {type(dataset).__name__}.")


def _subsample(ds: ArrayDataset, n: int | None, rng: np.random.RandomState) -> ArrayDataset:
    if n is None or n >= len(ds):
        return ds
    if n < 1:
        raise ValueError(f"per_task_samples must be a positive int. Got {n!r}.")
    return ds.subset(np.sort(rng.choice(len(ds), n, replace=False)))


def _check_tasks(n_tasks: int) -> None:
    if isinstance(n_tasks, bool) or not isinstance(n_tasks, int) or n_tasks < 1:
        raise ValueError(f"n_tasks must be a positive int. Got {n_tasks!r}.")


def permuted(dataset: object, n_tasks: int, seed: int = 0, *, first_identity: bool = True,
             per_task_samples: int | None = None,
             root: str | os.PathLike[str] | None = None) -> Scenario:
    """Permuted dataset: task t applies a fixed random pixel permutation (domain-IL).

    Permutations come from ``np.random.RandomState(seed).permutation`` (seed 001's recipe);
    with `first_identity` the first task is the original dataset.

    Args:
        dataset: A name ("mnist", "digits", ...) or a (train, test) pair of ArrayDataset.
        n_tasks: Number of tasks.
        seed: Seed of the permutations and of any subsampling.
        first_identity: Keep task 1 unpermuted.
        per_task_samples: Use only this many training samples per task (GEM/CTN: 1000).
        root: Data directory, when `dataset` is a name.
    """
    _check_tasks(n_tasks)
    train, test, base = _datasets(dataset, root)
    rng = np.random.RandomState(seed)
    n_pix = int(np.prod(train.shape))
    tasks = []
    for t in range(n_tasks):
        perm = np.arange(n_pix) if (t == 0 and first_identity) else rng.permutation(n_pix)
        idx = torch.from_numpy(perm)

        def apply(ds: ArrayDataset, idx: torch.Tensor = idx, t: int = t) -> ArrayDataset:
            flat = ds.images.reshape(len(ds), -1)[:, idx].reshape(ds.images.shape)
            return ds.with_images(flat, f"{ds.name}/perm{t}")

        tasks.append(Task(f"{base}-perm{t}", _subsample(apply(train), per_task_samples, rng),
                          apply(test), list(range(len(train.classes)))))
    return Scenario(f"permuted-{base}-{n_tasks}", tasks, len(train.classes), "domain",
                    config={"kind": "permuted", "dataset": base, "n_tasks": n_tasks,
                            "seed": seed, "first_identity": first_identity,
                            "per_task_samples": per_task_samples})


def split(dataset: object, groups: Sequence[Sequence[int]], scenario: str = "task", *,
          labels_trick: bool = False, seen_classes: bool = False,
          per_task_samples: int | None = None, seed: int = 0,
          root: str | os.PathLike[str] | None = None) -> Scenario:
    """Split a dataset into tasks by class, e.g. ``[[0, 1], [2, 3], ...]`` (split MNIST).

    Args:
        dataset: A name or a (train, test) pair of ArrayDataset.
        groups: The classes of each task (disjoint).
        scenario: "task" (mask to the task's classes), "domain" (each task's classes map to
            0..k−1, in the order given), or "class" (one head over all classes).
        labels_trick: Class-IL only: the loss uses only the current task's classes.
        seen_classes: Class-IL only: loss and prediction use the classes seen so far.
        per_task_samples: Use only this many training samples per task.
        seed: Seed for subsampling.
        root: Data directory, when `dataset` is a name.
    """
    if scenario not in SETTINGS:
        raise ValueError(f"scenario must be one of {SETTINGS}. Got {scenario!r}.")
    if labels_trick and scenario != "class":
        raise ValueError("labels_trick applies to class-incremental learning (scenario='class').")
    train, test, base = _datasets(dataset, root)
    groups = [list(map(int, g)) for g in groups]
    flat = [c for g in groups for c in g]
    if not groups or any(not g for g in groups):
        raise ValueError("groups must be a non-empty list of non-empty class lists.")
    if len(set(flat)) != len(flat):
        raise ValueError(f"groups must be disjoint; got {groups}.")
    unknown = [c for c in flat if not 0 <= c < len(train.classes)]
    if unknown:
        raise ValueError(f"classes {unknown} are not in {base} (0..{len(train.classes) - 1}).")
    if scenario == "domain" and len({len(g) for g in groups}) != 1:
        raise ValueError("domain-IL needs groups of equal size (their classes share labels).")
    rng = np.random.RandomState(seed)
    tasks = []
    for t, g in enumerate(groups):
        def pick(ds: ArrayDataset, g: list[int] = g, t: int = t) -> ArrayDataset:
            keep = torch.isin(ds.targets, torch.tensor(g))
            sub = ds.subset(torch.nonzero(keep).squeeze(1), f"{ds.name}/split{t}")
            if scenario == "domain":
                lut = torch.full((len(ds.classes),), -1, dtype=torch.long)
                lut[torch.tensor(g)] = torch.arange(len(g))
                sub = sub.with_targets(lut[sub.targets], [ds.classes[c] for c in g], sub.name)
            return sub

        classes = list(range(len(g))) if scenario == "domain" else g
        tasks.append(Task(f"{base}-{'-'.join(map(str, g))}",
                          _subsample(pick(train), per_task_samples, rng), pick(test), classes))
    n_classes = len(groups[0]) if scenario == "domain" else len(train.classes)
    return Scenario(f"split-{base}-{scenario}", tasks, n_classes, scenario, labels_trick,
                    config={"kind": "split", "dataset": base, "groups": groups,
                            "scenario": scenario, "labels_trick": labels_trick,
                            "seen_classes": seen_classes,
                            "per_task_samples": per_task_samples, "seed": seed},
                    seen_classes=seen_classes)


def _rotate(images: torch.Tensor, scale: float, angle: float) -> torch.Tensor:
    x = images.float() * scale
    theta = math.radians(angle)
    rot = torch.tensor([[math.cos(theta), -math.sin(theta), 0.0],
                        [math.sin(theta), math.cos(theta), 0.0]], dtype=torch.float32)
    grid = F.affine_grid(rot.expand(len(x), 2, 3), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


def rotated(dataset: object, angles: Sequence[float], *, per_task_samples: int | None = None,
            seed: int = 0, root: str | os.PathLike[str] | None = None) -> Scenario:
    """Rotated dataset: task t rotates every image by ``angles[t]`` degrees (domain-IL)."""
    if not angles:
        raise ValueError("angles must list at least one angle.")
    train, test, base = _datasets(dataset, root)
    rng = np.random.RandomState(seed)
    tasks = []
    for a in angles:
        def rot(ds: ArrayDataset, a: float = float(a)) -> ArrayDataset:
            out = ArrayDataset(_rotate(ds.images, ds.scale, a), ds.targets,
                               classes=ds.classes, name=f"{ds.name}/rot{a:g}")
            return out

        tasks.append(Task(f"{base}-rot{float(a):g}", _subsample(rot(train), per_task_samples, rng),
                          rot(test), list(range(len(train.classes)))))
    return Scenario(f"rotated-{base}", tasks, len(train.classes), "domain",
                    config={"kind": "rotated", "dataset": base, "angles": list(map(float, angles)),
                            "per_task_samples": per_task_samples, "seed": seed})


def sequence(*datasets: object, relabel: str = "offset",
             classes: Sequence[Sequence[int] | None] | None = None,
             per_class: Sequence[int] | None = None, per_task_samples: int | None = None,
             seed: int = 0, root: str | os.PathLike[str] | None = None) -> Scenario:
    """A sequence of different datasets, e.g. MNIST → Fashion-MNIST or MNIST → EMNIST letters.

    Args:
        datasets: Names or (train, test) pairs, one per task.
        relabel: "offset" — task k's classes follow task k−1's (class-IL over all of them);
            "shared" — every task keeps labels 0..k−1 (domain-IL; equal class counts needed).
        classes: Per dataset, the classes to keep (None: all), e.g. letters A B D E G H N Q R S
            as [0, 1, 3, 4, 6, 7, 13, 16, 17, 18] for EMNIST letters (seed 001).
        per_class: (train, test) samples per class, e.g. (2400, 400) as in seed 001.
        per_task_samples: Use only this many training samples per task.
        seed: Seed for the per-class and per-task subsampling.
        root: Data directory, when datasets are names.
    """
    if not datasets:
        raise ValueError("sequence needs at least one dataset.")
    if relabel not in ("offset", "shared"):
        raise ValueError(f"relabel must be 'offset' or 'shared'. Got {relabel!r}.")
    if classes is not None and len(classes) != len(datasets):
        raise ValueError("classes needs one entry (or None) per dataset.")
    rng = np.random.RandomState(seed)
    tasks, offset, names, sizes = [], 0, [], []
    for k, d in enumerate(datasets):
        train, test, base = _datasets(d, root)
        keep = list(classes[k]) if classes is not None and classes[k] is not None \
            else list(range(len(train.classes)))
        lut = torch.full((len(train.classes),), -1, dtype=torch.long)
        lut[torch.tensor(keep)] = torch.arange(len(keep)) + (offset if relabel == "offset" else 0)

        def take(ds: ArrayDataset, count: int | None, lut: torch.Tensor = lut,
                 keep: list[int] = keep) -> ArrayDataset:
            idx = []
            for c in keep:
                members = np.flatnonzero(ds.targets.numpy() == c)
                if count is not None:
                    if count > len(members):
                        raise ValueError(f"{ds.name}: class {ds.classes[c]!r} has only "
                                         f"{len(members)} samples, {count} requested.")
                    members = np.sort(rng.choice(members, count, replace=False))
                idx.extend(members.tolist())
            sub = ds.subset(np.sort(np.asarray(idx, dtype=np.int64)))
            return sub.with_targets(lut[sub.targets], [ds.classes[c] for c in keep], sub.name)

        tr = take(train, per_class[0] if per_class else None)
        te = take(test, per_class[1] if per_class else None)
        label_values = (list(range(offset, offset + len(keep))) if relabel == "offset"
                        else list(range(len(keep))))
        tasks.append(Task(base, _subsample(tr, per_task_samples, rng), te, label_values))
        names.append(base)
        sizes.append(len(keep))
        offset += len(keep)
    if relabel == "shared" and len(set(sizes)) != 1:
        raise ValueError(f"relabel='shared' needs the same number of classes per task; got "
                         f"{sizes}.")
    shapes = {t.train.shape for t in tasks}
    if len(shapes) != 1:
        raise ValueError(f"All datasets of a sequence need the same image shape; got {shapes}.")
    setting = "class" if relabel == "offset" else "domain"
    n_classes = offset if relabel == "offset" else sizes[0]
    return Scenario("-".join(names), tasks, n_classes, setting,
                    config={"kind": "sequence", "datasets": names, "relabel": relabel,
                            "classes": [list(c) if c is not None else None
                                        for c in (classes or [None] * len(datasets))],
                            "per_class": list(per_class) if per_class else None,
                            "per_task_samples": per_task_samples, "seed": seed})


# Named scenarios for the command line ------------------------------------------------------
def _named(kind: str, dataset: str, setting: str = "task"):
    def build(n_tasks: int | None = None, seed: int = 0, root=None,
              per_task_samples: int | None = None, labels_trick: bool = False,
              seen_classes: bool = False) -> Scenario:
        if seen_classes and kind != "split":
            raise ValueError("seen_classes applies to split class-IL scenarios.")
        if kind == "permuted":
            return permuted(dataset, n_tasks or 10, seed, per_task_samples=per_task_samples,
                            root=root)
        if kind == "rotated":
            n = n_tasks or 5
            return rotated(dataset, [i * 180.0 / n for i in range(n)],
                           per_task_samples=per_task_samples, seed=seed, root=root)
        if kind == "split":
            n = n_tasks or 5
            if not 1 <= n <= 10 or 10 % n:
                raise ValueError(f"split scenarios divide 10 classes into 1, 2, 5 or 10 tasks; "
                                 f"got {n}.")
            size = 10 // n
            groups = [list(range(i * size, (i + 1) * size)) for i in range(n)]
            return split(dataset, groups, setting, labels_trick=labels_trick,
                         seen_classes=seen_classes, per_task_samples=per_task_samples,
                         seed=seed, root=root)
        if kind == "sequence":
            first, second = dataset.split("+")
            return sequence(first, second, per_task_samples=per_task_samples, seed=seed,
                            root=root)
        raise AssertionError(kind)
    return build


from .._registry import Registry  # noqa: E402

SCENARIOS: Registry = Registry("scenario")
for _ds in ("mnist", "fashion-mnist", "digits"):
    SCENARIOS.add(f"permuted-{_ds}", _named("permuted", _ds),
                  f"{_ds} with a fixed pixel permutation per task (domain-IL; default 10 tasks)")
    SCENARIOS.add(f"rotated-{_ds}", _named("rotated", _ds),
                  f"{_ds} rotated by k·180/T degrees in task k (domain-IL; default 5 tasks)")
    for _setting in SETTINGS:
        SCENARIOS.add(f"split-{_ds}-{_setting}", _named("split", _ds, _setting),
                      f"{_ds} split into class groups, {_setting}-incremental (default 5 tasks)")
SCENARIOS.add("mnist-fashion-mnist", _named("sequence", "mnist+fashion-mnist"),
              "MNIST then Fashion-MNIST, 20 classes (class-IL)")
SCENARIOS.add("mnist-emnist-letters", _named("sequence", "mnist+emnist-letters"),
              "MNIST then EMNIST letters (class-IL)")
__all__ += ["SCENARIOS"]
