"""EWC.wrap / L2.wrap: the penalty applied by the optimizer step equals apply_to_grad + step."""

import copy

import pytest
import torch
from torch import nn

from myelin import EWC, L2, Importance
from myelin.consolidation import PenalizedOptimizer
from myelin.consolidation._kernels import sgd_pull_kernels

from .helpers import perturb, tiny_model_and_importance


def groups_of(model, extra, maximize):
    first, second = list(model[0].parameters()), list(model[2].parameters())
    return [{"params": first, "lr": 0.3}, {"params": second, "lr": 0.05},
            {"params": [extra], "lr": 0.2}], {"lr": 0.1, "maximize": maximize}


PENALTIES = {
    "ewc": lambda m: EWC(m, 3.0),
    "ewc-stabilized": lambda m: EWC(m, 3.0, stabilized=True, lr=0.3),
    "ewc-separate": lambda m: EWC(m, 3.0, mode="separate"),
    "ewc-online": lambda m: EWC(m, 3.0, mode="online", gamma=0.5),
    "l2": lambda m: L2(m, 3.0),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("penalty", list(PENALTIES))
@pytest.mark.parametrize("maximize", [False, True])
@pytest.mark.parametrize("optimizer", ["sgd", "sgd-hooked", "sgd-momentum", "adam"])
def test_wrapped_step_equals_apply_to_grad_then_step(dtype, penalty, maximize, optimizer):
    """Per-group lr, maximize, a parameter outside the penalty, one without gradient."""
    model, imp = tiny_model_and_importance(dtype)
    extra = nn.Parameter(torch.randn(4, dtype=dtype))
    models = [model, copy.deepcopy(model)]
    extras = [extra, nn.Parameter(extra.detach().clone())]
    cons, opts, calls = [], [], []
    for m, e in zip(models, extras):
        groups, kw = groups_of(m, e, maximize)
        if optimizer == "adam":
            opt = torch.optim.Adam(groups, **kw)
        else:
            opt = torch.optim.SGD(groups, momentum=0.9 if optimizer == "sgd-momentum" else 0,
                                  **kw)
        if optimizer == "sgd-hooked":
            opt.register_step_post_hook(lambda *_: calls.append(1))
        c = PENALTIES[penalty](m)
        for _ in range(2):
            c.consolidate(imp)
        cons.append(c)
        opts.append(opt)
    wrapped = cons[1].wrap(opts[1])
    x = torch.randn(8, 5, dtype=dtype)
    for step in range(3):
        perturb(models[0], 0.1)
        with torch.no_grad():
            for p0, p1 in zip(models[0].parameters(), models[1].parameters()):
                p1.copy_(p0)
        for m, e, opt in zip(models, extras, (opts[0], wrapped)):
            opt.zero_grad()
            (m(x).pow(2).sum() + (e * e).sum()).backward()
            m[2].bias.grad = None                        # a parameter without gradient
        grads = [None if p.grad is None else p.grad.clone() for p in models[1].parameters()]
        cons[0].apply_to_grad()
        opts[0].step()
        wrapped.step()
        tol = 1e-5 if dtype == torch.float32 else 1e-12
        for p0, p1 in zip(models[0].parameters(), models[1].parameters()):
            assert torch.allclose(p0, p1, atol=tol, rtol=tol), (step, penalty, optimizer)
        assert torch.allclose(extras[0], extras[1], atol=tol)
        if optimizer == "sgd" and penalty != "ewc-separate":   # fused: .grad left alone
            for g, p in zip(grads, models[1].parameters()):
                assert (g is None and p.grad is None) or torch.equal(g, p.grad)
    if optimizer == "sgd":                             # the compiled one-pass kernel ran
        assert wrapped._plan.compiled == (penalty not in ("l2", "ewc-separate"))
    assert len(calls) == (6 if optimizer == "sgd-hooked" else 0)   # both optimizers' hooks ran


def wrapped_ewc(dtype):
    """A perturbed tiny model, its importance, EWC(λ 2) consolidated on it, and EWC.wrap(SGD)."""
    model, imp = tiny_model_and_importance(dtype)
    ewc = EWC(model, 2.0)
    ewc.consolidate(imp)
    perturb(model)
    return model, imp, ewc, ewc.wrap(torch.optim.SGD(model.parameters(), lr=0.1))


def test_a_step_hook_on_the_wrapper_sees_the_penalty_gradient():
    """SI's tracker reads .grad after the step: it must include the penalty's gradient."""
    model, imp, ewc, opt = wrapped_ewc(torch.float32)
    seen = []
    opt.register_step_post_hook(lambda *_: seen.append(model[0].weight.grad.clone()))
    model(torch.randn(4, 5)).sum().backward()
    task_grad = model[0].weight.grad.clone()
    pull = 2.0 * imp["0.weight"] * (model[0].weight.detach() - ewc.anchor["0.weight"])   # λΩd
    opt.step()
    assert torch.allclose(seen[0], task_grad + pull, atol=1e-6)


def test_fused_step_falls_back_on_non_contiguous_gradients_and_follows_the_scheduler():
    model, imp = tiny_model_and_importance(torch.float32)
    ref = copy.deepcopy(model)
    ewc, ewc_ref = EWC(model, 2.0), EWC(ref, 2.0)
    ewc.consolidate(imp)
    ewc_ref.consolidate(imp)
    opt = ewc.wrap(torch.optim.SGD(model.parameters(), lr=0.1))
    opt_ref = torch.optim.SGD(ref.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    sched_ref = torch.optim.lr_scheduler.StepLR(opt_ref, step_size=1, gamma=0.5)
    perturb(model)
    ref.load_state_dict(model.state_dict())
    for step in range(3):
        model.zero_grad()
        model(torch.randn(4, 5)).sum().backward()
        if step == 1:                                  # same values, not contiguous
            model[0].weight.grad = model[0].weight.grad.t().contiguous().t()
            assert not model[0].weight.grad.is_contiguous()
        for p, q in zip(model.parameters(), ref.parameters()):
            q.grad = p.grad.clone()
        ewc_ref.apply_to_grad()
        opt_ref.step()
        opt.step()
        sched.step()
        sched_ref.step()
        for p, q in zip(model.parameters(), ref.parameters()):
            assert torch.allclose(p, q, atol=1e-6), step
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 / 8)


def test_closure_and_state_dict():
    model, _, ewc, opt = wrapped_ewc(torch.float64)
    x = torch.randn(6, 5, dtype=torch.float64)
    seen = []

    def closure():
        opt.zero_grad()
        loss = model(x).pow(2).sum()
        loss.backward()
        return loss

    def penalized_grad():
        closure()
        ewc.apply_to_grad()
        seen.append([p.grad.clone() for p in model.parameters()])

    before = [p.detach().clone() for p in model.parameters()]
    opt.step(closure)
    moved = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p, b in zip(model.parameters(), before):
            p.copy_(b)
    penalized_grad()
    for p, m, g in zip(model.parameters(), moved, seen[0]):   # closure path: −lr·(g + pull)
        assert torch.allclose(m, p - 0.1 * g, atol=1e-10)
    state = opt.state_dict()
    assert state == opt.base_optimizer.state_dict()
    opt.load_state_dict(state)
    assert "PenalizedOptimizer(SGD" in repr(opt)


def test_wrap_errors():
    model, _ = tiny_model_and_importance(torch.float32)
    ewc = EWC(model, 1.0)
    with pytest.raises(TypeError, match=r"needs a torch\.optim\.Optimizer"):
        ewc.wrap("sgd")
    other = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="not optimized by the base optimizer"):
        ewc.wrap(torch.optim.SGD(other.parameters(), lr=0.1))
    opt = ewc.wrap(torch.optim.SGD(model.parameters(), lr=0.1))
    assert isinstance(opt, PenalizedOptimizer)
    with pytest.raises(ValueError, match="already applies a penalty"):
        L2(model, 1.0).wrap(opt)
    model.add_module("extra", nn.Linear(3, 3))
    opt.zero_grad()
    with pytest.raises(ValueError, match="changed after it was created"):
        for _ in range(64):
            opt.step()


def test_loading_state_replaces_the_cached_terms(tmp_path):
    """An EWC that already stepped must use the loaded Ω and θ*, not its cached ones."""
    model, imp = tiny_model_and_importance(torch.float64)
    ewc = EWC(model, 2.0)
    ewc.consolidate(imp)
    perturb(model)
    first = ewc.penalty().item()
    other = EWC(model, 2.0)
    other.consolidate(imp * 3.0)                   # same number of tasks, other Ω and anchor
    other.save(tmp_path / "s.safetensors")
    expected = other.penalty().item()
    ewc.load(tmp_path / "s.safetensors")
    assert ewc.penalty().item() == pytest.approx(expected) != pytest.approx(first)


def test_the_compiled_kernel_follows_torchs_thread_count():
    """One torch thread (e.g. one of several processes side by side): the serial kernel."""
    torch.manual_seed(0)
    model = nn.Linear(300, 200)                          # 60 000 weights: parallel-sized
    ewc = EWC(model, 1.0)
    ewc.consolidate(Importance({n: torch.rand_like(p) for n, p in model.named_parameters()}))
    opt = ewc.wrap(torch.optim.SGD(model.parameters(), lr=0.1))
    before = torch.get_num_threads()
    kernels = sgd_pull_kernels()
    try:
        for threads, parallel in ((1, False), (2, True)):
            torch.set_num_threads(threads)
            model(torch.randn(3, 300)).sum().backward()
            opt.step()
            assert opt._plan.compiled and opt._plan.threads == threads
            assert opt._plan.entries[0][-1] is kernels[parallel]
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("penalty", ["ewc", "l2"])
def test_the_fused_step_is_planned_once(penalty):
    """The plan is kept across steps (L2's uniform terms are cached like EWC's)."""
    model, imp = tiny_model_and_importance(torch.float32)
    cons = PENALTIES[penalty](model)
    cons.consolidate(imp)
    opt = cons.wrap(torch.optim.SGD(model.parameters(), lr=0.1))
    plans = []
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(4, 5)).sum().backward()
        opt.step()
        plans.append(opt._plan)
    assert plans[0] is plans[1] is plans[2] and plans[0].usable
    cons.consolidate(imp)                              # new terms: a new plan
    model(torch.randn(4, 5)).sum().backward()
    opt.step()
    assert opt._plan is not plans[0]


@pytest.mark.parametrize("penalty", ["ewc", "l2"])
def test_a_scheduler_on_the_wrapper_still_moves_the_lr_after_load_state_dict(penalty):
    # torch's load_state_dict replaces the base optimizer's group list (accelerate's
    # AcceleratedOptimizer calls it on every Trainer run); the wrapper must share the new one
    model, imp = tiny_model_and_importance(torch.float32)
    pen = PENALTIES[penalty](model)
    pen.consolidate(imp)
    opt = pen.wrap(torch.optim.SGD(model.parameters(), lr=0.1))
    opt.load_state_dict(opt.state_dict())
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    opt.step()
    sched.step()
    assert opt.base_optimizer.param_groups[0]["lr"] == pytest.approx(0.05)
    assert opt.param_groups is opt.base_optimizer.param_groups
