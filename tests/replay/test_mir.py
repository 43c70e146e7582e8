"""MIR: the replayed samples are the top-k by virtual-step interference, never of the
current task; the step is incoming + replay gradient; budget; against fine-tuning."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import myelin
import myelin.replay.mir  # registers "mir"
from myelin.data.datasets import ArrayDataset
from myelin.losses import MASKED_LOGIT, CrossEntropy
from myelin.methods import Context
from myelin.replay.mir import MIR, ScoredReservoir, mir
from myelin.scenarios import Scenario, Task
from tests.conftest import model_for

LR = 0.5


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)          # tiny steps: threads only contend
    yield
    torch.set_num_threads(threads)


def tiny_scenario(setting="task", n=30, d=4):
    """Three tasks of n random samples; task-IL classes {0, 1}, {2, 3}, {4, 5}."""
    g = torch.Generator().manual_seed(1)
    tasks = []
    for t, classes in enumerate([[0, 1], [2, 3], [4, 5]]):
        x = torch.randn(n, d, generator=g)
        y = torch.tensor(classes)[torch.randint(2, (n,), generator=g)]
        if setting == "domain":
            y = y % 2
        ds = ArrayDataset(x, y)
        tasks.append(Task(f"t{t}", ds, ds, classes if setting == "task" else [0, 1]))
    return Scenario("tiny", tasks, 6 if setting == "task" else 2, setting)


def tiny_net(scenario, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, scenario.n_classes))


def begin(ctx, k):
    ctx.task_index = k
    ctx.loss = CrossEntropy().restrict(ctx.scenario.train_mask(ctx.scenario.tasks[k]))


def filled(method, setting="task", stored=(20, 20, 10)):
    """A set-up MIR whose memory holds `stored[k]` samples of task k; the context at task 2."""
    scenario = tiny_scenario(setting)
    model = tiny_net(scenario)
    ctx = Context(model, torch.optim.SGD(model.parameters(), lr=LR), scenario, CrossEntropy())
    method.setup(ctx)
    for k, n in enumerate(stored):
        begin(ctx, k)
        method.store(ctx, scenario.tasks[k].train.batch(slice(0, n)))
    return ctx


def incoming_backward(ctx):
    """The loop's backward on an incoming batch of the current task; the gradients (copies)."""
    batch = ctx.task.train.batch(slice(20, 30))
    ctx.optimizer.zero_grad()
    ctx.loss(ctx.model, batch).backward()
    return batch, [p.grad.clone() for p in ctx.model.parameters()]


def masked_ce(net, x, y, tasks, scenario, reduction="none"):
    blocked = torch.ones(len(y), scenario.n_classes, dtype=torch.bool)
    for i, t in enumerate(tasks.tolist()):
        blocked[i, scenario.tasks[t].classes] = False
    return F.cross_entropy(net(x).masked_fill(blocked, MASKED_LOGIT), y, reduction=reduction)


def brute_force(ctx, method, slots, grads, old=None):
    """Scores recomputed by hand: a deep copy stepped by −lr·g, losses before and after."""
    (x, y), tasks = method.memory.get(slots), method.memory.task[slots]
    stepped = copy.deepcopy(ctx.model)
    with torch.no_grad():
        for p, g in zip(stepped.parameters(), grads, strict=True):
            p -= LR * g
        pre = masked_ce(ctx.model, x, y, tasks, ctx.scenario)
        post = masked_ce(stepped, x, y, tasks, ctx.scenario)
    return post - (pre if old is None else torch.minimum(pre, old)), pre


@pytest.mark.parametrize("setting", ["task", "domain"])
def test_replayed_samples_are_the_top_k_by_interference(setting):
    method = MIR(memory=100, candidates=15, replay_batch=4)
    ctx = filled(method, setting)
    batch, grads = incoming_backward(ctx)
    method.after_backward(ctx, batch)
    slots = method.last_candidates
    assert len(slots) == 15 and len(set(slots.tolist())) == 15
    assert (method.memory.task[slots] != 2).all()          # never the current task's samples
    scores, _ = brute_force(ctx, method, slots, grads)
    assert torch.allclose(method.last_scores, scores, atol=1e-5)
    top = slots[scores.argsort(descending=True)[:4]]
    assert set(method.last_replayed.tolist()) == set(top.tolist())
    # the step's gradient is the incoming gradient plus the replayed samples' mean loss's
    (x, y), tasks = method.memory.get(top), method.memory.task[top]
    replay = torch.autograd.grad(masked_ce(ctx.model, x, y, tasks, ctx.scenario, "mean"),
                                 list(ctx.model.parameters()))
    for p, g, r in zip(ctx.model.parameters(), grads, replay, strict=True):
        assert torch.allclose(p.grad, g + r, atol=1e-6)


def test_the_model_is_not_touched_by_the_virtual_step():
    method = MIR(memory=100, candidates=15, replay_batch=4)
    ctx = filled(method)
    before = copy.deepcopy(ctx.model.state_dict())
    batch, _ = incoming_backward(ctx)
    method.after_backward(ctx, batch)
    for k, v in ctx.model.state_dict().items():
        assert torch.equal(v, before[k])


def test_candidates_are_never_of_the_current_task():
    method = MIR(memory=200, candidates=10, replay_batch=3)
    ctx = filled(method, "domain", stored=(5, 5, 60))       # the buffer is mostly task 2
    drawn = set()
    for _ in range(30):
        batch, _ = incoming_backward(ctx)
        method.after_backward(ctx, batch)
        assert (method.memory.task[method.last_candidates] != 2).all()
        drawn |= set(method.last_candidates.tolist())
    assert len(drawn) == 10                                   # all ten eligible, no more


def test_no_replay_before_an_earlier_task_is_stored():
    method = MIR(memory=100, candidates=15, replay_batch=4)
    ctx = filled(method, stored=(20,))
    begin(ctx, 0)
    batch, grads = incoming_backward(ctx)
    method.after_backward(ctx, batch)
    assert method.last_replayed is None
    for p, g in zip(ctx.model.parameters(), grads, strict=True):
        assert torch.equal(p.grad, g)


def test_compare_to_old_logits_scores_against_the_lowest_loss_seen():
    method = MIR(memory=100, candidates=40, replay_batch=4, compare_to_old_logits=True)
    ctx = filled(method)
    assert method.memory.old_loss[:50].isnan().all()
    batch, grads = incoming_backward(ctx)
    method.after_backward(ctx, batch)
    slots = method.last_candidates
    assert len(slots) == 40                                   # every stored earlier sample
    start = torch.full((40,), math.log(2))                    # zero logits, two classes each
    scores, pre = brute_force(ctx, method, slots, grads, old=start)
    assert torch.allclose(method.last_scores, scores, atol=1e-5)
    assert torch.allclose(method.memory.old_loss[slots], torch.minimum(pre, start), atol=1e-6)
    top = slots[scores.argsort(descending=True)[:4]]
    assert set(method.last_replayed.tolist()) == set(top.tolist())
    # after a real step the old losses are the stored minima, lowered only where beaten
    ctx.optimizer.step()
    old = method.memory.old_loss[slots].clone()
    batch, grads = incoming_backward(ctx)
    method.after_backward(ctx, batch)
    scores, pre = brute_force(ctx, method, slots, grads, old=old)
    assert torch.allclose(method.last_scores, scores, atol=1e-5)
    assert torch.allclose(method.memory.old_loss[slots], torch.minimum(pre, old), atol=1e-6)


def test_a_rewritten_slot_forgets_its_old_loss():
    memory = ScoredReservoir(4, torch.Generator().manual_seed(0))
    memory.add((torch.randn(4, 2), torch.zeros(4, dtype=torch.long)), 0)
    memory.old_loss[:] = 1.0
    before = memory.get(torch.arange(4))[0].clone()
    memory.add((torch.randn(3, 2), torch.ones(3, dtype=torch.long)), 1)
    rewritten = (memory.get(torch.arange(4))[0] != before).any(1)
    assert rewritten.any() and not rewritten.all()
    assert memory.old_loss[rewritten].isnan().all()
    assert (memory.old_loss[~rewritten] == 1.0).all()


class Spy(MIR):
    name = "mir"

    def after_backward(self, ctx, batch):
        super().after_backward(ctx, batch)
        if self.last_candidates is not None:
            self.candidate_tasks.append((ctx.task_index,
                                         set(self.memory.task[self.last_candidates].tolist())))


@pytest.mark.parametrize("compare", [False, True])
def test_mir_beats_finetuning_on_permuted_digits(scenario, compare):
    fast = {"lr": 0.1, "batch_size": 10, "epochs": 1, "progress": False}
    method = Spy(memory=500, compare_to_old_logits=compare)
    method.candidate_tasks = []
    r = myelin.fit(scenario, model_for(scenario), method, **fast)
    base = myelin.fit(scenario, model_for(scenario), "finetune", **fast)
    assert r.metrics["average_accuracy"] > base.metrics["average_accuracy"] + 0.1
    assert r.metrics["forgetting"] < 0.3 * base.metrics["forgetting"]
    # replay from the second task on, never from the task being trained
    assert {k for k, _ in method.candidate_tasks} == {1, 2}
    assert all(k not in tasks for k, tasks in method.candidate_tasks)
    assert any(tasks == {0, 1} for k, tasks in method.candidate_tasks if k == 2)
    # the budget: a reservoir of 500 over every incoming sample
    steps = [-(-len(t.train) // 10) for t in scenario.tasks]
    assert method.memory.capacity == 500 and len(method.memory) == 500
    assert method.memory.seen == 10 * sum(steps)
    assert method.memory.nbytes() == 500 * method.memory.bytes_per_sample()
    config = r.config["method"]
    assert config["name"] == "mir" and config["memory_total"] == 500
    assert (config["candidates"], config["replay_batch"]) == (50, 10)
    assert config["compare_to_old_logits"] is compare


def test_registered_name_and_defaults():
    m = mir()
    assert isinstance(m, MIR) and m.config["memory"] == 500
    assert (m.candidates, m.replay_batch, m.compare_to_old_logits) == (50, 10, False)
    r = myelin.fit(tiny_scenario(), tiny_net(tiny_scenario()), "mir",
                   method_options={"memory": 30, "candidates": 8, "replay_batch": 2},
                   lr=0.1, batch_size=10, epochs=1, progress=False)
    assert r.config["method"]["candidates"] == 8


@pytest.mark.parametrize("options, match", [
    ({"memory": 0}, "memory"), ({"memory": -1}, "memory"),
    ({"memory": 10, "replay_batch": 0}, "replay_batch"),
    ({"memory": 10, "candidates": 0}, "candidates"),
    ({"memory": 10, "candidates": 5, "replay_batch": 6}, "fewer than replay_batch"),
    ({"memory": 10, "candidates": 50, "replay_batch": 11}, "exceeds"),
    ({"memory": 10, "candidates": 2.5}, "candidates"),
    ({"memory": 10, "compare_to_old_logits": 1}, "compare_to_old_logits"),
])
def test_bad_options_are_refused(options, match):
    with pytest.raises(ValueError, match=match):
        mir(**options)


def test_setup_refuses_a_budget_below_replay_batch_and_losses_without_logits():
    scenario = tiny_scenario()
    model = tiny_net(scenario)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="exceeds"):
        mir(memory_per_task=2, replay_batch=10).setup(Context(model, opt, scenario,
                                                              CrossEntropy()))
    with pytest.raises(TypeError, match="logits"):
        mir().setup(Context(model, opt, scenario, lambda m, b: m(b[0]).sum()))
