"""The benchmarks run end to end on tiny sizes, so they cannot rot (no timing assertions)."""

import json
import subprocess
import sys

import pytest

from benchmarks._common import ROOT, find_mnist

try:
    find_mnist()
    HAVE_MNIST = True
except FileNotFoundError:
    HAVE_MNIST = False

needs_mnist = pytest.mark.skipif(not HAVE_MNIST, reason="MNIST IDX files not found "
                                 "(../shared/data/mnist or $MYELIN_DATA/mnist)")


def run(module, *args, check=True):
    """``python -m benchmarks.<module> args`` from the repository root."""
    proc = subprocess.run([sys.executable, "-m", f"benchmarks.{module}", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


@needs_mnist
def test_importance_benchmark_smoke(tmp_path):
    out = tmp_path / "imp.json"
    run("importance", "--n", "64", "--batch-size", "32", "--cnn-batch-size", "32",
        "--repeats", "1", "--quick",
        "--out", str(out))
    data = json.loads(out.read_text())
    assert {r["model"] for r in data["results"]} == {"mlp", "cnn"}
    for r in data["results"]:
        assert r["fisher_empirical_ratio"] > 0 and r["fisher_max_rel_error_vs_vmap"] < 1e-3


@needs_mnist
def test_overhead_benchmark_smoke(tmp_path):
    out = tmp_path / "over.json"
    run("overhead", "--tasks", "2", "--steps", "3", "--repeats", "1", "--batch", "20,40",
        "--out", str(out))
    data = json.loads(out.read_text())
    assert len(data["per_task"]) == 2 and sorted(data["by_batch"]) == ["20", "40"]
    assert all(r["mean_ratio"] > 0 for b in data["by_batch"].values()
               for r in b["summary"].values())
    assert data["summary"]["ewc_autograd"]["extra_tensors_per_parameter"] == 2.0
    assert data["summary"]["wva_step"]["extra_tensors_per_parameter"] == 1.0
    assert all(r["ci95_over_tasks"] >= 0 for r in data["summary"].values())
    one = tmp_path / "one.json"                 # one task: no interval over tasks recorded
    run("overhead", "--tasks", "1", "--steps", "2", "--repeats", "1", "--batch", "20",
        "--methods", "sgd_bare", "--out", str(one))
    assert "ci95_over_tasks" not in json.loads(one.read_text())["summary"]["sgd_bare"]


@needs_mnist
def test_overhead_benchmark_times_only_the_chosen_methods(tmp_path):
    out = tmp_path / "over.json"
    run("overhead", "--tasks", "1", "--steps", "2", "--repeats", "1", "--batch", "20",
        "--methods", "ewc_wrap,sgd_bare", "--out", str(out))
    data = json.loads(out.read_text())
    assert sorted(data["summary"]) == ["ewc_wrap", "sgd_bare"]
    from benchmarks.tables import overhead_table
    table = overhead_table(data)
    assert "`ewc.wrap(opt)`" in table and "apply_to_grad" not in table


@needs_mnist
def test_walltime_benchmark_smoke(tmp_path):
    out = tmp_path / "wall.json"
    run("walltime", "--tasks", "2", "--iterations", "3", "--repeats", "1", "--out", str(out))
    data = json.loads(out.read_text())
    assert set(data["median_seconds"]) == {"plain", "myelin-finetune", "myelin-ewc-f"}
    assert all(0 <= v <= 1 for v in data["aa"].values())
    assert data["ratio_to_plain"]["plain"] == 1.0


def test_tables_render_committed_results():
    proc = run("tables")
    assert "### importance" in proc.stdout and "### overhead" in proc.stdout


@needs_mnist
@pytest.mark.parametrize("experiment", ["seed000-fig1", "seed000-fig4", "seed000-fig5",
                                        "kutalev2021-fc", "hsu2018-domain", "seed003-wva"])
def test_reproduction_smoke(tmp_path, experiment):
    """Every reproduction runs its rows on tiny data; hsu2018-task/class share domain's code."""
    rows = {"seed000-fig5": "sgd,wva-s-lt", "kutalev2021-fc": "si,fisher-stab",
            "hsu2018-domain": "ewc,mas,offline", "seed003-wva": "adam-step-100,sgd-exp-10",
            }.get(experiment, "ewc-f,wva-s")
    run("reproduce", "run", experiment, "--seeds", "0", "--quick", "--rows", rows,
        "--out", str(tmp_path))
    files = sorted(tmp_path.glob(f"{experiment}/*/seed0.json"))
    assert len(files) == len(rows.split(","))
    for f in files:
        rec = json.loads(f.read_text())
        assert rec["quick"] and rec["measured"]
        assert all(0 <= v <= 1 for k, v in rec["measured"].items() if k != "fm")


@needs_mnist
def test_reproduction_report(tmp_path):
    run("reproduce", "run", "seed000-fig1", "--seeds", "0,1", "--rows", "sgd",
        "--quick", "--threads", "1", "--out", str(tmp_path / "res"))
    for f in (tmp_path / "res").glob("*/*/*.json"):     # the report skips quick runs
        rec = json.loads(f.read_text())
        assert rec["environment"]["threads"] == 1
        rec["quick"] = False
        f.write_text(json.dumps(rec))
    run("reproduce", "report", "--out", str(tmp_path / "res"), "--docs", str(tmp_path / "d"))
    text = (tmp_path / "d" / "results.md").read_text()
    assert "| SGD | 2 |" in text and "80.80" in text
    assert (tmp_path / "d" / "results" / "seed000-fig1-curves.png").exists()


@needs_mnist
def test_a_result_recorded_for_another_spec_is_run_again(tmp_path):
    args = ("reproduce", "run", "seed000-fig1", "--seeds", "0", "--rows", "ewc-s", "--quick",
            "--out", str(tmp_path))
    run(*args)
    path = tmp_path / "seed000-fig1" / "ewc-s" / "seed0.json"
    rec = json.loads(path.read_text())
    assert rec["spec"] == {"experiment": "seed000-fig1", "row": "ewc-s", "seed": 0,
                           "method": "ewc", "options": {"lam": 1, "importance": "signal"},
                           "fit": rec["fit"], "scenario": {}, "quick": True}
    assert rec["fit"]["iterations"] == 3 and rec["fit"]["closing_samples"] == 50
    assert "(recorded)" in run(*args).stdout              # same spec: kept, not run
    rec["spec"]["options"]["lam"] = 123.0                 # as if the row had changed since
    path.write_text(json.dumps(rec))
    out = run(*args).stdout
    assert "re-running" in out and "options: {'importance': 'signal', 'lam': 123.0}" in out
    assert json.loads(path.read_text())["spec"]["options"]["lam"] == 1
    del rec["spec"]                                       # a record from before specs
    path.write_text(json.dumps(rec))
    assert "holds no spec; re-running" in run(*args).stdout


@needs_mnist
def test_beyond_runs_the_best_tuned_configuration(tmp_path):
    """Experiment 7: `beyond` refuses to run before tuning, then runs the best tuned row."""
    proc = run("reproduce", "run", "beyond", "--seeds", "0", "--quick", "--out",
               str(tmp_path), check=False)
    assert proc.returncode != 0 and "beyond-tune" in proc.stderr
    run("reproduce", "run", "beyond-tune", "--seeds", "0", "--quick", "--rows",
        "none,fisher-30,exact-30", "--out", str(tmp_path))
    tuned = {json.loads(f.read_text())["row"]: json.loads(f.read_text())["measured"]["aa"]
             for f in tmp_path.glob("beyond-tune/*/seed0.json")}
    best = max((v, k) for k, v in tuned.items() if k != "none")[1]
    run("reproduce", "run", "beyond", "--seeds", "0", "--quick", "--out", str(tmp_path))
    rec = json.loads((tmp_path / "beyond" / "tuned" / "seed0.json").read_text())
    def expected_of(key):
        return {"fisher-30": {"lam": 30, "importance": "fisher"},
                "exact-30": {"lam": 30, "importance": "fisher-exact"}}[key]
    expected = expected_of(best)
    assert rec["options"] == expected and rec["measured"]["aa"] > 0
    assert rec["resolved_from"] == best == rec["spec"]["resolved_from"]
    # a later tuning result that beats it: `beyond` re-runs with the new best, not the stale one
    other = "exact-30" if best == "fisher-30" else "fisher-30"
    path = tmp_path / "beyond-tune" / other / "seed0.json"
    tuned_rec = json.loads(path.read_text())
    tuned_rec["measured"]["aa"] = 1.0
    path.write_text(json.dumps(tuned_rec))
    proc = run("reproduce", "run", "beyond", "--seeds", "0", "--quick", "--out",
               str(tmp_path))
    assert "re-running" in proc.stdout
    rec = json.loads((tmp_path / "beyond" / "tuned" / "seed0.json").read_text())
    assert rec["resolved_from"] == other and rec["options"] == expected_of(other)


@needs_mnist
@pytest.mark.parametrize("experiment", ["single", "permuted", "alpha"])
def test_colanet_benchmark_smoke(tmp_path, experiment):
    run("colanet", experiment, "--quick", "--seeds", "0", "--tasks", "2",
        "--config", "mc15-a0.005", "--out", str(tmp_path))
    files = list(tmp_path.glob("*/*.json"))
    assert files
    records = [json.loads(f.read_text()) for f in files]
    assert all(r["measured"] and r["spec"]["experiment"] == experiment and r["spec"]["quick"]
               for r in records)
    again = run("colanet", experiment, "--quick", "--seeds", "0", "--tasks", "2", "--config",
                "mc15-a0.005", "--out", str(tmp_path)).stdout
    assert "re-running" not in again and again.count("(recorded)") == len(files)
    assert [json.loads(f.read_text()) for f in files] == records      # resumed: nothing re-run


@needs_mnist
def test_colanet_two_dataset_smoke(tmp_path):
    proc = run("colanet", "emnist", "--quick", "--out", str(tmp_path), check=False)
    if proc.returncode == 2:                              # no EMNIST here: the stand-in
        assert "not available" in proc.stderr
        from myelin.data import DataNotFoundError, load
        try:
            load("fashion-mnist", "test")
        except DataNotFoundError:
            pytest.skip("neither EMNIST nor Fashion-MNIST is installed")
        run("colanet", "emnist", "--quick", "--second", "fashion-mnist",
            "--out", str(tmp_path))
    files = list(tmp_path.glob("*/*.json"))
    assert len(files) == 5
    m = json.loads(files[0].read_text())["measured"]
    assert m["fm"] == pytest.approx(m["task1_after_1"] - m["task1_after_2"])


@needs_mnist
def test_warm_adam_smoke(tmp_path):
    out = tmp_path / "warm.json"
    run("warm_adam", "--quick", "--seeds", "0-1", "--out", str(out))
    data = json.loads(out.read_text())
    assert [r["warm"] for r in data["runs"]] == [False, True]
    assert all(0 <= r["aa"] <= 1 for r in data["runs"])
    assert data["mean_warm_aa"] == data["runs"][1]["aa"]
    assert data["complete"] and data["mean_chain_aa"] == pytest.approx(
        (data["runs"][0]["aa"] + data["runs"][1]["aa"]) / 2)
    assert data["spec"]["seeds"] == [0, 1] and data["spec"]["quick"]
    again = run("warm_adam", "--quick", "--seeds", "0-1", "--out", str(out))
    assert "this chain is complete" in again.stdout and json.loads(out.read_text()) == data


@needs_mnist
def test_replay_cost_smoke(tmp_path):
    out = tmp_path / "c.json"
    run("replay_cost", "--past", "1", "--steps", "2", "--repeats", "1", "--methods", "er,gem",
        "--batch", "10,20", "--out", str(out))
    data = json.loads(out.read_text())
    assert set(data["batches"]) == {"10", "20"}
    for batch, measured in data["batches"].items():
        methods = measured["methods"]
        assert set(methods) == {"er", "gem"}
        assert methods["er"]["bytes_per_stored_sample"] == 784 * 4 + 8
        # ER doubles the batch; GEM adds one pass over the past task's memories (its last 50
        # samples, of the 2 batches it saw)
        b = int(batch)
        assert methods["er"]["rows_per_step"] == {"grad": 2 * b, "no_grad": 0}
        assert methods["er"]["work_ratio"] == pytest.approx(2.0)
        assert methods["gem"]["rows_per_step"]["grad"] == b + min(50, 2 * b)
    assert all(v["qp"] > 0 for v in data["gem_ms"].values())


@needs_mnist
def test_seed001_table_runs_the_best_tuned_configuration(tmp_path):
    run("reproduce", "run", "seed001-tune", "--seeds", "0", "--quick", "--rows",
        "er-lr0.03,er-lr0.1", "--out", str(tmp_path))
    tuned = {json.loads(f.read_text())["row"]: json.loads(f.read_text())["measured"]["aa"]
             for f in tmp_path.glob("seed001-tune/er-*/seed0.json")}
    run("reproduce", "run", "seed001", "--seeds", "0", "--quick", "--rows", "er", "--out",
        str(tmp_path))
    rec = json.loads((tmp_path / "seed001" / "er" / "seed0.json").read_text())
    assert rec["resolved_from"] == max(tuned, key=tuned.get)
    assert rec["options"]["memory_per_task"] == 50
    assert rec["result"]["config"]["method"]["memory_total"] == 500


def test_replay_avalanche_explains_how_to_get_avalanche():
    """Without Avalanche (CI: it needs a side environment) the benchmark says how to get it."""
    try:
        import avalanche  # noqa: F401
        pytest.skip("avalanche is installed here: the benchmark would run in full")
    except ImportError:
        pass
    proc = run("replay_avalanche", check=False)
    assert proc.returncode != 0 and "venv" in (proc.stderr + proc.stdout)


def _have_llm_texts() -> bool:
    import shutil
    from pathlib import Path

    return (shutil.which("bible") is not None
            and Path("/usr/share/doc/python3.11/html/_sources").is_dir()
            and any(Path("/usr/lib/python3.11").glob("*.py")))


@pytest.mark.skipif(not _have_llm_texts(), reason="needs Debian bible-kjv and python3.11-doc")
def test_llm_benchmark_quick_run_is_resumable(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    monkeypatch.setenv("MYELIN_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "llm"
    first = run("llm", "run", "--quick", "--methods", "ewc,lora", "--steps", "2", "--out",
                str(out))
    assert "ewc-lam100-seed0: done" in first.stdout
    rec = json.loads((out / "ewc-lam100-seed0.json").read_text())
    curve = rec["measured"]["curve"]
    assert [c["step"] for c in curve] == [0, 2]
    assert set(curve[-1]["validation"]) == {"kjv", "code", "prose", "chat"}
    assert rec["measured"]["state_bytes"] == 2 * rec["measured"]["model_bytes"]
    again = run("llm", "run", "--quick", "--methods", "ewc", "--steps", "2", "--out", str(out))
    assert "ewc-lam100-seed0: recorded" in again.stdout
    docs = tmp_path / "docs"
    run("llm", "report", "--out", str(out), "--docs", str(docs))
    page = (docs / "llm.md").read_text()
    assert "| ewc | 100 | 1 |" in page and "| lora | — | 1 |" in page
    assert (docs / "results" / "llm-pareto.png").stat().st_size > 0
