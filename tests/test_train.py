import json

import pytest
import torch

from myelin.methods import METHODS, Method, make_method
from myelin.models import mlp, small_cnn
from myelin.scenarios import SCENARIOS
from myelin.train import Result, fit
from tests.conftest import model_for


def test_fit_result_contents_and_json(scenario, tmp_path):
    r = fit(scenario, model_for(scenario), "ewc", lr=0.1, epochs=2, batch_size=64,
            eval_every=10, method_options={"lam": 50}, progress=False)
    assert len(r.accuracy) == 3 and all(len(row) == 3 for row in r.accuracy)
    assert len(r.random_init) == 3 and all(0 <= v <= 0.3 for v in r.random_init)
    assert r.curves[0]["task"] == 0 and len(r.curves[-1]["accuracies"]) == 3
    steps = [c["iteration"] for c in r.curves]
    assert steps == sorted(steps) and steps[0] == 10
    assert set(r.metrics) >= {"average_accuracy", "forgetting", "backward_transfer",
                              "forward_transfer"}
    assert r.config["method"] == {"name": "ewc", "lam": 50, "importance": "fisher",
                                  "mode": "accumulate", "gamma": 1.0, "stabilized": False}
    assert r.config["seed"] == 0 and r.config["scenario"]["kind"] == "permuted"
    assert len(r.timings) == 3 and r.timings[-1]["importance"] < 1e-3   # none after the last
    path = tmp_path / "r.json"
    r.save(path)
    back = Result.load(path)
    assert back.accuracy == r.accuracy and json.loads(path.read_text())["config"]["lr"] == 0.1


def test_deterministic_given_seed(scenario):
    runs = [fit(scenario, model_for(scenario), "wva", lr=0.1, epochs=1, batch_size=64,
                method_options={"lam": 50}, progress=False, seed=3) for _ in range(2)]
    assert runs[0].accuracy == runs[1].accuracy


def test_consolidation_beats_finetuning_through_the_loop(scenario):
    def aa(method, **opts):
        return fit(scenario, model_for(scenario), method, lr=0.1, epochs=4, batch_size=32,
                   method_options=opts, progress=False).metrics["average_accuracy"]

    base = aa("finetune")
    assert aa("ewc", lam=100) > base + 0.03
    assert aa("si", lam=10) > base + 0.03


def test_task_incremental_masks_to_the_task_classes():
    sc = SCENARIOS.get("split-digits-task")(5)
    r = fit(sc, model_for(sc), "finetune", lr=0.1, epochs=5, batch_size=32, progress=False)
    assert min(r.accuracy[-1]) > 0.75            # 2-way choices: forgetting is mild


def test_labels_trick_reduces_class_incremental_forgetting():
    def first_task(trick):
        sc = SCENARIOS.get("split-digits-class")(5, labels_trick=trick)
        r = fit(sc, model_for(sc), "finetune", lr=0.1, epochs=5, batch_size=32, progress=False)
        return r.accuracy[-1][0]

    plain, trick = first_task(False), first_task(True)
    assert plain < 0.05 and trick > plain + 0.2, (plain, trick)


def test_iterations_and_cnn(scenario):
    torch.manual_seed(0)
    model = small_cnn(scenario.input_shape, 10, (4,))
    r = fit(scenario, model, "l2", lr=0.1, iterations=5, batch_size=16, eval_every=5,
            method_options={"lam": 1.0}, progress=False)
    assert [c["iteration"] for c in r.curves] == [5, 10, 15]


def test_bad_arguments(scenario):
    m = model_for(scenario)
    with pytest.raises(ValueError, match="Did you mean 'ewc'"):
        fit(scenario, m, "ewk", progress=False)
    with pytest.raises(ValueError, match="takes no option"):
        fit(scenario, m, "ewc", method_options={"lamda": 1}, progress=False)
    with pytest.raises(ValueError, match="'lam'"):
        fit(scenario, m, "ewc", method_options={"lam": -1}, progress=False)
    with pytest.raises(ValueError, match="lr"):
        fit(scenario, m, lr=float("nan"), progress=False)
    with pytest.raises(ValueError, match=r"logits of shape \(N, 10\)"):
        fit(scenario, mlp(scenario.input_shape, 5, (8,)), progress=False)
    with pytest.raises(ValueError, match="cannot take the scenario's inputs"):
        fit(scenario, mlp((1, 28, 28), 10, (8,)), progress=False)
    with pytest.raises(ValueError, match="Unknown optimizer"):
        fit(scenario, m, optimizer="lbfgs2", progress=False)


def test_divergence_is_reported(scenario):
    with pytest.raises(FloatingPointError, match="diverged"):
        fit(scenario, model_for(scenario), "ewc", lr=0.1, epochs=4, batch_size=32,
            method_options={"lam": 1e6}, progress=False)


class _Poison(Method):
    """Sets one weight to NaN after step `at` (the loss of that step was still finite)."""

    def __init__(self, at: int):
        self.at = at

    def after_step(self, ctx, batch) -> None:
        if ctx.step + 1 == self.at:
            with torch.no_grad():
                ctx.model[3].weight[0, 0] = float("nan")


def test_non_finite_parameters_stop_the_run_after_the_task(scenario):
    torch.manual_seed(0)
    model = mlp(scenario.input_shape, 10, (16, 8))
    with pytest.raises(FloatingPointError) as err:
        fit(scenario, model, _Poison(at=10), iterations=10, batch_size=32, progress=False)
    assert str(err.value) == (
        "Parameter '3.weight' of the model became non-finite (1 of 128 values NaN or inf) "
        "after task 1 (step 10): training diverged. Lower lr or the method's strength (lam), "
        "or use its stabilized form (stabilized=True, --stabilized).")


def test_non_finite_parameters_are_never_checkpointed(scenario, tmp_path):
    torch.manual_seed(0)
    model = mlp(scenario.input_shape, 10, (16, 8))
    with pytest.raises(FloatingPointError, match=r"^Parameter '3\.weight' .* at step 5 \(task 1\)"):
        fit(scenario, model, _Poison(at=5), iterations=10, batch_size=32, progress=False,
            checkpoint_dir=tmp_path, checkpoint_every=5)
    assert not any(tmp_path.iterdir())


def test_registry_lists_methods():
    assert {"finetune", "ewc", "wva", "l2", "si", "mas"} <= set(METHODS.names())
    assert make_method("wva", lam=3).config["lam"] == 3


def test_multi_head_model_for_task_incremental_learning():
    from torch import nn

    from myelin.models import MultiHead

    sc = SCENARIOS.get("split-digits-task")(5)
    torch.manual_seed(0)
    body = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU())
    model = MultiHead(body, 32, [t.classes for t in sc], sc.n_classes)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "heads.0" in n}
    r = fit(sc, model, "finetune", lr=0.1, epochs=5, batch_size=32, progress=False)
    assert min(r.accuracy[-1]) > 0.75
    # masked training reaches every head (each through its own task)
    r0 = {n: p.detach() for n, p in model.named_parameters() if "heads.0" in n}
    assert any(not torch.equal(before[n], r0[n]) for n in r0)
    with pytest.raises(ValueError, match="outside"):
        MultiHead(body, 32, [[0, 12]], 10)


def test_stabilized_option_reaches_si_and_mas(scenario):
    r = fit(scenario, model_for(scenario), "si", lr=0.1, epochs=1, batch_size=64,
            method_options={"lam": 10, "stabilized": True}, progress=False)
    assert r.config["method"] == {"name": "si", "lam": 10, "stabilized": True}
    assert make_method("mas", lam=2, stabilized=True).config["stabilized"] is True
