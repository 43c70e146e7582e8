"""A resumable record store: one JSON file per finished run, reused only for the same spec.

Long experiments (``myelin sweep``, the reproductions in ``benchmarks/``) run many
(configuration, seed) points and must survive being stopped. Each finished point is written
atomically as ``<root>/<key>.json``; a record holds a ``"spec"`` — everything that determines
the run (method, options, protocol, seed ...) — and whatever the run produced. A later run
reuses a record only if its stored spec equals the spec asked for, so a re-run with a changed
configuration is re-computed instead of silently reporting the old numbers. A record that
cannot be read (e.g. an empty file) is stale too, and `lock` keeps a second process (a second
sweep on the same directory) from running the same points and overwriting the records.

Example:
    >>> store = RecordStore("sweeps/ewc")
    >>> spec = {"method": "ewc", "lam": 10.0, "seed": 0}
    >>> record = store.get("lam=10/seed=0", spec)
    >>> if record is None:
    ...     record = store.put("lam=10/seed=0", spec, {"metrics": run(spec)})
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:                       # not POSIX: stores are not locked
    fcntl = None  # type: ignore[assignment]

__all__ = ["RecordStore", "StoreLockedError", "canonical"]

#: The lock file of a store (`RecordStore.lock`), in its root.
LOCK_NAME = ".lock"


class StoreLockedError(RuntimeError):
    """Another process holds the lock of a record store (`RecordStore.lock`)."""


def canonical(value: Any) -> Any:
    """`value` as plain JSON data (tuples become lists, keys strings), for comparing specs."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


class RecordStore:
    """JSON records under `root`, keyed by relative paths, each matched against its spec.

    Args:
        root: Directory holding the records (created on the first `put`).
        suffix: File-name suffix of a record ("": keys are full file names).
    """

    def __init__(self, root: str | os.PathLike[str], suffix: str = ".json"):
        self.root = Path(root)
        self.suffix = suffix
        self.stale: dict[str, str] = {}      # key -> why its record was not reused

    def path(self, key: str) -> Path:
        """The file of `key` (a relative path such as ``"lam=10/seed=0"``)."""
        if not key or key.startswith(("/", "\\")) or ".." in Path(key).parts:
            raise ValueError(f"A record key is a relative path without '..'. Got {key!r}.")
        return self.root / f"{key}{self.suffix}"

    def read(self, key: str) -> dict[str, Any] | None:
        """The stored record of `key` whatever its spec, or None if there is none."""
        path = self.path(key)
        if not path.exists():
            return None
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not a JSON record ({exc}); delete it to re-run.") from exc
        if not isinstance(record, dict):
            raise ValueError(f"{path}: not a JSON record (a {type(record).__name__}).")
        return record

    def get(self, key: str, spec: Mapping[str, Any]) -> dict[str, Any] | None:
        """The record of `key` if it exists and was made for `spec`; else None.

        A record made for another spec, or one that cannot be read (e.g. an empty file left by
        a crash), is not returned (and `stale` says why, naming the file), so the caller re-runs
        the point and its `put` replaces the record.
        """
        try:
            record = self.read(key)
        except ValueError as exc:
            self.stale[key] = f"unreadable record: {exc}"
            return None
        if record is None:
            return None
        stored, wanted = record.get("spec"), canonical(dict(spec))
        if stored == wanted:
            self.stale.pop(key, None)
            return record
        if stored is None:
            self.stale[key] = "the record holds no spec"
        else:
            changed = sorted(k for k in set(stored) | set(wanted)
                             if stored.get(k) != wanted.get(k))
            self.stale[key] = "spec differs in " + ", ".join(
                f"{k}: {stored.get(k)!r} -> {wanted.get(k)!r}" for k in changed)
        return None

    def put(self, key: str, spec: Mapping[str, Any], record: Mapping[str, Any]
            ) -> dict[str, Any]:
        """Write ``{"spec": spec, **record}`` atomically as the record of `key`; returns it."""
        if "spec" in record:
            raise ValueError("The record's 'spec' is given separately (the spec argument).")
        full = {"spec": canonical(dict(spec)), **record}
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.part")
        tmp.write_text(json.dumps(full, indent=1) + "\n")
        os.replace(tmp, path)
        return full

    @contextlib.contextmanager
    def lock(self, shared: bool = False) -> Iterator[None]:
        """Hold the store's lock (the file ``<root>/.lock``) for the ``with`` block.

        One writer per store: a second process asking for the lock (e.g. a second ``myelin
        sweep`` on the same directory) gets `StoreLockedError` instead of repeating the first
        one's runs and overwriting its records. The lock is ``fcntl.flock``: released when the
        block ends or the process dies, however it dies. Creates `root` if needed.

        Args:
            shared: Share the lock with the other processes asking for a shared one (the
                workers of one Optuna study, which hand out the runs themselves); it still
                excludes an exclusive holder, and an exclusive request excludes them.

        Raises:
            StoreLockedError: Another process holds the lock (the message names the directory
                and the holder's pid).
            OSError: `root` cannot be created.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / LOCK_NAME
        with open(path, "a+") as f:
            if fcntl is not None:
                try:
                    fcntl.flock(f.fileno(),
                                (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
                except BlockingIOError:
                    f.seek(0)
                    holder = f.read().strip() or "another process"
                    raise StoreLockedError(f"{os.fspath(self.root)!r} is in use by {holder} "
                                           f"(lock file {path}).") from None
            f.seek(0)
            f.truncate()
            f.write(f"pid {os.getpid()}" + (" and the other workers of its Optuna study"
                                            if shared else "") + "\n")
            f.flush()
            yield

    def keys(self) -> Iterator[str]:
        """Keys of every stored record, sorted."""
        if not self.root.exists():
            return iter(())
        n = len(self.suffix)
        found = (p.relative_to(self.root).as_posix() for p in self.root.rglob(f"*{self.suffix}")
                 if p.is_file() and not p.name.startswith("."))
        return iter(sorted(k[:-n] if n else k for k in found))

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.path(key).exists()

    def __repr__(self) -> str:
        return f"RecordStore({os.fspath(self.root)!r})"
