"""Hsu et al.'s MAS form (benchmarks.catalogue.hsu_mas) against a direct per-batch computation."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from benchmarks.catalogue import BENCHMARK_ESTIMATORS, hsu_mas


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 4)).double()


def _expected(model, x, columns):
    expected = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for xb in (x[:4], x[4:8], x[8:]):
        model.zero_grad()
        model(xb)[:, columns].pow(2).mean().backward()       # the task's outputs only
        for n, p in model.named_parameters():
            expected[n] += p.grad.abs() / 3
    return expected


def test_hsu_mas_is_the_mean_over_batches_of_abs_grad_of_batch_mean():
    model = _model()
    x = torch.randn(10, 6, dtype=torch.float64)
    loss = SimpleNamespace(classes=[2, 0])           # the loss's classes: the task's outputs
    imp = hsu_mas(model, (x, None), loss=loss, seed=3, batch_size=4)   # batches of 4, 4, 2
    expected = _expected(model, x, [0, 2])
    for n in expected:
        assert torch.allclose(imp[n], expected[n], atol=1e-12), n
    assert imp.meta["estimator"] == "mas-hsu"
    assert BENCHMARK_ESTIMATORS["mas-hsu"] is hsu_mas


def _linear():
    """z = w x + b, one input, three outputs: w (1, 2, -1), b (1, 5, 0)."""
    model = nn.Linear(1, 3).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0], [2.0], [-1.0]]))
        model.bias.copy_(torch.tensor([1.0, 5.0, 0.0]))
    return model


X = torch.tensor([[1.0], [-3.0], [2.0]], dtype=torch.float64)     # batches of 2: (1, -3), (2)


def test_hsu_mas_by_hand_on_the_task_outputs():
    """Numbers worked by hand from Hsu et al.'s code (agents/regularization.py, MAS): per batch
    L = mean over the B samples and the C task outputs of z², so ∂L/∂w_c = 2/(B·C) Σ_n z_nc x_n
    and ∂L/∂b_c = 2/(B·C) Σ_n z_nc; the importance is |∂L| averaged over the batches (not over
    samples, and the absolute value taken per batch).

    Outputs 0 and 2 (C = 2). Batch 1 (B = 2, 2/(B·C) = 1/2): output 0, z = 2, -2: ∂w 4, ∂b 0;
    output 2, z = -1, 3: ∂w -5, ∂b 1. Batch 2 (B = 1, factor 1): output 0, z = 3: ∂w 6, ∂b 3;
    output 2, z = -2: ∂w -4, ∂b -2. Mean of |·|: w (5, 0, 4.5), b (1.5, 0, 1.5). (|mean| would
    give b_2 = 0.5; a mean over samples w_0 = 14/3; a sum over outputs twice these.)
    """
    imp = hsu_mas(_linear(), (X, None), loss=SimpleNamespace(classes=[2, 0]), batch_size=2)
    assert imp["weight"].flatten().tolist() == pytest.approx([5.0, 0.0, 4.5], abs=1e-12)
    assert imp["bias"].tolist() == pytest.approx([1.5, 0.0, 1.5], abs=1e-12)
    assert imp.meta == {"estimator": "mas-hsu", "n_samples": 3, "batch_size": 2}


def test_hsu_mas_by_hand_on_every_output():
    """As above with all three outputs (C = 3). Batch 1 (factor 1/3): z = (2, 7, -1) and
    (-2, -1, 3): ∂w (8, 10, -10)/3, ∂b (0, 6, 2)/3. Batch 2 (factor 2/3): z = (3, 9, -2):
    ∂w (4, 12, -8/3), ∂b (2, 6, -4/3). Mean of |·|: w (10/3, 23/3, 3), b (1, 4, 1)."""
    imp = hsu_mas(_linear(), (X, None), batch_size=2)
    assert imp["weight"].flatten().tolist() == pytest.approx([10 / 3, 23 / 3, 3.0], abs=1e-12)
    assert imp["bias"].tolist() == pytest.approx([1.0, 4.0, 1.0], abs=1e-12)


@pytest.mark.parametrize("loss", [None, SimpleNamespace(classes=None)])
def test_hsu_mas_uses_every_output_without_a_class_restriction(loss):
    model = _model()
    x = torch.randn(10, 6, dtype=torch.float64)
    imp = hsu_mas(model, (x, None), loss=loss, batch_size=4)
    expected = _expected(model, x, [0, 1, 2, 3])
    for n in expected:
        assert torch.allclose(imp[n], expected[n], atol=1e-12), n


@pytest.mark.parametrize("classes", [[1, 3], [0, 1, 2, 3], None])
def test_selecting_the_loss_classes_equals_dropping_the_masked_outputs_bitwise(classes):
    """The former contract: the runner masked the other classes' outputs to -1e9 with a forward
    hook and hsu_mas dropped the columns holding -1e9. Selecting `loss.classes` of the unmasked
    output gives the same numbers to the last bit (float32, as the benchmarks run)."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4))
    x = torch.randn(300, 6)
    new = hsu_mas(model, (x, None), loss=SimpleNamespace(classes=classes))
    if classes is not None:
        blocked = torch.ones(4, dtype=torch.bool)
        blocked[classes] = False
        hook = model.register_forward_hook(lambda m, a, out: out.masked_fill(blocked, -1e9))
    old = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    chunks = torch.split(x, 128)
    for xb in chunks:
        z = model(xb)
        z = z[:, (z != -1e9).all(0)]
        grads = torch.autograd.grad(z.pow(2).mean(), list(model.parameters()))
        for (n, _), g in zip(model.named_parameters(), grads):
            old[n] += g.abs() / len(chunks)
    if classes is not None:
        hook.remove()
    for n in old:
        assert torch.equal(new[n], old[n]), n
