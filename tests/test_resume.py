"""Resumable runs (issue 22, item 1): a run killed mid-way and resumed gives the same numbers.

Checkpoints hold the model, the optimizer, every method's state (importances, anchors, SI's
path integral, replay memories and their generators), the random states and the partial
result; a resumed run must reproduce an uninterrupted one exactly (same seed, one thread).
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from myelin.cli import main
from myelin.methods import Method, make_method
from myelin.models import mlp
from myelin.replay.ctn import ctn_mlp
from myelin.replay.memory import ReservoirMemory, RingMemory
from myelin.replay.mir import ScoredReservoir
from myelin.scenarios import SCENARIOS
from myelin.train import CHECKPOINT_FILE, fit, read_checkpoint

ROOT = Path(__file__).resolve().parents[1]
ITERATIONS = 20                       # steps per task
TRAINING = {"iterations": ITERATIONS, "batch_size": 16, "lr": 0.05, "eval_every": 7,
            "progress": False}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Interrupted(Exception):
    """Stands for the process dying: raised from inside the loop at a chosen step."""


class Crash(Method):
    """Raises `Interrupted` after optimizer step `at` (None: never); keeps no state."""

    name = "crash"

    def __init__(self, at: int | None = None):
        self.at = at

    def after_step(self, ctx, batch) -> None:
        if self.at is not None and ctx.step == self.at:
            raise Interrupted(ctx.step)


class Slow(Method):
    """Sleeps after every step of the second task when $MYELIN_TEST_SLOW is set (the SIGKILL
    test's window); changes no number."""

    def after_step(self, ctx, batch) -> None:
        if ctx.task_index == 1 and os.environ.get("MYELIN_TEST_SLOW"):
            time.sleep(float(os.environ["MYELIN_TEST_SLOW"]))


def slow() -> Method:
    """The factory of `Slow` (``--method tests.test_resume:slow+...``)."""
    return Slow()


SCENARIO = SCENARIOS.get("permuted-digits")(3, seed=0)

# method spec, options, model builder
CASES = {
    "finetune": ("finetune", {}, "mlp"),
    "ewc": ("ewc", {"lam": 100.0}, "mlp"),
    "si": ("si", {"lam": 10.0}, "mlp"),
    "er": ("er", {"memory": 100}, "mlp"),
    "er-ring": ("er", {"memory_per_task": 20, "buffer": "ring"}, "mlp"),
    "wva": ("wva", {"lam": 100.0}, "mlp"),
    "agem": ("agem", {"memory_per_task": 30, "reference_batch": 16}, "mlp"),
    "gem": ("gem", {"memory_per_task": 20}, "mlp"),
    "mir": ("mir", {"memory": 100, "candidates": 20, "replay_batch": 5}, "mlp"),
    "mer": ("mer", {"memory": 60, "replay_batch": 3, "batches_per_example": 1}, "mlp"),
    "ctn": ("ctn", {"memory_per_task": 20, "replay_batch": 8}, "ctn"),
    "joint": ("joint", {}, "mlp"),
    "er+ewc": ("er+ewc", {"memory": 100, "lam": 100.0}, "mlp"),
}


def build_model(kind: str, widths=(32,)):
    torch.manual_seed(0)
    if kind == "ctn":
        return ctn_mlp(SCENARIO.input_shape, SCENARIO.n_classes, widths, max_tasks=3)
    return mlp(SCENARIO.input_shape, SCENARIO.n_classes, widths)


def run(case: str, at: int | None = None, **kwargs):
    spec, options, kind = CASES[case]
    training = {**TRAINING, **({"batch_size": 4} if spec == "mer" else {})}
    method = Crash(at) + make_method(spec, **options)
    return fit(SCENARIO, build_model(kind), method, "adam" if spec == "er" else "sgd",
               **training, **kwargs)


_REFERENCE: dict = {}


def reference(case: str):
    if case not in _REFERENCE:
        _REFERENCE[case] = run(case)
    return _REFERENCE[case]


def interrupt_and_resume(case: str, tmp_path: Path, at: int, every: int | None):
    """Run `case` until step `at` (checkpointing), then resume it from the checkpoint."""
    with pytest.raises(Interrupted):
        run(case, at, checkpoint_dir=tmp_path, checkpoint_every=every)
    position = read_checkpoint(tmp_path)
    resumed = run(case, checkpoint_dir=tmp_path, checkpoint_every=every, resume=True)
    return position, resumed


def same_numbers(a, b) -> bool:
    return (a.accuracy == b.accuracy and a.random_init == b.random_init
            and a.curves == b.curves and a.losses == b.losses)


# the SIGKILL test, through the command line ---------------------------------------------------
def test_a_run_killed_in_task_2_resumes_to_the_uninterrupted_accuracy_matrix(tmp_path):
    argv = ["run", "--scenario", "permuted-digits", "--tasks", "2", "--iterations", "40",
            "--batch-size", "16", "--widths", "16", "--method", "tests.test_resume:slow+ewc",
            "--lam", "100", "--eval-every", "10", "-q", "--checkpoint-every", "5"]
    killed = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MYELIN_TEST_SLOW": "0.05",
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "myelin", *argv, "--out", str(killed)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        position = None
        while time.monotonic() < deadline and proc.poll() is None:
            position = read_checkpoint(killed / "checkpoint")
            if position and position["tasks_done"] == 1 and position["task_step"] > 0:
                break                              # task 1 saved, task 2 under way
            time.sleep(0.01)
        assert proc.poll() is None, proc.stderr.read().decode()
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "result.json").exists()
    assert position["tasks_done"] == 1 and 0 < position["task_step"] < 40

    assert main([*argv, "--out", str(killed), "--resume"]) == 0
    assert main([*argv, "--out", str(tmp_path / "whole")]) == 0
    resumed = json.loads((killed / "result.json").read_text())
    whole = json.loads((tmp_path / "whole" / "result.json").read_text())
    assert resumed["accuracy"] == whole["accuracy"]
    assert resumed["curves"] == whole["curves"] and resumed["losses"] == whole["losses"]
    assert not (killed / "checkpoint").exists()            # a finished run keeps no checkpoint


# every method's state round-trips --------------------------------------------------------------
@pytest.mark.parametrize("case", ["finetune", "ewc", "si", "er"])
def test_resume_after_a_task_equals_an_uninterrupted_run(case, tmp_path):
    position, resumed = interrupt_and_resume(case, tmp_path, at=ITERATIONS + 12, every=None)
    assert position == {"tasks_done": 1, "task_step": 0, "step": ITERATIONS, "n_tasks": 3}
    assert same_numbers(resumed, reference(case))


@pytest.mark.parametrize("case", list(CASES))
def test_resume_mid_task_equals_an_uninterrupted_run(case, tmp_path):
    every = 3 if case == "mer" else 6       # MER: batches of 4, slow steps
    position, resumed = interrupt_and_resume(case, tmp_path, at=ITERATIONS + 14, every=every)
    assert position["tasks_done"] == 1 and position["task_step"] > 0
    assert same_numbers(resumed, reference(case))
    assert resumed.config["resumed_from"] == position
    assert resumed.config == {**reference(case).config, "resumed_from": position}


def test_resume_in_the_first_and_last_task(tmp_path):
    for at, done in ((5, 0), (2 * ITERATIONS + 9, 2)):
        checkpoints = tmp_path / str(at)
        position, resumed = interrupt_and_resume("si", checkpoints, at=at, every=4)
        assert position["tasks_done"] == done and position["task_step"] > 0
        assert same_numbers(resumed, reference("si"))


def test_the_state_is_what_makes_the_resume_exact(tmp_path, monkeypatch):
    """Without the replay memory's state the resumed ER run differs: the test can fail."""
    monkeypatch.setattr(ReservoirMemory, "load_state_dict", lambda self, state, device=None: None)
    _, resumed = interrupt_and_resume("er", tmp_path, at=ITERATIONS + 12, every=None)
    assert resumed.accuracy != reference("er").accuracy


# the checkpoint file -------------------------------------------------------------------------
def test_checkpoint_file_loads_weights_only_and_is_replaced_atomically(tmp_path):
    run("er", checkpoint_dir=tmp_path, checkpoint_every=5)
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT_FILE]   # no temporaries
    state = torch.load(tmp_path / CHECKPOINT_FILE, weights_only=True)
    assert state["position"] == {"tasks_done": 3, "task_step": 0, "step": 3 * ITERATIONS,
                                 "n_tasks": 3}
    assert len(state["result"]["accuracy"]) == 3
    memory = state["method"]["parts"][1]["memory"]
    assert memory["seen"] == 3 * ITERATIONS * 16 and memory["generator"].dtype == torch.uint8
    assert {"torch", "generator", "numpy", "python"} <= set(state["rng"])


def test_a_finished_checkpoint_gives_its_result_and_stale_temporaries_go(tmp_path):
    first = run("ewc", checkpoint_dir=tmp_path)
    stale = tmp_path / ".checkpoint-123.tmp"              # what a kill mid-write leaves
    stale.write_bytes(b"partial")
    again = run("ewc", checkpoint_dir=tmp_path, resume=True)
    assert same_numbers(again, first) and again.metrics == first.metrics
    assert not stale.exists()


def test_resume_without_a_checkpoint_starts_afresh(tmp_path):
    assert same_numbers(run("finetune", checkpoint_dir=tmp_path / "new", resume=True),
                        reference("finetune"))


def test_a_checkpoint_is_never_overwritten_without_resume(tmp_path):
    with pytest.raises(Interrupted):
        run("ewc", ITERATIONS + 3, checkpoint_dir=tmp_path)
    before = (tmp_path / CHECKPOINT_FILE).read_bytes()
    with pytest.raises(ValueError) as err:
        run("ewc", checkpoint_dir=tmp_path)
    assert str(err.value) == (f"checkpoint_dir {str(tmp_path)!r} already holds a checkpoint "
                              "(1 of 3 tasks done); pass resume=True (--resume) to continue "
                              "it, or choose another checkpoint_dir.")
    assert (tmp_path / CHECKPOINT_FILE).read_bytes() == before


def test_an_unreadable_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / CHECKPOINT_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError) as err:
        run("finetune", checkpoint_dir=tmp_path, resume=True)
    assert str(err.value) == (f"{str(tmp_path / CHECKPOINT_FILE)!r} is not a readable myelin "
                              "checkpoint (damaged, or not tensors and plain values only). "
                              "Delete it to start afresh.")


# a checkpoint of another run is refused, naming what differs -----------------------------------
@pytest.fixture
def ewc_checkpoint(tmp_path):
    with pytest.raises(Interrupted):
        run("ewc", ITERATIONS + 3, checkpoint_dir=tmp_path)
    return tmp_path


def resume_error(checkpoints: Path, **changes) -> str:
    torch.manual_seed(0)
    model = mlp(SCENARIO.input_shape, SCENARIO.n_classes, changes.pop("widths", (32,)))
    options = {"lam": 100.0, **changes.pop("options", {})}
    with pytest.raises(ValueError) as err:
        fit(SCENARIO, model, Crash() + make_method("ewc", **options),
            **{**TRAINING, **changes}, checkpoint_dir=checkpoints, resume=True)
    message = str(err.value)
    assert message.startswith(f"Cannot resume from {str(checkpoints / CHECKPOINT_FILE)!r}: "
                              "it was saved for a different run (")
    assert message.endswith("Resume with the same scenario, method, options, seed and model, "
                            "or choose another checkpoint_dir.")
    return message


def test_resume_refuses_other_method_options(ewc_checkpoint):
    message = resume_error(ewc_checkpoint, options={"lam": 5.0})
    assert "method.ewc.lam: checkpoint 100.0, now 5.0" in message


def test_resume_refuses_another_seed(ewc_checkpoint):
    assert "(seed: checkpoint 0, now 1)" in resume_error(ewc_checkpoint, seed=1)


def test_resume_refuses_another_model(ewc_checkpoint):
    message = resume_error(ewc_checkpoint, widths=(16,))
    assert "model_state.1.weight: checkpoint [32, 64], now [16, 64]" in message


def test_resume_refuses_another_scenario(ewc_checkpoint):
    global SCENARIO
    saved = SCENARIO
    SCENARIO = SCENARIOS.get("permuted-digits")(3, seed=1)
    try:
        assert "scenario.seed: checkpoint 0, now 1" in resume_error(ewc_checkpoint)
    finally:
        SCENARIO = saved


def test_cli_resume_refuses_other_options_and_finished_runs(tmp_path, capsys):
    base = ["run", "--scenario", "permuted-digits", "--tasks", "2", "--iterations", "4",
            "--batch-size", "16", "--widths", "8", "--method", "ewc", "-q",
            "--out", str(tmp_path / "r")]
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "config.json").write_text("{}")
    assert main([*base, "--lam", "2", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "holds a run made with other options (" in err and "--lam: None there, 2.0 now" in err
    (tmp_path / "r" / "config.json").unlink()
    assert main([*base, "--lam", "2", "--resume"]) == 0         # nothing to resume: a new run
    assert "holds no checkpoint; starting from the first task" in capsys.readouterr().err
    assert main([*base, "--lam", "2", "--resume"]) == 2
    assert "holds a finished run (result.json): there is nothing to resume" in \
        capsys.readouterr().err
    assert main([*base, "--lam", "2", "--resume", "--overwrite"]) == 2
    assert "give one of them" in capsys.readouterr().err


# replay memories round-trip on their own --------------------------------------------------------
@pytest.mark.parametrize("make", [lambda g: ReservoirMemory(7, g), lambda g: RingMemory(3, 2, g),
                                  lambda g: ScoredReservoir(7, g)])
def test_memory_state_round_trips(make):
    memory = make(torch.Generator().manual_seed(1))
    for t, n in ((0, 5), (1, 6)):
        memory.add((torch.randn(n, 3), torch.randint(0, 4, (n,))), t)
    copy = make(torch.Generator().manual_seed(99))
    copy.load_state_dict(memory.state_dict())
    batch = (torch.randn(4, 3), torch.randint(0, 4, (4,)))
    for m in (memory, copy):
        m.add(batch, 1)
    a, b = memory.sample(5), copy.sample(5)
    assert all(torch.equal(x, y) for x, y in zip(a[0], b[0], strict=True))
    assert torch.equal(a[1], b[1]) and len(memory) == len(copy)
    with pytest.raises(ValueError, match="capacity"):
        ReservoirMemory(8).load_state_dict(ReservoirMemory(7).state_dict())
