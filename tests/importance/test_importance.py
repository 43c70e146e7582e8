"""The Importance container, data forms, mode restoring and bad input."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from myelin.importance import ESTIMATORS, Importance, fisher, mas, signal

from .models import mixed_data, mlp, trained_bn_mixed


def test_add_scale_and_sum(model, data):
    a, b = fisher(model, data), mas(model, data)
    total = a + b
    assert total.meta == {"estimator": "fisher+mas", "tasks": 2}
    assert torch.equal(total["0.weight"], a["0.weight"] + b["0.weight"])
    assert torch.equal((2 * a)["0.bias"], a["0.bias"] * 2)
    assert torch.allclose((a / 4)["0.bias"], a["0.bias"] / 4)
    s = sum([a, a, a])
    assert s.meta["tasks"] == 3 and torch.allclose(s["0.weight"], 3 * a["0.weight"])
    with pytest.raises(ValueError, match="finite"):
        a * float("inf")
    with pytest.raises(ValueError, match="different parameters"):
        a + Importance({"x": torch.ones(1)})
    with pytest.raises(ValueError, match="shape"):
        a + Importance({n: torch.ones(2) for n in a})


def test_stats_and_summary(model, data):
    imp = signal(model, data)
    st = imp.stats()
    assert set(st) == set(imp)
    assert st["0.weight"]["numel"] == 48
    assert st["0.weight"]["max"] >= st["0.weight"]["mean"] >= st["0.weight"]["min"] >= 0
    assert "0.weight" in imp.summary()


def test_save_load_roundtrip_and_mismatch(model, data, tmp_path):
    imp = fisher(model, data, empirical=False, seed=0)
    path = tmp_path / "imp.safetensors"
    imp.save(path)
    back = Importance.load(path, model=model)
    assert back.meta == imp.meta
    assert all(torch.equal(back[n], imp[n]) for n in imp)
    with pytest.raises(ValueError, match=r"shape mismatches: 0\.weight"):
        Importance.load(path, model=mlp((7, 8, 3)))
    with pytest.raises(ValueError, match="parameters without importance"):
        Importance.load(path, model=mlp((6, 8, 8, 3)))
    bad = tmp_path / "junk.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        Importance.load(bad)
    with pytest.raises(FileNotFoundError):
        Importance.load(tmp_path / "missing.safetensors")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".myelin-")] == []


def test_non_finite_values_rejected():
    with pytest.raises(ValueError, match="NaN or inf"):
        Importance({"w": torch.tensor([1.0, float("nan")])})
    with pytest.raises(TypeError):
        Importance({"w": [1.0]})


def test_all_data_forms_agree(model, data):
    x, y = data
    ref = fisher(model, (x, y))
    forms = [
        (x.numpy(), y.numpy()),
        DataLoader(TensorDataset(x, y), batch_size=7),
        TensorDataset(x, y),
        [(x[:5], y[:5]), (x[5:], y[5:])],
    ]
    for form in forms:
        imp = fisher(model, form)
        for n in ref:
            assert torch.allclose(imp[n], ref[n], atol=1e-6), type(form)
    limited = fisher(model, (x, y), max_samples=5)
    direct = fisher(model, (x[:5], y[:5]))
    assert limited.meta["n_samples"] == 5
    assert torch.allclose(limited["0.weight"], direct["0.weight"], atol=1e-7)


def test_estimators_restore_mode_and_leave_state_alone():
    model = trained_bn_mixed().train()
    model.attn.eval()                                  # a mixed-mode model stays mixed
    x, y = mixed_data(10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for est in (lambda: fisher(model, (x, y)), lambda: mas(model, x),
                lambda: fisher(model, x, empirical=False, exact=True)):
        est()
        assert model.training and not model.attn.training and model.bn.training
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
        assert all(p.grad is None for p in model.parameters())
        assert not model._forward_hooks and not model.fc1._forward_hooks


@pytest.mark.parametrize("estimator", [fisher, mas, signal])
def test_bad_input(estimator, model, data):
    x, y = data
    with pytest.raises(ValueError, match="no samples"):
        estimator(model, [])
    with pytest.raises(ValueError, match="no samples"):
        estimator(model, (x[:0], y[:0]))
    nan_x = x.clone()
    nan_x[3, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        estimator(model, (nan_x, y))
    with pytest.raises(TypeError, match="data must be"):
        estimator(model, 42)
    frozen = mlp((6, 8, 3)).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        estimator(frozen, data)


def test_label_errors(model, data):
    x, y = data
    with pytest.raises(ValueError, match=r"Labels must lie in \[0, 3\)"):
        fisher(model, (x, y + 3))
    with pytest.raises(TypeError, match="integer class indices"):
        fisher(model, (x, y.float()))
    with pytest.raises(ValueError, match="needs labels"):
        fisher(model, x)
    with pytest.raises(ValueError, match="exact=True"):
        fisher(model, (x, y), exact=True)
    with pytest.raises(ValueError, match="has 20 inputs but 19 labels"):
        fisher(model, [(x, y[:19])])


def test_non_finite_weights_are_reported(model, data):
    with torch.no_grad():
        model[0].weight[0, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or inf"):
        fisher(model, data)


def test_registry_did_you_mean():
    assert ESTIMATORS.get("mas") is mas
    with pytest.raises(ValueError, match="Did you mean 'fisher'"):
        ESTIMATORS.get("fishr")


def test_batchnorm_with_batch_statistics_is_rejected():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4, track_running_stats=False),
                          nn.Linear(4, 2))
    with pytest.raises(ValueError, match="batch statistics"):
        fisher(model, (torch.randn(8, 4), torch.randint(0, 2, (8,))))


def test_numpy_float64_inputs_cast_to_model_dtype(model, data):
    x, y = data
    imp = fisher(model, (x.double().numpy(), y.numpy()))
    assert imp["0.weight"].dtype == torch.float32
    assert isinstance(np.asarray(imp["0.weight"]), np.ndarray)


def test_normalised_has_mean_one_and_records_the_scale():
    imp = Importance({"a": torch.tensor([1.0, 3.0]), "b": torch.tensor([[2.0, 6.0]])},
                     {"estimator": "fisher"})
    out = imp.normalised()
    assert torch.equal(out["a"], torch.tensor([1 / 3, 1.0]))
    assert torch.equal(out["b"], torch.tensor([[2 / 3, 2.0]]))
    assert out.meta == {"estimator": "fisher", "normalised_by": 3.0}
    assert imp.meta == {"estimator": "fisher"}                  # the original is unchanged
    with pytest.raises(ValueError, match=r"fisher importance sums to 0\.0"):
        (imp * 0.0).normalised()
