"""myelin.analysis: the Fisher overlap and the perturbation test (Kirkpatrick et al. 2017)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

from myelin import Importance
from myelin.analysis import KINDS, PerturbationResult, overlap, perturbation_test
from myelin.importance import fisher, mas, signal


def imp(**tensors):
    return Importance({k.replace("_", "."): torch.as_tensor(v, dtype=torch.float64)
                       for k, v in tensors.items()})


def random_importance(seed, zeros=0.0):
    g = torch.Generator().manual_seed(seed)
    values = {"0.weight": torch.rand(4, 3, generator=g), "0.bias": torch.rand(4, generator=g),
              "2.weight": torch.rand(2, 4, generator=g)}
    if zeros:
        values = {n: v * (torch.rand(v.shape, generator=g) > zeros) for n, v in values.items()}
    return Importance(values)


# --------------------------------------------------------------------------------------------
# overlap


@pytest.mark.parametrize("per", ["layer", "model", "parameter"])
def test_overlap_of_an_importance_with_itself_is_one(per):
    a = random_importance(0)
    got = overlap(a, a, per=per)
    values = [got] if per == "model" else list(got.values())
    assert values == pytest.approx([1.0] * len(values), abs=1e-12)


def test_disjoint_supports_give_zero_overlap():
    a = imp(layer_weight=[1.0, 2.0, 0.0, 0.0], layer_bias=[0.0, 3.0])
    b = imp(layer_weight=[0.0, 0.0, 5.0, 1.0], layer_bias=[4.0, 0.0])
    assert overlap(a, b, per="model") == pytest.approx(0.0, abs=1e-12)
    assert overlap(a, b) == {"layer": pytest.approx(0.0, abs=1e-12)}


def test_overlap_matches_the_frechet_distance_by_hand():
    # â = (1, 0), b̂ = (1/2, 1/2): d² = ½[(1 − √½)² + ½] = 1 − √½, overlap √½
    got = overlap(imp(w=[3.0, 0.0]), imp(w=[2.0, 2.0]), per="model")
    assert got == pytest.approx(math.sqrt(0.5), abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_overlap_is_symmetric_bounded_and_scale_invariant(seed):
    a, b = random_importance(seed, zeros=0.3), random_importance(seed + 100, zeros=0.3)
    for per in ("layer", "model", "parameter"):
        ab, ba = overlap(a, b, per=per), overlap(b, a, per=per)
        assert ab == pytest.approx(ba, abs=1e-12)
        scaled = overlap(a * 1e6, b / 1e-3, per=per)
        assert scaled == pytest.approx(ab, abs=1e-6)        # float32 rounding
        for v in ([ab] if per == "model" else ab.values()):
            assert 0.0 <= v <= 1.0
    assert overlap(a, b, per="model") < 1.0


def test_per_layer_groups_a_modules_parameters_and_normalises_each_layer():
    a = random_importance(3)
    # the same importance in layer 0, 10x larger in layer 2: every layer overlaps fully, but
    # the whole-model diagonals are not proportional
    b = Importance({n: v * (10.0 if n.startswith("2.") else 1.0) for n, v in a.items()})
    per_layer = overlap(a, b)
    assert list(per_layer) == ["0", "2"]
    assert per_layer == {"0": pytest.approx(1.0), "2": pytest.approx(1.0)}
    assert overlap(a, b, per="model") < 0.95
    assert list(overlap(a, b, per="parameter")) == ["0.weight", "0.bias", "2.weight"]


def test_overlap_of_real_estimators_on_a_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3))
    x, y = torch.randn(40, 5), torch.randint(0, 3, (40,))
    f, m = fisher(model, (x, y)), mas(model, (x, y))
    got = overlap(f, m)
    assert list(got) == ["0", "2"] and all(0 < v <= 1 for v in got.values())
    assert overlap(f, f * 3.0, per="model") == pytest.approx(1.0)


def test_overlap_rejects_bad_input_naming_the_argument():
    a = random_importance(0)
    with pytest.raises(ValueError, match=r"'per'.*'depth'"):
        overlap(a, a, per="depth")
    with pytest.raises(TypeError, match="'b' argument"):
        overlap(a, [1, 2])
    with pytest.raises(ValueError, match=r"only in 'a' \['2.weight'\]"):
        overlap(a, Importance({n: v for n, v in a.items() if n != "2.weight"}))
    with pytest.raises(ValueError, match=r"'0.bias' has shape"):
        overlap(a, Importance({**a, "0.bias": torch.rand(5)}))
    with pytest.raises(ValueError, match=r"'a' argument.*negative"):
        overlap({**a, "0.bias": -torch.rand(4)}, a)
    with pytest.raises(ValueError, match=r"'b' argument.*NaN"):
        overlap(a, {**a, "0.bias": torch.full((4,), float("nan"))})
    with pytest.raises(ValueError, match=r"'a' argument.*empty"):
        overlap({}, {})
    zero2 = Importance({**a, "2.weight": torch.zeros(2, 4)})
    with pytest.raises(ValueError, match="'b' argument of overlap is zero everywhere over "
                                         "layer '2'"):
        overlap(a, zero2)
    assert 0 < overlap(a, zero2, per="model") < 1       # the whole model still has a trace
    zero = Importance({n: torch.zeros_like(v) for n, v in a.items()})
    with pytest.raises(ValueError, match="'a' argument of overlap is zero everywhere"):
        overlap(zero, a, per="model")


# --------------------------------------------------------------------------------------------
# perturbation test on a small MLP trained on scikit-learn's digits


@pytest.fixture(scope="module")
def trained():
    x, y = load_digits(return_X_y=True)
    order = np.random.RandomState(0).permutation(len(x))
    x = torch.tensor(x[order] / 16.0, dtype=torch.float32)
    y = torch.tensor(y[order], dtype=torch.long)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(0)
    for _ in range(15):
        perm = torch.randperm(1300, generator=g)
        for i in range(0, 1300, 32):
            idx = perm[i:i + 32]
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    train, test = (x[:1300], y[:1300]), (x[1300:], y[1300:])
    return model, train, test


def test_inverse_importance_hurts_less_than_uniform_and_the_null_space_least(trained):
    model, train, test = trained
    res = perturbation_test(model, fisher(model, train), test, norms=[0, 2, 4, 8], samples=5,
                            seed=0)
    assert isinstance(res, PerturbationResult) and res.kinds == KINDS
    assert res.baseline_accuracy > 0.9
    for kind in KINDS:            # norm 0 is the unperturbed model
        assert res.loss[kind][0] == pytest.approx(res.baseline_loss)
        assert res.accuracy[kind][0] == pytest.approx(res.baseline_accuracy)
    for i in (2, 3):              # norms 4 and 8
        null, inv, uni = (res.loss[k][i] for k in ("null-space", "inverse-importance",
                                                   "uniform"))
        assert null < inv < uni
        assert res.accuracy["inverse-importance"][i] >= res.accuracy["uniform"][i]
    assert res.loss["uniform"][3] > res.loss["uniform"][1] > res.baseline_loss
    assert 0 < res.null_space < res.n_parameters == sum(p.numel() for p in model.parameters())
    assert res.meta["estimator"] == "fisher"
    assert res.meta["rms_per_element"][3] == pytest.approx(8 / math.sqrt(res.n_parameters))


@pytest.mark.parametrize("estimator", [mas, signal])
def test_any_estimator_can_be_tested(trained, estimator):
    model, train, test = trained
    res = perturbation_test(model, estimator(model, train), test, norms=[8], samples=3, seed=1)
    assert res.loss["inverse-importance"][0] < res.loss["uniform"][0]
    assert res.loss["null-space"][0] < res.loss["uniform"][0]


def test_weights_modes_and_global_rng_are_restored_exactly(trained):
    model, train, test = trained
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ids = {n: id(p) for n, p in model.named_parameters()}
    grads = {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}
    model.train()
    model[1].eval()                     # a mixed mode, restored module by module
    rng = torch.get_rng_state()
    perturbation_test(model, fisher(model, train), test, norms=[1, 30], samples=2, seed=3)
    assert torch.equal(torch.get_rng_state(), rng)
    assert model.training and not model[1].training and model[0].training
    for n, p in model.named_parameters():
        assert id(p) == ids[n] and torch.equal(p, before[n])
        assert (p.grad is None) if grads[n] is None else torch.equal(p.grad, grads[n])
    model.eval()


def test_weights_are_restored_when_the_evaluation_fails(trained):
    model, train, test = trained
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    calls = []

    def flaky(m, batch):
        calls.append(1)
        if len(calls) > 2:
            raise RuntimeError("boom")
        return F.cross_entropy(m(batch[0]), batch[1])

    with pytest.raises(RuntimeError, match="boom"):
        perturbation_test(model, fisher(model, train), test, norms=[5.0], loss=flaky)
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n])


def test_same_seed_same_curves_and_a_custom_loss(trained):
    model, train, test = trained
    f = fisher(model, train)
    a = perturbation_test(model, f, test, norms=[3], kinds=["uniform"], samples=2, seed=7)
    b = perturbation_test(model, f, test, norms=[3], kinds=["uniform"], samples=2, seed=7)
    c = perturbation_test(model, f, test, norms=[3], kinds=["uniform"], samples=2, seed=8)
    assert a.loss == b.loss and a.loss != c.loss and a.kinds == ("uniform",)
    from myelin.losses import CrossEntropy
    d = perturbation_test(model, f, test, norms=[3], kinds=["uniform"], samples=2, seed=7,
                          loss=CrossEntropy())
    assert d.loss["uniform"] == pytest.approx(a.loss["uniform"], rel=1e-6)
    assert set(d.accuracy) == set(a.accuracy)
    for kind in a.accuracy:                  # approx does not take nested dicts in pytest 8+
        assert list(d.accuracy[kind]) == pytest.approx(list(a.accuracy[kind]))


def test_result_serialises_and_plots(trained, tmp_path):
    model, train, test = trained
    f = fisher(model, train)
    res = perturbation_test(model, f, test, norms=[0, 4, 8], samples=2, seed=0)
    data = json.loads(json.dumps(res.to_dict()))
    assert data["kinds"] == list(KINDS) and len(data["loss"]["uniform"]) == 3
    fig = res.plot()
    assert len(fig.axes) == 2 and len(fig.axes[0].lines) == 4          # 3 kinds + baseline
    other = perturbation_test(model, signal(model, train), test, norms=[0, 4, 8], samples=2)
    assert other.plot(axes=fig.axes, label="SIG") is fig
    assert len(fig.axes[0].lines) == 7
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "fisher: uniform" in labels and "SIG: null-space" in labels
    fig.savefig(tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 0


def test_perturbation_test_rejects_bad_input(trained):
    model, train, test = trained
    f = fisher(model, train)
    ok = {"norms": [1.0]}
    with pytest.raises(TypeError, match="'model'"):
        perturbation_test("model", f, test, **ok)
    with pytest.raises(ValueError, match=r"'importance'.*without importance \['2.bias'\]"):
        perturbation_test(model, Importance({n: v for n, v in f.items() if n != "2.bias"}),
                          test, **ok)
    with pytest.raises(ValueError, match="shape mismatches"):
        perturbation_test(model, Importance({**f, "2.bias": torch.ones(3)}), test, **ok)
    with pytest.raises(ValueError, match=r"'importance'.*negative"):
        perturbation_test(model, {**f, "2.bias": -torch.ones(10)}, test, **ok)
    with pytest.raises(ValueError, match="zero everywhere"):
        perturbation_test(model, Importance({n: torch.zeros_like(v) for n, v in f.items()}),
                          test, **ok)
    with pytest.raises(ValueError, match=r"'norms'.*empty"):
        perturbation_test(model, f, test, norms=[])
    with pytest.raises(ValueError, match=r"'norms'.*-1"):
        perturbation_test(model, f, test, norms=[1, -1])
    with pytest.raises(TypeError, match="'norms'"):
        perturbation_test(model, f, test, norms="1,2")
    with pytest.raises(ValueError, match="'kinds'"):
        perturbation_test(model, f, test, kinds=["gaussian"], **ok)
    with pytest.raises(ValueError, match="repeats"):
        perturbation_test(model, f, test, kinds=["uniform", "uniform"], **ok)
    with pytest.raises(ValueError, match="'threshold'"):
        perturbation_test(model, f, test, threshold=-1, **ok)
    with pytest.raises(ValueError, match="'damping'"):
        perturbation_test(model, f, test, damping=0, **ok)
    with pytest.raises(ValueError, match="'samples'"):
        perturbation_test(model, f, test, samples=0, **ok)
    with pytest.raises(ValueError, match="labelled"):
        perturbation_test(model, f, test[0], **ok)
    positive = Importance({n: v + 1.0 for n, v in f.items()})
    with pytest.raises(ValueError, match="null space is empty"):
        perturbation_test(model, positive, test, threshold=0.0, **ok)
    # without the null space, a strictly positive importance is fine
    res = perturbation_test(model, positive, test, kinds=("uniform", "inverse-importance"),
                            threshold=0.0, **ok)
    assert res.null_space == 0
