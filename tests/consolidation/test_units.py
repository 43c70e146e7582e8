"""EWC, L2 and WVA: closed forms, memory, state, schedulers and bad input."""

import pytest
import torch
from torch import nn

from myelin import EWC, L2, WVA, Importance
from myelin.consolidation import attenuation

from .helpers import perturb, tiny_model_and_importance


def model_and_importance(seed=0):
    return tiny_model_and_importance(torch.float64, seed)


@pytest.mark.parametrize("kwargs", [{}, {"mode": "separate"}, {"mode": "online", "gamma": 0.5},
                                    {"stabilized": True, "lr": 0.05}])
def test_penalty_gradient_equals_autograd_of_the_plain_formula(kwargs):
    """penalty(), its backward and apply_to_grad against torch autograd of the penalty written
    out here: Σ_terms Σ c (θ − θ*)², c = λΩ/2 (or (λΩ/2)/(1 + lr·λΩ) stabilized), λ = 3."""
    lam = 3.0
    model, imp = model_and_importance()
    ewc = EWC(model, lam, **kwargs)
    imps, anchors = [], []
    for scale in (1.0, 0.5):
        ewc.consolidate(imp * scale)
        imps.append({n: scale * imp[n] for n in imp})
        anchors.append({n: p.detach().clone() for n, p in model.named_parameters()})
        perturb(model)
    if kwargs.get("mode") == "separate":                 # one penalty per task
        terms = list(zip(imps, anchors))
    else:                                                # Ω = γΩ_1 + I_2, the last anchor
        gamma = kwargs.get("gamma", 1.0)
        terms = [({n: gamma * imps[0][n] + imps[1][n] for n in imp}, anchors[1])]

    def coefficient(omega):
        if kwargs.get("stabilized"):
            return (lam * omega / 2) / (1 + kwargs["lr"] * lam * omega)
        return lam * omega / 2

    params = dict(model.named_parameters())
    reference = sum((coefficient(omega[n]) * (params[n] - anchor[n]) ** 2).sum()
                    for omega, anchor in terms for n in params)
    expected = torch.autograd.grad(reference, list(params.values()))
    value = ewc.penalty()
    assert torch.isclose(value, reference.detach(), rtol=1e-12)
    value.backward()
    for e, p in zip(expected, params.values()):
        assert torch.allclose(p.grad, e, rtol=1e-10, atol=1e-12)
    model.zero_grad()
    ewc.apply_to_grad()
    for e, p in zip(expected, params.values()):
        assert torch.allclose(p.grad, e, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("make", [lambda m: EWC(m, 3.0), lambda m: L2(m, 3.0),
                                  lambda m: EWC(m, 3.0, mode="separate"),
                                  lambda m: EWC(m, 3.0, stabilized=True, lr=0.05)],
                         ids=["ewc", "l2", "separate", "stabilized"])
def test_apply_to_grad_on_large_tensors_equals_autograd(make, threads, dtype, monkeypatch):
    """A weight above the compiled kernel's size threshold (20 000 elements) takes the in-place
    route and a small bias the foreach route; both equal autograd of penalty(), with and
    without an existing gradient, serial and parallel."""
    from myelin.consolidation import _kernels, ewc

    calls = []
    kernels = _kernels.grad_pull_kernels()
    assert kernels is not None

    def counted(kernel):
        def run(grad, *args):
            calls.append(grad.size)
            return kernel(grad, *args)
        return run

    monkeypatch.setattr(ewc, "grad_pull_kernels", lambda: tuple(
        tuple(counted(k) for k in pair) for pair in kernels))
    torch.manual_seed(0)
    model = nn.Linear(200, 100).to(dtype)
    assert model.weight.numel() >= 16384 > model.bias.numel()
    cons = make(model)
    for scale in (1.0, 0.5):
        cons.consolidate(Importance({n: scale * torch.rand_like(p)
                                     for n, p in model.named_parameters()}))
        perturb(model)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        cons.penalty().backward()
        expected = [p.grad.clone() for p in model.parameters()]
        model.zero_grad(set_to_none=True)
        cons.apply_to_grad()                                   # .grad is None: created
        tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-12}
        for e, p in zip(expected, model.parameters()):
            assert torch.allclose(p.grad, e, **tol)
        existing = [torch.randn_like(p) for p in model.parameters()]
        for p, g in zip(model.parameters(), existing):
            p.grad = g.clone()
        cons.apply_to_grad()                                   # added to an existing .grad
        for e, g, p in zip(expected, existing, model.parameters()):
            assert torch.allclose(p.grad, g + e, **tol)
        assert calls and set(calls) == {model.weight.numel()}       # the weight, by the kernel
    finally:
        torch.set_num_threads(old)


def test_penalty_values_by_hand():
    model, imp = model_and_importance()
    anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
    ewc = EWC(model, 3.0)
    assert ewc.penalty().item() == 0.0                     # nothing consolidated yet
    ewc.consolidate(imp)
    perturb(model)
    params = dict(model.named_parameters())
    expected = sum((1.5 * imp[n] * (params[n] - anchor[n]) ** 2).sum() for n in params)
    assert torch.isclose(ewc.penalty(), expected, rtol=1e-12)      # (λ/2)·Σ Ω (θ−θ*)², λ = 3
    anchor = {n: p.detach().clone() for n, p in model.named_parameters()}
    stab = EWC(model, 3.0, stabilized=True, lr=0.1)
    stab.consolidate(imp)
    perturb(model)
    params = dict(model.named_parameters())
    c = {n: (1.5 * imp[n]) / (1 + 0.1 * 3.0 * imp[n]) for n in params}
    expected = sum((c[n] * (params[n] - anchor[n]) ** 2).sum() for n in params)
    assert torch.isclose(stab.penalty(), expected, rtol=1e-12)


def test_stabilized_step_never_overshoots():
    """One SGD step on the stabilized penalty alone moves θ a fraction (0, 1) toward θ*."""
    model, imp = model_and_importance()
    lr, lam = 0.5, 1000.0
    ewc = EWC(model, lam, stabilized=True, lr=lr)
    ewc.consolidate(imp * 10)
    perturb(model)
    before = [(p - a).detach().clone() for p, a in zip(model.parameters(), ewc.anchor.values())]
    ewc.penalty().backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= lr * p.grad
    for b, p, a in zip(before, model.parameters(), ewc.anchor.values()):
        after = (p - a).detach()
        assert torch.all(after.abs() <= b.abs() + 1e-12) and torch.all(after * b >= 0)


def test_online_decays_and_accumulate_sums():
    model, imp = model_and_importance()
    acc, onl = EWC(model, 1.0), EWC(model, 1.0, mode="online", gamma=0.25)
    for e in (acc, onl):
        e.consolidate(imp)
        e.consolidate(imp * 2)
    for n in imp:
        assert torch.allclose(acc.omega[n], 3 * imp[n])
        assert torch.allclose(onl.omega[n], 0.25 * imp[n] + 2 * imp[n])


def test_memory_bytes():
    model, imp = model_and_importance()
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    ewc, sep = EWC(model, 1.0), EWC(model, 1.0, mode="separate")
    for _ in range(3):
        ewc.consolidate(imp)
        sep.consolidate(imp)
    assert ewc.memory_bytes() == 2 * size          # Ω and θ*, whatever the number of tasks
    assert sep.memory_bytes() == 6 * size          # grows per task
    wva = WVA(model, 1.0)                           # unbound: consolidates all the same
    wva.consolidate(imp)
    assert wva.memory_bytes() == size               # Ω only
    half = WVA(model, 1.0, dtype=torch.bfloat16)
    half.consolidate(imp)
    assert half.memory_bytes() == size // 4         # bf16 instead of float64
    l2 = L2(model, 1.0)
    l2.consolidate()
    assert l2.memory_bytes() == size


def test_wva_half_precision_keeps_small_attenuations():
    """B = 1 − A is stored: λΩ = 1e-4 survives bf16 (A itself would round to exactly 1)."""
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    imp = Importance({n: torch.full_like(p, 1e-4) for n, p in model.named_parameters()})
    for curve in ("hyperbolic", "exponential"):
        half = WVA(model, 1.0, curve=curve, dtype=torch.bfloat16).wrap(
            torch.optim.SGD(model.parameters(), lr=0.1))
        half.consolidate(imp)
        half.consolidate(imp)
        assert torch.tensor(1 - 1e-4, dtype=torch.bfloat16) == 1      # why A is not stored
        for n, om in half.omega.items():
            assert torch.allclose(om, torch.full_like(om, 2e-4), rtol=1e-2), (curve, n)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        model(torch.randn(8, 4)).sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        half.step()
        for n, p in model.named_parameters():      # the step is (1 − B)·(−lr·g), not −lr·g
            big = grads[n].abs() > 0.5
            ratio = ((before[n] - p.detach()) / (0.1 * grads[n]))[big]
            assert big.any() and (ratio - (1 - 2e-4)).abs().max() < 5e-5, (curve, n, ratio)
        half.zero_grad()


def test_wva_with_zero_omega_matches_inner_optimizer():
    for make in (lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
                 lambda ps: torch.optim.Adam(ps, lr=1e-2), lambda ps: torch.optim.AdamW(ps),
                 lambda ps: torch.optim.RMSprop(ps, lr=1e-2)):
        ma, _ = model_and_importance()
        mb, _ = model_and_importance()
        oa = make(ma.parameters())
        wva = WVA(mb, 5.0, optimizer=make(mb.parameters()))
        wva.consolidate(Importance({n: torch.zeros_like(p) for n, p in mb.named_parameters()}))
        x = torch.randn(16, 5, dtype=torch.float64)
        for _ in range(5):
            for m, o in ((ma, oa), (mb, wva)):
                o.zero_grad()
                m(x).pow(2).mean().backward()
                o.step()
        for pa, pb in zip(ma.parameters(), mb.parameters()):
            assert torch.allclose(pa, pb, atol=1e-12)


def test_wva_grad_and_step_agree_step_by_step_for_plain_sgd():
    models = [model_and_importance()[0] for _ in range(2)]
    _, imp = model_and_importance()
    opts = [WVA(m, 2.0, on=on).wrap(torch.optim.SGD(m.parameters(), lr=0.3))
            for m, on in zip(models, ("step", "grad"))]
    for o in opts:
        o.consolidate(imp)
    x = torch.randn(8, 5, dtype=torch.float64)
    for _ in range(10):
        for m, o in zip(models, opts):
            o.zero_grad()
            m(x).pow(2).sum().backward()
            o.step()
    for pa, pb in zip(*(m.parameters() for m in models)):
        assert torch.allclose(pa, pb, atol=1e-12)


@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("hooked", [False, True])
@pytest.mark.parametrize("on", ["step", "grad"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, "bf16-state"])
def test_wva_fused_sgd_step_matches_attenuated_reference(maximize, hooked, on, dtype):
    """The plain-SGD fast path: per-group lr, maximize, unattenuated groups, missing grads;
    compiled (float32/64) and foreach (B stored in bf16) variants."""
    model, imp = model_and_importance()
    if dtype == torch.float32:
        model = model.float()
        imp = Importance({n: v.float() for n, v in imp.items()})
    extra = nn.Parameter(torch.randn(4, dtype=torch.float64))   # not attenuated
    first, second = list(model[0].parameters()), list(model[2].parameters())
    inner = torch.optim.SGD([{"params": first, "lr": 0.3}, {"params": second, "lr": 0.05}],
                            lr=0.1, maximize=maximize)
    wva = WVA(model, 2.0, on=on, dtype=torch.bfloat16 if dtype == "bf16-state" else None)
    assert wva.wrap(inner) is wva
    wva.add_param_group({"params": [extra], "lr": 0.2})
    calls = []
    if hooked:                       # a step hook on the base optimizer: it must still run
        inner.register_step_post_hook(lambda *_: calls.append(1))
    wva.consolidate(imp)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    extra_before = extra.detach().clone()
    x = torch.randn(8, 5, dtype=next(model.parameters()).dtype)
    (model(x).pow(2).sum() + extra.sum()).backward()
    model[2].bias.grad = None                                  # a parameter without gradient
    grads = {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}
    wva.step()
    sign = 1.0 if maximize else -1.0
    lrs = {"0.weight": 0.3, "0.bias": 0.3, "2.weight": 0.05}
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    for n, p in model.named_parameters():
        if grads[n] is None:
            assert torch.equal(p, before[n]), n
            continue
        if dtype == "bf16-state":     # B = λS/(1 + λS) rounded to bf16, then A = 1 − B
            b = (2.0 * imp[n] / (1 + 2.0 * imp[n])).to(torch.bfloat16)
            a = 1.0 - b.to(p.dtype)
        else:
            a = (1 / (1 + 2.0 * imp[n])).to(p.dtype)
        assert torch.allclose(p, before[n] + sign * lrs[n] * a * grads[n], atol=tol), n
        if on == "grad":                                       # .grad holds A ⊙ g
            assert torch.allclose(p.grad, a * grads[n], atol=tol), n
        else:                                                  # on="step" leaves .grad alone
            assert hooked or torch.equal(p.grad, grads[n]), n
    assert torch.allclose(extra, extra_before + sign * 0.2 * torch.ones(4, dtype=torch.float64))
    assert calls == ([1] if hooked else [])


def test_wva_step_attenuation_formula():
    model, imp = model_and_importance()
    inner = torch.optim.Adam(model.parameters(), lr=1e-2)
    wva = WVA(model, 2.0, curve="exponential", optimizer=inner)
    wva.consolidate(imp)
    reference, _ = model_and_importance()
    ref_opt = torch.optim.Adam(reference.parameters(), lr=1e-2)
    x = torch.randn(8, 5, dtype=torch.float64)
    prev = [p.detach().clone() for p in model.parameters()]
    for m, o in ((model, wva), (reference, ref_opt)):
        o.zero_grad()
        m(x).sum().backward()
        o.step()
    for (n, p), p0, r in zip(model.named_parameters(), prev, reference.parameters()):
        expected = p0 + torch.exp(-2.0 * imp[n]) * (r.detach() - p0)
        assert torch.allclose(p, expected, atol=1e-12), n


def test_scheduler_moves_inner_lr_and_state_dict_roundtrip(tmp_path):
    model, imp = model_and_importance()
    inner = torch.optim.SGD(model.parameters(), lr=1.0, momentum=0.9)
    wva = WVA(model, 3.0).wrap(inner)
    sched = torch.optim.lr_scheduler.StepLR(wva, step_size=1, gamma=0.5)
    wva.consolidate(imp)
    model(torch.randn(4, 5, dtype=torch.float64)).sum().backward()
    wva.step()
    sched.step()
    assert inner.param_groups[0]["lr"] == 0.5
    state = wva.state_dict()
    model2, _ = model_and_importance()
    wva2 = WVA(model2, 0.0).wrap(torch.optim.SGD(model2.parameters(), lr=1.0, momentum=0.9))
    with pytest.warns(UserWarning, match="saved with lam=3.0; this WVA had lam=0.0"):
        wva2.load_state_dict(state)
    assert wva2.lam == 3.0 and wva2.base_optimizer.param_groups[0]["lr"] == 0.5
    assert all(torch.equal(wva2.factor[n], wva.factor[n]) for n in imp)
    assert all(torch.allclose(wva.omega[n], imp[n], rtol=1e-5) for n in imp)
    path = tmp_path / "wva.safetensors"
    wva.save(path)
    wva3 = WVA(model2, 3.0)                   # unbound: save/load need no optimizer
    wva3.load(path)
    assert wva3.lam == 3.0 and all(torch.equal(wva3.factor[n], wva.factor[n]) for n in imp)


def test_save_load_refuses_a_different_model(tmp_path):
    model, imp = model_and_importance()
    ewc = EWC(model, 2.0)
    ewc.consolidate(imp)
    path = tmp_path / "ewc.safetensors"
    ewc.save(path)
    model2, _ = model_and_importance(1)
    again = EWC(model2, 0.5)
    with pytest.warns(UserWarning, match=r"saved with lam=2\.0; this EWC had lam=0\.5\. The "
                                         "saved values are used"):
        again.load(path)
    assert again.lam == 2.0 and again.n_tasks == 1
    assert all(torch.equal(again.anchor[n], ewc.anchor[n]) for n in imp)
    other = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    with pytest.raises(ValueError, match=r"0\.weight: saved \(7, 5\) vs model \(8, 5\)"):
        EWC(other, 1.0).load(path)
    with pytest.raises(ValueError, match="holds EWC state"):
        L2(model, 1.0).load(path)
    with pytest.raises(ValueError, match="mode 'accumulate'"):
        EWC(model, 1.0, mode="separate").load(path)


@pytest.mark.parametrize("make", [lambda m, lam: EWC(m, lam), lambda m, lam: L2(m, lam),
                                  lambda m, lam: WVA(m, lam),
                                  lambda m, lam: WVA(torch.optim.SGD(m.parameters(), lr=0.1),
                                                     m, lam)])
def test_bad_lambda(make):
    model, _ = model_and_importance()
    for bad in (-1.0, float("nan"), float("inf"), "1", True):
        with pytest.raises(ValueError, match=r"'lam'.*finite float >= 0"):
            make(model, bad)


def test_consolidation_errors():
    model, imp = model_and_importance()
    ewc = EWC(model, 1.0)
    with pytest.raises(TypeError, match="needs the finished task's Importance"):
        ewc.consolidate()
    with pytest.raises(ValueError, match="missing"):
        ewc.consolidate(Importance({"0.weight": imp["0.weight"]}))
    with pytest.raises(ValueError, match="NaN or inf"):
        Importance({"w": torch.tensor([float("nan")])})
    with pytest.raises(ValueError, match=r"needs the optimizer.s learning rate"):
        EWC(model, 1.0, stabilized=True)
    with pytest.raises(ValueError, match="mode"):
        EWC(model, 1.0, mode="sum")
    with pytest.raises(ValueError, match="gamma"):
        EWC(model, 1.0, mode="online", gamma=1.5)
    ewc.consolidate(imp)
    model.add_module("extra", nn.Linear(3, 3))
    with pytest.raises(ValueError, match=r"added \['extra.bias', 'extra.weight'\]"):
        ewc.penalty()
    with pytest.raises(ValueError, match="changed after it was created"):
        ewc.apply_to_grad()


def test_wva_errors():
    model, _ = model_and_importance()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    other = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="curve"):
        WVA(model, 1.0, curve="linear")
    with pytest.raises(ValueError, match="'on'"):
        WVA(model, 1.0, on="loss")
    with pytest.raises(TypeError, match=r"needs a torch\.optim\.Optimizer"):
        WVA(model, 1.0).wrap("sgd")
    with pytest.raises(TypeError, match=r"needs a torch\.optim\.Optimizer"):
        WVA(model, 1.0, optimizer="sgd")
    with pytest.raises(ValueError, match="not optimized by the base optimizer"):
        WVA(model, 1.0).wrap(torch.optim.SGD(other.parameters(), lr=0.1))
    with pytest.raises(TypeError, match=r"WVA\(\) missing 1 required positional argument: 'lam'"):
        WVA(model)
    with pytest.raises(TypeError, match=r"WVA\(\) got an unexpected keyword argument 'cuve'"):
        WVA(model, 1.0, cuve="exponential")
    with pytest.raises(TypeError, match=r"optimizer=\.\.\.\) or bind it with \.wrap"):
        WVA(model, 1.0, opt)                        # the optimizer goes by keyword
    # the earlier form, a torch optimizer first, keeps its errors
    with pytest.raises(ValueError, match="curve"):
        WVA(opt, model, 1.0, curve="linear")
    with pytest.raises(ValueError, match="'on'"):
        WVA(opt, model, 1.0, on="loss")
    with pytest.raises(TypeError, match=r"needs a torch\.optim\.Optimizer"):
        WVA("sgd", model, 1.0)
    with pytest.raises(ValueError, match="not optimized by the base optimizer"):
        WVA(torch.optim.SGD(other.parameters(), lr=0.1), model, 1.0)
    with pytest.raises(TypeError, match=r"WVA\(\) missing 1 required positional argument: 'lam'"):
        WVA(opt, model)


@pytest.mark.parametrize("optimizer, on", [("sgd", "step"), ("sgd", "grad"), ("adam", "step"),
                                           ("sgd-momentum", "step")])
def test_wva_wrap_is_the_earlier_form_bitwise(optimizer, on):
    """WVA(model, λ).wrap(opt) ≡ WVA(model, λ, optimizer=opt) ≡ the earlier WVA(opt, model, λ)."""
    def make_opt(m):
        if optimizer == "adam":
            return torch.optim.Adam(m.parameters(), lr=1e-2)
        return torch.optim.SGD(m.parameters(), lr=0.1,
                               momentum=0.9 if optimizer == "sgd-momentum" else 0)

    builds = [lambda m: WVA(m, 2.0, on=on).wrap(make_opt(m)),
              lambda m: WVA(m, 2.0, on=on, optimizer=make_opt(m)),
              lambda m: WVA(make_opt(m), m, 2.0, on=on),
              lambda m: WVA(make_opt(m), m, lam=2.0, on=on)]       # as the README wrote it
    models, wvas = [], []
    for build in builds:
        model, _ = model_and_importance()
        models.append(model)
        wvas.append(build(model))
    x = torch.randn(8, 5, dtype=torch.float64)
    for task in range(3):
        for _ in range(4):
            for m, w in zip(models, wvas):
                w.zero_grad()
                m(x + task).pow(2).mean().backward()
                w.step()
        for m, w in zip(models, wvas):
            w.consolidate(Importance({n: p.detach().abs() for n, p in m.named_parameters()}))
    for m in models[1:]:
        for p, q in zip(models[0].parameters(), m.parameters()):
            assert torch.equal(p, q)
    assert all(repr(w) == repr(wvas[0]) for w in wvas)
    assert all(str(w.state_dict()) == str(wvas[0].state_dict()) for w in wvas)


def test_unbound_wva():
    """Consolidation state works before the optimizer is bound; the optimizer interface raises."""
    model, imp = model_and_importance()
    wva = WVA(model, 2.0)
    assert wva.base_optimizer is None and "unbound" in repr(wva)
    for use in (wva.step, wva.zero_grad, wva.state_dict):
        with pytest.raises(RuntimeError, match=r"call wva\.wrap\(optimizer\) first"):
            use()
    wva.consolidate(imp)
    assert wva.n_tasks == 1 and wva.memory_bytes() > 0
    assert all(torch.allclose(wva.factor[n], 1 / (1 + 2.0 * imp[n])) for n in imp)
    assert all(torch.allclose(wva.omega[n], imp[n]) for n in imp)
    calls = []
    wva.register_step_post_hook(lambda *_: calls.append(1))     # kept when it is bound
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    assert wva.wrap(opt) is wva and wva.base_optimizer is opt
    assert wva.param_groups is opt.param_groups
    before = [p.detach().clone() for p in model.parameters()]
    model(torch.randn(4, 5, dtype=torch.float64)).sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    wva.step()
    for (n, p), b, g in zip(model.named_parameters(), before, grads):
        assert torch.allclose(p, b - 0.1 * wva.factor[n] * g, atol=1e-12)
    assert calls == [1]
    wva.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(ValueError, match="already wraps"):
        wva.wrap(torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(ValueError, match="already wraps"):
        WVA(model, 1.0, optimizer=opt).wrap(opt)


def test_unbound_wva_saves_and_loads(tmp_path):
    model, imp = model_and_importance()
    wva = WVA(model, 2.0, curve="exponential")
    wva.consolidate(imp)
    wva.save(tmp_path / "wva.safetensors")
    again = WVA(model, 0.0)
    with pytest.warns(UserWarning, match="lam=2.0, curve='exponential'; this WVA had lam=0.0, "
                                         "curve='hyperbolic'"):
        again.load(tmp_path / "wva.safetensors")
    assert again.lam == 2.0 and again.curve == "exponential" and again.base_optimizer is None
    assert all(torch.equal(again.factor[n], wva.factor[n]) for n in imp)


def test_l2_is_ewc_with_uniform_importance():
    model, imp = model_and_importance()
    ones = Importance({n: torch.ones_like(v) for n, v in imp.items()})
    l2, ewc = L2(model, 3.0), EWC(model, 3.0)
    assert isinstance(l2, EWC) and not l2.needs_importance and l2.name == "l2"
    l2.consolidate()
    ewc.consolidate(ones)
    l2.consolidate(imp)                               # any importance is ignored
    ewc.consolidate(ones * 0.0)                       # Ω = Σ_t I_t stays 1
    assert l2.omega == {} and repr(l2) == "L2(lam=3.0, tasks=2)"
    params, coefs, _, factor = l2.penalty_terms()
    assert coefs == [None] * len(params) and factor == 1.5
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    assert l2.memory_bytes() == size                 # θ* only
    perturb(model)
    diffs = {n: p.detach() - l2.anchor[n] for n, p in model.named_parameters()}
    expected = sum((d ** 2).sum() for d in diffs.values()) * 1.5          # (λ/2) Σ (θ − θ*)²
    assert torch.isclose(l2.penalty(), expected, rtol=1e-12)
    assert torch.isclose(ewc.penalty(), expected, rtol=1e-12)
    l2.penalty().backward()
    autograd = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    l2.apply_to_grad()
    for n, p in model.named_parameters():            # λ(θ − θ*), both ways
        assert torch.allclose(p.grad, 3.0 * diffs[n], rtol=1e-12, atol=0)
        assert torch.allclose(autograd[n], 3.0 * diffs[n], rtol=1e-12, atol=0)


def test_l2_loads_a_file_saved_by_the_earlier_l2(tmp_path):
    """Before L2 was built on EWC it saved anchor/<name> with the config {lam, n_tasks}."""
    import json

    from safetensors.torch import save_file

    model, _ = model_and_importance()
    anchors = {n: p.detach() + 1.0 for n, p in model.named_parameters()}
    meta = {"class": "L2", "config": {"lam": 0.5, "n_tasks": 2},
            "parameters": {n: list(p.shape) for n, p in model.named_parameters()}}
    path = tmp_path / "old-l2.safetensors"
    save_file({f"anchor/{n}": v.contiguous() for n, v in anchors.items()}, str(path),
              metadata={"myelin.consolidation": json.dumps(meta)})
    l2 = L2(model, 3.0)
    with pytest.warns(UserWarning, match="saved with lam=0.5; this L2 had lam=3.0"):
        l2.load(path)
    assert l2.lam == 0.5 and l2.n_tasks == 2 and l2.omega == {}
    assert all(torch.equal(l2.anchor[n], anchors[n]) for n in anchors)
    count = sum(p.numel() for p in model.parameters())
    assert l2.penalty().item() == pytest.approx(0.25 * count)     # (λ/2)·Σ 1²
    l2.save(tmp_path / "new-l2.safetensors")                       # still the same layout
    again = L2(model, 0.5)
    again.load(tmp_path / "new-l2.safetensors")
    assert again.lam == 0.5 and again.n_tasks == 2
    assert sorted(again._tensors()) == sorted(f"anchor/{n}" for n in anchors)


def test_negative_importances_are_clipped_with_a_warning():
    model, imp = model_and_importance()
    signed = Importance({n: v - 0.5 for n, v in imp.items()})
    ewc = EWC(model, 1.0)
    with pytest.warns(UserWarning, match="were negative"):
        ewc.consolidate(signed)
    assert all((o >= 0).all() for o in ewc.omega.values())


@pytest.mark.parametrize("curve", ["hyperbolic", "exponential"])
def test_wva_factor_update_equals_attenuation_of_summed_importance(curve):
    model, imp = model_and_importance()
    wva = WVA(model, 0.7, curve=curve)
    for scale in (1.0, 2.5, 0.5):
        wva.consolidate(imp * scale)
    for n in imp:
        s = 4.0 * imp[n]                                  # S = Σ_t I_t
        a = 1 / (1 + 0.7 * s) if curve == "hyperbolic" else torch.exp(-0.7 * s)
        assert torch.allclose(wva.factor[n], a, rtol=1e-12)
        assert torch.allclose(wva.omega[n], 4.0 * imp[n], rtol=1e-5)


def test_attenuation_curves():
    omega = torch.tensor([0.0, 1.0, 4.0])
    assert torch.allclose(attenuation(omega, 0.5), torch.tensor([1.0, 1 / 1.5, 1 / 3.0]))
    assert torch.allclose(attenuation(omega, 0.5, "exponential"), torch.exp(-0.5 * omega))
    with pytest.raises(ValueError):
        attenuation(omega, 1.0, "cubic")


def test_wva_grad_attenuation_with_a_closure_optimizer():
    """Optimizers that recompute gradients in a closure (LBFGS) still see attenuated ones."""
    model, imp = model_and_importance()
    wva = WVA(model, 1e6, on="grad").wrap(torch.optim.LBFGS(model.parameters(), lr=0.5,
                                                            max_iter=3))
    wva.consolidate(Importance({n: torch.ones_like(v) for n, v in imp.items()}))  # A ≈ 1e-6
    before = [p.detach().clone() for p in model.parameters()]
    x = torch.randn(16, 5, dtype=torch.float64)

    def closure():
        wva.zero_grad()
        loss = model(x).pow(2).mean()
        loss.backward()
        return loss

    wva.step(closure)
    moved = max((p - b).abs().max().item() for p, b in zip(model.parameters(), before))
    assert moved < 1e-4


def test_wva_stores_a_in_full_precision_b_in_half_and_converts_on_load(tmp_path):
    """A is kept as is in fp32/fp64 (one-op SGD step), as B = 1 − A in bf16; loads convert."""
    model, imp = model_and_importance()
    full = WVA(model, 2.0).wrap(torch.optim.SGD(model.parameters(), lr=0.1))
    half = WVA(model, 2.0, dtype=torch.bfloat16)
    for wva in (full, half):
        wva.consolidate(imp)
    assert all(k.startswith("factor/") for k in full._tensors())
    assert all(k.startswith("reduction/") for k in half._tensors())
    expected = {n: 1 / (1 + 2.0 * imp[n]) for n in imp}
    for n in imp:
        assert torch.allclose(full.factor[n], expected[n], rtol=1e-12)
        assert torch.allclose(full.reduction[n], 1.0 - expected[n], rtol=1e-12)
    for source, target_dtype, tol in ((full, torch.bfloat16, 1e-2), (half, None, 1e-2),
                                      (full, None, 1e-12)):
        path = tmp_path / "wva.safetensors"
        source.save(path)
        again = WVA(model, 2.0, dtype=target_dtype)
        again.load(path)
        for n in imp:
            assert again.factor[n].dtype == (target_dtype or torch.float64)
            assert torch.allclose(again.factor[n].double(), expected[n], rtol=tol), n
    # a state_dict written before A was stored (B under "reduction") still loads
    old = full.state_dict()
    old["wva"] = {**old["wva"], "reduction": full.reduction}
    del old["wva"]["stored"]
    again = WVA(model, 2.0, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    again.load_state_dict(old)
    assert all(torch.allclose(again.factor[n], expected[n], rtol=1e-12) for n in imp)
