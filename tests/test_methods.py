"""The method protocol, the general loss and the learner protocol (issue 18)."""

import io
import re
import sys
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import myelin
from myelin.importance import ESTIMATORS, fisher
from myelin.losses import MASKED_LOGIT, CrossEntropy, ModelLoss
from myelin.methods import HOOKS, METHODS, Compose, Context, Method, make_method
from myelin.models import mlp
from myelin.runner import Learner, run
from myelin.scenarios import SCENARIOS, Scenario, Task
from tests.conftest import model_for

ROOT = Path(__file__).resolve().parent.parent


# the loop knows no method -----------------------------------------------------------------
def test_runner_source_names_no_method():
    names = set(METHODS.names()) | set(ESTIMATORS.names()) | {
        "EWC", "WVA", "L2", "SynapticIntelligence", "PenalizedOptimizer", "consolidator"}
    for path in (ROOT / "myelin" / "train.py", ROOT / "myelin" / "runner.py"):
        text = path.read_text()
        for name in names:
            assert not re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text, re.I), \
                f"{path.name} names the method/estimator {name!r}"
        for dispatch in ("hasattr(", "getattr(", " is consolidator", "needs_importance"):
            assert dispatch not in text, f"{path.name} dispatches with {dispatch!r}"


def test_snn_does_not_import_the_training_loop():
    for path in (ROOT / "myelin" / "snn").glob("*.py"):
        text = path.read_text()
        assert "train import" not in text and "import train" not in text, path.name


# hooks ------------------------------------------------------------------------------------
class Recorder(Method):
    def __init__(self, log, tag):
        self.log, self.tag = log, tag

    def setup(self, ctx):
        self.log.append((self.tag, "setup"))

    def begin_task(self, ctx):
        self.log.append((self.tag, "begin_task", ctx.task_index))

    def prepare_batch(self, ctx, batch):
        self.log.append((self.tag, "prepare_batch"))
        return batch

    def train_step(self, ctx, batch):
        self.log.append((self.tag, "train_step"))
        return None

    def loss(self, ctx, batch, loss):
        self.log.append((self.tag, "loss"))
        return loss

    def after_backward(self, ctx, batch):
        self.log.append((self.tag, "after_backward"))

    def after_step(self, ctx, batch):
        self.log.append((self.tag, "after_step"))

    def end_task(self, ctx):
        self.log.append((self.tag, "end_task", ctx.task_index))

    def before_eval(self, ctx, task_index):
        self.log.append((self.tag, "before_eval", task_index))


def test_hooks_run_in_order_and_compose(scenario):
    log = []
    method = Recorder(log, "a") + Recorder(log, "b")
    assert isinstance(method, Compose) and method.name == "Recorder+Recorder"
    myelin.fit(scenario, model_for(scenario), method, iterations=1, progress=False)
    assert log[:2] == [("a", "setup"), ("b", "setup")]
    evals = [e[2] for e in log if e[0] == "a" and e[1] == "before_eval"]
    assert evals == [0, 1, 2] * 4      # the random-init row and every row of the matrix
    one_task = [e for e in log if e[1] != "before_eval"][2:2 + 2 + 10 + 2]
    assert one_task == [("a", "begin_task", 0), ("b", "begin_task", 0),
                        ("a", "prepare_batch"), ("b", "prepare_batch"),
                        ("a", "train_step"), ("b", "train_step"),
                        ("a", "loss"), ("b", "loss"),
                        ("a", "after_backward"), ("b", "after_backward"),
                        ("a", "after_step"), ("b", "after_step"),
                        ("a", "end_task", 0), ("b", "end_task", 0)]

    assert set(HOOKS) == {e[1] for e in log}


def test_misspelt_hook_is_refused():
    with pytest.raises(TypeError, match="misspelt hook 'end_task'"):
        class Typo(Method):
            def end_tsk(self, ctx):
                pass


def test_a_method_can_own_the_step(scenario):
    class ManualSGD(Method):
        def train_step(self, ctx, batch):
            ctx.model.zero_grad()
            loss = ctx.loss(ctx.model, batch)
            loss.backward()
            with torch.no_grad():
                params = list(ctx.model.parameters())
                torch._foreach_add_(params, [p.grad for p in params], alpha=-0.1)
            return loss.detach()

    calls = []

    class Spy(Method):
        def setup(self, ctx):
            ctx.optimizer.register_step_post_hook(lambda *a: calls.append(1))

    torch.manual_seed(0)
    owned = myelin.fit(scenario, model_for(scenario), ManualSGD() + Spy(), iterations=60,
                       progress=False)
    plain = myelin.fit(scenario, model_for(scenario), None, iterations=60, progress=False)
    assert not calls                         # the loop's optimizer never stepped
    assert owned.accuracy == plain.accuracy  # the same SGD update, written by the method


def test_a_method_can_change_the_batch_and_compose_with_ewc(scenario):
    class LastBatchReplay(Method):
        """Concatenate the last batch of the previous task to every batch."""

        def setup(self, ctx):
            self.memory, self.sizes = None, []

        def prepare_batch(self, ctx, batch):
            self.last = batch
            if self.memory is None:
                return batch
            return tuple(torch.cat([a, b]) for a, b in zip(batch, self.memory))

        def loss(self, ctx, batch, loss):
            self.sizes.append(len(batch[0]))
            return loss

        def end_task(self, ctx):
            self.memory = self.last

    replay = LastBatchReplay()
    method = replay + make_method("ewc", lam=10)          # ER + EWC in one line
    r = myelin.fit(scenario, model_for(scenario), method, iterations=5, batch_size=32,
                   progress=False)
    assert replay.sizes == [32] * 5 + [64] * 10
    assert r.config["method"]["name"] == "LastBatchReplay+ewc"
    assert r.config["importance"] == "fisher"


def not_a_method() -> int:
    return 1


def test_make_method_composition_and_module_factories():
    m = make_method("ewc+wva", lam=3.0)
    assert isinstance(m, Compose) and [p.config["lam"] for p in m.parts] == [3.0, 3.0]
    with pytest.raises(ValueError, match="takes no option"):
        make_method("finetune+l2", gamma=1.0)
    assert make_method("myelin.methods:finetune").name == "finetune"
    with pytest.raises(ValueError, match="cannot import module"):
        make_method("no_such_module_xyz:f")
    with pytest.raises(ValueError, match="no callable"):
        make_method("myelin.methods:no_such_factory")
    with pytest.raises(TypeError, match=r"not a myelin\.methods\.Method"):
        make_method("tests.test_methods:not_a_method")


def test_online_importance_tracks_the_outermost_optimizer(scenario):
    seen = []

    class Last(Method):
        def end_task(self, ctx):
            seen.append(ctx.optimizer)

    si_then_wva = make_method("si+wva", lam=1.0) + Last()
    myelin.fit(scenario, model_for(scenario), si_then_wva, iterations=3, progress=False)
    outermost = seen[0]
    assert type(outermost).__name__ == "WVA" and len(outermost._optimizer_step_post_hooks) == 1
    tracker = si_then_wva.parts[0].source.tracker
    assert tracker.steps_ == 3          # the last task's steps (reset after each earlier task)


def test_joint_is_the_upper_bound(scenario):
    aa = {m: myelin.fit(scenario, model_for(scenario), m, epochs=3, batch_size=32,
                        progress=False).metrics["average_accuracy"]
          for m in ("finetune", "joint")}
    assert aa["joint"] > aa["finetune"] + 0.1
    cont = myelin.fit(scenario, model_for(scenario), "joint",
                      method_options={"restart": False}, epochs=1, batch_size=32, progress=False)
    assert cont.config["method"] == {"name": "joint", "restart": False}


# the README's example ----------------------------------------------------------------------
def _readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- example:custom-method -->")[1].split(
        "<!-- /example:custom-method -->")[0]
    code = block.split("```python\n")[1].split("```")[0]
    assert len([ln for ln in code.splitlines() if ln.strip()]) <= 32
    return code


def test_readme_custom_method_runs_through_fit():
    code = _readme_example()
    ns: dict = {}
    out = io.StringIO()
    with redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), ns)
    aa = float(out.getvalue().strip().splitlines()[-1])
    assert 0.3 < aa <= 1.0
    # the method does what it says: the first layer is unchanged after task 1
    sc = SCENARIOS.get("permuted-digits")(2, seed=0)
    model = model_for(sc)
    snapshot = {}

    class Snapshot(Method):
        def end_task(self, ctx):
            snapshot[ctx.task_index] = model[1].weight.detach().clone()

    myelin.fit(sc, model, ns["freeze_first"]() + Snapshot(), iterations=30, progress=False)
    assert torch.equal(snapshot[0], snapshot[1])
    assert not torch.equal(snapshot[0], mlp((1, 8, 8), 10, (64,))[1].weight)


def test_cli_runs_a_method_from_a_module(tmp_path, monkeypatch):
    from myelin.cli import main

    code = _readme_example().split("\nscenario = ")[0]       # the method, not the demo run
    (tmp_path / "mymethods.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("mymethods", None)
    out = tmp_path / "run"
    assert main(["run", "--scenario", "permuted-digits", "--tasks", "2", "--iterations", "20",
                 "--method", "mymethods:freeze_first", "--out", str(out), "-q"]) == 0
    result = myelin.Result.load(out / "result.json")
    assert result.config["method"]["name"] == "FreezeFirstLayer"


# the loss is not hard-coded ------------------------------------------------------------------
class DictDigits(torch.utils.data.Dataset):
    """A task's (x, y) samples as dicts {"x": x, "labels": y}."""

    def __init__(self, ds):
        self.x, self.y = ds.tensors()

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"x": self.x[i], "labels": self.y[i]}


class KeywordNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = mlp((1, 8, 8), 10, (64,))

    def forward(self, x):
        return self.net(x)


def test_custom_loss_on_dict_batches_trains(scenario):
    dict_scenario = Scenario("dict-digits", [
        Task(t.name, DictDigits(t.train), DictDigits(t.test), t.classes)
        for t in scenario.tasks[:2]], 10, "domain")
    seen = []

    def loss(model, batch):
        seen.append(sorted(batch))
        return F.cross_entropy(model(batch["x"]), batch["labels"])

    torch.manual_seed(0)
    r = myelin.fit(dict_scenario, KeywordNet(), "l2", loss=loss, epochs=4, batch_size=32,
                   method_options={"lam": 0.01}, progress=False)
    assert seen[0] == ["labels", "x"]                  # the batch arrived as a dict
    assert r.accuracy[0][0] > 0.85 and r.accuracy[1][1] > 0.85
    assert r.config["loss"].startswith("<function")
    with pytest.raises(TypeError, match="per-sample logits"):   # a scalar loss has no Fisher
        myelin.fit(dict_scenario, KeywordNet(), "ewc", loss=loss, iterations=2, progress=False)


class HFLikeOutput(dict):
    __getattr__ = dict.get


class HFLike(nn.Module):
    """A model computing its own loss from the labels in the batch, like transformers'."""

    def __init__(self):
        super().__init__()
        self.net = mlp((1, 8, 8), 10, (64,))

    def forward(self, x, labels=None):
        logits = self.net(x)
        loss = None if labels is None else F.cross_entropy(logits, labels)
        return HFLikeOutput(loss=loss, logits=logits)


def test_model_loss_uses_the_models_own_loss(scenario):
    dict_scenario = Scenario("dict-digits", [
        Task(t.name, DictDigits(t.train), DictDigits(t.test), t.classes)
        for t in scenario.tasks[:2]], 10, "domain")
    torch.manual_seed(0)
    r = myelin.fit(dict_scenario, HFLike(), None, loss=ModelLoss(), epochs=3, batch_size=32,
                   progress=False)
    assert r.accuracy[0][0] > 0.85


def test_estimators_take_the_training_loss():
    torch.manual_seed(0)
    model = mlp((4,), 5, (8,))
    x, y = torch.randn(40, 4), torch.randint(0, 2, (40,))
    loss = CrossEntropy([0, 1])
    mine = fisher(model, (x, y), loss=loss)
    handle = model.register_forward_hook(
        lambda m, a, out: out.masked_fill(torch.tensor([False, False, True, True, True]),
                                          MASKED_LOGIT))
    try:
        reference = fisher(model, (x, y))
    finally:
        handle.remove()
    assert all(torch.equal(mine[n], reference[n]) for n in mine)
    unmasked = fisher(model, (x, y))
    assert not torch.equal(unmasked["3.weight"], mine["3.weight"])
    with pytest.raises(TypeError, match="per-sample logits"):
        fisher(model, (x, y), loss=lambda m, b: torch.zeros(()))
    assert list(loss.classes) == [0, 1] and "classes" in repr(loss)


# learners -----------------------------------------------------------------------------------
def test_any_learner_runs_through_the_runner(scenario):
    class Oracle(Learner):
        """Learns nothing; knows tasks it has seen."""

        def begin(self, sc, result):
            self.seen = set()

        def learn(self, k, task):
            self.seen.add(task.name)

        def evaluate(self, task, after):
            return 1.0 if task.name in self.seen else 0.1

        def config(self):
            return {"model": "oracle"}

    r = run(scenario, Oracle())
    assert r.accuracy[0] == [1.0, 0.1, 0.1] and r.accuracy[-1] == [1.0, 1.0, 1.0]
    assert r.metrics["forgetting"] == 0.0 and r.config["model"] == "oracle"
    assert r.config["scenario"]["name"] == scenario.name and len(r.timings) == 3
    with pytest.raises(TypeError, match="must implement evaluate"):
        run(scenario, Learner())


def test_context_helpers(scenario):
    ctx = Context(model_for(scenario), torch.optim.SGD(model_for(scenario).parameters(), 0.1),
                  scenario, CrossEntropy(), closing_samples=50)
    assert len(ctx.closing_set()) == 50 and ctx.held_out() == 0 and not ctx.is_last_task
    imp = ctx.estimate(ESTIMATORS.get("fisher-sampled"))
    assert imp.meta["seed"] == 0 and imp.meta["n_samples"] == 50
