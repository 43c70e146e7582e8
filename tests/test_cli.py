import json
import subprocess
import sys

import pytest

from myelin import __version__
from myelin import cli as cli_module
from myelin._registry import Registry
from myelin.cli import build_parser, main, option_set


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
    assert proc.returncode == 2
    assert "scenario 'permuted-digits' takes no option --seen-classes (it applies to split)" \
        in proc.stderr


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


# the option set comes from the registries ---------------------------------------------------
def test_option_set_is_generated_from_the_registries():
    from myelin.methods import METHODS
    from myelin.models import MODELS

    options = option_set()
    for entry in METHODS.entries():
        for name in cli_module._keyword_params(entry.factory):
            assert options[name[0]].groups[0] == "method"
            assert entry.name in options[name[0]].takers
    for entry in MODELS.entries():
        for name, _ in cli_module._keyword_params(entry.factory, skip=2):
            assert "model" in options[name].groups
    assert {"tasks", "data_root", "per_task_samples", "labels_trick", "seen_classes"} <= set(
        options)
    assert options["lam"].type == "float" and options["stabilized"].type == "bool"
    assert options["widths"].type == "int list" and options["tasks"].type == "int"
    assert options["lam"].help.startswith("λ")                     # the docstring's Args entry
    assert options["lam"].takers["ewc"] == ("lam", 41.0)
    assert set(options["seen_classes"].takers) == {"split"}
    assert set(cli_module.TRAINING_OPTIONS) <= set(options)
    assert options["seed"].groups[0] == "training" and "scenario" in options["seed"].groups
    text = build_parser()._subparsers._group_actions[0].choices["run"].format_help()
    for flag in ("--importance", "--seen-classes", "--widths", "--restart", "--gamma"):
        assert flag in text
    assert "(ewc: 41.0" in text and "(split)" in text


def _registry(*factories):
    reg = Registry("method")
    for f in factories:
        reg.add(f.__name__, f, "test")
    return reg


def test_a_new_method_needs_no_cli_edit(monkeypatch):
    from myelin import methods

    def replay(memory_size: int = 200, lam: float | None = None) -> methods.Method:
        """Replay.

        Args:
            memory_size: Samples kept per task.
            lam: Optional penalty.
        """
        return methods.make_method("finetune")

    reg = _registry(replay, *(e.factory for e in methods.METHODS.entries()))
    monkeypatch.setattr(methods, "METHODS", reg)
    options = option_set()
    assert options["memory_size"].type == "int"
    assert options["memory_size"].help == "Samples kept per task."
    assert options["lam"].takers["replay"] == ("lam", None)
    args = build_parser().parse_args(["run", "--method", "replay", "--memory-size", "50"])
    assert args.memory_size == 50


def test_conflicting_option_types_fail_at_parser_build(monkeypatch):
    from myelin import methods

    def one(lam: float = 1.0) -> methods.Method:
        """One."""

    def two(lam: str = "big") -> methods.Method:
        """Two."""

    monkeypatch.setattr(methods, "METHODS", _registry(one, two))
    with pytest.raises(TypeError, match=r"Conflicting types for option .lam.*float.*str"):
        build_parser()

    def three(options: dict = None) -> methods.Method:      # noqa: RUF013
        """Three."""

    monkeypatch.setattr(methods, "METHODS", _registry(three))
    with pytest.raises(TypeError, match="the command line can parse"):
        build_parser()

    def four(out: str = "x") -> methods.Method:
        """Four."""

    monkeypatch.setattr(methods, "METHODS", _registry(four))
    with pytest.raises(TypeError, match="command-line option of its own"):
        build_parser()


def test_options_a_part_does_not_take_are_errors(capsys):
    assert main(["run", *RUN, "--method", "finetune", "--lam", "3"]) == 2
    err = capsys.readouterr().err
    assert "method 'finetune' takes no option --lam" in err and "Its options: none" in err
    assert main(["run", *RUN, "--method", "l2", "--importance", "mas"]) == 2
    assert "Its options: --lam" in capsys.readouterr().err
    assert main(["run", *RUN, "--model", "cnn"]) == 2                # --widths is the MLP's
    assert "model 'cnn' takes no option --widths" in capsys.readouterr().err
    assert main(["run", "--scenario", "mnist-fashion-mnist", "--tasks", "2", "-q"]) == 2
    assert "takes no option --tasks" in capsys.readouterr().err
    assert main(["run", *RUN, "--tasks", "0"]) == 2
    assert "n_tasks must be a positive int. Got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["run", *RUN, "--lam", "big"])
    assert "argument --lam: expects a number; got 'big'" in capsys.readouterr().err


def test_resolve_fills_every_default_and_normalises_types():
    options = option_set()
    spec = cli_module.resolve({"method": "ewc", "lam": 1, "epochs": 2}, options)
    assert spec["lam"] == 1.0 and isinstance(spec["lam"], float) and spec["epochs"] == 2.0
    assert spec["importance"] == "fisher" and spec["mode"] == "accumulate"
    assert spec["tasks"] == 10 and spec["widths"] == [100] and spec["seed"] == 0
    assert "curve" not in spec and "seen_classes" not in spec        # not ewc's, permuted's
    assert cli_module.resolve({"method": "ewc", "lam": 1.0, "epochs": 2}, options) == spec
    composed = cli_module.resolve({"method": "l2+wva"}, options)      # defaults per part
    assert composed["lam"] == {"l2": 1.0, "wva": 1000.0} and composed["curve"] == "hyperbolic"
    parts = cli_module._components(composed)
    assert "lam" not in cli_module._kwargs(composed, parts, "method")
    assert cli_module.resolve({"method": "l2+wva", "lam": 3}, options)["lam"] == 3.0


CUSTOM = """
from myelin.methods import Method, make_method


def strong_ewc(strength: float = 1.0, loud: bool = False) -> Method:
    \"\"\"EWC under another name.

    Args:
        strength: The consolidation strength.
        loud: Unused.
    \"\"\"
    return make_method("ewc", lam=strength)


def not_a_method(x: int = 1):
    \"\"\"Returns a number.\"\"\"
    return x


NOT_CALLABLE = 3
"""


def test_method_given_as_package_module_factory(tmp_path, monkeypatch, capsys):
    (tmp_path / "cli_custom_methods.py").write_text(CUSTOM)
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = "cli_custom_methods:strong_ewc"
    assert main(["run", *RUN, "--iterations", "3", "--method", spec, "--strength", "5",
                 "--loud", "--out", str(tmp_path / "r")]) == 0
    result = json.loads((tmp_path / "r" / "result.json").read_text())
    assert result["config"]["method"]["lam"] == 5.0
    assert result["config"]["cli"]["method"] == spec and result["config"]["cli"]["loud"]
    with pytest.raises(SystemExit):
        main(["run", "--method", spec, "--help"])
    assert "--strength STRENGTH" in capsys.readouterr().out
    assert main(["run", *RUN, "--method", spec, "--lam", "5"]) == 2
    assert "Its options: --loud, --strength" in capsys.readouterr().err
    for bad, message in (("cli_custom_methods:not_a_method", "returned int"),
                         ("cli_custom_methods:NOT_CALLABLE", "no callable 'NOT_CALLABLE'"),
                         ("cli_custom_methods:missing", "no callable 'missing'"),
                         ("cli_no_such_module:f", "cannot import module 'cli_no_such_module'")):
        assert main(["run", *RUN, "--method", bad]) == 2
        assert message in capsys.readouterr().err


def test_config_keys_are_checked_against_the_option_set(tmp_path, capsys):
    cfg = tmp_path / "typo.toml"
    cfg.write_text('method = "ewc"\n[grid]\nlamda = [1]\n')
    for command in ("run", "sweep"):
        assert main([command, "--config", str(cfg)]) == 2
        assert "[grid]: unknown option(s) ['lamda']. Did you mean 'lam'" \
            in capsys.readouterr().err
    assert main(["sweep", *RUN, "--grid", "lamda=1"]) == 2
    assert "--grid: unknown option(s) ['lamda']" in capsys.readouterr().err
    cfg.write_text('lam = "big"\n')
    assert main(["run", "--config", str(cfg)]) == 2
    assert "lam: expects a number; got 'big'" in capsys.readouterr().err
    cfg = tmp_path / "exp.yaml"
    cfg.write_text("scenario: split-digits-task\ntasks: 2\nmethod: l2\nlam: 2\niterations: 3\n"
                   "widths: [16, 8]\n")
    assert main(["run", "--config", str(cfg), "-q", "--out", str(tmp_path / "y")]) == 0
    cli_cfg = json.loads((tmp_path / "y" / "config.json").read_text())
    assert cli_cfg["widths"] == [16, 8] and cli_cfg["lam"] == 2.0 and cli_cfg["tasks"] == 2


def test_grid_seeds_and_duplicates(capsys):
    options = option_set()
    grid = cli_module._grid_args(["lam=1e1,10.0,100", "widths=32;16,16"], options)
    assert grid == {"lam": [10.0, 100.0], "widths": [[32], [16, 16]]}
    assert "duplicate value(s) dropped" in capsys.readouterr().err
    assert cli_module._seeds("0,0,1") == [0, 1]
    assert main(["sweep", *RUN, "--grid", "seed=1,2"]) == 2
    assert "use --seeds" in capsys.readouterr().err
    assert main(["sweep", *RUN, "--seed", "1", "--seeds", "2", "--grid", "lr=1"]) == 2
    assert "not --seed" in capsys.readouterr().err
    assert main(["sweep", *RUN, "--method", "ewc", "--grid", "tasks=0,2"]) == 2
    assert "n_tasks must be a positive int. Got 0" in capsys.readouterr().err
    assert main(["sweep", *RUN, "--grid", "lam=1"]) == 2            # finetune takes no lam
    assert "grid point {'lam': 1.0}: method 'finetune' takes no option --lam" \
        in capsys.readouterr().err


def test_sweep_reruns_points_whose_spec_changed(tmp_path):
    base = ["sweep", "--scenario", "permuted-digits", "--tasks", "2", "--iterations", "3",
            "--widths", "16", "-q", "--method", "ewc", "--grid", "lam=1e1,10.0", "--seeds",
            "3,3", "--jobs", "1", "--out", str(tmp_path / "s")]
    proc = cli(*base, "--importance", "fisher")
    assert proc.returncode == 0, proc.stderr
    assert "1 grid point(s) x 1 seed(s); 0 already done, 1 to run" in proc.stdout
    record = tmp_path / "s" / "lam=10.0" / "seed=3" / "result.json"
    first = json.loads(record.read_text())
    assert first["spec"]["importance"] == "fisher" and first["spec"]["seed"] == 3
    assert first["config"]["seed"] == 3                    # the grid's seed is the run's seed
    assert "± —" in (tmp_path / "s" / "summary.md").read_text()        # one seed: no CI
    row = json.loads((tmp_path / "s" / "summary.json").read_text())["rows"][0]
    assert row["average_accuracy"]["ci95"] is None and row["n_seeds"] == 1
    proc = cli(*base, "--importance", "signal")
    assert proc.returncode == 0, proc.stderr
    assert "0 already done, 1 to run" in proc.stdout
    assert "1 of them stale" in proc.stdout and "importance: 'fisher' -> 'signal'" in proc.stdout
    assert json.loads(record.read_text())["spec"]["importance"] == "signal"
    proc = cli(*base, "--importance", "signal")
    assert "1 already done, 0 to run" in proc.stdout and "stale" not in proc.stdout
    assert main(["report", str(record.parent), "--out", str(tmp_path / "rep")]) == 0


def test_info_lists_each_methods_options(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "lam: float = 41.0, importance: str = 'fisher'" in out
    assert "widths: int list = [100]" in out and "tasks: int = 10" in out
