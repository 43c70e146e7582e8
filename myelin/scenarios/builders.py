"""Scenario builders: permuted, split, rotated and sequences of datasets."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..data.datasets import ArrayDataset, load
from .base import SETTINGS, Scenario, Task

__all__ = ["permuted", "rotated", "sequence", "split"]


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


def _check_seed(seed: object) -> None:
    """TypeError unless `seed` is an int (not a bool); ValueError outside numpy's range."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int. Got {seed!r}.")
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an int in [0, 2**32 - 1] (it seeds "
                         f"numpy.random.RandomState). Got {seed!r}.")


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
    _check_seed(seed)
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
        raise ValueError(f"labels_trick applies to class-incremental learning (scenario='class'); "
                         f"got scenario={scenario!r}. On the command line use a "
                         f"split-<dataset>-class scenario (e.g. --scenario split-mnist-class).")
    _check_seed(seed)
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
    _check_seed(seed)
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
    _check_seed(seed)
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
