"""Registries instead of if-chains: names -> factories, with did-you-mean errors."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T", bound=Callable[..., object])

__all__ = ["Entry", "Registry"]


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered name."""

    name: str
    factory: T
    summary: str


class Registry(Generic[T]):
    """A named collection of factories (estimators, methods, scenarios, ...)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, summary: str) -> Callable[[T], T]:
        """Decorator adding `factory` under `name`; a name can be registered once."""
        def deco(factory: T) -> T:
            self.add(name, factory, summary)
            return factory
        return deco

    def add(self, name: str, factory: T, summary: str) -> None:
        """Add `factory` under `name`."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered.")
        self._entries[name] = Entry(name, factory, summary)

    def get(self, name: str) -> T:
        """The factory registered as `name`; ValueError with suggestions otherwise."""
        if name not in self._entries:
            close = difflib.get_close_matches(name, list(self._entries), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"Unknown {self.kind} {name!r}.{hint} "
                             f"Available: {', '.join(sorted(self._entries))}.")
        return self._entries[name].factory

    def entries(self) -> list[Entry[T]]:
        """All entries, sorted by name."""
        return [self._entries[n] for n in sorted(self._entries)]

    def names(self) -> list[str]:
        """All names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
