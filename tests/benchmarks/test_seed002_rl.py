"""benchmarks.seed002_rl (Kirkpatrick et al. 2017, Fig. 4 on MinAtar): smoke run, resuming,
the TD-loss importance against a naive loop, the normalisation and the plots."""

import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("minatar")

from benchmarks import seed002_rl as rl
from tests.benchmarks.test_smoke import run


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """Every default method, --quick, seed 0, into one folder."""
    out = tmp_path_factory.mktemp("fig4")
    log = run("seed002_rl", "run", "--quick", "--seeds", "0", "--out", str(out)).stdout
    return out, log


def test_quick_run_writes_every_run_and_the_summary(quick):
    out, log = quick
    lam = f"lam{rl.QUICK['lams'][0]:g}"
    keys = {"random-seed0", "plain-seed0", f"ewc-{lam}-seed0", f"ewc-task-{lam}-seed0",
            *(f"separate-{g}-seed0" for g in rl.QUICK["games"])}
    assert {p.stem for p in (out / "rl").glob("*.json")} == keys
    assert not list((out / "rl" / "checkpoints").glob("*"))      # removed once finished
    data = json.loads((out / "rl.json").read_text())
    assert data["quick"] and data["seeds"] == [0] and set(data["done"]) == keys
    assert data["pending"] == []
    assert data["command"].startswith("python -m benchmarks.seed002_rl run --quick")
    cfg, res = data["config"], data["result"]
    assert cfg["frames_per_visit"] == rl.QUICK["frames_per_visit"]
    frames = len(cfg["games"]) * cfg["rounds"] * cfg["frames_per_visit"]
    for name in ("plain", "ewc", "ewc-task"):
        m = res["methods"][name]
        assert m["frames"] == list(range(0, frames + 1, cfg["eval_every"]))
        assert set(m["raw"]) == set(cfg["games"])
        assert [v["game"] for v in m["visits"]] == cfg["games"] * cfg["rounds"]
    ewc = json.loads((out / "rl" / f"ewc-{lam}-seed0.json").read_text())["result"]
    assert all(v["importance"]["mean"] > 0 for v in ewc["visits"])   # consolidated every visit
    assert ewc["frames"] == frames and set(ewc["perturbation"]) == set(cfg["games"])
    p = ewc["perturbation"]["breakout"]
    assert p["norms"] == cfg["perturb"]["norms"] and set(p["score"]) == set(p["kinds"])
    assert p["meta"]["loss"].startswith("GameScore(")
    sep = json.loads((out / "rl" / "separate-freeway-seed0.json").read_text())["result"]
    assert sep["schedule"] == [["freeway", cfg["rounds"] * cfg["frames_per_visit"]]]
    assert set(sep["final"]["scores"]) == {"freeway"}
    assert set(res["fig4c"]) == {"ewc", "separate"}
    assert (out / rl.FIGURE_NAMES["fig4c"]).stat().st_size > 0
    assert f"wrote {out / 'rl.json'} (7 runs done, 0 pending)" in log


def test_rerun_reads_finished_runs(quick):
    out, _ = quick
    log = run("seed002_rl", "run", "--quick", "--seeds", "0", "--methods", "plain,random",
              "--out", str(out)).stdout
    assert "plain-seed0: done before" in log and "random-seed0: done before" in log


def test_report_prints_the_section(quick):
    out, _ = quick
    data = json.loads((out / "rl.json").read_text())
    data["pending"] = [{"key": "plain-seed1"}]
    (out / "rl.json").write_text(json.dumps(data))
    committed = rl.FIGURES / rl.FIGURE_NAMES["fig4c"]
    stamp = committed.stat().st_mtime_ns if committed.exists() else None
    text = run("seed002_rl", "report", "--out", str(out)).stdout
    # the plots go beside these results, never over the docs' figures of the committed ones
    assert (out / rl.FIGURE_NAMES["fig4c"]).exists()
    assert (committed.stat().st_mtime_ns if committed.exists() else None) == stamp
    refreshed = json.loads((out / "rl.json").read_text())     # the summary is redone
    assert refreshed["command"] == data["command"] and refreshed["done"] == data["done"]
    assert refreshed["pending"] == [{"key": "plain-seed1"}] and "plain-seed1" in text
    assert text.startswith("### Seed 002, Fig. 4")
    assert "Runs finished (seeds):" in text and "Settings: the paper's and ours" in text


def _trained(cfg, spec, ckpt, stop_at=None):
    trainer = rl.Trainer(cfg, spec, 0)
    if ckpt is not None:
        rl.load_checkpoint(trainer, ckpt)
    done = trainer.train(ckpt, stop_at, log=lambda s: None)
    return trainer, done


@pytest.mark.parametrize("method", ["ewc", "ewc-task"])
def test_resume_from_checkpoint_equals_uninterrupted(tmp_path, method):
    torch.set_num_threads(1)
    cfg = {**rl.QUICK, "frames_per_visit": 200, "rounds": 1, "checkpoint_every": 120,
           "eval_every": 100}
    spec = {"method": method, "lam": 1000.0}
    whole, done = _trained(cfg, spec, None)
    assert done
    ckpt = tmp_path / "run.pt"
    stopped, done = _trained(cfg, spec, ckpt, stop_at=330)      # last checkpoint: frame 240
    assert not done and stopped.frame == 330
    saved = torch.load(ckpt, weights_only=False)["state"]
    assert saved["frame"] == 240 and saved["visit"] == 1 and saved["frame_in_visit"] == 40
    resumed, done = _trained(cfg, spec, ckpt)
    assert done and resumed.frame == whole.frame == 600
    for a, b in ((whole.net, resumed.net), (whole.target, resumed.target)):
        for (n, p), q in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(p, q), n
    sa, sb = whole.opt.state_dict()["state"], resumed.opt.state_dict()["state"]
    assert all(torch.equal(sa[k][s], sb[k][s]) for k in sa for s in sa[k])
    ea, eb = whole.ewc.consolidation_state()["tensors"], resumed.ewc.consolidation_state()[
        "tensors"]
    assert ea.keys() == eb.keys() and all(torch.equal(ea[k], eb[k]) for k in ea)
    assert whole.ewc.n_tasks == resumed.ewc.n_tasks == 3
    assert whole.log["evals"] == resumed.log["evals"]
    assert whole.log["visits"] == resumed.log["visits"]
    for g in whole.replay:
        assert np.array_equal(whole.replay[g].s, resumed.replay[g].s)
        assert whole.replay[g].pos == resumed.replay[g].pos
    assert whole.rng.bit_generator.state == resumed.rng.bit_generator.state


def test_run_agent_resumes_to_the_same_result(tmp_path):
    torch.set_num_threads(1)
    cfg = {**rl.QUICK, "frames_per_visit": 150, "rounds": 1, "checkpoint_every": 100,
           "eval_every": 75}
    spec = {"method": "separate", "game": "breakout"}
    whole = rl.run_agent(cfg, spec, 0, None, log=lambda s: None)
    ckpt = tmp_path / "sep.pt"
    assert rl.run_agent(cfg, spec, 0, ckpt, log=lambda s: None, stop_at=130) is None
    resumed = rl.run_agent(cfg, spec, 0, ckpt, log=lambda s: None)
    assert resumed["resumed_at"] == [100] and whole["resumed_at"] == []
    for key in ("evals", "visits", "final", "perturbation", "weights_digest", "updates"):
        assert whole[key] == resumed[key], key


def test_checkpoint_of_other_settings_is_not_resumed(tmp_path):
    cfg = {**rl.QUICK, "frames_per_visit": 100, "rounds": 1, "checkpoint_every": 50}
    spec = {"method": "plain"}
    ckpt = tmp_path / "c.pt"
    _trained(cfg, spec, ckpt, stop_at=70)
    other = rl.Trainer({**cfg, "lr": 1e-3}, spec, 0)
    assert not rl.load_checkpoint(other, ckpt) and other.frame == 0
    same = rl.Trainer(cfg, spec, 0)
    assert rl.load_checkpoint(same, ckpt) and same.frame == 50


def _naive_td_importance(net, states, actions, targets, head, beta):
    """Mean over transitions of the squared gradient of each one's Huber loss, one at a time."""
    params = [p for p in net.parameters() if p.requires_grad]
    sums = [torch.zeros_like(p) for p in params]
    for s, a, y in zip(states, actions, targets):
        q = net.q(s[None], head)[0, a]
        loss = F.smooth_l1_loss(q, y, beta=beta)
        for acc, g in zip(sums, torch.autograd.grad(loss, params)):
            acc += g ** 2
    return {n: v / len(states) for (n, _), v in zip(net.named_parameters(), sums)}


@pytest.mark.parametrize("heads,head,beta", [(1, 0, 1.0), (3, 2, 1.0), (2, 1, 0.3)])
def test_td_importance_equals_a_naive_per_transition_loop(heads, head, beta):
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    net = rl.QNet(5, heads, conv=4, hidden=16).double()
    n = 37
    states = (torch.rand(n, 5, 10, 10, generator=gen) < 0.2).double()
    actions = torch.randint(rl.N_ACTIONS, (n,), generator=gen)
    with torch.no_grad():
        q = net.q(states, head).gather(1, actions[:, None]).squeeze(1)
    targets = q + 2.0 * torch.randn(n, generator=gen, dtype=torch.float64)  # |δ| above and below β
    assert ((q - targets).abs() > beta).any() and ((q - targets).abs() < beta).any()
    fast = rl.td_importance(net, states, actions, targets, head, beta, batch_size=16)
    naive = _naive_td_importance(net, states, actions, targets, head, beta)
    assert set(fast) == set(naive) and fast.meta["n_samples"] == n
    for name, v in naive.items():
        torch.testing.assert_close(fast[name], v, rtol=1e-10, atol=1e-14)
    if heads > 1:     # other heads' outputs get no gradient: their rows are exactly 0
        rows = fast["out.weight"].reshape(heads, rl.N_ACTIONS, -1)
        assert all(rows[h].abs().sum() == 0 for h in range(heads) if h != head)


def test_replay_packs_states_exactly_and_round_trips():
    rng = np.random.default_rng(0)
    buf = rl.Replay(5, 7)
    states = rng.random((8, 7, 10, 10)) < 0.3
    for i in range(7):
        buf.add(states[i], i % 6, float(i), states[i + 1], i == 3)
    assert buf.size == 5 and buf.pos == 2
    s, a, r, s2, d = buf.batch(np.array([0, 1, 4]))       # slots 0, 1 hold transitions 5, 6
    assert torch.equal(s, torch.from_numpy(states[[5, 6, 4]]).float())
    assert torch.equal(s2, torch.from_numpy(states[[6, 7, 5]]).float())
    assert a.tolist() == [5, 0, 4] and r.tolist() == [5.0, 6.0, 4.0] and d.tolist() == [0, 0, 0]
    other = rl.Replay(5, 7)
    other.load_state_dict(copy.deepcopy(buf.state_dict()))
    assert np.array_equal(other.s, buf.s) and other.pos == 2 and other.size == 5
    with pytest.raises(ValueError, match="capacity"):
        rl.Replay(6, 7).load_state_dict(buf.state_dict())


def test_play_is_reproducible_and_random_policy_needs_no_network():
    seeds = rl.episode_seeds(0, 3, 1, 2)
    a = rl.play(None, "breakout", 0, 2, 1.0, seeds, 4, 0.1, 500)
    b = rl.play(None, "breakout", 0, 2, 1.0, seeds, 4, 0.1, 500)
    assert a == b and len(a) == 2
    torch.manual_seed(0)
    net = rl.QNet(7)
    assert rl.play(net, "freeway", 0, 2, 0.05, seeds, 7, 0.1, 40) == \
        rl.play(net, "freeway", 0, 2, 0.05, seeds, 7, 0.1, 40)


def _record(method, seed, cfg, scores, final, game=None, lam=None, visits=()):
    spec = {"method": method, **({"game": game} if game else {}),
            **({"lam": lam} if lam is not None else {})}
    evals = [{"frame": i * cfg["eval_every"], "visit": 0, "scores": s, "returns": {}}
             for i, s in enumerate(scores)]
    result = ({"scores": final, "returns": {}} if method == "random" else
              {"evals": evals, "final": {"scores": final}, "frames": 10, "visits": list(visits),
               "perturbation": {}})
    return {"key": rl.run_key(spec, seed), "identity": rl._identity(cfg, spec, seed),
            "result": result, "cpu_seconds": 1.0, "wall_seconds": 1.0}


def test_summary_normalises_caps_and_sums(tmp_path):
    cfg = {**rl.QUICK, "games": ["breakout", "space_invaders"], "rounds": 2,
           "frames_per_visit": 10, "eval_every": 10}
    games = cfg["games"]
    runs = [_record("random", 0, cfg, [], {"breakout": 1.0, "space_invaders": 2.0}),
            _record("separate", 0, cfg, [], {"breakout": 5.0}, "breakout"),
            _record("separate", 0, cfg, [], {"space_invaders": 2.0}, "space_invaders")]
    curve = [{"breakout": b, "space_invaders": 3.0} for b in (1.0, 3.0, 9.0, 5.0, 1.0)]
    visits = [{"game": "breakout", "end": 20}, {"game": "space_invaders", "end": 40}]
    runs.append(_record("plain", 0, cfg, curve, {"breakout": 9.0, "space_invaders": 0.0},
                        visits=visits))
    runs.append(_record("ewc", 0, cfg, curve[::-1], {"breakout": 3.0, "space_invaders": 0.0},
                        lam=10.0, visits=visits))
    runs.append(_record("ewc", 0, cfg, curve[:1] * 5, {"breakout": 1.0, "space_invaders": 0.0},
                        lam=100.0))
    kinds = ["inverse-importance", "uniform", "null-space"]
    pert = {"norms": [1.0], "kinds": kinds, "baseline_score": 1.0, "null_space": 0,
            "n_parameters": 4}
    for rec, score in ((runs[-2], 1.0), (runs[-1], 9.0)):
        rec["result"]["perturbation"] = {"breakout": {**pert, "score": {
            k: [score] for k in kinds}}}
    by_key = {r["key"]: r for r in runs}
    res = rl.summarise(cfg, by_key)
    # Fig. 4C: the chosen λ's (10) agents only, not every λ's as if they were seeds
    assert res["fig4c"]["ewc"]["breakout"]["seeds"] == 1
    assert res["fig4c"]["ewc"]["breakout"]["score"]["uniform"] == [1.0]
    norm = res["normaliser"]
    assert norm["breakout"]["usable"] and not norm["space_invaders"]["usable"]  # 2.0 == random
    assert res["usable_games"] == ["breakout"]
    plain = res["methods"]["plain"]
    assert plain["sum"] == [[0.0, 0.5, 1.0, 1.0, 0.0]]           # (b − 1)/4, capped at 1
    assert plain["round2_mean"] == [0.5]                            # frames 30 and 40 > 2 · 10
    assert plain["final_sum"] == [1.0] and plain["final_normalised"]["breakout"] == [2.0]
    ewc = res["methods"]["ewc"]
    assert ewc["lam"] == 10.0 and ewc["final_sum"] == [0.5]      # λ 10 beats λ 100 on seed 0
    assert plain["forgetting"] == [0.0] and ewc["forgetting"] == [0.5]   # breakout: 1 → 1, 1 → ½
    assert plain["learned"] == [1.0] and ewc["learned"] == [1.0]   # breakout 9 at its visit's end
    assert [g["round2_mean"] for g in ewc["grid"]] == [[0.25], [0.0]]
    assert rl.normalise(3.0, norm["breakout"]) == 0.5
    for r in runs:
        (tmp_path / f"{r['key']}.json").write_text(json.dumps(r))
    assert set(rl.read_runs(tmp_path, cfg)) == set(by_key)
    assert rl.read_runs(tmp_path, {**cfg, "lr": 1.0}) == {}
    assert set(rl.read_runs(tmp_path, {**cfg, "lams": [1.0, 2.0]})) == set(by_key)  # a grid
    summary = {"result": res, "config": cfg, "done": sorted(by_key), "pending": [],
               "command": "python -m benchmarks.seed002_rl run", "seeds": [0]}
    rows = rl.verdicts(summary)
    assert rows[0][2].startswith("no") and "EWC" in rows[0][1]   # here EWC ends lower
    text = rl.markdown(summary)
    assert "λ from {10, 100}" in text
    assert "| breakout | 1.00 | 5.00 | yes |" in text and "space_invaders | 2.00 | 2.00 | no" \
        in text
    assert rl.plot_fig4ab(summary, tmp_path / "a.png").stat().st_size > 0
    assert games == cfg["games"]
