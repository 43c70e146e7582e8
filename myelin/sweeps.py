"""Sweeps on an Optuna study: many worker processes or machines share one grid.

``myelin sweep --backend optuna`` runs the grid x seeds of a sweep as the trials of an `Optuna
<https://optuna.org>`_ study. Why Optuna rather than Ray Tune: Optuna is one ``pip install``
whose studies live in any SQL database named by a SQLAlchemy URL (a SQLite file by default,
PostgreSQL or MySQL for many machines), so workers on any machine join a sweep by opening the
same URL; there is no cluster (Ray's head node, object store and daemons) to start and keep
alive, and the study can be watched with ``optuna-dashboard``.

Every (grid point, seed) run is one trial, put into the study as a *waiting* trial when the
study is made (its params are the grid values and the seed; the user attribute ``key`` names
its record). A worker claims a trial by the storage's atomic *waiting -> running* transition
(the one `optuna.Study.ask` uses for enqueued trials), so two workers never claim the same run.
Optuna's `GridSampler` is not used: it picks an unvisited point without claiming it, so two
workers starting together may both run it. Each claimed run is the same `_sweep_point` the
local pool runs, writing the same ``<out>/<point>/seed=<s>/result.json`` (so ``myelin report``
works unchanged); its trial gets the final average accuracy as its value and the run's metrics
as the user attribute ``metrics``, from which every worker's summary covers the runs made
elsewhere too.

Resuming: a run complete in the study, or whose record in ``--out`` was made for the same spec,
is not run again. A running trial's worker beats a heartbeat every `HEARTBEAT_SECONDS`; a trial
whose heartbeat is older than `GRACE_SECONDS` (its worker was killed, or its machine lost) is
failed and its run queued again, up to `MAX_RESTARTS` times. Runs that failed with an error are
queued again when a worker next starts (as a re-run of a local sweep re-runs them).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import socket
import sys
import threading
import time
import types
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from .cli import CLIError, _exit_if_stuck
from .records import RecordStore, canonical

__all__ = ["OptunaSweep", "SweepError", "default_storage", "import_optuna", "open_storage"]

#: Seconds between the heartbeats of a running trial.
HEARTBEAT_SECONDS = 10
#: A running trial whose last heartbeat is older than this belongs to a dead worker.
GRACE_SECONDS = 60
#: Seconds a storage may take to open (connect, create its tables) before it is given up.
OPEN_TIMEOUT = 60.0
#: Seconds a worker with nothing to claim waits before looking again (runs of other workers).
POLL_SECONDS = 1.0
#: How often a run whose worker died is queued again within one session.
MAX_RESTARTS = 3
#: The metric that is each trial's value (maximized).
OBJECTIVE = "average_accuracy"
#: How to install the backend.
INSTALL = "pip install 'myelin[sweep]'"
#: Spec keys that may differ between the workers of one study (where the data is read from).
_LOCAL_KEYS = ("data_root",)
#: Seconds a connecting driver may wait for a database server.
_CONNECT_TIMEOUT = {"postgresql": ("connect_timeout", 10), "mysql": ("connect_timeout", 10),
                    "sqlite": ("timeout", 30)}

Run = tuple[dict[str, Any], int, str, dict[str, Any]]      # params, seed, record key, spec


class SweepError(CLIError):
    """The Optuna backend cannot be used: not installed, storage unreachable, another study."""


def import_optuna() -> types.ModuleType:
    """The ``optuna`` module (quiet), or `SweepError` saying how to install it."""
    try:
        import optuna
    except ImportError as exc:
        raise SweepError(f"--backend optuna needs Optuna, which is not installed ({exc}): "
                         f"{INSTALL}.") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def default_storage(out: str | os.PathLike[str]) -> str:
    """The storage of a sweep whose ``--storage`` is not given: ``sqlite:///<out>/optuna.db``."""
    return f"sqlite:///{(Path(out) / 'optuna.db').as_posix()}"


def _shown(url: str) -> str:
    """`url` with its password hidden, for messages."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL: shown as given
        return url


def _cause(exc: BaseException) -> str:
    """The first line of the innermost useful message of `exc` (a driver's own words)."""
    inner = getattr(exc, "orig", None) or exc.__cause__ or exc
    text = str(inner).strip() or type(inner).__name__
    if isinstance(exc, ImportError):
        text = f"its database driver is not installed ({text})"
    return text.splitlines()[0].rstrip(".")


def open_storage(url: str, heartbeat: bool = True) -> Any:
    """An `optuna.storages.RDBStorage` on `url`, or `SweepError` naming the URL and the cause.

    Never hangs: the driver gets a connection timeout where it takes one, and opening is given
    up after `OPEN_TIMEOUT` seconds (an unreachable host, a database locked for good).

    Args:
        url: A SQLAlchemy URL: ``sqlite:///path.db``, ``postgresql://user:pw@host/db``, ...
        heartbeat: Running trials beat a heartbeat (`HEARTBEAT_SECONDS`, `GRACE_SECONDS`).
    """
    optuna = import_optuna()
    dialect = url.split(":", 1)[0].split("+", 1)[0].lower()
    engine: dict[str, Any] = {}
    if dialect in _CONNECT_TIMEOUT:
        name, seconds = _CONNECT_TIMEOUT[dialect]
        engine["connect_args"] = {name: seconds}
    box: dict[str, Any] = {}

    def target() -> None:
        for attempt in range(10):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")      # heartbeats are "experimental"
                    box["storage"] = optuna.storages.RDBStorage(
                        url, engine_kwargs=engine,
                        heartbeat_interval=HEARTBEAT_SECONDS if heartbeat else None,
                        grace_period=GRACE_SECONDS if heartbeat else None)
                box.pop("error", None)
                return
            except Exception as exc:  # reported below, naming the URL
                box["error"] = exc
                if not _racing(exc):
                    return
                time.sleep(0.1 * (attempt + 1))   # another worker is making the tables

    thread = threading.Thread(target=target, name="myelin-sweep-storage", daemon=True)
    thread.start()
    thread.join(OPEN_TIMEOUT)
    where = f"--storage {_shown(url)!r}: cannot open the study storage"
    if thread.is_alive():
        raise SweepError(f"{where}: no answer within {OPEN_TIMEOUT:g} s (is the database "
                         "server reachable?).")
    if "error" in box:
        hint = " (does its folder exist?)" if dialect == "sqlite" else ""
        raise SweepError(f"{where}: {_cause(box['error'])}{hint}.") from None
    return box["storage"]


def _racing(exc: BaseException) -> bool:
    """Whether `exc` is another worker creating the same tables or rows at the same time."""
    text = str(exc).lower()
    return type(exc).__name__ == "IntegrityError" or "already exists" in text \
        or "locked" in text or "duplicate" in text


def _digest(runs: Sequence[Run]) -> str:
    """A hash of the runs (record keys and specs), the same for every worker of one sweep."""
    items = sorted((key, {k: v for k, v in spec.items() if k not in _LOCAL_KEYS})
                   for _, _, key, spec in runs)
    return hashlib.sha256(json.dumps(canonical(items), sort_keys=True).encode()).hexdigest()


def _choice(value: Any) -> Any:
    """A grid value as an Optuna categorical choice (lists become JSON text)."""
    return value if value is None or isinstance(value, (bool, int, float, str)) \
        else json.dumps(value)


class OptunaSweep:
    """The runs of a sweep as the trials of an Optuna study that any number of workers share.

    Opening makes the study (one waiting trial per run) or joins it: a study made by another
    worker of the same sweep, whose runs must be the same (the same grid, seeds and options).

    Args:
        runs: Every run of the sweep: (grid params, seed, record key, spec).
        grid: The values of each grid key (the trials' parameter choices).
        out: The sweep directory: the records, and the default storage and study name.
        storage: A SQLAlchemy URL (default ``sqlite:///<out>/optuna.db``); for many machines,
            a database server all of them reach, e.g. ``postgresql://user:pw@host/db``.
        study: The study's name (default ``<out folder name>-<hash of the runs>``, so the
            same command on every machine joins one study, and changed options make another).

    Raises:
        SweepError: Optuna is not installed, the storage cannot be opened, or the study named
            holds another sweep.
    """

    def __init__(self, runs: Sequence[Run], grid: Mapping[str, Sequence[Any]],
                 out: str | os.PathLike[str], storage: str | None = None,
                 study: str | None = None):
        self.optuna = import_optuna()
        self.out = Path(out)
        self.runs = {key: (params, seed, spec) for params, seed, key, spec in runs}
        self.digest = _digest(runs)
        self.url = storage or default_storage(self.out)
        self.name = study or f"{self.out.resolve().name or 'sweep'}-{self.digest[:8]}"
        self.storage = open_storage(self.url)
        self._active: dict[int, int] = {}          # trial id -> number, of this worker's runs
        try:
            self._open(grid, runs)
        except self._db_errors() as exc:
            raise SweepError(f"--storage {_shown(self.url)!r}: {_cause(exc)}.") from None

    def describe(self) -> str:
        """The study and its storage, for messages: ``optuna study 'name' in URL``."""
        return f"optuna study {self.name!r} in {_shown(self.url)}"

    # the study ---------------------------------------------------------------------------------
    def _db_errors(self) -> tuple[type[BaseException], ...]:
        import sqlalchemy.exc

        return (sqlalchemy.exc.SQLAlchemyError,)

    def _retry(self, func: Callable[..., Any], *args: Any) -> Any:
        """`func(*args)`, tried again while the database is busy (SQLite's "locked")."""
        import sqlalchemy.exc

        for attempt in range(20):
            try:
                return func(*args)
            except sqlalchemy.exc.OperationalError as exc:
                if attempt == 19 or "locked" not in str(exc).lower():
                    raise
                time.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")

    def _open(self, grid: Mapping[str, Sequence[Any]], runs: Sequence[Run]) -> None:
        optuna = self.optuna
        seeds = sorted({seed for _, seed, _, _ in runs})
        self._distributions = {k: optuna.distributions.CategoricalDistribution(
            [_choice(v) for v in values]) for k, values in grid.items()}
        self._distributions["seed"] = optuna.distributions.CategoricalDistribution(seeds)
        try:
            self.study = self._retry(lambda: optuna.create_study(
                storage=self.storage, study_name=self.name, direction="maximize"))
        except optuna.exceptions.DuplicatedStudyError:
            self.study = optuna.load_study(study_name=self.name, storage=self.storage)
            self._study_id = self._retry(self.storage.get_study_id_from_name, self.name)
            self._join()
            self.requeue(errors=True)
            return
        self._study_id = self._retry(self.storage.get_study_id_from_name, self.name)
        self._retry(self.study.set_user_attr, "myelin_sweep",
                    {"digest": self.digest, "runs": len(runs), "objective": OBJECTIVE})
        for key in self.runs:
            self._enqueue(key)
        self._retry(self.study.set_user_attr, "myelin_ready", True)

    def _join(self) -> None:
        """Wait until the study's maker has queued its runs; refuse a study of another sweep."""
        deadline = time.monotonic() + 30.0
        while True:
            attrs = self._retry(lambda: self.study.user_attrs)
            made = attrs.get("myelin_sweep")
            if made is not None and made.get("digest") != self.digest:
                raise SweepError(
                    f"{self.describe()} holds another sweep ({made.get('runs')} run(s) of "
                    "another grid, other seeds or options). Pass the options it was made "
                    "with, or --study with a new name.")
            if attrs.get("myelin_ready") or time.monotonic() > deadline:
                if made is None:
                    raise SweepError(f"{self.describe()} was not made by `myelin sweep`; "
                                     "pass --study with another name.")
                return                  # an unfinished maker: `requeue` adds what it missed
            time.sleep(0.2)

    def _enqueue(self, key: str) -> None:
        params, seed, _ = self.runs[key]
        trial = self.optuna.trial.create_trial(
            state=self.optuna.trial.TrialState.WAITING,
            params={**{k: _choice(v) for k, v in params.items()}, "seed": seed},
            distributions={k: self._distributions[k] for k in (*params, "seed")},
            user_attrs={"key": key})
        self._retry(self.study.add_trial, trial)

    def _by_key(self) -> dict[str, list[Any]]:
        """The study's trials of each run (oldest first)."""
        out: dict[str, list[Any]] = {}
        for t in self._retry(lambda: self.study.get_trials(deepcopy=False)):
            key = t.user_attrs.get("key")
            if key in self.runs:
                out.setdefault(key, []).append(t)
        return out

    def requeue(self, errors: bool = False) -> int:
        """Queue again the runs with no waiting, running or complete trial; returns how many.

        Args:
            errors: Also the runs whose last trial failed with an error (a worker starting
                retries them); otherwise only those whose worker died, `MAX_RESTARTS` times
                at most.
        """
        state = self.optuna.trial.TrialState
        queued = 0
        trials = self._by_key()
        for key in self.runs:
            mine = trials.get(key, [])
            if any(t.state in (state.WAITING, state.RUNNING, state.COMPLETE) for t in mine):
                continue
            failed = [t for t in mine if t.state == state.FAIL]
            died = [t for t in failed if "error" not in t.user_attrs]
            last_died = bool(failed) and "error" not in failed[-1].user_attrs
            if not errors and not (last_died and len(died) < MAX_RESTARTS):
                continue
            self._enqueue(key)
            queued += 1
        return queued

    def records(self) -> dict[str, dict[str, Any]]:
        """``{"metrics": ...}`` of every run complete in the study, by record key."""
        state = self.optuna.trial.TrialState
        out: dict[str, dict[str, Any]] = {}
        for key, trials in self._by_key().items():
            for t in trials:
                if t.state == state.COMPLETE and isinstance(t.user_attrs.get("metrics"), dict):
                    out[key] = {"metrics": t.user_attrs["metrics"], "trial": t.number}
        return out

    def failures(self) -> list[dict[str, Any]]:
        """The runs that failed: with an error, or killed with their worker `MAX_RESTARTS` times.

        Each as ``{"params", "seed", "error"}``; a run stopped by Ctrl-C is not a failure.
        """
        state = self.optuna.trial.TrialState
        out = []
        for key, trials in self._by_key().items():
            if any(t.state in (state.WAITING, state.RUNNING, state.COMPLETE) for t in trials):
                continue
            failed = [t for t in trials if t.state == state.FAIL]
            died = [t for t in failed if "error" not in t.user_attrs
                    and not t.user_attrs.get("interrupted")]
            if not failed or failed[-1].user_attrs.get("interrupted"):
                continue
            error = failed[-1].user_attrs.get("error")
            if error is None and len(died) < MAX_RESTARTS:
                continue
            params, seed, _ = self.runs[key]
            out.append({"params": params, "seed": seed, "error": error or
                        f"its worker was killed {len(died)} times while running it"})
        return out

    # the runs --------------------------------------------------------------------------------
    def _trial_id(self, number: int) -> int:
        return self._retry(self.storage.get_trial_id_from_study_id_trial_number,
                           self._study_id, number)

    def _claim(self) -> tuple[int, int, str] | None:
        """Claim a waiting trial of this sweep: (trial id, number, record key), or None."""
        optuna = self.optuna
        waiting = self._retry(lambda: self.study.get_trials(
            deepcopy=False, states=(optuna.trial.TrialState.WAITING,)))
        for t in waiting:
            key = t.user_attrs.get("key")
            if key not in self.runs:
                continue
            trial_id = self._trial_id(t.number)
            try:
                claimed = self._retry(self.storage.set_trial_state_values, trial_id,
                                      optuna.trial.TrialState.RUNNING)
            except optuna.exceptions.UpdateFinishedTrialError:
                claimed = False
            if claimed:
                self._retry(self.storage.record_heartbeat, trial_id)
                return trial_id, t.number, key
        return None

    def _finish(self, trial_id: int, metrics: Mapping[str, Any] | None = None,
                error: str | None = None, **attrs: Any) -> None:
        """Complete the trial with `metrics`, or fail it (with `error`, or as stopped)."""
        state = self.optuna.trial.TrialState
        for name, value in attrs.items():
            self._retry(self.storage.set_trial_user_attr, trial_id, name, value)
        if metrics is not None:
            self._retry(self.storage.set_trial_user_attr, trial_id, "metrics", dict(metrics))
            value = float(metrics[OBJECTIVE])
            self._retry(self.storage.set_trial_state_values, trial_id, state.COMPLETE,
                        [value] if math.isfinite(value) else None)
        else:
            if error is not None:
                self._retry(self.storage.set_trial_user_attr, trial_id, "error", error)
            self._retry(self.storage.set_trial_state_values, trial_id, state.FAIL)
        self._active.pop(trial_id, None)

    def _settled(self) -> bool:
        """Whether no trial of the study waits or runs (after failing stale ones)."""
        state = self.optuna.trial.TrialState
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")              # "experimental"
            self._retry(self.optuna.storages.fail_stale_trials, self.study)
        if self.requeue():
            return False
        return not self._retry(lambda: self.study.get_trials(
            deepcopy=False, states=(state.WAITING, state.RUNNING)))

    def _duplicate(self, trial_id: int, number: int, key: str) -> bool:
        """Whether another trial runs or completed `key` (a run queued twice by two workers).

        If so, this one (`trial_id`, `number`) is pruned, naming the other.
        """
        state = self.optuna.trial.TrialState
        others = [t for t in self._by_key().get(key, [])
                  if t.state in (state.RUNNING, state.COMPLETE) and t.number != number]
        if others:
            self._retry(self.storage.set_trial_user_attr, trial_id, "duplicate_of",
                        others[0].number)
            self._retry(self.storage.set_trial_state_values, trial_id, state.PRUNED)
            self._active.pop(trial_id, None)
        return bool(others)

    def _beat(self, stop: threading.Event) -> None:
        while not stop.wait(HEARTBEAT_SECONDS):
            for trial_id in list(self._active):
                with contextlib.suppress(Exception):      # the next beat tries again
                    self._retry(self.storage.record_heartbeat, trial_id)

    def run(self, store: RecordStore, jobs: int,
            run_point: Callable[[dict[str, Any], str, str], Mapping[str, Any]],
            worker_init: Callable[[int], None], stop_workers: Callable[[Any], None]
            ) -> tuple[list[dict[str, Any]], bool]:
        """Claim and run trials in `jobs` processes until no trial of the study waits or runs.

        A claimed run whose record in `store` was made for its spec completes from it. Waits
        for the runs of other workers too (taking over those whose worker died), so that the
        summary covers the whole sweep.

        Args:
            store: The sweep's records (``--out``).
            jobs: Worker processes.
            run_point: Runs a point: ``(spec, out, key) -> metrics``, writing its record.
            worker_init: Initializer of the worker processes (given this process's pid).
            stop_workers: Cancels a pool's queued points and terminates its processes.

        Returns:
            (the failed runs with their errors, whether Ctrl-C stopped it).
        """
        host = socket.gethostname()
        total = len(self.runs)
        futures: dict[Future[Any], tuple[int, int, str]] = {}
        stop = threading.Event()
        threading.Thread(target=self._beat, args=(stop,), name="myelin-sweep-heartbeat",
                         daemon=True).start()

        def new_pool() -> ProcessPoolExecutor:
            return ProcessPoolExecutor(max_workers=jobs, initializer=worker_init,
                                       initargs=(os.getpid(),))

        def report(key: str, text: str, number: int) -> None:
            params, seed, _ = self.runs[key]
            done = len(self.records())
            print(f"  [{done}/{total}] {params} seed {seed}: {text} (trial {number})",
                  flush=True)

        pool = new_pool()
        try:
            while True:
                while len(futures) < jobs and (claim := self._claim()) is not None:
                    trial_id, number, key = claim
                    self._active[trial_id] = number
                    if self._duplicate(trial_id, number, key):
                        continue
                    spec = self.runs[key][2]
                    record = store.get(key, spec)
                    if record is not None:
                        self._finish(trial_id, record["metrics"], host=host,
                                     record=str(store.path(key)), source="record in --out")
                        report(key, f"AA {record['metrics'][OBJECTIVE]:.3f}, from its record",
                               number)
                        continue
                    futures[pool.submit(run_point, spec, str(store.root), key)] = claim
                if not futures:
                    if self._settled():
                        break
                    time.sleep(POLL_SECONDS)
                    continue
                done, _ = wait(futures, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
                broken = False
                for fut in done:
                    trial_id, number, key = futures.pop(fut)
                    try:
                        metrics = fut.result()
                    except BrokenProcessPool:                # a worker was killed: run again
                        self._finish(trial_id, host=host)
                        broken = True
                        continue
                    except Exception as exc:  # the run failed: reported, the others go on
                        error = str(exc) or type(exc).__name__
                        self._finish(trial_id, error=error, host=host)
                        report(key, f"FAILED: {error}", number)
                        continue
                    self._finish(trial_id, metrics, host=host, record=str(store.path(key)))
                    report(key, f"AA {metrics[OBJECTIVE]:.3f}", number)
                if broken:
                    stop_workers(pool)
                    for trial_id, _, _ in futures.values():
                        self._finish(trial_id, host=host)
                    futures.clear()
                    pool = new_pool()
        except KeyboardInterrupt:
            print("\nmyelin sweep: interrupted; stopping the workers", file=sys.stderr,
                  flush=True)
            _exit_if_stuck()
            stop_workers(pool)
            self._release()
            return self.failures(), True
        except self._db_errors() as exc:
            stop_workers(pool)
            self._release()
            raise SweepError(f"--storage {_shown(self.url)!r}: {_cause(exc)}.") from None
        except BaseException:
            stop_workers(pool)
            self._release()
            raise
        finally:
            stop.set()
        pool.shutdown()
        return self.failures(), False

    def _release(self) -> None:
        """Fail this worker's running trials as stopped, so that any worker runs them again."""
        for trial_id in list(self._active):
            with contextlib.suppress(Exception):
                self._finish(trial_id, interrupted=True)
