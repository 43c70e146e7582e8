import numpy as np
import pytest
import torch

from myelin.data.datasets import load
from myelin.scenarios import SCENARIOS, permuted, rotated, sequence, split


@pytest.fixture(scope="module")
def digits():
    return load("digits", "train"), load("digits", "test")


def test_permuted(digits):
    sc = permuted(digits, 3, seed=1)
    assert len(sc) == 3 and sc.setting == "domain" and sc.n_classes == 10
    tr0, tr1 = sc[0].train, sc[1].train
    assert torch.equal(tr0.images, digits[0].images)                       # first = identity
    perm = np.random.RandomState(1).permutation(64)
    assert torch.equal(tr1.images.reshape(len(tr1), -1), digits[0].images.reshape(
        len(tr1), -1)[:, perm])
    assert torch.equal(tr1.targets, digits[0].targets)
    assert sorted(tr1.images.reshape(-1).tolist()) == sorted(tr0.images.reshape(-1).tolist())
    again = permuted(digits, 3, seed=1)
    assert torch.equal(again[2].test.images, sc[2].test.images)
    small = permuted(digits, 2, per_task_samples=100)
    assert len(small[1].train) == 100 and len(small[1].test) == len(digits[1])


@pytest.mark.parametrize("setting", ["task", "domain", "class"])
def test_split_settings(digits, setting):
    groups = [[0, 1], [2, 3], [4, 5]]
    sc = split(digits, groups, setting)
    assert len(sc) == 3
    for task, g in zip(sc, groups):
        labels = set(task.train.targets.tolist())
        if setting == "domain":
            assert labels == {0, 1} and task.classes == [0, 1]
        else:
            assert labels == set(g) and task.classes == g
    assert sc.n_classes == (2 if setting == "domain" else 10)
    assert sc.eval_mask(sc[1]) == ([2, 3] if setting == "task" else None)


def test_labels_trick_and_bad_groups(digits):
    sc = split(digits, [[0, 1], [2, 3]], "class", labels_trick=True)
    assert sc.train_mask(sc[1]) == [2, 3] and sc.eval_mask(sc[1]) is None
    with pytest.raises(ValueError, match="disjoint"):
        split(digits, [[0, 1], [1, 2]])
    with pytest.raises(ValueError, match="not in"):
        split(digits, [[0, 11]])
    with pytest.raises(ValueError, match="labels_trick"):
        split(digits, [[0, 1]], "task", labels_trick=True)
    with pytest.raises(ValueError, match="equal size"):
        split(digits, [[0, 1], [2, 3, 4]], "domain")


def test_seen_classes_masks_loss_and_prediction_to_the_classes_seen_so_far(digits):
    sc = split(digits, [[0, 1], [2, 3], [4, 5]], "class", seen_classes=True)
    assert sc.train_mask(sc[0]) == [0, 1] and sc.train_mask(sc[2]) == [0, 1, 2, 3, 4, 5]
    assert sc.eval_mask(sc[0], after=1) == [0, 1, 2, 3]       # task 1's test after task 2
    assert sc.eval_mask(sc[0]) is None                        # when is not said: all classes
    assert sc.config["seen_classes"]
    with pytest.raises(ValueError, match="seen_classes"):
        split(digits, [[0, 1]], "task", seen_classes=True)
    with pytest.raises(ValueError, match="seen_classes"):
        split(digits, [[0, 1]], "class", labels_trick=True, seen_classes=True)


def test_fit_with_seen_classes_never_predicts_an_unseen_class(digits):
    from torch import nn

    from myelin import fit
    sc = split(digits, [[0, 1], [2, 3], [4, 5]], "class", seen_classes=True)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with torch.no_grad():
        model[1].bias[6:] = 100.0            # unseen classes would win every argmax unmasked
    res = fit(sc, model, "finetune", iterations=30, batch_size=32, lr=0.1, progress=False)
    assert res.accuracy[0][0] > 0.9            # after task 1, only classes 0 and 1 compete
    assert res.accuracy[0][1] == 0.0           # task 2's classes are not predictable yet


def test_rotated(digits):
    sc = rotated(digits, [0, 90])
    a, b = sc[0].train.images, sc[1].train.images
    assert torch.allclose(a, digits[0].images.float() / 16, atol=1e-5)     # 0° is the identity
    assert torch.allclose(b, torch.rot90(a, 1, dims=(2, 3)), atol=1e-4) or torch.allclose(
        b, torch.rot90(a, -1, dims=(2, 3)), atol=1e-4)


def test_sequence_offsets_counts_and_class_selection(digits):
    sc = sequence(digits, digits, classes=[[0, 1, 2], [3, 4]], per_class=(50, 10))
    assert sc.setting == "class" and sc.n_classes == 5
    assert sc[0].classes == [0, 1, 2] and sc[1].classes == [3, 4]
    assert torch.bincount(sc[1].train.targets).tolist() == [0, 0, 0, 50, 50]
    assert len(sc[1].test) == 20
    shared = sequence(digits, digits, relabel="shared", classes=[[0, 1], [2, 3]])
    assert shared.setting == "domain" and set(shared[1].train.targets.tolist()) == {0, 1}
    with pytest.raises(ValueError, match="only"):
        sequence(digits, per_class=(10_000, 1))


def test_named_scenarios():
    assert "permuted-mnist" in SCENARIOS and "split-mnist-class" in SCENARIOS
    sc = SCENARIOS.get("split-digits-task")(5)
    assert [t.classes for t in sc] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    with pytest.raises(ValueError, match="1, 2, 5 or 10"):
        SCENARIOS.get("split-digits-class")(3)
