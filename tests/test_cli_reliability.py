"""The command line never loses or overwrites work silently (issue 22, items 13 to 16)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from myelin import cli as cli_module
from myelin.cli import CLIError, build_parser, main
from myelin.records import RecordStore
from myelin.runner import Result

RUN = ["--scenario", "permuted-digits", "--tasks", "2", "--iterations", "2", "--batch-size", "32",
       "--widths", "8", "-q"]


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "myelin", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=600)


def error_of(*argv) -> CLIError:
    """The CLIError the command `argv` raises (the exact type; `main` prints it, exit 2)."""
    args = build_parser().parse_args(list(argv))
    with pytest.raises(CLIError) as err:
        args.func(args)
    return err.value


def no_training(*args, **kwargs):
    raise AssertionError("the run trained before its arguments were checked")


# item 13: a run never overwrites a run without --overwrite ---------------------------------------
def test_run_refuses_a_directory_holding_a_run_unless_overwrite(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["run", *RUN, "--method", "ewc", "--lam", "1"]) == 0    # the default --out
    result = tmp_path / "runs" / "permuted-digits-ewc-seed0" / "result.json"
    first = result.read_bytes()
    with monkeypatch.context() as m:
        m.setattr(cli_module, "build_and_fit", no_training)
        err = error_of("run", *RUN, "--method", "ewc", "--lam", "2")     # another λ, same dir
    assert str(err) == ("--out 'runs/permuted-digits-ewc-seed0' already holds a run "
                        "(result.json, config.json, accuracy.png, curves.png); pass "
                        "--overwrite to replace it, or choose another --out.")
    assert result.read_bytes() == first
    assert main(["run", *RUN, "--method", "ewc", "--lam", "2", "--overwrite"]) == 0
    assert json.loads(result.read_text())["config"]["method"]["lam"] == 2.0


def test_a_run_claims_its_directory_and_a_failed_run_releases_it(tmp_path, monkeypatch):
    out = tmp_path / "r"
    out.mkdir()
    (out / "config.json").write_text("{}")          # another run started into it
    monkeypatch.setattr(cli_module, "build_and_fit", no_training)
    assert "already holds a run (config.json)" in str(error_of("run", *RUN, "--out", str(out)))

    def boom(*args, **kwargs):
        assert (tmp_path / "new" / "config.json").exists()      # claimed while training
        raise ValueError("boom")

    monkeypatch.setattr(cli_module, "build_and_fit", boom)
    assert main(["run", *RUN, "--out", str(tmp_path / "new")]) == 2
    assert not (tmp_path / "new").exists()


# item 14: the output path is checked (and created) before training ---------------------------
def test_an_impossible_out_fails_before_training(tmp_path, monkeypatch):
    monkeypatch.setattr(cli_module, "build_and_fit", no_training)
    (tmp_path / "afile").write_text("")
    err = error_of("run", *RUN, "--out", str(tmp_path / "afile" / "sub"))
    assert str(err) == (f"--out {str(tmp_path / 'afile' / 'sub')!r}: "
                        f"{str(tmp_path / 'afile')!r} is a file, not a directory; choose "
                        "another --out.")
    err = error_of("sweep", *RUN, "--grid", "lr=0.1", "--out", str(tmp_path / "afile"))
    assert str(err).startswith(f"--out {str(tmp_path / 'afile')!r}: ")
    (tmp_path / "x.json").write_text('{"accuracy": [[0.5]], "random_init": [0.1]}')
    err = error_of("report", str(tmp_path / "x.json"), "--out", str(tmp_path / "afile" / "r"))
    assert str(err).startswith("--out ") and "is a file, not a directory" in str(err)


# messages that name the offending argument ----------------------------------------------------
def test_non_finite_numbers_are_refused_where_given(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["run", *RUN, "--epochs", "nan"])
    assert exit_.value.code == 2
    assert "argument --epochs: expects a finite number; got 'nan'." in capsys.readouterr().err
    with pytest.raises(CLIError, match=r"^--lam: expects a finite number; got 'inf'\.$"):
        cli_module.option_set()["lam"].parse("inf")
    cfg = tmp_path / "exp.toml"
    cfg.write_text("epochs = nan\n")
    assert str(error_of("run", "--config", str(cfg))) == \
        f"{cfg}: epochs: expects a finite number; got nan."


def test_seed_and_option_messages_name_the_argument():
    assert str(error_of("sweep", *RUN, "--grid", "lr=0.1", "--seeds", "a,b")) == \
        "--seeds must be comma-separated integers, e.g. 0,1,2. Got 'a,b'."
    err = error_of("run", *RUN, "--labels-trick")
    assert str(err).startswith("scenario 'permuted-digits' takes no option --labels-trick")


def test_a_missing_data_root_is_an_error_not_a_fallback(tmp_path, monkeypatch):
    monkeypatch.setenv("MYELIN_DATA", str(tmp_path))
    monkeypatch.setattr(cli_module, "build_and_fit", no_training)
    missing = tmp_path / "typo"
    for command in (["run"], ["sweep", "--grid", "lr=0.1"]):
        err = error_of(*command, "--scenario", "permuted-mnist", "--data-root", str(missing),
                       "--out", str(tmp_path / "o"))
        assert f"--data-root {str(missing)!r} does not exist." in str(err)


def test_the_jobs_key_is_checked_and_never_ignored(tmp_path):
    cfg = tmp_path / "exp.toml"
    cfg.write_text('scenario = "permuted-digits"\njobs = 2\n')
    assert str(error_of("run", "--config", str(cfg))).startswith(
        f"{cfg}: key(s) ['jobs'] are for `myelin sweep` only")
    for bad in ("0", "2.5", "true", '"two"'):
        cfg.write_text(f"jobs = {bad}\n[grid]\nlr = [0.1]\n")
        err = error_of("sweep", "--config", str(cfg))
        assert str(err).startswith(f"{cfg}: jobs must be a positive integer"), bad
    assert str(error_of("sweep", *RUN, "--grid", "lr=0.1", "--jobs", "0")).startswith(
        "--jobs must be a positive integer")


# item 15: one sweep per directory, Ctrl-C, workers die with the sweep -------------------------
def test_a_second_sweep_on_a_directory_is_refused(tmp_path):
    out = tmp_path / "s"
    with RecordStore(out).lock():
        err = error_of("sweep", *RUN, "--grid", "lr=0.1", "--out", str(out))
    assert str(err).startswith(f"--out {str(out)!r} is in use by pid {os.getpid()} ")
    assert "Another `myelin sweep` is running there" in str(err)
    assert not (out / "summary.json").exists()


def _children(pid: int) -> list[int]:
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                stat = Path(f"/proc/{p}/stat").read_text()
            except OSError:
                continue
            if stat.rsplit(")", 1)[1].split()[1] == str(pid):
                out.append(int(p))
    return out


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("how", ["ctrl-c", "kill -9"])
def test_a_stopped_sweep_stops_its_workers(tmp_path, how):
    out = tmp_path / "s"
    proc = subprocess.Popen(
        [sys.executable, "-m", "myelin", "sweep", *RUN, "--grid",
         "iterations=1,100000,100001", "--jobs", "2", "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        first = out / "iterations=1" / "seed=0" / "result.json"
        deadline = time.time() + 300
        while not first.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        workers = _children(proc.pid)
        assert first.exists() and len(workers) == 2, proc.communicate(timeout=5)
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)               # what the terminal does
        else:
            os.kill(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate(timeout=120)
        deadline = time.time() + 10
        while any(_running(w) for w in workers) and time.time() < deadline:
            time.sleep(0.2)
        assert not any(_running(w) for w in workers)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    if how == "ctrl-c":
        assert proc.returncode == 130 and "Traceback" not in stderr, stderr
        assert "interrupted with 1 of 3 run(s) finished" in stderr
        summary = json.loads((out / "summary.json").read_text())
        assert summary["interrupted"] and summary["finished"] == 1
        assert [r["params"] for r in summary["rows"]] == [{"iterations": 1}]


# item 16: failures are reported, unreadable records re-run, reports checked ------------------
def test_sweep_failures_exit_non_zero_and_are_listed(tmp_path):
    args = ["sweep", *RUN, "--grid", "batch_size=0,64", "--jobs", "2", "--out",
            str(tmp_path / "s")]
    proc = cli(*args)
    assert proc.returncode == 1, proc.stderr
    assert "myelin sweep: 1 of 2 run(s) failed; they are missing from the summary:\n" \
        "  {'batch_size': 0} seed 0: batch_size must be a positive int. Got 0.\n" in proc.stderr
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert summary["failed"] == [{"params": {"batch_size": 0}, "seed": 0,
                                  "error": "batch_size must be a positive int. Got 0."}]
    assert [r["params"] for r in summary["rows"]] == [{"batch_size": 64}]
    assert "FAILED: batch_size must be a positive int" in \
        (tmp_path / "s" / "summary.md").read_text()
    record = tmp_path / "s" / "batch_size=64" / "seed=0" / "result.json"
    record.write_text("")                                    # a zero-length record
    again = cli(*args)
    assert again.returncode == 1
    assert "1 already done" not in again.stdout and f"unreadable record: {record}" in again.stdout
    assert json.loads(record.read_text())["spec"]["batch_size"] == 64


def test_a_sweep_whose_runs_all_fail_says_so(tmp_path):
    proc = cli("sweep", *RUN, "--grid", "batch_size=0,-1", "--jobs", "1", "--out",
               str(tmp_path / "s"))
    assert proc.returncode == 1
    assert "myelin sweep: all 2 run(s) failed" in proc.stderr and "Traceback" not in proc.stderr
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert summary["rows"] == [] and len(summary["failed"]) == 2 and summary["finished"] == 0


@pytest.mark.parametrize("content, problem", [
    ("", "not valid JSON"),
    ("[1, 2]", "a JSON list, not an object"),
    ('{"accuracy": [], "random_init": []}', "must be square"),
    ('{"accuracy": [[0.5, 0.1]], "random_init": [0.1]}', "must be square"),
    ('{"accuracy": [[0.5]], "random_init": [0.1, 0.2]}', "random_init"),
    ('{"accuracy": [[0.5]], "random_init": [0.1], "curves": [1]}', "curves[0]"),
])
def test_report_names_a_malformed_result(tmp_path, content, problem):
    path = tmp_path / "result.json"
    path.write_text(content)
    err = error_of("report", str(tmp_path), "--out", str(tmp_path / "rep"))
    assert str(err).startswith(f"{str(path)!r} is not a ") and problem in str(err)
    with pytest.raises(ValueError, match=problem.replace("[", r"\[")):
        Result.load(path)


def test_report_labels_that_sanitise_alike_keep_their_plots(tmp_path):
    for name in ("x y", "x_y", "X_Y"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "result.json").write_text(
            '{"accuracy": [[0.5]], "random_init": [0.1]}')
    assert main(["report", *(str(tmp_path / n) for n in ("x y", "x_y", "X_Y")),
                 "--out", str(tmp_path / "rep")]) == 0
    plots = sorted(p.name for p in (tmp_path / "rep").glob("*-accuracy.png"))
    assert plots == ["X_Y-3-accuracy.png", "x_y-2-accuracy.png", "x_y-accuracy.png"]


def test_a_sweep_stuck_after_ctrl_c_still_exits():
    # stands in for a worker pool whose shutdown hangs (the main thread never returns)
    code = ("import threading, time\n"
            "from myelin.cli import _exit_if_stuck\n"
            "_exit_if_stuck(0.5)\n"
            "threading.Event().wait()\n")
    start = time.time()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 130 and "exiting now" in proc.stderr
    assert "Finished runs are recorded" in proc.stderr
    assert time.time() - start < 60
