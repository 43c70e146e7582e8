import inspect

import pytest
import torch

from myelin.data.datasets import load
from myelin.scenarios import KINDS, SCENARIOS, NamedScenario, permuted, rotated, sequence, split
from myelin.scenarios.kinds import CATALOGUE

OLD_NAMES = [f"{k}-{d}" for d in ("mnist", "fashion-mnist", "digits")
             for k in ("permuted", "rotated")] + \
    [f"split-{d}-{s}" for d in ("mnist", "fashion-mnist", "digits")
     for s in ("task", "domain", "class")] + ["mnist-fashion-mnist", "mnist-emnist-letters"]


@pytest.fixture(scope="module")
def digits():
    return load("digits", "train"), load("digits", "test")


def same(a, b):
    assert a.name == b.name and a.setting == b.setting and a.n_classes == b.n_classes
    assert a.config == b.config and a.seen_classes == b.seen_classes
    assert a.labels_trick == b.labels_trick and len(a) == len(b)
    for s, t in zip(a, b):
        assert s.name == t.name and s.classes == t.classes
        for x, y in ((s.train, t.train), (s.test, t.test)):
            assert torch.equal(x.images, y.images) and torch.equal(x.targets, y.targets)


def test_every_named_scenario_is_generated_from_kind_and_dataset():
    assert sorted(OLD_NAMES) == SCENARIOS.names()
    for pattern, kind, datasets, bound in CATALOGUE:
        assert kind in KINDS
        for d in datasets:
            named = SCENARIOS.get(pattern.format(dataset=d.replace("+", "-"), **bound))
            assert isinstance(named, NamedScenario) and named.dataset == d
            assert named.bound == bound and named.kind == kind


def test_named_signatures_are_the_kinds_without_dataset_and_bound_options():
    assert list(inspect.signature(SCENARIOS.get("permuted-digits")).parameters) == [
        "n_tasks", "seed", "root", "per_task_samples"]
    params = inspect.signature(SCENARIOS.get("split-digits-class")).parameters
    assert "setting" not in params and {"labels_trick", "seen_classes"} <= set(params)
    assert params["n_tasks"].default == 5 and params["labels_trick"].annotation is bool
    assert "n_tasks" not in inspect.signature(SCENARIOS.get("mnist-fashion-mnist")).parameters
    for entry in KINDS.entries():                    # typed and documented, for the CLI
        for name, p in list(inspect.signature(entry.factory, eval_str=True)
                            .parameters.items())[1:]:
            assert p.annotation is not p.empty and p.default is not p.empty, (entry.name, name)
            assert f"{name}:" in entry.factory.__doc__, (entry.name, name)


def test_named_scenarios_build_what_the_builders_build(digits):
    same(SCENARIOS.get("permuted-digits")(3, seed=1), permuted("digits", 3, 1))
    same(SCENARIOS.get("permuted-digits")(), permuted("digits", 10, 0))
    same(SCENARIOS.get("permuted-digits")(n_tasks=None, per_task_samples=50, seed=2),
         permuted("digits", 10, 2, per_task_samples=50))
    same(SCENARIOS.get("rotated-digits")(2), rotated("digits", [0.0, 90.0]))
    groups = [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    same(SCENARIOS.get("split-digits-class")(2, labels_trick=True),
         split("digits", groups, "class", labels_trick=True))
    same(SCENARIOS.get("split-digits-domain")(2, seed=4), split("digits", groups, "domain",
                                                                seed=4))
    same(KINDS.get("sequence")("digits+digits", per_task_samples=30),
         sequence("digits", "digits", per_task_samples=30))


def test_options_a_scenario_does_not_take_are_errors():
    with pytest.raises(ValueError, match=r"'permuted-digits' takes no option\(s\) "
                                         r"\['seen_classes'\]"):
        SCENARIOS.get("permuted-digits")(2, seen_classes=True)
    with pytest.raises(ValueError, match="takes no option"):
        SCENARIOS.get("mnist-fashion-mnist")(n_tasks=2)
    with pytest.raises(TypeError, match="mnist-fashion-mnist"):
        SCENARIOS.get("mnist-fashion-mnist")(2)               # no positional n_tasks
    for name in ("permuted-digits", "rotated-digits", "split-digits-task"):
        with pytest.raises(ValueError, match=r"n_tasks must be a positive int\. Got 0"):
            SCENARIOS.get(name).check(0)                     # no data loaded
    with pytest.raises(ValueError, match="1, 2, 5 or 10"):
        SCENARIOS.get("split-digits-class")(3)
    with pytest.raises(ValueError, match="labels_trick"):
        SCENARIOS.get("split-digits-task")(2, labels_trick=True)


def test_summaries_come_from_the_kinds():
    entries = {e.name: e.summary for e in SCENARIOS.entries()}
    assert entries["permuted-mnist"] == ("mnist with a fixed pixel permutation per task "
                                         "(domain-IL; default 10 tasks)")
    assert entries["split-digits-class"] == ("digits split into class groups, "
                                             "class-incremental (default 5 tasks)")
    assert "mnist then fashion-mnist" in entries["mnist-fashion-mnist"]
