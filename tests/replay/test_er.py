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
    ctx.loss = myelin.losses.CrossEntropy(list(range(10)))  # a mask: the per-task path
    same = method.prepare_batch(ctx, incoming)
    assert same is incoming and method._split is not None
    grouped = method.loss(ctx, same, ctx.loss(model, same))
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
