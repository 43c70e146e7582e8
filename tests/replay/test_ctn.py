"""CTN (Contextual Transformation Networks): the model, the bilevel step, memories, fit."""

import pytest
import torch
import torch.nn.functional as F

import myelin
import myelin.replay.ctn  # registers "ctn" and the "ctn-mlp" model
from myelin.data.datasets import ArrayDataset
from myelin.losses import CrossEntropy
from myelin.methods import METHODS, Context, make_method
from myelin.models import MODELS, mlp
from myelin.replay.ctn import CTN, CTNNet, ctn
from myelin.scenarios import SCENARIOS, Scenario, Task
from myelin.train import evaluate


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny matrices: one thread is much faster than two contending ones."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# the model ------------------------------------------------------------------------------------
def test_ctnnet_shapes_parameters_and_task_selection():
    torch.manual_seed(0)
    net = CTNNet((1, 8, 8), 10, (16, 12), n_tasks=3, emb_dim=4)
    x = torch.randn(5, 1, 8, 8)
    assert net(x).shape == (5, 10)
    base = {id(p) for p in net.base_parameters()}
    context = {id(p) for p in net.context_parameters()}
    assert not base & context and base | context == {id(p) for p in net.parameters()}
    out0, out1 = net(x, task=0), net(x, task=1)
    assert not torch.allclose(out0, out1)                   # the context changes the features
    net.task = 1
    assert torch.equal(net(x), out1)
    with net.task_context(2):
        assert torch.equal(net(x), net(x, task=2))
    assert net.task == 1
    per_sample = net(x, task=torch.tensor([0, 1, 1, 0, 1]))  # one context per row
    assert torch.allclose(per_sample[0], out0[0]) and torch.allclose(per_sample[1], out1[1])
    with pytest.raises(ValueError, match="task"):
        net.task = 3
    with pytest.raises(ValueError, match="task indices"):
        net(x, task=torch.tensor([0, 1, 5, 0, 0]))
    for bad in ({"hidden": ()}, {"n_tasks": 0}, {"emb_dim": 0}, {"hidden": (4, 0)}):
        with pytest.raises(ValueError):
            CTNNet((1, 8, 8), 10, **bad)
    built = MODELS.get("ctn-mlp")((1, 8, 8), 10, (8,), max_tasks=4, emb_dim=3)
    assert isinstance(built, CTNNet) and built.n_tasks == 4 and built.hidden == (8,)


def test_registered_with_cli_options():
    from myelin import cli

    assert "ctn" in METHODS and isinstance(make_method("ctn"), CTN)
    options = cli.option_set()
    assert options["temperature"].takers["ctn"] == ("temperature", 5.0)
    assert "model" in options["max_tasks"].groups
    spec = cli.resolve({"model": "ctn-mlp", "method": "ctn"}, options)
    assert spec["memory_per_task"] is None and spec["outer_steps"] == 2
    assert make_method("ctn", **cli._kwargs(spec, cli._components(spec), "method")
                       ).config["memory_per_task"] == 50


def test_bad_options_are_refused():
    for bad in ({"memory_per_task": 0}, {"memory": -3}, {"temperature": 0.0},
                {"temperature": -1.0}, {"semantic_fraction": 0.0}, {"semantic_fraction": 1.0},
                {"replay_batch": 0}, {"inner_steps": 0}, {"outer_steps": 0},
                {"context_lr": 0.0}, {"kd_weight": -1.0}, {"context_clip": 0.0},
                {"memory": 10, "memory_per_task": 5}):
        with pytest.raises(ValueError):
            ctn(**bad)


# a tiny scenario for hand-checked steps -------------------------------------------------------
def _tiny(setting):
    g = torch.Generator().manual_seed(1)
    classes = [[0, 1], [1, 2]] if setting == "task" else [[0, 1, 2], [0, 1, 2]]
    tasks = []
    for i, c in enumerate(classes):
        x = torch.randn(12, 3, generator=g, dtype=torch.float64)
        y = torch.tensor(c)[torch.randint(0, len(c), (12,), generator=g)]
        tasks.append(Task(f"t{i}", ArrayDataset(x, y), ArrayDataset(x, y), c))
    return Scenario("tiny", tasks, n_classes=3, setting=setting)


def _begin(method, ctx, sc, k):
    ctx.task_index = k
    ctx.loss = CrossEntropy().restrict(sc.train_mask(sc.tasks[k]))
    method.begin_task(ctx)


def _batches(sc, k, n, size=3):
    x, y = sc.tasks[k].train.batch(slice(0, n * size))
    return [(x[i * size:(i + 1) * size], y[i * size:(i + 1) * size]) for i in range(n)]


def _ref_forward(P, x, tasks, n_layers):
    """CTN's MLP written out: h <- relu(Wh+b) + relu(g*(Wh+b) + c), (g, c) unit-norm FiLM."""
    e = P["embedding.weight"][tasks]
    h = x.reshape(len(x), -1)
    for l_ in range(n_layers):
        h = h @ P[f"layers.{l_}.weight"].T + P[f"layers.{l_}.bias"]
        f = e @ P[f"films.{l_}.weight"].T + P[f"films.{l_}.bias"]
        gam, bet = f[:, :h.shape[1]], f[:, h.shape[1]:]
        gam = gam / gam.norm(dim=1, keepdim=True)
        bet = bet / bet.norm(dim=1, keepdim=True)
        h = torch.relu(h) + torch.relu(gam * h + bet)
    return h @ P["head.weight"].T + P["head.bias"]


def _ref_ce(z, y, allowed):
    """Mean over rows of -log softmax(z_i[allowed_i])[position of y_i]."""
    terms = [-torch.log_softmax(z[i, a], 0)[a.index(int(y[i]))] for i, a in enumerate(allowed)]
    return torch.stack(terms).mean()


def _ref_kd(z, soft, allowed, T):
    """Σ soft·(log soft − log softmax(z/T)) over the allowed entries / their number."""
    total = sum((soft[i] * (soft[i].log() - torch.log_softmax(z[i, a] / T, 0))).sum()
                for i, a in enumerate(allowed))
    return total / sum(len(a) for a in allowed)


@pytest.mark.parametrize("setting, clip", [("domain", 1.0), ("task", 0.02)])
def test_bilevel_step_matches_a_hand_written_reference(setting, clip):
    sc = _tiny(setting)
    allowed = [list(t.classes) for t in sc.tasks]
    torch.manual_seed(0)
    model = CTNNet((3,), 3, (4, 3), n_tasks=2, emb_dim=2).double()
    lr, clr, T, kd, n_layers = 0.1, 0.5, 2.0, 3.0, 2
    method = ctn(memory_per_task=5, semantic_fraction=0.4, replay_batch=64, inner_steps=2,
                 outer_steps=2, context_lr=clr, temperature=T, kd_weight=kd, context_clip=clip)
    ctx = Context(model, torch.optim.SGD(model.parameters(), lr=lr), sc,
                  CrossEntropy().restrict(sc.train_mask(sc.tasks[0])), seed=0)
    method.setup(ctx)
    assert method.config["episodic_per_task"] == 3 and method.config["semantic_per_task"] == 2

    b0, b1 = _batches(sc, 0, 4), _batches(sc, 1, 2)
    _begin(method, ctx, sc, 0)
    for b in b0:
        method.train_step(ctx, b)
    assert len(method.memory) == 3 and len(method.semantic) == 2        # never above budget
    P_end0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    method.end_task(ctx)
    _begin(method, ctx, sc, 1)
    assert model.task == 1
    method.train_step(ctx, b1[0])
    P = {n: p.detach().clone() for n, p in model.named_parameters()}
    method.train_step(ctx, b1[1])
    got = {n: p.detach().clone() for n, p in model.named_parameters()}

    # the memories, rebuilt from the stream: the first sample of each batch is held out (the
    # semantic memory) and trained on with the next batch; the rings keep the last samples
    train0 = [(b[0][1:], b[1][1:]) if i == 0 else
              (torch.cat([b[0][1:], b0[i - 1][0][:1]]), torch.cat([b[1][1:], b0[i - 1][1][:1]]))
              for i, b in enumerate(b0)]
    ep_x = torch.cat([t[0] for t in train0])[-3:]
    ep_y = torch.cat([t[1] for t in train0])[-3:]
    sem_x = torch.cat([b0[2][0][:1], b0[3][0][:1], b1[0][0][:1], b1[1][0][:1]])
    sem_y = torch.cat([b0[2][1][:1], b0[3][1][:1], b1[0][1][:1], b1[1][1][:1]])
    sem_t = torch.tensor([0, 0, 1, 1])
    x1 = torch.cat([b1[1][0][1:], b1[0][0][:1]])
    y1 = torch.cat([b1[1][1][1:], b1[0][1][:1]])
    t0 = torch.zeros(3, dtype=torch.long)
    soft = torch.softmax(_ref_forward(P_end0, ep_x, t0, n_layers)[:, allowed[0]] / T, 1)
    base = [n for n in P if n.startswith(("layers", "head"))]
    context = [n for n in P if n not in base]

    def reference(P, controller_first=False):
        P = dict(P)

        def controller_step():
            leaves = {n: P[n].clone().requires_grad_() for n in context}
            Q = {**P, **leaves}
            z = _ref_forward(Q, sem_x, sem_t, n_layers)
            outer = _ref_ce(z, sem_y, [allowed[int(t)] for t in sem_t])
            grads = torch.autograd.grad(outer, [leaves[n] for n in context])
            for n, g in zip(context, grads, strict=True):
                P[n] = P[n] - clr * (g / 2).clamp(-clip, clip)

        for _ in range(2):                                   # outer steps
            if controller_first:
                controller_step()
            for _ in range(2):                               # inner steps
                leaves = {n: P[n].clone().requires_grad_() for n in base}
                Q = {**P, **leaves}
                loss = _ref_ce(_ref_forward(Q, x1, torch.ones(len(y1), dtype=torch.long),
                                            n_layers), y1, [allowed[1]] * len(y1))
                z = _ref_forward(Q, ep_x, t0, n_layers)
                loss = loss + _ref_ce(z, ep_y, [allowed[0]] * 3) \
                    + kd * _ref_kd(z, soft, [allowed[0]] * 3, T)
                grads = torch.autograd.grad(loss, [leaves[n] for n in base])
                for n, g in zip(base, grads, strict=True):
                    P[n] = P[n] - lr * g
            if not controller_first:
                controller_step()
        return P

    want = reference(P)
    for n in P:
        assert torch.allclose(got[n], want[n], atol=1e-6, rtol=0), n
        assert not torch.allclose(got[n], P[n], atol=1e-9), f"{n} did not move"
    wrong = reference(P, controller_first=True)              # the test tells the order apart
    assert max(float((wrong[n] - want[n]).abs().max()) for n in context) > 1e-4
    assert len(method.memory) <= 6 and len(method.semantic) <= 4
    assert len(method.memory.task_slots(1)) == 3 and len(method.semantic.task_slots(1)) == 2


def test_setup_refusals():
    sc = _tiny("domain")
    model = CTNNet((3,), 3, (4,), n_tasks=2)

    def ctx_for(m):
        return Context(m, torch.optim.SGD(m.parameters(), lr=0.1), sc, CrossEntropy(), seed=0)

    with pytest.raises(TypeError, match="CTNNet"):
        ctn().setup(ctx_for(mlp((3,), 3, (4,))))
    with pytest.raises(ValueError, match="task contexts"):
        ctn().setup(ctx_for(CTNNet((3,), 3, (4,), n_tasks=1)))
    with pytest.raises(ValueError, match="semantic"):
        ctn(memory_per_task=4).setup(ctx_for(model))       # int(4 * 0.2) = 0 semantic samples
    ctx = ctx_for(model)
    ctx.loss = lambda m, b: F.cross_entropy(m(b[0]), b[1])
    with pytest.raises(TypeError, match="cross-entropy"):
        ctn().setup(ctx)
    method, ctx = ctn(memory_per_task=5), ctx_for(model)
    method.setup(ctx)
    method.begin_task(ctx)
    with pytest.raises(ValueError, match="batch"):
        method.train_step(ctx, _batches(sc, 0, 1, size=1)[0])


# a real run -----------------------------------------------------------------------------------
class _Watched(CTNNet):
    """A CTNNet that logs the selected task and first input of every evaluation forward."""

    def forward(self, x, task=None):
        if not self.training and task is None:
            self.log.append((self.task, x[0].clone()))
        return super().forward(x, task)


class _Checked(CTN):
    """CTN that records the memory sizes after every step."""

    name = "ctn"

    def after_step(self, ctx, batch):
        self.sizes.append((len(self.memory), len(self.semantic),
                           max(len(self.memory.task_slots(k)) for k in range(3)),
                           max(len(self.semantic.task_slots(k)) for k in range(3))))


@pytest.fixture(scope="module")
def runs():
    sc = SCENARIOS.get("permuted-digits")(3, seed=0)
    torch.manual_seed(0)
    ft = myelin.fit(sc, mlp(sc.input_shape, sc.n_classes, (64,)), "finetune", lr=0.1,
                    batch_size=10, epochs=1, progress=False)
    torch.manual_seed(0)
    model = _Watched(sc.input_shape, sc.n_classes, (64,), n_tasks=3)
    model.log = []
    method = _Checked(memory_per_task=50)
    method.sizes = []
    result = myelin.fit(sc, model, method, lr=0.1, batch_size=10, epochs=1, progress=False)
    return sc, ft, result, model, method


def test_ctn_beats_finetuning_on_permuted_digits(runs):
    _, ft, result, _, _ = runs
    assert result.metrics["average_accuracy"] > ft.metrics["average_accuracy"] + 0.1
    assert result.config["method"]["name"] == "ctn"


def test_memory_stays_within_its_budget_and_is_recorded(runs):
    _, _, result, _, method = runs
    config = result.config["method"]
    assert config["memory_per_task"] == 50 and config["memory_total"] == 150
    assert config["episodic_per_task"] == 40 and config["semantic_per_task"] == 10
    assert method.sizes and all(ep + sem <= 150 and ep_k <= 40 and sem_k <= 10
                                for ep, sem, ep_k, sem_k in method.sizes)
    assert method.sizes[-1] == (120, 30, 40, 10)


def test_the_task_context_matters_and_before_eval_selects_it(runs):
    sc, _, result, model, _ = runs
    firsts = [t.test.batch(slice(0, 1))[0][0] for t in sc.tasks]
    seen = 0
    for task, x0 in model.log:           # every evaluation forward (and fit's model check)
        j = next((j for j, f in enumerate(firsts) if torch.equal(f, x0)), None)
        if j is not None:
            assert task == j
            seen += 1
    assert seen == 12                                # random init + the accuracy matrix's rows
    model.log.clear()
    for j, t in enumerate(sc.tasks):
        with model.task_context(j):
            assert evaluate(model, t.test) == result.accuracy[-1][j]
        x = t.test.batch(slice(0, 50))[0]
        with torch.no_grad():
            own, other = model(x, task=j), model(x, task=(j + 1) % 3)
        assert (own - other).abs().max() > 1e-3
