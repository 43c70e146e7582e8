"""benchmarks.seed002 (Kirkpatrick et al. 2017, Fig. 2): smoke run, report, and the maths."""

import json

import numpy as np
import pytest
import torch

from benchmarks import seed002
from tests.benchmarks.test_smoke import run


def test_fig2_quick_run_and_report(tmp_path):
    out, plot = tmp_path / "fig2.json", tmp_path / "fig2.png"
    run("seed002", "fig2", "--quick", "--out", str(out), "--plot", str(plot))
    data = json.loads(out.read_text())
    assert data["command"].startswith("python -m benchmarks.seed002 fig2 --quick")
    assert {"torch", "commit"} <= set(data["environment"])
    assert data["config"]["quick"] and data["config"]["n"] == 50
    assert max(data["exact_step_check"].values()) < 1e-10
    methods = data["fig2"]["methods"]
    assert list(methods) == ["gd", "ewc", "gd-capacity"]
    for m in methods.values():
        ret = m["retention"]
        assert all(0 <= f <= 1 for f in ret["fraction"] + ret["fraction_analytic"])
        assert len(m["first_pattern"]["snr"]) == len(m["first_pattern"]["t"])
    at = {name: m["retention"]["at"] for name, m in methods.items()}
    assert at["ewc"]["50"]["measured"] > at["gd"]["50"]["measured"]        # at capacity
    assert at["ewc"]["250"]["measured"] < at["gd"]["250"]["measured"]      # past it
    assert plot.stat().st_size > 0

    p_out, p_plot = tmp_path / "perturb.json", tmp_path / "perturb.png"
    run("seed002", "perturb", "--quick", "--perturb-out", str(p_out), "--perturb-plot",
        str(p_plot))
    pert = json.loads(p_out.read_text())
    mean = pert["perturbation"]["mean"]
    for name in ("fisher", "mas", "signal"):
        loss = mean[name]["loss"]
        assert loss["inverse-importance"][-1] < loss["uniform"][-1]
        assert loss["null-space"][-1] < loss["uniform"][-1]
    assert 0 < mean["overlap"]["fisher~mas"]["model"] <= 1
    assert p_plot.stat().st_size > 0

    figure = tmp_path / "again.png"
    proc = run("seed002", "report", "--out", str(out), "--plot", str(figure),
               "--perturb-out", str(p_out), "--perturb-plot", str(tmp_path / "p2.png"))
    assert proc.stdout.startswith("## Seed 002")
    assert "| the paper says | we find | agrees |" in proc.stdout
    assert "### Seed 002, Fig. 4C and Fig. 3C tools" in proc.stdout
    assert figure.stat().st_size > 0 and (tmp_path / "p2.png").stat().st_size > 0


def test_report_without_results_says_what_to_run(tmp_path):
    proc = run("seed002", "report", "--out", str(tmp_path / "none.json"),
               "--perturb-out", str(tmp_path / "none2.json"), check=False)
    assert proc.returncode != 0 and "run `python -m benchmarks.seed002 fig2`" in proc.stderr


def test_the_consolidators_give_the_papers_learning_rates():
    n, runs = 20, 4
    gen = torch.Generator().manual_seed(0)
    for name, method in seed002.METHODS.items():
        model = seed002.Units(runs, n, torch.float64)
        cons = seed002.make_consolidator(method, model)
        w = torch.zeros(runs, n, dtype=torch.float64)
        for t in range(1, 8):
            x, y = seed002.patterns(gen, runs, n, torch.float64)
            eta = float(method.eta(n, np.array([t]))[0])
            w = w + eta * (y - (x * w).sum(1))[:, None] * x        # η_t (y − x·w) x
            seed002.learn(cons, model, x, y)
            assert torch.allclose(model.weight, w, atol=1e-12), (name, t)
    assert seed002.METHODS["ewc"].eta(1000, np.array([1, 1000])).tolist() == [1 / 1001,
                                                                              1 / 2000]


def test_analytic_signal_is_the_closed_form_and_matches_simulation():
    n, total = 40, 120
    times = [2, 10, 40, 120]
    ewc = seed002.analytic(seed002.METHODS["ewc"], n, total, 1.0, times)
    assert ewc["signal"] == pytest.approx([n / (n + t) for t in times])
    gd = seed002.analytic(seed002.METHODS["gd"], n, total, 1.0, times)
    assert gd["signal"] == pytest.approx([(n / (n + 1)) ** t for t in times])
    # simulated mean recall of the first pattern: within 4 standard errors of the analytic one
    runs = 400
    sched = (times, [total], list(range(1, total + 1)))
    for name in ("gd", "ewc"):
        sim = seed002.simulate(seed002.METHODS[name], n, runs, total, 0, sched)
        mean = np.asarray(sim["first_sum"]) / runs
        sd = np.sqrt(np.asarray(sim["first_sq"]) / runs - mean**2)
        theory = seed002.analytic(seed002.METHODS[name], n, total, 1.0, times)["signal"]
        assert np.all(np.abs(mean - theory) < 4 * sd / np.sqrt(runs) + 1e-9), name
        # E‖w‖²: the exact recursion against the simulation, within 5 %
        assert np.asarray(sim["norm2"]) == pytest.approx(
            np.square(seed002.analytic(seed002.METHODS[name], n, total, 1.0, times)["noise"]),
            rel=0.05)


def test_fits_tell_a_power_law_from_an_exponential():
    t = np.geomspace(10, 10_000, 60)
    power = seed002.decay_shape(t, 3 * t**-0.5, 10, 10_000, 1000)
    assert power["better"] == "power law" and power["power_slope"] == pytest.approx(-0.5)
    expo = seed002.decay_shape(t, np.exp(-t / 1000), 1000, 10_000, 1000)
    assert expo["better"] == "exponential" and expo["exp_tau_over_n"] == pytest.approx(1.0)
    assert seed002.loglog_slope(t, 3 * t**-0.5, 10, 100) == pytest.approx(-0.5)
    assert seed002.retained(np.array([2.0, 0.5, 3.0]), [1, 4, 10], 10, 1.0) == 0.7
