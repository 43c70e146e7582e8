"""benchmarks.seed002_mnist (Kirkpatrick et al. 2017, Fig. 3A/B/C): smoke runs, resuming, report."""

import json

import numpy as np
import pytest
import torch

from benchmarks import seed002_mnist as s3
from myelin import fit
from myelin.analysis import overlap
from myelin.scenarios import permuted
from myelin.train import evaluate
from tests.benchmarks.test_smoke import needs_mnist, run


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """All three figures, --quick, two seeds, into one folder (results and plots)."""
    out = tmp_path_factory.mktemp("fig3")
    logs = {fig: run("seed002_mnist", fig, "--quick", "--seeds", "0-1", "--out", str(out)).stdout
            for fig in ("fig3a", "fig3b", "fig3c")}
    return out, logs


@needs_mnist
def test_fig3a_quick_json_and_plot(quick):
    out, logs = quick
    data = json.loads((out / "fig3a.json").read_text())
    assert data["quick"] and data["seeds"] == [0, 1]
    assert data["command"].startswith("python -m benchmarks.seed002_mnist fig3a --quick")
    cfg, res = data["config"], data["result"]
    assert len(res["grid"]) == 1 + len(cfg["ewc_lams"]) + len(cfg["l2_lams"])
    assert {"sgd", "l2", "ewc"} <= set(res["methods"]) <= {"sgd", "l2", "l2-matched", "ewc"}
    assert res["selection"]["ewc"]["lam"] in cfg["ewc_lams"]
    for m in res["methods"].values():
        assert len(m["accuracy"]) == 2 and np.array(m["accuracy"]).shape == (2, 3, 3)
        assert all(0 <= a <= 1 for mat in m["accuracy"] for row in mat for a in row)
        assert len(m["curves"]) == 3             # one curve per task, each starting later
        its = [c["iteration"] for c in m["curves"]]
        assert its[0][0] < its[1][0] < its[2][0] and its[0][-1] == its[2][-1]
    assert (out / s3.FIGURE_NAMES["fig3a"]).stat().st_size > 0
    verdicts = [line for line in logs["fig3a"].splitlines() if line.startswith("[")]
    assert len(verdicts) == 3


@needs_mnist
def test_fig3b_quick_early_stopping_and_search(quick):
    out, _ = quick
    data = json.loads((out / "fig3b.json").read_text())
    cfg, res = data["config"], data["result"]
    assert set(res["methods"]) == {"sgd-dropout", "ewc"}
    assert res["selection"]["sgd-dropout"] in [r["spec"] for r in res["grid"]]
    for m in res["methods"].values():
        curves = np.array(m["aa_curves"])
        assert curves.shape == (2, cfg["n_tasks"]) and ((curves >= 0) & (curves <= 1)).all()
        for epochs, best in zip(m["epochs_run"], m["best_epoch"]):
            assert len(epochs) == cfg["n_tasks"]
            assert all(1 <= b <= e <= cfg["max_epochs"] for b, e in zip(best, epochs))
    assert (out / s3.FIGURE_NAMES["fig3b"]).stat().st_size > 0


@needs_mnist
def test_fig3c_quick_overlap_per_layer(quick):
    out, _ = quick
    data = json.loads((out / "fig3c.json").read_text())
    cfg, pairs = data["config"], data["result"]["pairs"]
    assert set(pairs) == {f"{m}-patch{p}" for m in ("ewc", "sgd") for p in cfg["patches"]}
    for p in pairs.values():
        assert p["layers"] == [str(2 * i + 1) for i in range(len(cfg["widths"]) + 1)]
        ov = np.array(p["overlap"])
        assert ov.shape == (2, len(cfg["widths"]) + 1) and ((ov >= 0) & (ov <= 1)).all()
    assert (out / s3.FIGURE_NAMES["fig3c"]).stat().st_size > 0


@needs_mnist
def test_rerun_skips_finished_runs_and_recomputes_a_missing_one(quick):
    out, _ = quick
    runs = sorted((out / "fig3a").glob("*.json"))
    before = {p.name: (p.stat().st_mtime_ns, p.read_text()) for p in runs}
    proc = run("seed002_mnist", "fig3a", "--quick", "--seeds", "0-1", "--out", str(out))
    assert "(0 runs run," in proc.stdout and "done before" in proc.stdout
    assert {p.name: (p.stat().st_mtime_ns, p.read_text()) for p in runs} == before
    victim = out / "fig3a" / "sgd-seed1.json"
    old = json.loads(victim.read_text())
    victim.unlink()
    proc = run("seed002_mnist", "fig3a", "--quick", "--seeds", "0-1", "--out", str(out))
    assert "(1 runs run," in proc.stdout
    assert json.loads(victim.read_text())["result"] == old["result"]      # same seed, same run
    summary = json.loads((out / "fig3a.json").read_text())
    assert summary["ran"] == 1


@needs_mnist
def test_report_and_results_section(quick, tmp_path):
    out, _ = quick
    proc = run("seed002_mnist", "report", "--out", str(out), "--figures", str(tmp_path))
    text = proc.stdout
    assert text.startswith("### Seed 002, Fig. 3A–C")
    for heading in ("#### Fig. 3A", "#### Fig. 3B", "#### Fig. 3C", "#### Settings"):
        assert heading in text
    assert text.count("| the paper says | we find | agrees |") == 3
    assert "unverified" in text and "python -m benchmarks.seed002_mnist fig3a" in text
    assert all((tmp_path / name).stat().st_size > 0 for name in s3.FIGURE_NAMES.values())
    section = s3.results_section(None, out)
    assert "![Fig. 3A](results/seed002-fig3a.png)" in section


def test_report_without_results_says_what_to_run(tmp_path):
    proc = run("seed002_mnist", "report", "--out", str(tmp_path), check=False)
    assert proc.returncode != 0 and "benchmarks.seed002_mnist fig3a" in proc.stderr
    assert s3.results_section(None, tmp_path) == ""


def test_block_permutation_moves_only_the_central_block():
    perm = s3.block_permutation(8, seed=3)
    assert sorted(perm) == list(range(784))
    moved = np.flatnonzero(perm != np.arange(784))
    rows, cols = moved // 28, moved % 28
    assert rows.min() >= 10 and rows.max() <= 17 and cols.min() >= 10 and cols.max() <= 17
    assert len(moved) > 50
    with pytest.raises(ValueError):
        s3.block_permutation(29, seed=0)


def test_early_stopping_keeps_the_best_epoch():
    torch.set_num_threads(1)
    scenario = permuted("digits", 2, seed=0)
    vals = [t.test for t in scenario.tasks]
    torch.manual_seed(0)
    model = s3.dropout_mlp(32, 1, [0.0, 0.5], inputs=64)
    stop = s3.EarlyStopping(vals, epochs=6, batch_size=64, patience=1)
    fit(scenario, model, s3.Compose(s3.make_method("finetune"), stop), lr=0.5, epochs=6,
        batch_size=64, seed=0, progress=False)
    assert [h["task"] for h in stop.history] == [0, 1]
    last = stop.history[-1]
    assert evaluate(model, vals[1]) == max(last["validation"])       # the best weights kept
    assert last["best_epoch"] == int(np.argmax(last["validation"])) + 1
    assert all(h["epochs_run"] <= 6 for h in stop.history)


def test_record_importance_gives_one_fisher_per_task():
    scenario = permuted("digits", 2, seed=0)
    torch.manual_seed(0)
    model = s3.mlp((1, 8, 8), 10, (16,))
    record = s3.RecordImportance("fisher-exact")
    fit(scenario, model, record, lr=0.1, epochs=1, batch_size=64, closing_samples=100,
        progress=False)
    assert len(record.recorded) == 2
    per_layer = overlap(*record.recorded)
    assert set(per_layer) == {"1", "3"} and all(0 <= v <= 1 for v in per_layer.values())


def test_a_grid_can_grow_without_invalidating_runs():
    cfg = s3.QUICK["fig3a"]
    same = s3._identity("fig3a", {**cfg, "ewc_lams": [1, 2, 3]}, {"method": "sgd"}, 0, True)
    assert same == s3._identity("fig3a", cfg, {"method": "sgd"}, 0, True)
    assert same != s3._identity("fig3a", {**cfg, "epochs": 9}, {"method": "sgd"}, 0, True)


def test_verdict_levels():
    assert s3.positive([0.1, 0.11, 0.09]) == 2
    assert s3.positive([0.01, 0.2, 0.001]) == 1           # every seed, but the CI includes 0
    assert s3.positive([0.1, -0.01, 0.2]) == 0
    assert s3.agrees(2, True) == "yes" and s3.agrees(2, False) == "no"
    assert s3.agrees(1, 2).startswith("in every seed")


def test_run_key():
    assert s3.run_key({"method": "ewc", "lam": 1000.0}, 0) == "ewc-lam1000-seed0"
    assert s3.run_key({"method": "sgd-dropout", "width": 800, "lr": 0.1}, 1) == \
        "sgd-dropout-w800-lr0.1-seed1"
    assert s3.run_key({"method": "sgd", "patch": 8}, 2) == "sgd-patch8-seed2"
