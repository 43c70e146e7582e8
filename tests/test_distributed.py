"""torch.distributed: importances summed over ranks, DDP models, consolidation across ranks.

Two gloo ranks run in spawned processes (one session for the whole module: starting a process
costs seconds), each on its own uneven shard of 11 samples (7 and 4), and write what they
computed to files; the tests compare that with one process on the union. Every collective runs
under the process group's 60 s timeout and the session under an overall deadline, so a hang
fails the tests instead of blocking them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from myelin.consolidation import EWC, L2, WVA
from myelin.distributed import (
    all_reduce_sums,
    check_same_names,
    is_distributed,
    rank,
    reduce_over_ranks,
    unwrap,
    world_size,
)
from myelin.importance import SynapticIntelligence, fisher, mas, signal
from tests._ranks import run_ranks

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed unavailable")

WORLD = 2
SHARDS = (slice(0, 7), slice(7, 11))      # uneven shards of the 11 samples
COLLECTIVE_TIMEOUT = 60.0                  # seconds a collective may wait
SESSION_DEADLINE = 180.0                   # seconds for the whole two-rank session
STEPS = 3
LR = 0.1
METHODS = ("ewc", "l2", "wva")


# -- what both the ranks and the reference run ---------------------------------------------------
def _data(dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.randn(11, 5, generator=g).to(dtype), torch.randint(0, 3, (11,), generator=g)


def _model(dtype: torch.dtype = torch.float64, deep: bool = False) -> nn.Sequential:
    torch.manual_seed(0)
    if deep:    # a model built differently: another shape for "2.weight", extra "4.*"
        return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(),
                             nn.Linear(8, 3)).to(dtype)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).to(dtype)


def _estimates(model: nn.Module, x: Tensor, y: Tensor) -> dict[str, Any]:
    """Every reduced estimator, batches of 3 (several batches per shard, a short last one)."""
    return {
        "fisher": fisher(model, (x, y), batch_size=3),
        "fisher-exact": fisher(model, (x, y), empirical=False, exact=True, batch_size=3),
        "mas": mas(model, (x, y), batch_size=3),
        "mas-batch": mas(model, (x, y), per_sample=False, batch_size=3),
        "signal": signal(model, (x, y), batch_size=3),
    }


def _train(model: nn.Module, step_model: nn.Module, x: Tensor, y: Tensor, method: str | None,
           n_total: int, scale: float) -> tuple[Any, Any]:
    """`STEPS` SGD steps on `x, y` (with a consolidator after a Fisher consolidation).

    The data loss is the summed cross-entropy times `scale`: world size / total samples under
    DDP, whose gradient averaging then gives the union's mean loss, as 1 / total does in one
    process. Returns (consolidator or SI, the tracker's importance or None).
    """
    si = cons = None
    opt: Any = torch.optim.SGD(step_model.parameters(), lr=LR)
    if method is None:
        si = SynapticIntelligence(step_model)
        si.attach(opt)
    else:
        imp = fisher(step_model, (x, y), batch_size=4)
        assert imp.meta["n_samples"] == n_total
        cons = {"ewc": lambda: EWC(step_model, 10.0), "l2": lambda: L2(step_model, 1.0),
                "wva": lambda: WVA(step_model, 10.0)}[method]()
        cons.consolidate(None if method == "l2" else imp)
        if method == "wva":
            opt = cons.wrap(opt)
        with torch.no_grad():    # move away from the anchor, so that the penalty acts
            for p in model.parameters():
                p.add_(0.05)
    for _ in range(STEPS):
        opt.zero_grad()
        loss = F.cross_entropy(step_model(x), y, reduction="sum") * scale
        if cons is not None:
            loss = loss + cons.penalty()
        loss.backward()
        opt.step()
    return (si, si.importance()) if method is None else (cons, None)


def _state(tracker: Any) -> dict[str, Tensor]:
    if isinstance(tracker, SynapticIntelligence):
        return {f"omega/{n}": v.clone() for n, v in tracker.omega_path_.items()}
    return {k: v.clone() for k, v in tracker.consolidation_state()["tensors"].items()}


def _as_dict(imp: Any) -> dict[str, Any]:
    return {"values": {n: v.clone() for n, v in imp.items()}, "meta": dict(imp.meta)}


# -- the ranks -----------------------------------------------------------------------------------
def _session(rank: int, path: Path) -> dict[str, Any]:
    """Everything one rank computes, in the same order on every rank."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    out: dict[str, Any] = {"world_size": world_size(), "distributed": is_distributed()}
    x, y = (t[SHARDS[rank]] for t in _data())

    ddp = DDP(_model())
    out["ddp"] = {k: _as_dict(v) for k, v in _estimates(ddp, x, y).items()}
    out["sampled"] = _as_dict(fisher(_model(), (x, y), empirical=False, seed=0, batch_size=3))
    x32, y32 = (t[SHARDS[rank]] for t in _data(torch.float32))
    out["float32"] = {k: _as_dict(v) for k, v in _estimates(_model(torch.float32), x32,
                                                          y32).items()}
    out["local"] = _as_dict(fisher(_model(), (x, y), distributed=False))

    for method in (None, *METHODS):
        model = _model()
        ddp = DDP(model)
        tracker, imp = _train(model, ddp, x, y, method, 11, WORLD / 11)
        key = method or "si"
        out[key] = {"state": _state(tracker),
                    "params": {n: p.detach().clone() for n, p in model.named_parameters()},
                    "importance": None if imp is None else _as_dict(imp)}
        if method is not None and rank == 0:
            tracker.save(path / f"{method}.safetensors")

    # bad input last: the ranks must still agree on every collective afterwards
    bad = _model(deep=rank == 1)
    for name, estimate in (("names-fisher", fisher), ("names-signal", signal)):
        try:
            estimate(bad, (x, y))
            out[name] = None
        except Exception as exc:
            out[name] = (type(exc).__name__, str(exc))
    y_bad = y.clone()
    if rank == 1:
        y_bad[0] = 5                     # out of range for 3 classes: fails on rank 1 only
    try:
        fisher(_model(), (x, y_bad))
        out["one-rank-fails"] = None
    except Exception as exc:
        out["one-rank-fails"] = (type(exc).__name__, str(exc))
    out["after-errors"] = _as_dict(fisher(_model(), (x, y)))
    return out


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Run the two-rank session once; each rank's results, in rank order."""
    path = tmp_path_factory.mktemp("distributed")
    results = run_ranks(_session, path, WORLD, SESSION_DEADLINE, COLLECTIVE_TIMEOUT)
    results.append(path)    # the session directory, for the saved states
    return results


# -- helpers -------------------------------------------------------------------------------------
def _rel_err(a: Tensor, b: Tensor) -> float:
    """max |a − b| / max |b| (0 for two zero tensors)."""
    scale = float(b.abs().max())
    diff = float((a.double() - b.double()).abs().max())
    return diff if scale == 0 else diff / scale


def _assert_same_on_ranks(ranks: list[dict[str, Any]], *keys: str) -> None:
    a, b = ranks[0], ranks[1]
    for k in keys:
        a, b = a[k], b[k]
    assert a.keys() == b.keys()
    for n in a:
        assert torch.equal(a[n], b[n]), f"{keys}/{n} differs between the ranks"


def _assert_close(got: dict[str, Tensor], want: dict[str, Tensor], tol: float = 1e-6) -> None:
    assert list(got) == list(want)             # the same names: no "module." prefix
    for n in want:
        assert got[n].dtype == want[n].dtype, n
        assert _rel_err(got[n], want[n]) <= tol, (n, _rel_err(got[n], want[n]))


# -- the tests -----------------------------------------------------------------------------------
def test_the_ranks_ran_under_a_process_group(ranks):
    for r in ranks[:WORLD]:
        assert r["distributed"] and r["world_size"] == WORLD
    assert not is_distributed()                # the test process itself has none


@pytest.mark.parametrize("estimator", ["fisher", "fisher-exact", "mas", "mas-batch", "signal"])
def test_a_ddp_model_gets_the_union_importance_on_every_rank(ranks, estimator):
    _assert_same_on_ranks(ranks, "ddp", estimator, "values")
    x, y = _data()
    want = _estimates(_model(), x, y)[estimator]
    got = ranks[0]["ddp"][estimator]
    _assert_close(got["values"], dict(want))
    assert got["meta"] == {**want.meta, "n_samples": 11, "world_size": WORLD}


@pytest.mark.parametrize("estimator", ["fisher", "mas", "signal"])
def test_float32_sums_reduce_to_the_union_within_1e_6(ranks, estimator):
    _assert_same_on_ranks(ranks, "float32", estimator, "values")
    x, y = _data(torch.float32)
    _assert_close(ranks[0]["float32"][estimator]["values"],
                  dict(_estimates(_model(torch.float32), x, y)[estimator]))


def test_sampled_fisher_draws_per_rank_with_seed_plus_rank(ranks):
    # one process cannot draw the ranks' labels in one pass; each rank's own draws are those
    # of seed + rank on its shard, and the ranks' sums add up
    _assert_same_on_ranks(ranks, "sampled", "values")
    x, y = _data()
    parts = [fisher(_model(), (x[s], y[s]), empirical=False, seed=r, batch_size=3)
             for r, s in enumerate(SHARDS)]
    n = [s.stop - s.start for s in SHARDS]
    want = {k: (n[0] * parts[0][k] + n[1] * parts[1][k]) / 11 for k in parts[0]}
    _assert_close(ranks[0]["sampled"]["values"], want)
    assert ranks[0]["sampled"]["meta"]["seed"] == 0


def test_distributed_false_keeps_the_ranks_own_data(ranks):
    x, y = _data()
    for r, s in enumerate(SHARDS):
        got = ranks[r]["local"]
        _assert_close(got["values"], dict(fisher(_model(), (x[s], y[s]))))
        assert got["meta"]["n_samples"] == s.stop - s.start and "world_size" not in got["meta"]


def test_si_needs_no_reduction_under_ddp(ranks):
    # DDP averages the gradients before the step: ω is the union's on every rank
    _assert_same_on_ranks(ranks, "si", "state")
    _assert_same_on_ranks(ranks, "si", "params")
    x, y = _data()
    model = _model()
    si, imp = _train(model, model, x, y, None, 11, 1 / 11)
    _assert_close(ranks[0]["si"]["state"], _state(si))
    _assert_close(ranks[0]["si"]["importance"]["values"], dict(imp))


@pytest.mark.parametrize("method", METHODS)
def test_consolidation_state_is_identical_across_ranks_and_the_union(ranks, method):
    _assert_same_on_ranks(ranks, method, "state")
    _assert_same_on_ranks(ranks, method, "params")
    x, y = _data()
    model = _model()
    cons, _ = _train(model, model, x, y, method, 11, 1 / 11)
    _assert_close(ranks[0][method]["state"], _state(cons))
    _assert_close(ranks[0][method]["params"],
                  {n: p.detach() for n, p in model.named_parameters()})


@pytest.mark.parametrize("method", METHODS)
def test_state_saved_under_two_ranks_loads_in_one_process(ranks, method):
    # nothing saved depends on the world size: loading elsewhere is allowed, not an error
    path = ranks[WORLD] / f"{method}.safetensors"
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        assert json.loads(f.metadata()["myelin.consolidation"])["world_size"] == WORLD
    cons = {"ewc": EWC, "l2": L2, "wva": WVA}[method](_model(), 0.5)
    with pytest.warns(UserWarning, match="lam"):
        cons.load(path)
    _assert_close(_state(cons), ranks[0][method]["state"], tol=0.0)


def test_ranks_with_different_parameters_raise_naming_them(ranks):
    for name in ("names-fisher", "names-signal"):
        for r in range(WORLD):
            kind, msg = ranks[r][name]
            assert kind == "ValueError", msg
            assert "rank 1 differs from rank 0" in msg
            assert "only on rank 1: ['4.bias', '4.weight']" in msg
            assert "2.weight: rank 0 (3, 8) float64 vs rank 1 (8, 8) float64" in msg


def test_a_failure_on_one_rank_is_raised_on_every_rank(ranks):
    kind, msg = ranks[1]["one-rank-fails"]
    assert kind == "ValueError" and "Labels must lie in [0, 3)" in msg
    kind, msg = ranks[0]["one-rank-fails"]
    assert kind == "RuntimeError" and "fisher failed on rank 1 (ValueError: Labels" in msg
    # and the ranks still agree on their collectives afterwards
    _assert_same_on_ranks(ranks, "after-errors", "values")
    x, y = _data()
    _assert_close(ranks[0]["after-errors"]["values"], dict(fisher(_model(), (x, y))))


def test_unwrap_keeps_names_without_the_module_prefix():
    model = _model()
    assert unwrap(nn.DataParallel(model)) is model and unwrap(model) is model
    x, y = _data()
    assert list(fisher(nn.DataParallel(model), (x, y))) == ["0.weight", "0.bias", "2.weight",
                                                             "2.bias"]
    assert list(EWC(nn.DataParallel(model), 1.0).params.params) == list(
        dict(model.named_parameters()))


def test_without_a_process_group_the_helpers_change_nothing():
    t = torch.ones(2)
    sums, n = reduce_over_ranks(lambda: ({"a": t}, 3), "test")
    assert sums["a"] is t and n == 3
    check_same_names({"a": t})
    sums, n = all_reduce_sums({"a": t}, 3)
    assert sums["a"] is t and n == 3 and world_size() == 1 and rank() == 0
