"""MER (Algorithm 1): against a hand-written reference, its step structure, its budget."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import myelin
import myelin.replay.mer  # registers "mer"
from myelin.data.datasets import ArrayDataset
from myelin.losses import MASKED_LOGIT, CrossEntropy
from myelin.methods import Context
from myelin.replay.mer import MER, mer
from myelin.scenarios import Scenario, Task
from tests.conftest import model_for


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)          # tiny single-sample steps: threads only contend
    yield
    torch.set_num_threads(threads)


def tiny_scenario(setting="task", n=12, d=4):
    """Two tasks of n random samples; task-IL classes {0, 1} and {2, 3}."""
    g = torch.Generator().manual_seed(1)
    tasks = []
    for t, classes in enumerate([[0, 1], [2, 3]]):
        x = torch.randn(n, d, generator=g)
        y = torch.tensor(classes)[torch.randint(2, (n,), generator=g)]
        ds = ArrayDataset(x, y)
        tasks.append(Task(f"t{t}", ds, ds, classes))
    return Scenario("tiny", tasks, 4, setting)


def tiny_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 4))


def context(model, scenario, optimizer=None, lr=0.1):
    optimizer = optimizer or torch.optim.SGD(model.parameters(), lr=lr)
    return Context(model, optimizer, scenario, CrossEntropy())


def begin(ctx, k):
    ctx.task_index = k
    ctx.loss = CrossEntropy().restrict(ctx.scenario.train_mask(ctx.scenario.tasks[k]))


STREAM = [(0, slice(0, 4)), (0, slice(4, 7)), (1, slice(0, 4)), (1, slice(4, 6))]


def run_mer(method, model, scenario, stream=STREAM, optimizer=None):
    """Feed MER the stream of (task, rows) batches; (examples, draws) in training order."""
    ctx = context(model, scenario, optimizer)
    method.setup(ctx)
    examples, draws = [], []
    for k, rows in stream:
        begin(ctx, k)
        x, y = scenario.tasks[k].train.batch(rows)
        method.train_step(ctx, (x, y))
        examples += [(x[i], y[i], k) for i in range(len(y))]
        draws += method.last_draws
    return examples, draws


def masked_ce(net, x, y, task, scenario):
    logits = net(x[None])
    blocked = torch.ones(scenario.n_classes, dtype=torch.bool)
    blocked[scenario.tasks[task].classes] = False
    return F.cross_entropy(logits.masked_fill(blocked, MASKED_LOGIT), y[None])


def reference_mer(model, scenario, examples, draws, lr, beta, gamma, batches):
    """Algorithm 1 written plainly: state dicts, one SGD step per sample, two Reptile updates.

    `draws` are the memories MER drew (one entry per batch, in order), so that both see the
    same random batches.
    """
    net = copy.deepcopy(model)
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    draws = iter(draws)
    for x, y, t in examples:
        start_a = copy.deepcopy(net.state_dict())
        for _ in range(batches):
            start_w = copy.deepcopy(net.state_dict())
            drawn = next(draws)
            batch = [(x, y, t)]
            if drawn is not None:
                (mx, my), mt = drawn
                batch += [(mx[j], my[j], int(mt[j])) for j in range(len(my))]
            for bx, by, bt in batch:
                opt.zero_grad()
                masked_ce(net, bx, by, bt, scenario).backward()
                opt.step()
            now = net.state_dict()
            net.load_state_dict({k: start_w[k] + (now[k] - start_w[k]) * beta for k in now})
        now = net.state_dict()
        net.load_state_dict({k: start_a[k] + (now[k] - start_a[k]) * gamma for k in now})
    return net


def assert_same_parameters(a, b, atol=1e-6):
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.allclose(p, q, atol=atol, rtol=0), (name, (p - q).abs().max())


def test_mer_matches_a_plain_reference_of_algorithm_1():
    scenario, model = tiny_scenario(), tiny_net()
    start = copy.deepcopy(model)
    method = MER(memory=40, replay_batch=3, batches_per_example=2, beta=0.3, gamma=0.5)
    examples, draws = run_mer(method, model, scenario)
    assert len(draws) == 2 * len(examples)
    # every draw holds min(replay_batch, stored) memories, all of them examples already seen
    for i, (x, _, _) in enumerate(examples):
        for drawn in draws[2 * i:2 * i + 2]:
            if i == 0:
                assert drawn is None
                continue
            (mx, my), mt = drawn
            assert len(my) == min(3, i)
            for j in range(len(my)):
                assert any(torch.equal(mx[j], e[0]) and int(my[j]) == int(e[1])
                           and int(mt[j]) == e[2] for e in examples[:i])
            assert not any(torch.equal(mx[j], x) for j in range(len(my)))
    reference = reference_mer(start, scenario, examples, draws, 0.1, 0.3, 0.5, 2)
    assert_same_parameters(model, reference)
    # the match is not vacuous: training moved the parameters well beyond the tolerance
    assert max((p - q).abs().max() for p, q in
               zip(model.parameters(), start.parameters(), strict=True)) > 1e-2


def test_beta_gamma_one_with_empty_memory_is_per_sample_sgd():
    scenario, model = tiny_scenario(setting="domain"), tiny_net()
    start = copy.deepcopy(model)
    method = MER(memory=40, replay_batch=3, batches_per_example=1, beta=1.0, gamma=1.0)
    method._draw = lambda: None              # keep the memory out of the batches
    ctx = context(model, scenario)
    method.setup(ctx)
    begin(ctx, 0)
    x, y = scenario.tasks[0].train.batch(slice(0, 6))
    loss = method.train_step(ctx, (x, y))
    sgd = copy.deepcopy(start)
    opt = torch.optim.SGD(sgd.parameters(), lr=0.1)
    first = []
    for i in range(6):                       # six steps of batch size one, in order
        opt.zero_grad()
        step_loss = F.cross_entropy(sgd(x[i:i + 1]), y[i:i + 1])
        first.append(step_loss.item())
        step_loss.backward()
        opt.step()
    assert_same_parameters(model, sgd)
    assert loss.item() == pytest.approx(sum(first) / 6, abs=1e-6)
    assert not loss.requires_grad
    one = copy.deepcopy(start)               # one step on the whole batch is something else
    opt = torch.optim.SGD(one.parameters(), lr=0.1)
    F.cross_entropy(one(x), y).backward()
    opt.step()
    assert max((p - q).abs().max() for p, q in
               zip(model.parameters(), one.parameters(), strict=True)) > 1e-3
    assert len(method.memory) == 6


class CountingSGD:
    """An optimizer wrapper (like WVA's): MER must step through it."""

    def __init__(self, params, lr):
        self.inner = torch.optim.SGD(params, lr=lr)
        self.param_groups = self.inner.param_groups
        self.steps = 0

    def zero_grad(self):
        self.inner.zero_grad()

    def step(self):
        self.steps += 1
        self.inner.step()


def test_every_sample_of_every_batch_is_its_own_optimizer_step():
    scenario, model = tiny_scenario(), tiny_net()
    opt = CountingSGD(model.parameters(), 0.1)
    method = MER(memory=40, replay_batch=3, batches_per_example=2)
    examples, _ = run_mer(method, model, scenario, optimizer=opt)
    expected = sum(2 * (1 + min(3, i)) for i in range(len(examples)))
    assert opt.steps == expected


def test_memory_never_exceeds_its_budget():
    scenario, model = tiny_scenario(), tiny_net()
    method = MER(memory=5, replay_batch=2, batches_per_example=1)
    stream = [(0, slice(0, 4))] * 3 + [(1, slice(0, 6))] * 2
    ctx = context(model, scenario)
    method.setup(ctx)
    seen = 0
    for k, rows in stream:
        begin(ctx, k)
        batch = scenario.tasks[k].train.batch(rows)
        method.train_step(ctx, batch)
        seen += len(batch[1])
        assert len(method.memory) == min(5, seen) and method.memory.capacity == 5
        assert method.memory.seen == seen
    assert method.memory.nbytes() == 5 * method.memory.bytes_per_sample()


def test_mer_beats_finetuning_on_permuted_digits(scenario):
    fast = {"lr": 0.1, "batch_size": 10, "iterations": 10, "progress": False}
    options = {"memory": 100, "replay_batch": 5, "batches_per_example": 2, "beta": 0.3}
    r = myelin.fit(scenario, model_for(scenario), "mer", method_options=options, **fast)
    same_stream = myelin.fit(scenario, model_for(scenario), "finetune", **fast)
    full_epoch = myelin.fit(scenario, model_for(scenario), "finetune", lr=0.1, batch_size=10,
                            epochs=1, progress=False)
    acc = r.metrics["average_accuracy"]
    assert acc > same_stream.metrics["average_accuracy"] + 0.3
    assert acc > full_epoch.metrics["average_accuracy"]    # 100 examples/task vs 1437
    assert r.metrics["forgetting"] < 0.5 * full_epoch.metrics["forgetting"]
    config = r.config["method"]
    assert config["name"] == "mer" and config["memory_total"] == 100
    assert (config["replay_batch"], config["batches_per_example"]) == (5, 2)
    assert (config["beta"], config["gamma"]) == (0.3, 1.0)


def test_factory_defaults_follow_the_paper():
    m = mer()
    assert m.config["memory"] == 5120 and m.config["memory_per_task"] is None
    assert (m.replay_batch, m.batches_per_example, m.beta, m.gamma) == (100, 10, 0.03, 1.0)
    assert m.config["buffer"] == "reservoir"


@pytest.mark.parametrize("options, match", [
    ({"memory": 0}, "memory"), ({"memory": -5}, "memory"),
    ({"memory": 10, "replay_batch": 0}, "replay_batch"),
    ({"memory": 10, "replay_batch": 11}, "exceeds"),
    ({"memory": 10, "batches_per_example": 0}, "batches_per_example"),
    ({"memory": 10, "beta": 0.0}, "beta"), ({"memory": 10, "beta": 1.5}, "beta"),
    ({"memory": 10, "gamma": -0.1}, "gamma"), ({"memory": 10, "gamma": float("nan")}, "gamma"),
    ({"memory": 10, "beta": True}, "beta"),
])
def test_bad_options_are_refused(options, match):
    with pytest.raises(ValueError, match=match):
        mer(**options)


def test_replay_batch_beyond_a_per_task_budget_is_refused_in_setup():
    scenario, model = tiny_scenario(), tiny_net()
    method = mer(memory_per_task=2, replay_batch=5)          # total 4 < 5
    with pytest.raises(ValueError, match="exceeds"):
        method.setup(context(model, scenario))


def test_stateful_optimizer_is_warned_about():
    scenario, model = tiny_scenario(), tiny_net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    with pytest.warns(UserWarning, match="plain SGD"):
        mer(memory=10, replay_batch=2).setup(context(model, scenario, opt))
