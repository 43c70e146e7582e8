"""`myelin run` under torchrun: the accuracy matrix of one process, written once, clear refusals.

Runs on two gloo ranks are compared with the same run in this process, with a batch size (45)
the ranks split unevenly (23 + 22): EWC through ``python -m torch.distributed.run --standalone
--nproc-per-node 2 -m myelin run ...`` (a free port chosen by torchrun), and plain fine-tuning,
EWC and WVA through `myelin.cli.main` in two spawned ranks that share one process group (one
session for the module, which also tries the bad input: starting processes costs seconds).
Every collective runs under a 60 s timeout (MYELIN_DIST_TIMEOUT, the process group's), every
subprocess under an overall deadline after which its whole process group is killed: a hang
fails the tests instead of blocking them.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist

from myelin import distributed, fit
from myelin.cli import RUN_FILES, main
from myelin.distributed import shard_batch, shard_bounds
from tests._ranks import run_ranks

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed unavailable")

WORLD = 2
RUN_DEADLINE = 120.0            # seconds for one torchrun invocation
SESSION_DEADLINE = 120.0        # seconds for the spawned two-rank session
COLLECTIVE_TIMEOUT = 60         # seconds a collective may wait
ARGS = ["--scenario", "permuted-digits", "--tasks", "2", "--iterations", "25", "--batch-size",
        "45", "--widths", "32", "--lr", "0.5", "--eval-every", "10", "--closing-samples", "101",
        "-q"]
METHODS = {"finetune": [], "ewc": ["--lam", "10"], "wva": ["--lam", "1000"]}


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    # PYTHONFAULTHANDLER: a rank killed by a signal (SIGABRT from C++) prints every thread's
    # Python stack, so a crash says where it happened
    return {**env, "OMP_NUM_THREADS": "1", "MYELIN_DIST_TIMEOUT": str(COLLECTIVE_TIMEOUT),
            "PYTHONFAULTHANDLER": "1"}


def _shown(err: str, n: int = 4000) -> str:
    """Torchrun's stderr for a failure message: its start (the crashed rank's own words,
    before the launcher's traceback) and its end."""
    return err if len(err) <= 2 * n else f"{err[:n]}\n[...]\n{err[-n:]}"


def _torchrun(*args: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``torchrun -m myelin run ARGS`` on two gloo ranks."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
         str(WORLD), "-m", "myelin", "run", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
        start_new_session=True)
    try:
        out, err = proc.communicate(timeout=RUN_DEADLINE)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)      # torchrun and its workers
        out, err = proc.communicate()
        pytest.fail(f"torchrun did not finish within {RUN_DEADLINE} s (a hang):\n{_shown(err)}")
    return proc.returncode, out, err


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: each method's run in this process, in <root>/<method>."""
    root = tmp_path_factory.mktemp("one")
    for method, options in METHODS.items():
        assert main(["run", *ARGS, "--method", method, *options, "--out",
                     str(root / method)]) == 0
    return root


def _assert_same_run(ranks: Path, one: Path) -> None:
    """Run directory `ranks` holds the run of `one` (up to the reductions' rounding), once."""
    assert sorted(p.name for p in ranks.iterdir()) == sorted(RUN_FILES)
    assert (ranks / "config.json").read_text() == (one / "config.json").read_text()
    got, want = (json.loads((d / "result.json").read_text()) for d in (ranks, one))
    assert got["config"]["world_size"] == WORLD and "world_size" not in want["config"]
    # the same predictions (accuracies are counts / n); losses up to the rounding
    np.testing.assert_allclose(got["accuracy"], want["accuracy"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(got["random_init"], want["random_init"], rtol=0, atol=1e-5)
    assert [c["iteration"] for c in got["curves"]] == [c["iteration"] for c in want["curves"]]
    np.testing.assert_allclose([a for c in got["curves"] for a in c["accuracies"]],
                               [a for c in want["curves"] for a in c["accuracies"]], atol=1e-5)
    assert len(got["losses"]) == len(want["losses"]) >= 4
    np.testing.assert_allclose([x["loss"] for x in got["losses"]],
                               [x["loss"] for x in want["losses"]], rtol=1e-5)


def test_torchrun_gives_the_one_process_run_written_once(tmp_path, one_process):
    code, out, err = _torchrun(*ARGS, "--method", "ewc", *METHODS["ewc"], "--out",
                               str(tmp_path))
    assert code == 0, _shown(err)
    assert out.count("wrote ") == 1 and out.count("after task 2") == 1     # rank 0 only
    _assert_same_run(tmp_path, one_process / "ewc")


@pytest.mark.parametrize("method", list(METHODS))
def test_myelin_run_on_two_ranks_gives_the_one_process_run(session, one_process, method):
    ranks, root = session
    assert [r[method]["code"] for r in ranks] == [0, 0]
    assert ranks[0][method]["stdout"].count("wrote ") == 1
    assert ranks[1][method]["stdout"] == ranks[1][method]["stderr"] == ""   # rank 1: silent
    _assert_same_run(root / method, one_process / method)


def test_a_refusal_on_rank_zero_stops_every_rank(session):
    # rank 0 alone checks --out; the other rank must stop too instead of waiting for it
    ranks, root = session
    assert [r["held"]["code"] for r in ranks] == [2, 2]
    assert "already holds a run (result.json)" in ranks[0]["held"]["stderr"]
    assert "rank 0 refused the run (CLIError: --out" in ranks[1]["held"]["stderr"]
    assert sorted(p.name for p in (root / "held").iterdir()) == ["result.json"]


def test_shards_split_a_batch_so_that_the_averaged_loss_is_the_batch_mean(monkeypatch):
    index = torch.arange(45)
    assert shard_batch(index) == (index, 1.0) and shard_bounds(45) == (0, 45)  # one process
    losses = torch.rand(45, dtype=torch.float64)
    monkeypatch.setattr(distributed, "world_size", lambda: 3)
    slices, averaged = [], 0.0
    for r in range(3):
        monkeypatch.setattr(distributed, "rank", lambda r=r: r)
        mine, scale = shard_batch(index)
        slices.append(mine.tolist())
        averaged += scale * float(losses[mine].mean()) / 3       # what DDP's average gives
    assert slices == [list(range(0, 15)), list(range(15, 30)), list(range(30, 45))]
    assert averaged == pytest.approx(float(losses.mean()), rel=1e-12)
    slices, averaged = [], 0.0
    for r in range(3):       # 44 = 15 + 15 + 14: the first 44 mod 3 ranks take one more
        monkeypatch.setattr(distributed, "rank", lambda r=r: r)
        mine, scale = shard_batch(index[:44])
        slices.append(len(mine))
        averaged += scale * float(losses[mine].mean()) / 3
    assert slices == [15, 15, 14]
    assert averaged == pytest.approx(float(losses[:44].mean()), rel=1e-12)
    with pytest.raises(ValueError, match=r"A batch of 2 sample\(s\) cannot be split over 3 ranks"):
        shard_batch(index[:2])


# -- bad input: two spawned gloo ranks calling myelin.fit ---------------------------------------
def _scenario():
    from myelin.scenarios import SCENARIOS

    return SCENARIOS.get("permuted-digits")(2, seed=0)


def _model(sc, wide: bool = False):
    from myelin.models import mlp

    torch.manual_seed(0)
    return mlp(sc.input_shape, sc.n_classes, (24,) if wide else (16,))


def _fit(sc, model, method: str = "ewc", **kw: Any):
    return fit(sc, model, method, iterations=3, batch_size=20, closing_samples=50,
               progress=False, **kw)


def _caught(call) -> tuple[str, str] | None:
    try:
        call()
    except Exception as exc:
        return type(exc).__name__, str(exc)
    return None


def _main(argv: list[str]) -> dict[str, Any]:
    """`myelin.cli.main` on this rank: its exit code, stdout and stderr."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(argv)
    return {"code": code, "stdout": stdout.getvalue(), "stderr": stderr.getvalue()}


def _session(rank: int, root: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for method, options in METHODS.items():     # the CLI under an existing process group
        out[method] = _main(["run", *ARGS, "--method", method, *options, "--out",
                             str(root / method)])
    out["held"] = _main(["run", *ARGS, "--out", str(root / "held")])
    sc = _scenario()
    out["er"] = _caught(lambda: _fit(sc, _model(sc), "er"))
    out["ewc+er"] = _caught(lambda: _fit(sc, _model(sc), "ewc+er"))
    out["names"] = _caught(lambda: _fit(sc, _model(sc, wide=rank == 1)))
    out["resume-one"] = _caught(lambda: _fit(sc, _model(sc), checkpoint_dir=root / "one",
                                             resume=True))
    result = _fit(sc, _model(sc), checkpoint_dir=root / "ranks")
    out["accuracy"] = result.accuracy
    return out


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict[str, Any]], Path]:
    """A one-process checkpoint, then the two-rank session; each rank's results and the folder."""
    root = tmp_path_factory.mktemp("ranks")
    sc = _scenario()
    _fit(sc, _model(sc), checkpoint_dir=root / "one")
    (root / "held").mkdir()
    (root / "held" / "result.json").write_text("{}")
    results = run_ranks(_session, root, WORLD, SESSION_DEADLINE, COLLECTIVE_TIMEOUT)
    return results, root


def test_replay_methods_are_refused_naming_them(session):
    ranks, _ = session
    for r in ranks:
        kind, msg = r["er"]
        assert kind == "ValueError"
        assert "Method 'er' is not supported under torch.distributed (torchrun) yet" in msg
        assert "replay memory" in msg
        kind, msg = r["ewc+er"]
        assert kind == "ValueError" and "'ewc+er' is not supported" in msg and "'er' keeps" in msg


def test_ranks_with_different_models_are_refused_naming_the_parameters(session):
    ranks, _ = session
    for r in ranks:
        kind, msg = r["names"]
        assert kind == "ValueError" and msg.startswith("myelin.fit: the ranks' models have")
        assert "1.weight: rank 0 (16, 64) float32 vs rank 1 (24, 64) float32" in msg


def test_a_checkpoint_resumes_only_under_its_world_size(session):
    ranks, root = session
    for r in ranks:      # saved by one process, resumed by two ranks
        kind, msg = r["resume-one"]
        assert kind == "ValueError"
        assert "saved by a run of one process; this run has 2 ranks" in msg
    assert ranks[0]["accuracy"] == ranks[1]["accuracy"]
    sc = _scenario()     # saved by two ranks (rank 0 wrote it), resumed by one process
    with pytest.raises(ValueError, match=r"saved by a run of 2 ranks \(torchrun "
                                         r"--nproc-per-node 2\); this run has one process"):
        _fit(sc, _model(sc), checkpoint_dir=root / "ranks", resume=True)
