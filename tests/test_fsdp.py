"""Consolidation under FSDP2 (`fully_shard`): state sharded like the parameters it protects.

Two gloo ranks run in spawned processes (one session for the module), each with the whole
batch of 12 samples: FSDP2 averages the ranks' gradients, so every step is one process's
full-batch step. The consolidators EWC, L2 and WVA are created on the sharded model and given
whole importances (estimated on an unsharded copy); the tests compare the gathered parameters
and state with one process's, the state's bytes per rank with the shards' sizes, and files
saved on two ranks with one process's (and back). Every collective runs under a 60 s timeout
and the session under an overall deadline, so a hang fails the tests instead of blocking them.
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
from myelin.distributed import full_tensor, is_sharded, local
from myelin.importance import fisher
from tests._ranks import run_ranks

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed unavailable")

WORLD = 2
COLLECTIVE_TIMEOUT = 60.0                  # seconds a collective may wait
SESSION_DEADLINE = 120.0                   # seconds for the whole two-rank session
STEPS = 3
LR = 0.1
# variant -> (method, how the penalty reaches the step, optimizer)
VARIANTS = {
    "ewc": ("ewc", "penalty", "sgd"),
    "ewc-root-only": ("ewc", "penalty", "sgd"),   # fully_shard(model) alone: see _sharded
    "ewc-apply-to-grad": ("ewc", "apply_to_grad", "sgd"),
    "ewc-wrap-separate": ("ewc-separate", "wrap", "sgd"),
    "l2": ("l2", "wrap", "sgd"),
    "wva": ("wva", "wrap", "sgd"),                # the fused SGD step, on the shards
    "wva-adam": ("wva", "wrap", "adam"),          # attenuation of Adam's step
    "wva-grad-momentum": ("wva-grad", "wrap", "momentum"),   # attenuation of the gradient
}


# -- what both the ranks and the reference run ---------------------------------------------------
def _data(seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(12, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (12,),
                                                                                 generator=g)


def _model(deep: bool = False) -> nn.Sequential:
    torch.manual_seed(0)
    if deep:    # a model built differently on one rank: other names
        return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(),
                             nn.Linear(8, 3)).double()
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()   # 3 rows: 2 + 1


def _sharded(model: nn.Module, nested: bool = True) -> nn.Module:
    """FSDP2 on every Linear and the root; or (not `nested`) on the root alone, whose whole
    parameters then stay registered from the forward pass to the end of the backward."""
    from torch.distributed.fsdp import fully_shard

    for layer in model:
        if nested and isinstance(layer, nn.Linear):
            fully_shard(layer)
    fully_shard(model)
    return model


def _importances() -> tuple[Any, Any]:
    """Two tasks' whole importances, from an unsharded copy (no communication)."""
    return tuple(fisher(_model(), _data(seed), distributed=False) for seed in (1, 2))


def _consolidator(method: str, model: nn.Module) -> Any:
    return {"ewc": lambda: EWC(model, 10.0),
            "ewc-separate": lambda: EWC(model, 10.0, mode="separate"),
            "l2": lambda: L2(model, 1.0),
            "wva": lambda: WVA(model, 10.0),
            "wva-grad": lambda: WVA(model, 10.0, on="grad")}[method]()


def _train(model: nn.Module, variant: str) -> Any:
    """Two tasks: consolidate, move off the anchor, `STEPS` full-batch steps on each."""
    method, how, kind = VARIANTS[variant]
    opt: Any = {"sgd": lambda: torch.optim.SGD(model.parameters(), lr=LR),
                "momentum": lambda: torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9),
                "adam": lambda: torch.optim.Adam(model.parameters(), lr=0.01)}[kind]()
    cons = _consolidator(method, model)
    if how == "wrap":
        opt = cons.wrap(opt)
    x, y = _data(0)
    for imp in _importances():
        cons.consolidate(imp)
        with torch.no_grad():    # move away from the anchor, so that the penalty acts
            for p in model.parameters():
                p.add_(0.05)
        for _ in range(STEPS):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            if how == "penalty":
                loss = loss + cons.penalty()
            loss.backward()
            if how == "apply_to_grad":
                cons.apply_to_grad()
            opt.step()
    return cons


def _gathered(cons: Any) -> dict[str, Tensor]:
    """The state as whole tensors (a collective when sharded), in `_tensors` order."""
    return {k: full_tensor(v).detach().clone() for k, v in cons._tensors().items()}


# -- the ranks -----------------------------------------------------------------------------------
def _session(rank: int, path: Path) -> dict[str, Any]:
    """Everything one rank computes, in the same order on every rank."""
    out: dict[str, Any] = {}
    for variant in VARIANTS:
        model = _sharded(_model(), nested=variant != "ewc-root-only")
        cons = _train(model, variant)
        out[variant] = {
            "sharded": all(is_sharded(v) for v in cons._tensors().values()),
            "nbytes": cons.state_nbytes(),
            "local_shapes": {k: tuple(local(v).shape) for k, v in cons._tensors().items()},
            "state": _gathered(cons),
            "params": {n: p.full_tensor().detach().clone() for n, p in model.named_parameters()},
        }
        cons.save(path / f"{variant}.safetensors")         # on every rank; rank 0 writes
        out[variant]["file_after_save"] = (path / f"{variant}.safetensors").exists()

    # state saved by one process, loaded on two ranks: each takes its shards
    for method in ("ewc", "wva"):
        cons = _consolidator(method, _sharded(_model()))
        cons.load(path / f"single-{method}.safetensors")
        out[f"load-{method}"] = {"state": _gathered(cons),
                                 "sharded": all(is_sharded(v) for v in cons._tensors().values())}

    # WVA's state_dict round trip keeps the shards
    model = _sharded(_model())
    wva = WVA(model, 10.0).wrap(torch.optim.SGD(model.parameters(), lr=LR))
    wva.consolidate(_importances()[0])
    other = WVA(model, 10.0).wrap(torch.optim.SGD(model.parameters(), lr=LR))
    other.load_state_dict(wva.state_dict())
    out["state_dict"] = {"got": _gathered(other), "want": _gathered(wva)}

    # bad input last: the ranks must still agree on every collective afterwards
    bad = _sharded(_model(deep=rank == 1))
    for name, make in (("names-ewc", lambda: EWC(bad, 1.0)), ("names-wva", lambda: WVA(bad, 1.0))):
        try:
            make()
            out[name] = None
        except Exception as exc:
            out[name] = (type(exc).__name__, str(exc))
    t = torch.ones(1)
    dist.all_reduce(t)
    out["after-errors"] = float(t)
    return out


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> list[Any]:
    """Run the two-rank session once: each rank's results in rank order, then the directory."""
    path = tmp_path_factory.mktemp("fsdp")
    for method in ("ewc", "wva"):        # one process's state, for the ranks to load
        cons = _train(_model(), method)
        cons.save(path / f"single-{method}.safetensors")
    results: list[Any] = run_ranks(_session, path, WORLD, SESSION_DEADLINE, COLLECTIVE_TIMEOUT)
    results.append(path)
    return results


# -- helpers -------------------------------------------------------------------------------------
def _rel_err(a: Tensor, b: Tensor) -> float:
    """max |a − b| / max |b| (0 for two zero tensors)."""
    scale = float(b.abs().max())
    diff = float((a.double() - b.double()).abs().max())
    return diff if scale == 0 else diff / scale


def _assert_close(got: dict[str, Tensor], want: dict[str, Tensor], tol: float = 1e-6) -> None:
    assert list(got) == list(want)
    for n in want:
        assert got[n].shape == want[n].shape and got[n].dtype == want[n].dtype, n
        assert _rel_err(got[n], want[n]) <= tol, (n, _rel_err(got[n], want[n]))


def _shard_rows(rows: int, r: int) -> int:
    """The rows FSDP2 gives rank r of dim 0: torch.chunk's split (4 + 4 of 8, 2 + 1 of 3)."""
    parts = torch.arange(rows).chunk(WORLD)
    return len(parts[r]) if r < len(parts) else 0


# -- the tests -----------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_sharded_training_equals_one_process(ranks, variant):
    model = _model()
    cons = _train(model, variant)
    for r in range(WORLD):
        got = ranks[r][variant]
        assert got["sharded"]
        _assert_close(got["params"], {n: p.detach() for n, p in model.named_parameters()})
        _assert_close(got["state"], {k: v.detach() for k, v in cons._tensors().items()})


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_each_rank_holds_its_shard_of_the_state(ranks, variant):
    whole = _train(_model(), variant)
    total = whole.state_nbytes()
    assert sum(ranks[r][variant]["nbytes"] for r in range(WORLD)) == total
    for r in range(WORLD):
        shapes = ranks[r][variant]["local_shapes"]
        for key, t in whole._tensors().items():
            assert shapes[key] == (_shard_rows(t.shape[0], r), *t.shape[1:]), key
        assert ranks[r][variant]["nbytes"] <= 0.6 * total       # about half: 42 and 33 of 75


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_state_saved_on_two_ranks_loads_in_one_process(ranks, variant):
    path = ranks[WORLD] / f"{variant}.safetensors"
    assert ranks[0][variant]["file_after_save"] and ranks[1][variant]["file_after_save"]
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        assert json.loads(f.metadata()["myelin.consolidation"])["world_size"] == WORLD
    method = VARIANTS[variant][0]
    cons = _consolidator(method, _model())
    cons.load(path)                        # another world size than saved with: allowed
    _assert_close({k: v.detach() for k, v in cons._tensors().items()}, ranks[0][variant]["state"],
                  tol=0.0)


@pytest.mark.parametrize("method", ["ewc", "wva"])
def test_state_saved_by_one_process_loads_sharded_on_two_ranks(ranks, method):
    cons = _consolidator(method, _model())
    cons.load(ranks[WORLD] / f"single-{method}.safetensors")
    want = {k: v.detach() for k, v in cons._tensors().items()}
    for r in range(WORLD):
        assert ranks[r][f"load-{method}"]["sharded"]
        _assert_close(ranks[r][f"load-{method}"]["state"], want, tol=0.0)


def test_wva_state_dict_round_trips_sharded(ranks):
    for r in range(WORLD):
        _assert_close(ranks[r]["state_dict"]["got"], ranks[r]["state_dict"]["want"], tol=0.0)


@pytest.mark.parametrize("name", ["names-ewc", "names-wva"])
def test_ranks_with_different_parameters_raise_on_every_rank(ranks, name):
    for r in range(WORLD):
        kind, msg = ranks[r][name]
        assert kind == "ValueError", msg
        assert "rank 1 differs from rank 0" in msg
        assert "only on rank 1: ['4.bias', '4.weight']" in msg
        assert "2.weight: rank 0 (3, 8) float64 vs rank 1 (8, 8) float64" in msg
    assert ranks[0]["after-errors"] == ranks[1]["after-errors"] == WORLD


def test_unsharded_parameters_keep_whole_state():
    cons = EWC(_model(), 1.0)
    assert not cons.params.sharded
    cons.consolidate(_importances()[0])
    assert not any(is_sharded(v) for v in cons._tensors().values())
