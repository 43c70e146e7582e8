"""GEM's dual QP against brute force; GEM and A-GEM projections; bad input."""

import itertools

import numpy as np
import pytest
import torch

import myelin
from myelin.methods import Context
from myelin.replay import AGEM, GEM, gem_dual, gem_project
from myelin.scenarios import SCENARIOS
from tests.conftest import model_for


def _brute_force(P, q, margin):
    """Minimise ½vᵀPv + qᵀv s.t. v ≥ margin by trying every set of variables at the bound."""
    t = len(q)
    best, best_val = None, np.inf
    for active in itertools.product([False, True], repeat=t):
        active = np.array(active)
        v = np.full(t, margin, dtype=float)
        free = ~active
        if free.any():          # stationarity in the free variables, the rest at the bound
            rhs = -q[free] - P[np.ix_(free, active)] @ v[active]
            v[free] = np.linalg.solve(P[np.ix_(free, free)], rhs)
        if (v >= margin - 1e-10).all():
            val = 0.5 * v @ P @ v + q @ v
            if val < best_val:
                best, best_val = v, val
    return best


@pytest.mark.parametrize("seed", range(40))
def test_gem_dual_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    t, dim = rng.integers(1, 7), rng.integers(3, 30)
    M = rng.normal(size=(t, dim)) * rng.uniform(0.1, 10)
    g = rng.normal(size=dim)
    P = M @ M.T
    P = 0.5 * (P + P.T) + 1e-3 * np.eye(t)
    margin = [0.0, 0.5, 2.0][seed % 3]
    v = gem_dual(P, M @ g, margin)
    np.testing.assert_allclose(v, _brute_force(P, M @ g, margin), rtol=1e-6, atol=1e-8)


def test_gem_projection_removes_conflicts():
    rng = np.random.default_rng(0)
    M = torch.tensor(rng.normal(size=(4, 50)))
    g = -M.sum(0) + torch.tensor(rng.normal(size=50)) * 0.1      # conflicts with every row
    assert (M @ g < 0).all()
    projected = gem_project(g, M, margin=0.0, eps=1e-12)
    assert (M @ projected > -1e-6).all()
    # with no margin and a negligible ridge g̃ is the closest gradient meeting the constraints
    # (KKT: g̃ − g = Mᵀv, v ≥ 0): any feasible direction is farther from g
    for _ in range(20):
        other = projected + torch.tensor(rng.normal(size=50)) * 0.1
        if (M @ other >= 0).all():
            assert (other - g).norm() >= (projected - g).norm() - 1e-9


def test_gem_dual_refuses_bad_shapes():
    with pytest.raises(ValueError, match="needs P"):
        gem_dual(np.eye(3), np.zeros(2), 0.5)


def _ctx(scenario, model, task_index):
    return Context(model, torch.optim.SGD(model.parameters(), lr=0.1), scenario,
                   myelin.losses.CrossEntropy(), task_index=task_index)


def test_agem_projects_only_on_conflict(scenario):
    model = model_for(scenario)
    ctx = _ctx(scenario, model, 0)
    method = AGEM(memory_per_task=20, reference_batch=30)
    method.setup(ctx)
    x, y = scenario.tasks[0].train.batch(slice(0, 20))
    method.after_step(ctx, (x, y))
    # task 0: nothing to protect, the gradient is left alone
    model.zero_grad()
    ctx.loss(model, (x, y)).backward()
    before = [p.grad.clone() for p in model.parameters()]
    method.after_backward(ctx, (x, y))
    assert all(torch.equal(a, p.grad) for a, p in zip(before, model.parameters()))
    # task 1: the projected gradient is orthogonal to g_ref when they conflicted
    ctx.task_index = 1
    params = list(model.parameters())
    g_ref_parts = torch.autograd.grad(ctx.loss(model, (x, y)), params)
    g_ref = torch.cat([p.reshape(-1) for p in g_ref_parts])
    for p, r in zip(params, g_ref_parts):          # a gradient pointing against g_ref
        p.grad = -r.clone() + 0.01 * torch.randn_like(r)
    g = torch.cat([p.grad.reshape(-1) for p in params])
    assert torch.dot(g, g_ref) < 0
    method.after_backward(ctx, (x, y))
    g_new = torch.cat([p.grad.reshape(-1) for p in params])
    assert abs(float(torch.dot(g_new, g_ref))) < 1e-5 * float(g_ref.norm() * g.norm())
    expected = g - torch.dot(g, g_ref) / torch.dot(g_ref, g_ref) * g_ref
    torch.testing.assert_close(g_new, expected, rtol=1e-4, atol=1e-6)
    assert method.projections == 1
    # an agreeing gradient passes unchanged
    for p, r in zip(params, g_ref_parts):
        p.grad = r.clone()
    method.after_backward(ctx, (x, y))
    torch.testing.assert_close(torch.cat([p.grad.reshape(-1) for p in params]), g_ref)


def test_gem_constrains_every_past_task(scenario):
    model = model_for(scenario)
    ctx = _ctx(scenario, model, 0)
    method = GEM(memory_per_task=15)
    method.setup(ctx)
    for k in (0, 1):
        ctx.task_index = k
        method.prepare_batch(ctx, scenario.tasks[k].train.batch(slice(0, 15)))
    ctx.task_index = 2
    params = list(model.parameters())
    grads = []
    for k in (0, 1):
        batch = method.memory.get(method.memory.task_slots(k))
        grads.append(torch.cat([g.reshape(-1) for g in
                                torch.autograd.grad(ctx.loss(model, batch), params)]))
    M = torch.stack(grads)
    for p, a, b in zip(params, *[torch.autograd.grad(ctx.loss(model, method.memory.get(
            method.memory.task_slots(k))), params) for k in (0, 1)]):
        p.grad = -(a + b).clone()
    g = torch.cat([p.grad.reshape(-1) for p in params])
    method.after_backward(ctx, None)
    g_new = torch.cat([p.grad.reshape(-1) for p in params])
    assert (M @ g < 0).all() and method.projections == 1
    # KKT of the dual: M g̃ = μ − εv with μ ≥ 0, v ≥ margin; g̃ = Mᵀv + g
    M64 = M.double()
    P = (M64 @ M64.T).numpy() + 1e-3 * np.eye(2)
    v = torch.tensor(gem_dual(P, (M64 @ g.double()).numpy(), 0.5))
    assert (v >= 0.5 - 1e-9).all()
    torch.testing.assert_close(g_new.double(), M64.T @ v + g.double(), rtol=1e-5, atol=1e-7)
    assert (M64 @ g_new.double() + 1e-3 * v > -1e-6).all()


def test_gem_on_one_task_warns_and_trains_plainly():
    sc = SCENARIOS.get("permuted-digits")(1, seed=0)
    with pytest.warns(UserWarning, match="no past task"):
        r = myelin.fit(sc, model_for(sc), "gem", method_options={"memory_per_task": 10},
                       batch_size=10, progress=False)
    ref = myelin.fit(sc, model_for(sc), "finetune", batch_size=10, progress=False)
    assert r.accuracy == ref.accuracy


@pytest.mark.parametrize("options", [{"margin": -1.0}, {"eps": 0.0}, {"memory_per_task": 0},
                                     {"memory": -3}, {"memory": 10, "memory_per_task": 5}])
def test_gem_bad_options(options):
    with pytest.raises(ValueError):
        myelin.make_method("gem", **options)


def test_agem_bad_options():
    with pytest.raises(ValueError, match="reference_batch"):
        myelin.make_method("agem", reference_batch=0)
