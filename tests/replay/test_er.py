"""ER (reservoir and ring), and every replay method against plain fine-tuning."""

import pytest
import torch

import myelin
from myelin.methods import Context
from myelin.replay import ER
from myelin.scenarios import SCENARIOS
from tests.conftest import model_for

FAST = {"lr": 0.1, "batch_size": 10, "epochs": 1, "progress": False}


@pytest.fixture(scope="module")
def baseline(scenario):
    return myelin.fit(scenario, model_for(scenario), "finetune", **FAST)


@pytest.mark.parametrize("spec, options", [
    ("er", {}), ("er", {"buffer": "ring"}), ("agem", {"memory_per_task": 50}),
    ("gem", {"memory_per_task": 50}), ("er+ewc", {"lam": 10.0}), ("er+wva", {"lam": 10.0})])
def test_replay_reduces_forgetting(scenario, baseline, spec, options):
    r = myelin.fit(scenario, model_for(scenario), spec, method_options=options, **FAST)
    assert r.metrics["forgetting"] < 0.6 * baseline.metrics["forgetting"]
    assert r.metrics["average_accuracy"] > baseline.metrics["average_accuracy"] + 0.05
    memory = r.config["method"] if "+" not in spec else r.config["method"][spec.split("+")[0]]
    assert memory["memory_total"] == 150 and memory["memory_unit"] == "samples"


@pytest.mark.parametrize("spec", ["er+ewc", "er+wva"])
def test_importance_on_top_of_replay_forgets_less_than_replay_alone(scenario, spec):
    er = myelin.fit(scenario, model_for(scenario), "er", **FAST)
    both = myelin.fit(scenario, model_for(scenario), spec, method_options={"lam": 10.0}, **FAST)
    assert both.metrics["forgetting"] < 0.8 * er.metrics["forgetting"]
    assert both.config["method"]["er"]["memory_per_task"] == 50


def test_memory_never_exceeds_its_budget(scenario):
    method = ER(memory=37)
    myelin.fit(scenario, model_for(scenario), method, **FAST)
    assert method.memory.capacity == 37 and len(method.memory) == 37
    steps = [-(-len(t.train) // FAST["batch_size"]) for t in scenario.tasks]
    assert method.memory.seen == FAST["batch_size"] * sum(steps)    # every sample drawn


def test_concatenated_and_per_task_replay_are_the_same_loss(scenario):
    model = model_for(scenario)
    ctx = Context(model, torch.optim.SGD(model.parameters(), lr=0.1), scenario,
                  myelin.losses.CrossEntropy())
    method = ER(memory=40, replay_batch=12)
    method.setup(ctx)
    method.memory.add(scenario.tasks[0].train.batch(slice(0, 40)), 0)
    ctx.task_index = 1
    incoming = scenario.tasks[1].train.batch(slice(0, 10))
    state = method.memory.generator.get_state()
    joined = method.prepare_batch(ctx, incoming)            # one concatenated batch
    assert len(joined[1]) == 22
    concatenated = method.loss(ctx, joined, ctx.loss(model, joined))
    method.memory.generator.set_state(state)
    stored, tasks = method.memory.sample(12)                # the same draw, kept apart
    method._incoming, method._split = incoming, (stored, tasks)   # the per-task path
    grouped = method.loss(ctx, incoming, ctx.loss(model, incoming))
    torch.testing.assert_close(grouped, concatenated)


def test_task_incremental_replay_uses_each_tasks_classes():
    sc = SCENARIOS.get("split-digits-task")(seed=0)
    base = myelin.fit(sc, model_for(sc), "finetune", **FAST)
    r = myelin.fit(sc, model_for(sc), "er", method_options={"memory_per_task": 20}, **FAST)
    assert r.metrics["forgetting"] < base.metrics["forgetting"]
    assert all(a == a for row in r.accuracy for a in row if a is not None)   # no NaN


@pytest.mark.parametrize("options, match", [
    ({"memory": 0}, "positive"), ({"memory_per_task": -1}, "positive"),
    ({"memory": 10, "memory_per_task": 5}, "exactly one"), ({"buffer": "fifo"}, "buffer"),
    ({"replay_batch": 0}, "positive")])
def test_er_bad_options(options, match):
    with pytest.raises(ValueError, match=match):
        myelin.make_method("er", **options)


def test_replay_batch_larger_than_memory_is_refused(scenario):
    with pytest.raises(ValueError, match="exceeds the memory"):
        myelin.fit(scenario, model_for(scenario), "er",
                   method_options={"memory": 5, "replay_batch": 10}, **FAST)


def test_memory_larger_than_a_task_warns(scenario):
    with pytest.warns(UserWarning, match="exceeds the smallest task"):
        myelin.fit(scenario, model_for(scenario), "er",
                   method_options={"memory_per_task": 10_000, "buffer": "ring"}, **FAST)


def test_readme_replay_example_runs():
    import io
    from contextlib import redirect_stdout
    from pathlib import Path

    text = (Path(__file__).parents[2] / "README.md").read_text()
    block = text.split("<!-- example:replay -->")[1].split("<!-- /example:replay -->")[0]
    code = block.split("```python\n")[1].split("```")[0]
    out = io.StringIO()
    with redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    aa = {line.split()[0]: float(line.split()[2]) for line in out.getvalue().splitlines()}
    assert set(aa) == {"finetune", "er", "er+ewc", "gem"}
    assert min(aa["er"], aa["er+ewc"], aa["gem"]) > aa["finetune"]


def test_replayed_samples_keep_their_task_mask_only_when_tasks_are_separate():
    from myelin.replay import task_loss

    for name, seen, own in [("split-digits-task", False, True),
                            ("split-digits-class", True, False)]:
        kwargs = {"seen_classes": True} if seen else {}
        sc = SCENARIOS.get(name)(seed=0, **kwargs)
        model = model_for(sc)
        ctx = Context(model, torch.optim.SGD(model.parameters(), lr=0.1), sc,
                      myelin.losses.CrossEntropy().restrict(sc.train_mask(sc.tasks[3])),
                      task_index=3)
        classes = task_loss(ctx, 0).classes
        if own:          # task-IL: each task's own head
            assert classes == sorted(sc.tasks[0].classes)
        else:            # class-IL: the current mask, so replay pushes the new classes down
            assert classes == ctx.loss.classes and len(classes) == 8


def test_a_composition_stores_the_incoming_batch_not_the_replayed_rows(scenario):
    from myelin.replay import GEM

    gem = GEM(memory_per_task=500)
    myelin.fit(scenario, model_for(scenario), ER(memory=300) + gem, iterations=20, **{
        k: v for k, v in FAST.items() if k != "epochs"})
    # 20 steps of 10 incoming samples a task: exactly 200 stored per task, never the replayed
    assert [len(gem.memory.task_slots(t)) for t in range(3)] == [200, 200, 200]
    assert gem.config["memory_total"] == gem.memory.capacity == 1500


def test_ring_budget_records_what_is_held():
    sc = SCENARIOS.get("permuted-digits")(3, seed=0)
    r = myelin.fit(sc, model_for(sc), "gem", method_options={"memory": 50}, iterations=2,
                   batch_size=10, progress=False)
    assert r.config["method"]["memory_total"] == 48          # 16 a task
