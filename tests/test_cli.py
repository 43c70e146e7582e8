import json
import subprocess
import sys

from myelin import __version__
from myelin.cli import main


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "myelin", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=600)


def test_version_and_info_through_the_entry_point():
    out = cli("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"myelin {__version__}"
    out = cli("info")
    assert out.returncode == 0
    for word in ("fisher-exact", "permuted-mnist", "wva", "digits"):
        assert word in out.stdout


def test_help_and_unknown_command(capsys):
    assert main([]) == 2
    proc = cli("frobnicate")
    assert proc.returncode == 2 and "invalid choice" in proc.stderr
    proc = cli("run", "--help")
    assert proc.returncode == 0 and "examples:" in proc.stdout and "--lam" in proc.stdout


RUN = ["--scenario", "permuted-digits", "--tasks", "2", "--epochs", "1", "--batch-size", "64",
       "--widths", "32", "-q"]


def test_run_writes_a_run_directory(tmp_path):
    proc = cli("run", *RUN, "--method", "ewc", "--lam", "10", "--eval-every", "10",
               "--out", str(tmp_path / "r"))
    assert proc.returncode == 0, proc.stderr
    assert "after task 2" in proc.stdout
    for f in ("result.json", "config.json", "accuracy.png", "curves.png"):
        assert (tmp_path / "r" / f).exists(), f
    result = json.loads((tmp_path / "r" / "result.json").read_text())
    assert result["config"]["method"]["lam"] == 10.0 and len(result["accuracy"]) == 2


def test_run_from_toml_config_flags_override(tmp_path):
    cfg = tmp_path / "exp.toml"
    cfg.write_text('scenario = "split-digits-task"\ntasks = 5\nmethod = "wva"\nlam = 20.0\n'
                   'epochs = 1\nwidths = "32"\n')
    assert main(["run", "--config", str(cfg), "--lam", "5", "-q",
                 "--out", str(tmp_path / "w")]) == 0
    result = json.loads((tmp_path / "w" / "result.json").read_text())
    assert result["config"]["method"]["lam"] == 5.0 and len(result["accuracy"]) == 5
    bad = tmp_path / "bad.toml"
    bad.write_text("lamda = 3\n")
    proc = cli("run", "--config", str(bad))
    assert proc.returncode == 2 and "unknown option(s) ['lamda']" in proc.stderr


def test_run_with_seen_classes(tmp_path):
    assert main(["run", "--scenario", "split-digits-class", "--seen-classes", "--iterations",
                 "5", "-q", "--out", str(tmp_path / "s")]) == 0
    result = json.loads((tmp_path / "s" / "result.json").read_text())
    assert result["config"]["scenario"]["seen_classes"] is True
    assert result["accuracy"][0][1:] == [0.0] * 4        # unseen classes cannot be predicted
    proc = cli("run", *RUN, "--seen-classes")
    assert proc.returncode == 2 and "seen_classes applies to split class-IL" in proc.stderr


def test_readable_errors():
    proc = cli("run", "--scenario", "permuted-mnsit", "-q")
    assert proc.returncode == 2 and "Did you mean 'permuted-mnist'" in proc.stderr
    proc = cli("run", *RUN, "--method", "ewc", "--lam", "-1")
    assert proc.returncode == 2 and "finite float >= 0" in proc.stderr
    proc = cli("report", "/nonexistent/run")
    assert proc.returncode == 2 and "No result.json" in proc.stderr


def test_sweep_is_resumable_and_summarises(tmp_path):
    args = ["sweep", *RUN, "--method", "ewc", "--grid", "lam=1,100", "--seeds", "0,1",
            "--jobs", "2", "--out", str(tmp_path / "s")]
    proc = cli(*args)
    assert proc.returncode == 0, proc.stderr
    assert "4 to run" in proc.stdout
    summary = json.loads((tmp_path / "s" / "summary.json").read_text())
    assert [r["n_seeds"] for r in summary["rows"]] == [2, 2]
    assert (tmp_path / "s" / "lam-vs-aa.png").exists()
    assert "± " in (tmp_path / "s" / "summary.md").read_text()
    again = cli(*args)
    assert again.returncode == 0 and "4 already done, 0 to run" in again.stdout


def test_report_compares_runs(tmp_path):
    for m in ("finetune", "l2"):
        assert main(["run", *RUN, "--method", m, "--out", str(tmp_path / m)]) == 0
    proc = cli("report", str(tmp_path / "finetune"), str(tmp_path / "l2"),
               "--out", str(tmp_path / "rep"))
    assert proc.returncode == 0, proc.stderr
    assert "| finetune |" in proc.stdout and "| l2 |" in proc.stdout
    assert (tmp_path / "rep" / "aa.png").exists() and (tmp_path / "rep" / "report.md").exists()


def test_demo(tmp_path):
    proc = cli("demo", "-q", "--out", str(tmp_path / "demo"))
    assert proc.returncode == 0, proc.stderr
    assert "finetune: AA" in proc.stdout and "ewc: AA" in proc.stdout and "wva: AA" in proc.stdout
    assert (tmp_path / "demo" / "aa.png").exists()
