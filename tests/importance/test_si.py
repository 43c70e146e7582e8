import pytest
import torch
from torch import nn

from myelin.importance import SynapticIntelligence


def test_two_sgd_steps_by_hand():
    model = nn.Linear(2, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.5, -1.0]]))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    si = SynapticIntelligence(model, damping=0.1)
    xs = [torch.tensor([[1.0, 2.0]]), torch.tensor([[-1.0, 0.5]])]
    w0 = model.weight.detach().clone()
    expected_omega = torch.zeros(1, 2, dtype=torch.float64)
    for x in xs:
        opt.zero_grad()
        loss = (model(x.double()) - 1.0).pow(2).sum()
        loss.backward()
        g = model.weight.grad.clone()
        before = model.weight.detach().clone()
        opt.step()
        si.update()
        expected_omega -= g * (model.weight.detach() - before)   # = lr * g² for plain SGD
    assert torch.allclose(si.omega_path_["weight"], expected_omega)
    # by hand: step 1 at w0 = (0.5, -1): out = -1.5, g1 = 2(-1.5 - 1)(1, 2) = (-5, -10)
    g1 = torch.tensor([-5.0, -10.0], dtype=torch.float64)
    w1 = w0[0] - 0.1 * g1                                       # (1.0, 0.0)
    out2 = -w1[0] + 0.5 * w1[1]                                  # -1.0
    g2 = 2 * (out2 - 1.0) * torch.tensor([-1.0, 0.5], dtype=torch.float64)  # (4, -2)
    w2 = w1 - 0.1 * g2
    omega = 0.1 * g1**2 + 0.1 * g2**2
    imp = si.importance()
    assert torch.allclose(model.weight.detach()[0], w2)
    assert torch.allclose(imp["weight"][0], omega / ((w2 - w0[0]) ** 2 + 0.1))
    assert si.steps_ == 2
    si.reset()
    assert torch.equal(si.importance()["weight"], torch.zeros(1, 2, dtype=torch.float64))


def test_attach_to_optimizer_equals_manual_updates():
    torch.manual_seed(0)
    x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    results = []
    for attach in (True, False):
        torch.manual_seed(1)
        model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        si = SynapticIntelligence(model)
        if attach:
            si.attach(opt)
        for i in range(0, 32, 8):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[i:i + 8]), y[i:i + 8]).backward()
            opt.step()
            if not attach:
                si.update()
        results.append(si.importance())
    for n in results[0]:
        assert torch.equal(results[0][n], results[1][n])
    assert results[0]["0.weight"].abs().sum() > 0


def test_bad_damping_and_frozen_model():
    model = nn.Linear(2, 2)
    for bad in (0, -0.1, float("nan"), True):
        with pytest.raises(ValueError, match="damping"):
            SynapticIntelligence(model, damping=bad)
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        SynapticIntelligence(model)
