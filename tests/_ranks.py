"""Run a test session on several gloo ranks in spawned processes, never hanging the suite.

Each rank opens a process group (file rendezvous in the session folder, a timeout on every
collective), runs ``session(rank, folder)`` and saves what it returns (or its traceback) as
``rank<k>.pt``; the caller waits at most `deadline` seconds for all of them, kills the rest,
and fails the test naming the hung or crashed ranks.
"""

from __future__ import annotations

import datetime
import os
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

Session = Callable[[int, Path], Any]


def _worker(rank: int, world: int, path: str, session: Session, timeout: float) -> None:
    torch.set_num_threads(1)
    root = Path(path)
    dist.init_process_group("gloo", init_method=f"file://{root / 'rendezvous'}", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=timeout))
    try:
        result = session(rank, root)
    except BaseException:
        result = {"crash": traceback.format_exc()}
    finally:
        dist.destroy_process_group()
    torch.save(result, root / f"rank{rank}.pt")


def run_ranks(session: Session, path: Path, world: int = 2, deadline: float = 120.0,
              timeout: float = 60.0) -> list[Any]:
    """`session` (a module-level function) on `world` ranks; each rank's result, in rank order.

    Fails the calling test if a rank is still running after `deadline` seconds, crashed, or
    wrote nothing. A collective waits at most `timeout` seconds.
    """
    ctx = mp.get_context("spawn")
    saved = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        procs = [ctx.Process(target=_worker, args=(r, world, str(path), session, timeout),
                             daemon=True) for r in range(world)]
        for p in procs:
            p.start()
    finally:
        if saved is None:
            os.environ.pop("OMP_NUM_THREADS")
        else:
            os.environ["OMP_NUM_THREADS"] = saved
    end = time.monotonic() + deadline
    for p in procs:
        p.join(max(0.0, end - time.monotonic()))
    hung = [r for r, p in enumerate(procs) if p.is_alive()]
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(5)
    if hung:
        pytest.fail(f"ranks {hung} did not finish within {deadline} s (a hang)")
    results = []
    for r, p in enumerate(procs):
        file = path / f"rank{r}.pt"
        if not file.exists():
            pytest.fail(f"rank {r} exited with code {p.exitcode} and wrote no results")
        results.append(torch.load(file, weights_only=False))
        if isinstance(results[-1], dict) and "crash" in results[-1]:
            pytest.fail(f"rank {r} crashed:\n{results[-1]['crash']}")
    return results
