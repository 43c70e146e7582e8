"""``myelin sweep --backend optuna``: one study shared by many workers (issue 23, item 4)."""

import json
import os
import subprocess
import sys
import time

import pytest

from myelin import cli as cli_module
from myelin import sweeps
from myelin.cli import main
from myelin.records import RecordStore
from tests.test_cli_reliability import error_of

RUN = ["--scenario", "permuted-digits", "--tasks", "2", "--iterations", "2", "--batch-size", "32",
       "--widths", "8", "-q", "--method", "ewc"]
GRID = ["--grid", "lam=1,100", "--seeds", "0,1"]
KEYS = [f"lam={lam}/seed={seed}/result" for lam in ("1.0", "100.0") for seed in (0, 1)]


def no_training(*args, **kwargs):
    raise AssertionError("the sweep trained before its arguments were checked")


def trials(out, state=None):
    """The trials of the one study in ``<out>/optuna.db``: [(number, state, key)]."""
    import optuna

    url = sweeps.default_storage(out)
    (name,) = optuna.get_all_study_names(url)
    study = optuna.load_study(study_name=name, storage=url)
    return [(t.number, t.state.name, t.user_attrs.get("key")) for t in study.trials
            if state is None or t.state.name == state]


def fake_point(spec, root, key):
    """A run that takes no time: its record holds the seed as the average accuracy."""
    metrics = {"average_accuracy": spec["seed"] / 10}
    RecordStore(root).put(key, spec, {"metrics": metrics, "pid": os.getpid()})
    return metrics


def failing(spec, root, key):
    raise ValueError("boom")


def fake_runs(n=2):
    return [({"lam": float(i)}, 0, f"lam={float(i)}/seed=0/result",
             {"method": "ewc", "lam": float(i), "seed": 0}) for i in range(n)]


def run_fake(sweep, out):
    return sweep.run(RecordStore(out), 1, fake_point, cli_module._worker_init,
                     cli_module._stop_workers)


# the grid: same results as the local pool; resumable; two workers share it --------------------
def test_optuna_backend_gives_the_local_results_and_resumes(tmp_path, capsys):
    pytest.importorskip("optuna")
    local, study = tmp_path / "local", tmp_path / "optuna"
    assert main(["sweep", *RUN, *GRID, "--jobs", "1", "--out", str(local)]) == 0
    assert main(["sweep", *RUN, *GRID, "--jobs", "1", "--out", str(study),
                 "--backend", "optuna"]) == 0
    assert "0 already done, 4 to run with 1 process(es) and the other workers of optuna " \
        "study 'optuna-" in capsys.readouterr().out
    for key in KEYS:
        a, b = (json.loads((d / f"{key}.json").read_text()) for d in (local, study))
        assert a["spec"] == b["spec"] and a["accuracy"] == b["accuracy"], key
    rows = [json.loads((d / "summary.json").read_text())["rows"] for d in (local, study)]
    assert [r["average_accuracy"] for r in rows[0]] == [r["average_accuracy"] for r in rows[1]]
    done = trials(study)
    assert sorted(k for _, s, k in done if s == "COMPLETE") == sorted(KEYS) and len(done) == 4
    stamps = {k: (study / f"{k}.json").stat().st_mtime_ns for k in KEYS}
    assert main(["sweep", *RUN, *GRID, "--out", str(study), "--backend", "optuna"]) == 0
    assert "4 already done, 0 to run" in capsys.readouterr().out
    assert {k: (study / f"{k}.json").stat().st_mtime_ns for k in KEYS} == stamps
    assert len(trials(study)) == 4
    assert main(["report", str(study / "lam=1.0" / "seed=0"), "--out", str(tmp_path / "r")]) == 0


def test_two_workers_share_one_study_without_duplicates(tmp_path):
    pytest.importorskip("optuna")
    out = tmp_path / "s"
    argv = [sys.executable, "-m", "myelin", "sweep", *RUN, *GRID, "--jobs", "1", "--out",
            str(out), "--backend", "optuna"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (stdout, stderr) in zip(procs, outputs):
        assert p.returncode == 0, stderr
        assert "| 100.0 | 2 |" in stdout               # each summary covers the whole grid
    ran = [[line.rsplit("(trial ", 1)[1] for line in stdout.splitlines() if "(trial " in line]
           for stdout, _ in outputs]
    assert sorted(ran[0] + ran[1]) == ["0)", "1)", "2)", "3)"]        # each run exactly once
    assert sorted(k for _, s, k in trials(out, "COMPLETE")) == sorted(KEYS)
    assert len(trials(out)) == 4


def test_a_run_whose_worker_died_is_run_again(tmp_path, monkeypatch):
    pytest.importorskip("optuna")
    monkeypatch.setattr(sweeps, "HEARTBEAT_SECONDS", 1)
    monkeypatch.setattr(sweeps, "GRACE_SECONDS", 1)
    runs = fake_runs()
    dead = sweeps.OptunaSweep(runs, {"lam": [0.0, 1.0]}, tmp_path)
    claimed = dead._claim()                        # a worker claims a run, then is killed
    assert claimed is not None and [s for _, s, _ in trials(tmp_path)] == ["RUNNING", "WAITING"]
    time.sleep(2.5)
    failures, interrupted = run_fake(sweeps.OptunaSweep(runs, {"lam": [0.0, 1.0]}, tmp_path),
                                     tmp_path)
    assert (failures, interrupted) == ([], False)
    states = trials(tmp_path)
    assert states[claimed[1]][1] == "FAIL"                       # stale: failed, queued again
    assert sorted(k for _, s, k in states if s == "COMPLETE") == [k for _, _, k, _ in runs]


def test_a_record_on_disk_completes_its_trial_and_failures_rerun(tmp_path):
    pytest.importorskip("optuna")
    runs = fake_runs()
    fake_point(runs[0][3], str(tmp_path), runs[0][2])             # done by a local sweep

    sweep = sweeps.OptunaSweep(runs, {"lam": [0.0, 1.0]}, tmp_path)
    failures, _ = sweep.run(RecordStore(tmp_path), 1, failing, cli_module._worker_init,
                            cli_module._stop_workers)
    assert failures == [{"params": {"lam": 1.0}, "seed": 0, "error": "boom"}]
    assert sweep.records() == {runs[0][2]: {"metrics": {"average_accuracy": 0.0}, "trial": 0}}
    failures, _ = run_fake(sweeps.OptunaSweep(runs, {"lam": [0.0, 1.0]}, tmp_path), tmp_path)
    assert failures == [] and [s for _, s, _ in trials(tmp_path)] == ["COMPLETE", "FAIL",
                                                                      "COMPLETE"]


# bad input -----------------------------------------------------------------------------------
def test_a_storage_that_cannot_be_opened_is_a_clear_error(tmp_path, monkeypatch):
    pytest.importorskip("optuna")
    monkeypatch.setattr(cli_module, "build_and_fit", no_training)
    start = time.monotonic()
    err = error_of("sweep", *RUN, *GRID, "--backend", "optuna", "--out", str(tmp_path / "s"),
                   "--storage", "sqlite:////nonexistent/dir/x.db")
    assert str(err) == ("--storage 'sqlite:////nonexistent/dir/x.db': cannot open the study "
                        "storage: unable to open database file (does its folder exist?).")
    err = error_of("sweep", *RUN, *GRID, "--backend", "optuna", "--out", str(tmp_path / "s"),
                   "--storage", "mysql://me:secret@nohost/db")
    assert str(err).startswith("--storage 'mysql://me:***@nohost/db': cannot open the study "
                               "storage: its database driver is not installed (No module")
    err = error_of("sweep", *RUN, *GRID, "--backend", "optuna", "--out", str(tmp_path / "s"),
                   "--storage", "not a url")
    assert "--storage 'not a url': cannot open the study storage: Could not parse" in str(err)
    assert time.monotonic() - start < 30

    def unreachable(*args, **kwargs):             # a server that never answers
        time.sleep(60)

    import optuna

    monkeypatch.setattr(optuna.storages, "RDBStorage", unreachable)
    monkeypatch.setattr(sweeps, "OPEN_TIMEOUT", 0.5)
    start = time.monotonic()
    err = error_of("sweep", *RUN, *GRID, "--backend", "optuna", "--out", str(tmp_path / "s"),
                   "--storage", "postgresql://me@10.255.255.1/db")
    assert time.monotonic() - start < 5
    assert str(err) == ("--storage 'postgresql://me@10.255.255.1/db': cannot open the study "
                        "storage: no answer within 0.5 s (is the database server reachable?).")


def test_a_study_of_another_sweep_is_refused(tmp_path):
    pytest.importorskip("optuna")
    sweeps.OptunaSweep(fake_runs(2), {"lam": [0.0, 1.0]}, tmp_path, study="mine")
    with pytest.raises(sweeps.SweepError, match="optuna study 'mine' in sqlite:///.* holds "
                       r"another sweep \(2 run\(s\) of another grid"):
        sweeps.OptunaSweep(fake_runs(3), {"lam": [0.0, 1.0, 2.0]}, tmp_path, study="mine")


def test_the_backend_without_optuna_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setattr(cli_module, "build_and_fit", no_training)
    monkeypatch.setitem(sys.modules, "optuna", None)              # `import optuna` fails
    err = error_of("sweep", *RUN, *GRID, "--backend", "optuna", "--out", str(tmp_path / "s"))
    assert str(err).startswith("--backend optuna needs Optuna, which is not installed")
    assert str(err).endswith("pip install 'myelin[sweep]'.")
    assert not (tmp_path / "s").exists()
    err = error_of("sweep", *RUN, *GRID, "--storage", "sqlite:///x.db")
    assert "--storage and --study name the study of --backend optuna" in str(err)


def test_optuna_workers_share_the_directory_a_local_sweep_locks(tmp_path):
    with RecordStore(tmp_path).lock(shared=True), RecordStore(tmp_path).lock(shared=True):
        err = error_of("sweep", *RUN, *GRID, "--out", str(tmp_path))
    assert f"is in use by pid {os.getpid()} and the other workers of its Optuna study" \
        in str(err)
