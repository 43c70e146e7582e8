"""SIG against the formula computed by hand."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from myelin.importance import signal

from .models import Mixed, mixed_data, mlp, trained_bn_mixed


def close(a, b, tol=1e-10):
    assert a.shape == b.shape
    assert (a - b).abs().max().item() <= tol * max(1.0, b.abs().max().item())


def test_mlp_by_hand():
    torch.manual_seed(0)
    model = mlp((10, 16, 8, 3), act=lambda: nn.LeakyReLU(0.1)).double()
    x = torch.randn(37, 10, dtype=torch.float64)
    imp = signal(model, x, batch_size=8)
    fc1, fc2, fc3 = model[0], model[2], model[4]
    a1 = F.leaky_relu(fc1(x), 0.1)
    a2 = F.leaky_relu(fc2(a1), 0.1)
    p = F.softmax(fc3(a2), -1)
    with torch.no_grad():
        close(imp["0.weight"], fc1.weight.abs() * x.abs().mean(0))
        close(imp["0.bias"], a1.abs().mean(0))
        close(imp["2.weight"], fc2.weight.abs() * a1.abs().mean(0))
        close(imp["2.bias"], a2.abs().mean(0))
        close(imp["4.weight"], fc3.weight.abs() * a2.abs().mean(0))
        close(imp["4.bias"], p.mean(0))
    assert imp.meta == {"estimator": "signal", "last_layer": "softmax", "n_samples": 37}
    lin = signal(model, x, last_layer="linear")
    with torch.no_grad():
        close(lin["4.bias"], fc3(a2).abs().mean(0))


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3, padding=1, stride=2, dilation=1)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(3, 4, 2, dilation=2)
        self.fc = nn.Linear(4 * 2 * 2, 5)

    def forward(self, x):
        h = self.relu(self.conv1(x))
        h = torch.tanh(self.conv2(h))            # functional activation: not seen by hooks
        return self.fc(h.flatten(1))


def tap_sums(x, k, stride, dilation, padding):
    """Σ_k Σ_p |x[c, p·s + t·d]| by explicit loops over taps and output positions."""
    c = x.shape[1]
    xp = F.pad(x.abs(), (padding, padding, padding, padding))
    hp, wp = xp.shape[2:]
    out_h = (hp - dilation * (k - 1) - 1) // stride + 1
    out_w = (wp - dilation * (k - 1) - 1) // stride + 1
    s = torch.zeros(c, k, k, dtype=x.dtype)
    for u in range(k):
        for v in range(k):
            for i in range(out_h):
                for j in range(out_w):
                    r, q = i * stride + u * dilation, j * stride + v * dilation
                    s[:, u, v] += xp[:, :, r, q].sum(0)
    return s


def test_cnn_by_hand():
    torch.manual_seed(1)
    model = CNN().double()
    x = torch.randn(11, 2, 7, 7, dtype=torch.float64)
    imp = signal(model, x)
    with torch.no_grad():
        h1 = F.relu(model.conv1(x))
        z2 = model.conv2(h1)
        h2 = torch.tanh(z2)
        n = len(x)
        close(imp["conv1.weight"], model.conv1.weight.abs() * tap_sums(x, 3, 2, 1, 1)[None] / n)
        close(imp["conv1.bias"], h1.abs().sum((0, 2, 3)) / n)
        close(imp["conv2.weight"], model.conv2.weight.abs() * tap_sums(h1, 2, 1, 2, 0)[None] / n)
        close(imp["conv2.bias"], z2.abs().sum((0, 2, 3)) / n)   # pre-activation, documented
        close(imp["fc.weight"], model.fc.weight.abs() * h2.flatten(1).abs().mean(0))
        close(imp["fc.bias"], F.softmax(model.fc(h2.flatten(1)), -1).mean(0))


def test_grouped_conv1d_by_hand():
    torch.manual_seed(2)
    conv = nn.Conv1d(4, 6, 3, groups=2, padding=1, bias=False).double()
    model = nn.Sequential(conv, nn.Flatten(), nn.Linear(6 * 5, 2)).double()
    x = torch.randn(5, 4, 5, dtype=torch.float64)
    imp = signal(model, x)
    xp = F.pad(x.abs(), (1, 1)).sum(0)                       # (4, 7)
    taps = torch.stack([xp[:, t:t + 5].sum(1) for t in range(3)], 1)   # (4, 3)
    expected = torch.cat([taps[:2].expand(3, 2, 3), taps[2:].expand(3, 2, 3)]) / 5
    close(imp["0.weight"], conv.weight.detach().abs() * expected)


def test_mixed_model_all_layers_covered():
    model = trained_bn_mixed()
    x, _ = mixed_data(24)
    imp = signal(model, x, batch_size=10)
    assert set(imp) == {n for n, _ in model.named_parameters()}
    for n, v in imp.items():
        assert v.shape == dict(model.named_parameters())[n].shape
        assert (v >= 0).all(), n
        if n != "emb.weight":                                # padding row is zero
            assert (v > 0).any(), n
    with torch.no_grad():                                    # embedding: |w| · mean count
        ids = x[:, 36:].long()
        counts = torch.bincount(ids.flatten(), minlength=12).double() / len(x)
        close(imp["emb.weight"], model.emb.weight.abs() * counts[:, None])
        # attention: in_proj rows for q see |e|, out_proj sees the concatenated heads
        e = model.emb(ids)
        close(imp["attn.in_proj_weight"][:8], model.attn.in_proj_weight[:8].abs()
              * e.abs().sum((0, 1)) / len(x))
        heads = attention_heads(model.attn, e)
        close(imp["attn.out_proj.weight"], model.attn.out_proj.weight.abs()
              * heads.abs().sum((0, 1)) / len(x))
        out, _ = model.attn(e, e, e)
        close(imp["attn.out_proj.bias"], out.abs().sum((0, 1)) / len(x))


def attention_heads(attn, e):
    """Concatenated per-head attention outputs, computed step by step."""
    n, t, d = e.shape
    h = attn.num_heads
    q, k, v = F.linear(e, attn.in_proj_weight, attn.in_proj_bias).chunk(3, -1)
    split = lambda z: z.reshape(n, t, h, d // h).transpose(1, 2)  # noqa: E731
    q, k, v = split(q), split(k), split(v)
    w = torch.softmax(q @ k.transpose(-1, -2) / (d // h) ** 0.5, -1)
    return (w @ v).transpose(1, 2).reshape(n, t, d)


class Odd(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)
        self.prelu = nn.PReLU()

    def forward(self, x):
        return self.prelu(self.fc(x))


def test_unsupported_layer_is_named():
    with pytest.raises(TypeError, match=r"'prelu' \(PReLU\)"):
        signal(Odd(), torch.randn(4, 3))


def test_signal_needs_no_gradients_and_restores_mode():
    model = Mixed().double().train()
    x, _ = mixed_data(8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    signal(model, x)
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
