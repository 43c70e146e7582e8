"""WVA's fused Adam/AdamW step (on="step"): against its unfused path, torch's own step, its
fallbacks and a state_dict round trip."""

import copy

import pytest
import torch
from torch import nn

from myelin import WVA, Importance

from .helpers import tiny_model_and_importance

LAM = 2.0
TOL = {"rtol": 1e-5, "atol": 1e-7}


class Setup:
    """The 5-7-3 MLP, WVA over it, and two parameters it does not attenuate.

    The optimizer's second group holds the last layer (its own lr) and the unattenuated
    parameters, one of them float64 whatever the model's dtype. A few elements of the first
    weight get an importance so large that A = 0 there.
    """

    def __init__(self, make, dtype=torch.float32, consolidate=True, lam=LAM):
        self.model, imp = tiny_model_and_importance(dtype, seed=0)
        generator = torch.Generator().manual_seed(1)
        self.extra = nn.Parameter(torch.randn(4, dtype=torch.float64, generator=generator))
        self.extra2 = nn.Parameter(torch.randn(3, dtype=dtype, generator=generator))
        self.base = make([{"params": list(self.model[0].parameters())},
                          {"params": [*self.model[2].parameters(), self.extra, self.extra2],
                           "lr": 0.03}])
        self.wva = WVA(self.model, lam, optimizer=self.base)
        if consolidate:
            values = dict(imp.items())
            values["0.weight"] = values["0.weight"].clone()
            values["0.weight"][0, :3] = torch.finfo(dtype).max / 8    # B rounds to 1: A = 0
            self.wva.consolidate(Importance(values))
        self.dtype = dtype

    def params(self):
        return [*self.model.parameters(), self.extra, self.extra2]

    def backward(self, step):
        """The gradients of step `step`; the last bias has none at step 0 (lazy state later)."""
        x = torch.randn(8, 5, dtype=self.dtype, generator=torch.Generator().manual_seed(step))
        self.wva.zero_grad()
        loss = self.model(x).pow(2).mean() + self.extra.sin().sum() + self.extra2.pow(2).sum()
        loss.backward()
        if step == 0:
            self.model[2].bias.grad = None

    def factors(self):
        """A per parameter of `params()` (1 where WVA does not attenuate)."""
        factor = self.wva.factor
        return [factor[n] if n in factor else torch.ones_like(p)
                for n, p in self.model.named_parameters()] + \
            [torch.ones_like(self.extra), torch.ones_like(self.extra2)]


def forbid_base_step(monkeypatch, base):
    def step(*args, **kwargs):
        raise AssertionError("the fused path called the base optimizer's step")
    monkeypatch.setattr(base, "step", step)


def count_base_steps(monkeypatch, base):
    calls = []
    original = base.step

    def step(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)
    monkeypatch.setattr(base, "step", step)
    return calls


def plain_step(base):
    """Parameters and state_dict after torch's own step of a copy of `base` (same grads/state)."""
    params = [p for g in base.param_groups for p in g["params"]]
    twins = {id(p): p.detach().clone().requires_grad_() for p in params}
    for p in params:
        twins[id(p)].grad = None if p.grad is None else p.grad.clone()
    groups = [{**{k: copy.deepcopy(v) for k, v in g.items() if k != "params"},
               "params": [twins[id(p)] for p in g["params"]]} for g in base.param_groups]
    twin = type(base)(groups)
    twin.load_state_dict(copy.deepcopy(base.state_dict()))
    twin.step()
    return [twins[id(p)].detach() for p in params], twin.state_dict()


def assert_same_state(state_dict, reference, **tol):
    """Same layout as torch's (float scalar CPU step, exp_avg, exp_avg_sq), values close."""
    assert state_dict["state"].keys() == reference["state"].keys()
    for i, ref in reference["state"].items():
        state = state_dict["state"][i]
        assert state.keys() == ref.keys(), i
        step = state["step"]
        assert torch.is_tensor(step) and step.shape == () and step.device.type == "cpu", i
        assert step.dtype == ref["step"].dtype == torch.float32 and step == ref["step"], i
        for key in state:
            if key != "step":
                torch.testing.assert_close(state[key], ref[key], **tol)
    assert [{k: v for k, v in g.items() if k != "params"} for g in state_dict["param_groups"]] \
        == [{k: v for k, v in g.items() if k != "params"} for g in reference["param_groups"]]


CONFIGS = {
    "adam": lambda groups: torch.optim.Adam(groups, lr=1e-2),
    "adam-l2": lambda groups: torch.optim.Adam(groups, lr=0.05, weight_decay=0.1,
                                               betas=(0.8, 0.99)),
    "adam-decoupled-maximize": lambda groups: torch.optim.Adam(
        groups, lr=1e-2, weight_decay=0.2, decoupled_weight_decay=True, maximize=True),
    "adamw": lambda groups: torch.optim.AdamW(groups, lr=1e-2),
    "adamw-wd": lambda groups: torch.optim.AdamW(groups, lr=0.1, weight_decay=0.3,
                                                 betas=(0.5, 0.9), eps=1e-3),
    "adamw-l2-maximize-foreach": lambda groups: torch.optim.AdamW(
        groups, lr=0.05, weight_decay=0.05, maximize=True, foreach=True),
    # torch's fused CPU step (the Trainer's default AdamW): WVA's compiled one-pass kernel
    "adamw-fused": lambda groups: torch.optim.AdamW(groups, lr=0.1, weight_decay=0.3,
                                                    betas=(0.5, 0.9), eps=1e-3, fused=True),
    "adam-l2-maximize-fused": lambda groups: torch.optim.Adam(
        groups, lr=0.05, weight_decay=0.1, maximize=True, fused=True),
}


@pytest.mark.parametrize("chunk", [None, 8], ids=["one-call", "chunked"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("config", list(CONFIGS))
def test_fused_adam_equals_unfused_path_and_torch_step(config, dtype, chunk, monkeypatch):
    """Five fused steps against the unfused path (forced by a step hook on the base optimizer)
    and, step by step, against θ_prev + A ⊙ (θ_torch − θ_prev) with torch's own state. Chunked:
    foreach calls of ≤ 8 elements (a tensor larger than that alone), as a large model's are."""
    if chunk is not None:
        import myelin.consolidation.wva as wva_module

        monkeypatch.setattr(wva_module, "_CPU_CHUNK", chunk)
    fused, unfused = Setup(CONFIGS[config], dtype), Setup(CONFIGS[config], dtype)
    calls = []
    unfused.base.register_step_post_hook(lambda *_: calls.append(1))
    forbid_base_step(monkeypatch, fused.base)
    zero = fused.wva.factor["0.weight"] == 0
    assert zero.sum() == 3
    for step in range(5):
        for s in (fused, unfused):
            s.backward(step)
        before = [p.detach().clone() for p in fused.params()]
        torch_params, torch_state = plain_step(fused.base)
        fused.wva.step()
        unfused.wva.step()
        assert len(calls) == step + 1
        for p, q in zip(fused.params(), unfused.params()):
            torch.testing.assert_close(p, q, **TOL)
        assert_same_state(fused.base.state_dict(), unfused.base.state_dict(), **TOL)
        assert_same_state(fused.base.state_dict(), torch_state, **TOL)
        for p, p0, p1, a in zip(fused.params(), before, torch_params, fused.factors()):
            torch.testing.assert_close(p.detach(), p0 + a * (p1 - p0), **TOL)
        assert torch.equal(fused.model[0].weight[zero], before[0][zero])      # A = 0: frozen
    assert fused.base.state[fused.model[2].bias]["step"] == 4         # no gradient at step 0


@pytest.mark.parametrize("config", ["adam", "adam-l2", "adamw-wd"])
def test_fused_adam_with_a_equal_to_one_is_torch_adam(config, monkeypatch):
    """λ = 0 (A = 1 everywhere, still the fused path) and no consolidated task (no factors:
    the base step itself) both step as torch's Adam does: bitwise, but for decoupled weight
    decay (θ − lr·wd·A ⊙ θ is not rounded as torch's θ·(1 − lr·wd))."""
    tol = TOL if "adamw" in config else {"rtol": 0, "atol": 0}
    ones, untouched = Setup(CONFIGS[config], lam=0.0), Setup(CONFIGS[config], consolidate=False)
    assert all(torch.equal(a, torch.ones_like(a)) for a in ones.wva.factor.values())
    plain = Setup(CONFIGS[config], consolidate=False)
    forbid_base_step(monkeypatch, ones.base)
    calls = count_base_steps(monkeypatch, untouched.base)
    for step in range(5):
        for s in (ones, untouched, plain):
            s.backward(step)
        ones.wva.step()
        untouched.wva.step()
        plain.base.step()
    assert len(calls) == 5
    for p, q, r in zip(ones.params(), untouched.params(), plain.params()):
        torch.testing.assert_close(p, r, **tol)
        assert torch.equal(q, r)
    assert_same_state(ones.base.state_dict(), plain.base.state_dict(), **tol)


FALLBACKS = {
    "amsgrad": (lambda groups: torch.optim.Adam(groups, lr=1e-2, amsgrad=True), False),
    "tensor-lr": (lambda groups: torch.optim.AdamW(groups, lr=torch.tensor(1e-2),
                                                   weight_decay=0.1), False),
    "closure": (lambda groups: torch.optim.AdamW(groups, lr=1e-2, weight_decay=0.1), True),
}


@pytest.mark.parametrize("case", list(FALLBACKS))
def test_adam_the_fused_step_cannot_take_falls_back_to_the_base_step(case, monkeypatch):
    make, with_closure = FALLBACKS[case]
    s = Setup(make)
    calls = count_base_steps(monkeypatch, s.base)
    for step in range(4):
        s.backward(step)
        before = [p.detach().clone() for p in s.params()]
        torch_params, torch_state = plain_step(s.base)
        if with_closure:
            s.wva.step(lambda: None)
        else:
            assert s.wva._adam_groups() is None
            s.wva.step()
        assert_same_state(s.base.state_dict(), torch_state, **TOL)
        for p, p0, p1, a in zip(s.params(), before, torch_params, s.factors()):
            torch.testing.assert_close(p.detach(), p0 + a * (p1 - p0), **TOL)
    assert len(calls) == 4


@pytest.mark.parametrize("config", ["adam-l2", "adamw-wd", "adamw-fused"])
def test_fused_state_continues_the_unfused_path_and_round_trips(config, monkeypatch):
    """State written by the fused step continues on the unfused one and back, and a
    state_dict saved mid-training continues bitwise as the run it came from."""
    mixed, unfused = Setup(CONFIGS[config]), Setup(CONFIGS[config])
    unfused.base.register_step_post_hook(lambda *_: None)
    for step in range(6):
        hook = mixed.base.register_step_post_hook(lambda *_: None) if step in (2, 3) else None
        for s in (mixed, unfused):
            s.backward(step)
            s.wva.step()
        if hook is not None:
            hook.remove()
    for p, q in zip(mixed.params(), unfused.params()):
        torch.testing.assert_close(p, q, **TOL)
    assert_same_state(mixed.base.state_dict(), unfused.base.state_dict(), **TOL)

    saved = copy.deepcopy(mixed.wva.state_dict())
    resumed = Setup(CONFIGS[config], consolidate=False)
    with torch.no_grad():
        for p, q in zip(resumed.params(), mixed.params()):
            p.copy_(q)
    resumed.wva.load_state_dict(saved)
    forbid_base_step(monkeypatch, mixed.base)
    forbid_base_step(monkeypatch, resumed.base)
    for step in range(6, 9):
        for s in (mixed, resumed):
            s.backward(step)
            s.wva.step()
    for p, q in zip(mixed.params(), resumed.params()):
        assert torch.equal(p, q)
    assert_same_state(resumed.base.state_dict(), mixed.base.state_dict(), rtol=0, atol=0)


@pytest.mark.parametrize("hooked", [False, True])
def test_a_scheduler_on_the_wva_moves_the_lr_of_its_step_after_load_state_dict(hooked):
    """torch's load_state_dict gives the base optimizer new groups (accelerate's prepare calls it
    in every Trainer run): the WVA shares the new ones, so a scheduler built on it sets the lr
    that either path steps with."""
    s = Setup(CONFIGS["adamw-wd"])
    if hooked:
        s.base.register_step_post_hook(lambda *_: None)
    scheduler = torch.optim.lr_scheduler.LambdaLR(s.wva, lambda k: 1 - k / 4)
    s.wva.load_state_dict(copy.deepcopy(s.wva.state_dict()))
    assert s.wva.param_groups is s.base.param_groups
    for step in range(3):
        s.backward(step)
        assert [g["lr"] for g in s.base.param_groups] == \
            pytest.approx([0.1 * (1 - step / 4), 0.03 * (1 - step / 4)])
        before = [p.detach().clone() for p in s.params()]
        torch_params, _ = plain_step(s.base)
        s.wva.step()
        scheduler.step()
        for p, p0, p1, a in zip(s.params(), before, torch_params, s.factors()):
            torch.testing.assert_close(p.detach(), p0 + a * (p1 - p0), **TOL)


@pytest.mark.parametrize("make", ["adamw", "sgd", "ewc-sgd"])
def test_a_scheduler_built_on_the_base_optimizer_sees_the_fused_step(make, recwarn):
    # the fused steps replace base.step; torch's "scheduler before optimizer" check must not fire
    import warnings

    from myelin import EWC

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    imp = {n: torch.rand_like(p) for n, p in model.named_parameters()}
    base = torch.optim.AdamW(model.parameters(), 1e-2) if make == "adamw" else \
        torch.optim.SGD(model.parameters(), 1e-2)
    sched = torch.optim.lr_scheduler.StepLR(base, step_size=1, gamma=0.5)
    if make == "ewc-sgd":
        ewc = EWC(model, 1.0)
        ewc.consolidate(Importance(imp))
        opt = ewc.wrap(base)
    else:
        opt = WVA(model, 1.0, optimizer=base)
        opt.consolidate(Importance(imp))
    model(torch.randn(5, 4)).pow(2).mean().backward()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        opt.step()
        sched.step()
    assert base.param_groups[0]["lr"] == pytest.approx(5e-3)


@pytest.mark.parametrize("threads", [1, 2])
def test_compiled_adam_on_a_large_layer_serial_and_parallel(threads, monkeypatch):
    """A fused AdamW over a 20 000-element weight (the kernel's parallel size): WVA's compiled
    step equals θ_prev + A ⊙ (θ_torch − θ_prev) after torch's fused step, for 3 steps."""
    torch.manual_seed(0)
    model = nn.Linear(200, 100)
    base = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.1, fused=True)
    wva = WVA(model, 5.0, optimizer=base)
    wva.consolidate(Importance({n: torch.rand_like(p) for n, p in model.named_parameters()}))
    forbid_base_step(monkeypatch, base)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for step in range(3):
            x = torch.randn(16, 200, generator=torch.Generator().manual_seed(step))
            wva.zero_grad()
            model(x).pow(2).mean().backward()
            before = [p.detach().clone() for p in model.parameters()]
            torch_params, torch_state = plain_step(base)
            wva.step()
            assert_same_state(base.state_dict(), torch_state, **TOL)
            for p, p0, p1, n in zip(model.parameters(), before, torch_params, ("weight", "bias")):
                torch.testing.assert_close(p.detach(), p0 + wva.factor[n] * (p1 - p0), **TOL)
    finally:
        torch.set_num_threads(old)
