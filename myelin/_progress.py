"""One place that decides how progress bars look and when they show."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress_bar(iterable: Iterable[T], *, progress: bool | None, desc: str,
                 total: int | None = None, unit: str = "it") -> Iterator[T]:
    """Wrap `iterable` in a tqdm bar.

    Args:
        iterable: What to iterate.
        progress: True shows the bar, False hides it, None shows it only on a terminal.
        desc: Label in front of the bar.
        total: Number of items, when `iterable` has no ``len``.
        unit: Name of one item.

    """
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    disable = None if progress is None else not progress
    return iter(tqdm(iterable, desc=desc, total=total, unit=unit, disable=disable, leave=False))
