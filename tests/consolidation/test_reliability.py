"""Issue 22 (λ checked on assignment and on load, WVA without NaN, EWC's stability warning) and
issue 20 (EWC state in bf16, state bytes)."""

import json
import math
import warnings

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from myelin import EWC, L2, WVA, Importance
from myelin.consolidation import attenuation

from .helpers import perturb, tiny_model_and_importance

META = "myelin.consolidation"


def model_and_importance(dtype=torch.float64, seed=0):
    return tiny_model_and_importance(dtype, seed)


def nbytes(model):
    return sum(p.numel() * p.element_size() for p in model.parameters())


def full(model, value):
    return Importance({n: torch.full_like(p, value) for n, p in model.named_parameters()})


def write(path, cons, tensors=None, config=None, parameters=None):
    """Save `cons`'s state to `path` with some of it replaced (a tampered or foreign file)."""
    state = cons.consolidation_state()
    meta = {"class": type(cons).__name__, "config": {**state["config"], **(config or {})},
            "parameters": parameters or state["parameters"]}
    data = {k: v.contiguous() for k, v in {**state["tensors"], **(tensors or {})}.items()}
    save_file(data, str(path), metadata={META: json.dumps(meta)})
    return path


# ------------------------------------------------------------------ item 8: λ and loaded state
@pytest.mark.parametrize("make", [lambda m: EWC(m, 1.0), lambda m: L2(m, 1.0),
                                  lambda m: WVA(m, 1.0)])
def test_lam_is_checked_on_assignment(make):
    model, _ = model_and_importance()
    cons = make(model)
    for bad in (float("nan"), float("inf"), -3.0, "1", True, None):
        with pytest.raises(ValueError, match=r"The 'lam' parameter of \w+ must be a finite "
                                             r"float >= 0\. Got"):
            cons.lam = bad
        assert cons.lam == 1.0
    cons.lam = 4
    assert cons.lam == 4.0 and isinstance(cons.lam, float)


def test_an_assigned_lam_takes_effect():
    model, imp = model_and_importance()
    ewc = EWC(model, 1.0)
    ewc.consolidate(imp)
    perturb(model)
    one = ewc.penalty().item()
    ewc.lam = 7.5
    assert ewc.penalty().item() == pytest.approx(7.5 * one, rel=1e-12)


def bad_ewc_files(tmp_path, ewc):
    name = "0.weight"
    omega, anchor = ewc.omega[name], ewc.anchor[name]
    nan = omega.clone()
    nan[0, 0] = float("nan")
    inf = anchor.clone()
    inf[1, 2] = float("inf")
    return {
        "NaN in Ω": (write(tmp_path / "nan.st", ewc, {f"omega/{name}": nan}), "not finite"),
        "inf in θ*": (write(tmp_path / "inf.st", ewc, {f"anchor/{name}": inf}), "not finite"),
        "negative Ω": (write(tmp_path / "neg.st", ewc, {f"omega/{name}": -omega}),
                       r"negative values in 'omega/0\.weight'"),
        "integer Ω": (write(tmp_path / "int.st", ewc, {f"omega/{name}": omega.long()}),
                      "integer"),
        "Ω of another shape": (write(tmp_path / "shape.st", ewc, {f"omega/{name}": omega.t()}),
                               r"'omega/0\.weight' of shape \(5, 7\); parameter '0\.weight' "
                               r"has \(7, 5\)"),
        "λ = −3": (write(tmp_path / "lam.st", ewc, config={"lam": -3}),
                   r"'lam' parameter of the EWC state in .* must be a finite float >= 0\. "
                   r"Got -3"),
        "λ = NaN": (write(tmp_path / "lamnan.st", ewc, config={"lam": float("nan")}), "'lam'"),
        "λ missing": (write(tmp_path / "nolam.st", ewc, config={"lam": None}), "'lam'"),
        "γ = 2": (write(tmp_path / "gamma.st", ewc, config={"gamma": 2.0}), "'gamma' entry"),
        "lr = −1": (write(tmp_path / "lr.st", ewc, config={"lr": -1.0}), "'lr' entry"),
        "stabilized without lr": (write(tmp_path / "stab.st", ewc, config={"stabilized": True}),
                                  "'lr' entry"),
        "n_tasks = −1": (write(tmp_path / "tasks.st", ewc, config={"n_tasks": -1}), "n_tasks"),
    }


def test_load_refuses_invalid_state_and_keeps_its_own(tmp_path):
    model, imp = model_and_importance()
    ewc = EWC(model, 2.0)
    ewc.consolidate(imp)
    files = bad_ewc_files(tmp_path, ewc)
    missing = ewc.consolidation_state()["tensors"]
    del missing["anchor/2.bias"]
    save_file({k: v.contiguous() for k, v in missing.items()}, str(tmp_path / "missing.st"),
              metadata={META: json.dumps({"class": "EWC", "config": ewc._config(),
                                          "parameters": ewc.params.describe()})})
    files["missing θ*"] = (tmp_path / "missing.st", r"lacks the tensor 'anchor/2\.bias'")
    target = EWC(model, 3.0)
    target.consolidate(imp * 2.0)
    perturb(model)
    before = target.penalty().item()
    for what, (path, message) in files.items():
        with pytest.raises(ValueError, match=message):
            target.load(path)
        assert target.lam == 3.0 and target.n_tasks == 1, what    # nothing was changed
        assert target.penalty().item() == before, what
    assert not math.isnan(target.penalty().item())


def test_wva_load_refuses_invalid_state(tmp_path):
    model, imp = model_and_importance()
    wva = WVA(model, 2.0)
    wva.consolidate(imp)
    a = wva.factor["0.weight"]
    nan = a.clone()
    nan[0, 0] = float("nan")
    cases = [({"factor/0.weight": nan}, None, "not finite"),
             ({"factor/0.weight": a + 1.0}, None, r"outside \[0, 1\] in 'factor/0\.weight'"),
             (None, {"lam": -3}, "'lam'"),
             (None, {"curve": "cubic"}, "'curve' entry"),
             (None, {"on": "loss"}, "'on' entry")]
    target = WVA(model, 2.0)
    for tensors, config, message in cases:
        path = write(tmp_path / "bad.st", wva, tensors, config)
        with pytest.raises(ValueError, match=message):
            target.load(path)
        assert target.n_tasks == 0
    state = wva.consolidation_state()
    state["tensors"] = {**state["tensors"], "factor/0.weight": nan}
    with pytest.raises(ValueError, match="not finite"):
        target.load_consolidation_state(state)
    bound = WVA(model, 2.0, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    bound.consolidate(imp)
    saved = bound.state_dict()
    saved["wva"]["config"]["lam"] = float("inf")
    with pytest.raises(ValueError, match="'lam'"):
        bound.load_state_dict(saved)


def test_a_lam_mismatch_on_load_is_announced_and_the_saved_lam_used(tmp_path):
    model, imp = model_and_importance()
    saved = EWC(model, 5.0)
    saved.consolidate(imp)
    saved.save(tmp_path / "ewc.st")
    ewc = EWC(model, 999.0)
    with pytest.warns(UserWarning, match=r"'.*ewc\.st' was saved with lam=5\.0; this EWC had "
                                         r"lam=999\.0\. The saved values are used") as record:
        ewc.load(tmp_path / "ewc.st")
    assert record[0].filename == __file__
    assert ewc.lam == 5.0
    perturb(model)
    assert ewc.penalty().item() == pytest.approx(saved.penalty().item(), rel=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")             # the same settings: nothing to say
        EWC(model, 5.0).load(tmp_path / "ewc.st")
    wva = WVA(model, 2.0)
    wva.consolidate(imp)
    wva.save(tmp_path / "wva.st")
    with pytest.warns(UserWarning, match=r"lam=2\.0; this WVA had lam=1\.0.*computed with the "
                                         "saved λ"):
        WVA(model, 1.0).load(tmp_path / "wva.st")


# ------------------------------------------------------------------ item 9: WVA without NaN
@pytest.mark.parametrize("lam", [1e38, 1e300])          # 1e300: λ itself beyond float32
@pytest.mark.parametrize("dtype", [None, torch.bfloat16])
@pytest.mark.parametrize("curve", ["hyperbolic", "exponential"])
def test_wva_factor_tends_to_zero_without_nan_where_lam_s_overflows(curve, dtype, lam):
    """WVA(SGD, m, 1e38) with importance 10: λS = 1e39 overflows float32; A must be 0."""
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    wva = WVA(torch.optim.SGD(model.parameters(), lr=0.1), model, lam, curve=curve,
              dtype=dtype)
    imp = full(model, 10.0)
    imp["bias"][0] = 0.0                           # untouched: A stays 1
    for _ in range(2):                             # and a second task on top of A = 0
        wva.consolidate(imp)
    for n, a in wva.factor.items():
        expected = torch.zeros_like(a)
        if n == "bias":
            expected[0] = 1.0
        assert torch.equal(a, expected), (n, a)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model(torch.randn(5, 4)).sum().backward()
    wva.step()
    for n, p in model.named_parameters():
        assert torch.isfinite(p).all()
        moved = (p - before[n]) != 0
        assert moved.sum() == (1 if n == "bias" else 0), n


def test_attenuation_without_nan_where_lam_omega_overflows():
    omega = torch.tensor([0.0, 1e-30, 10.0], dtype=torch.float32)
    for lam in (1e38, 1e39, 1e300):               # λ itself beyond float32 in the last two
        hyperbolic = attenuation(omega, lam)
        exponential = attenuation(omega, lam, "exponential")
        assert hyperbolic.dtype == exponential.dtype == torch.float32
        assert hyperbolic[0] == exponential[0] == 1 and exponential[2] == 0
        assert 0 <= hyperbolic[2] <= 1e-38              # 1/(1 + 1e39): 1e-39, subnormal, or 0
        assert not torch.isnan(hyperbolic).any() and not torch.isnan(exponential).any()
    assert attenuation(omega, 1e37)[1].item() == pytest.approx(1 / (1 + 1e7), rel=1e-6)


# ------------------------------------------------------------------ item 12: stability warning
LAMS = (5.0, 13.0, 19.0, 21.0, 29.0, 31.0, 37.0, 39.0, 59.0, 61.0)


def diverging(opt_kwargs, h):
    """For each curvature in `h`, does SGD (`opt_kwargs`) on the penalty (h/2)·θ² diverge?"""
    p = nn.Parameter(torch.ones(len(h), dtype=torch.float64))
    h = torch.tensor(h, dtype=torch.float64)
    opt = torch.optim.SGD([p], **opt_kwargs)
    for _ in range(400):
        opt.zero_grad()
        (0.5 * h * p * p).sum().backward()
        opt.step()
    return (~(p.abs() < 1e-3)).tolist()


@pytest.mark.parametrize("opt_kwargs", [{"lr": 0.1}, {"lr": 0.1, "momentum": 0.9},
                                        {"lr": 0.1, "momentum": 0.5, "nesterov": True},
                                        {"lr": 0.1, "momentum": 0.5, "dampening": 0.5},
                                        {"lr": 0.1, "weight_decay": 2.0}])
def test_the_stability_warning_fires_exactly_when_sgd_on_the_penalty_diverges(opt_kwargs):
    wd = opt_kwargs.get("weight_decay", 0.0)
    expected = diverging(opt_kwargs, [lam + wd for lam in LAMS])
    assert any(expected) and not all(expected)
    for lam, diverges in zip(LAMS, expected):
        model = nn.Linear(1, 1, bias=False).double()
        ewc = EWC(model, lam)
        ewc.wrap(torch.optim.SGD(model.parameters(), **opt_kwargs))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ewc.consolidate(full(model, 1.0))        # λΩ = λ
        warned = any(issubclass(w.category, RuntimeWarning) for w in caught)
        assert warned == diverges, (lam, opt_kwargs)


def test_stability_warning_names_the_fixes_and_is_not_a_user_warning():
    model, _ = model_and_importance()
    ewc = EWC(model, 100.0)
    ewc.wrap(torch.optim.SGD(model.parameters(), lr=0.1))
    imp = full(model, 0.01)
    imp["2.weight"][1, 3] = 0.3                     # lr·λ·max Ω = 0.1·100·0.3 = 3
    with pytest.warns(RuntimeWarning, match=r"past its stability limit: lr·λ·max Ω = 0\.1 × 30 "
                                            r"= 3 > 2 for parameter '2\.weight'.*"
                                            r"stabilized=True.*λ at most 66\.67") as record:
        ewc.consolidate(imp)
    assert record[0].filename == __file__                # points at the caller of consolidate
    with warnings.catch_warnings():                  # the training loop ignores UserWarnings
        warnings.simplefilter("ignore", UserWarning)
        with pytest.warns(RuntimeWarning):
            ewc.consolidate(imp * 0.0)


def test_stability_warning_sources_of_the_learning_rate():
    model, _ = model_and_importance()
    imp = full(model, 1.0)                          # λΩ = λ

    def consolidate_warns(ewc):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ewc.consolidate(imp)
        return any(issubclass(w.category, RuntimeWarning) for w in caught)

    assert consolidate_warns(EWC(model, 30.0, lr=0.1))              # no optimizer: lr=
    assert not consolidate_warns(EWC(model, 30.0))                  # no lr known: no check
    assert not consolidate_warns(EWC(model, 19.0, lr=0.1))
    assert not consolidate_warns(EWC(model, 1e6, stabilized=True, lr=0.1))   # never overshoots
    adam = EWC(model, 1e6)
    adam.wrap(torch.optim.Adam(model.parameters(), lr=0.1))         # not an SGD step: no check
    assert not consolidate_warns(adam)
    groups = EWC(model, 30.0)                                       # per-group learning rates
    groups.wrap(torch.optim.SGD([{"params": model[0].parameters(), "lr": 0.01},
                                 {"params": model[2].parameters(), "lr": 0.1}], lr=0.1))
    assert consolidate_warns(groups)
    groups.wrap(torch.optim.SGD([{"params": model[0].parameters(), "lr": 0.1},
                                 {"params": model[2].parameters(), "lr": 0.01}], lr=0.1))
    with pytest.warns(RuntimeWarning, match="'0.weight'"):
        groups.consolidate(imp * 0.0)
    base = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = EWC(model, 15.0)
    sched.wrap(base)
    assert not consolidate_warns(sched)                             # 1.5
    base.param_groups[0]["lr"] = 0.2                                # a scheduler raised it: 3
    assert consolidate_warns(sched)
    separate = EWC(model, 12.0, mode="separate")                    # terms add up: 1.2, 2.4
    separate.wrap(torch.optim.SGD(model.parameters(), lr=0.1))
    assert not consolidate_warns(separate)
    assert consolidate_warns(separate)
    l2 = L2(model, 30.0)
    l2.wrap(torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.warns(RuntimeWarning, match="stability limit"):
        l2.consolidate()


# ------------------------------------------------------------------ issue 20: state in bf16
def test_state_bytes_relative_to_the_fp32_model():
    """EWC: 2× the fp32 model (Ω, θ*), 1× in bf16; WVA: 1× (A), 0.5× in bf16 (B)."""
    model, imp = model_and_importance(torch.float32)
    size = nbytes(model)
    methods = {"ewc": (EWC(model, 1.0), 2.0), "ewc-bf16": (EWC(model, 1.0,
                                                              state_dtype=torch.bfloat16), 1.0),
               "wva": (WVA(model, 1.0), 1.0), "wva-bf16": (WVA(model, 1.0,
                                                              dtype=torch.bfloat16), 0.5),
               "l2-bf16": (L2(model, 1.0, state_dtype=torch.bfloat16), 0.5)}
    for name, (cons, ratio) in methods.items():
        assert cons.state_nbytes() == 0
        for _ in range(3):
            cons.consolidate(imp)
        assert cons.state_nbytes() == ratio * size, name
        assert cons.memory_bytes() == cons.state_nbytes(), name
    stab = EWC(model, 1.0, stabilized=True, lr=0.1, state_dtype=torch.bfloat16)
    stab.consolidate(imp)
    assert stab.state_nbytes() == size and stab.memory_bytes() == 1.5 * size   # + cached c
    separate = EWC(model, 1.0, mode="separate", state_dtype=torch.bfloat16)
    for _ in range(3):
        separate.consolidate(imp)
    assert separate.state_nbytes() == 3 * size


@pytest.mark.parametrize("mode", ["accumulate", "online"])
def test_bf16_omega_is_summed_in_fp32_and_rounded_once(mode):
    model, imp = model_and_importance(torch.float32)
    gamma = 0.5 if mode == "online" else 1.0
    ewc = EWC(model, 1.0, mode=mode, gamma=gamma, state_dtype=torch.bfloat16)
    ewc.consolidate(imp)
    perturb(model)
    ewc.consolidate(imp * 0.37)
    for n, p in model.named_parameters():
        first = imp[n].float().to(torch.bfloat16)
        expected = (gamma * first.float() + 0.37 * imp[n].float()).to(torch.bfloat16)
        assert ewc.omega[n].dtype == ewc.anchor[n].dtype == torch.bfloat16
        assert torch.equal(ewc.omega[n], expected), n
        assert torch.equal(ewc.anchor[n], p.detach().to(torch.bfloat16)), n


def test_bf16_state_warns_when_rounding_swallows_a_task():
    model, _ = model_and_importance(torch.float32)
    ewc = EWC(model, 1.0, state_dtype=torch.bfloat16)
    ewc.consolidate(full(model, 1.0))
    with pytest.warns(RuntimeWarning, match=r"rounding Ω to torch\.bfloat16 lost 100\.0% of "
                                            r"task 2's importance") as record:
        ewc.consolidate(full(model, 1e-3))          # below half a bf16 step of 1 (2⁻⁸)
    assert record[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ewc.consolidate(full(model, 0.1))            # kept (rounded)
    assert torch.equal(ewc.omega["0.weight"], torch.full_like(ewc.omega["0.weight"], 1.1))
    fp32 = EWC(model, 1.0)
    fp32.consolidate(full(model, 1.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fp32.consolidate(full(model, 1e-3))          # no rounding, no warning
    half = EWC(model, 1.0, state_dtype=torch.float16)
    with pytest.raises(ValueError, match=r"overflows its storage dtype torch\.float16"):
        half.consolidate(full(model, 1e5))


def test_bf16_state_penalty_and_steps_are_computed_in_the_parameters_dtype():
    """Against autograd of (λ/2)·Σ Ω (θ − θ*)² on the rounded Ω and θ*, upcast, λ = 3."""
    model, imp = model_and_importance(torch.float32)
    ewc = EWC(model, 3.0, state_dtype=torch.bfloat16)
    omega = {n: imp[n].to(torch.bfloat16).float() for n in imp}
    anchor = {n: p.detach().to(torch.bfloat16).float() for n, p in model.named_parameters()}
    ewc.consolidate(imp)
    perturb(model)
    params = dict(model.named_parameters())
    reference = sum((1.5 * omega[n] * (params[n] - anchor[n]) ** 2).sum() for n in params)
    expected = dict(zip(params, torch.autograd.grad(reference, list(params.values()))))
    value = ewc.penalty()
    assert value.dtype == torch.float32
    assert torch.isclose(value, reference.detach(), rtol=1e-5)
    value.backward()
    for n, p in params.items():
        assert p.grad.dtype == torch.float32
        assert torch.allclose(p.grad, expected[n], rtol=1e-5, atol=1e-7), n
    model.zero_grad()
    ewc.apply_to_grad()
    for n, p in params.items():
        assert torch.allclose(p.grad, expected[n], rtol=1e-5, atol=1e-7), n
    model.zero_grad()
    before = {n: p.detach().clone() for n, p in params.items()}
    ewc.wrap(torch.optim.SGD(model.parameters(), lr=0.1)).step()   # the pull alone, fused
    for n, p in params.items():
        assert torch.allclose(p, before[n] - 0.1 * expected[n], rtol=1e-5, atol=1e-7), n
    stab = EWC(model, 3.0, stabilized=True, lr=0.1, state_dtype=torch.bfloat16)
    stab.consolidate(imp)
    c = {n: (1.5 * omega[n] / (1 + 0.3 * omega[n])).to(torch.bfloat16) for n in omega}
    assert all(torch.equal(a, c[n]) for a, n in zip(stab.penalty_terms()[1], params))


def test_bf16_state_saves_and_loads_in_its_dtype(tmp_path):
    model, imp = model_and_importance(torch.float32)
    ewc = EWC(model, 3.0, state_dtype=torch.bfloat16)
    ewc.consolidate(imp)
    ewc.save(tmp_path / "bf16.st")
    with safe_open(str(tmp_path / "bf16.st"), framework="pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}  # noqa: SIM118
    again = EWC(model, 3.0, state_dtype=torch.bfloat16)
    again.load(tmp_path / "bf16.st")
    assert all(torch.equal(again.omega[n], ewc.omega[n]) for n in imp)
    assert all(torch.equal(again.anchor[n], ewc.anchor[n]) for n in imp)
    wide = EWC(model, 3.0)                          # into an fp32 EWC: upcast
    wide.load(tmp_path / "bf16.st")
    assert all(wide.omega[n].dtype == torch.float32 and
               torch.equal(wide.omega[n], ewc.omega[n].float()) for n in imp)
    wide.save(tmp_path / "fp32.st")                 # and an fp32 file into a bf16 EWC: rounded
    narrow = EWC(model, 3.0, state_dtype=torch.bfloat16)
    narrow.load(tmp_path / "fp32.st")
    assert all(torch.equal(narrow.anchor[n], ewc.anchor[n]) for n in imp)
    assert narrow.state_nbytes() == nbytes(model)
    assert "state_dtype=torch.bfloat16" in repr(narrow)


def test_state_dtype_errors():
    model, _ = model_and_importance()
    for bad in (torch.int64, "bfloat16", 16):
        with pytest.raises(TypeError, match=r"'state_dtype' parameter of EWC must be a "
                                            r"floating torch\.dtype"):
            EWC(model, 1.0, state_dtype=bad)


def test_refused_wva_state_dict_leaves_the_base_optimizer_untouched():
    import copy

    import torch

    from myelin.consolidation import WVA

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    wva = WVA(model, 1.0, optimizer=opt)
    state = wva.state_dict()
    before = copy.deepcopy(opt.state_dict())
    bad = copy.deepcopy(state)
    bad["base"]["param_groups"][0]["lr"] = 123.0
    bad["wva"]["config"]["lam"] = -3.0                   # invalid: refused
    with pytest.raises(ValueError, match="lam"):
        wva.load_state_dict(bad)
    assert opt.state_dict()["param_groups"][0]["lr"] == before["param_groups"][0]["lr"]
