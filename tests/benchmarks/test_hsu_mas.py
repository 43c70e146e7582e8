"""Hsu et al.'s MAS form (benchmarks/reproduce.py) against a direct per-batch computation."""

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.reproduce import hsu_mas


def test_hsu_mas_is_the_mean_over_batches_of_abs_grad_of_batch_mean():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 4)).double()
    x = torch.randn(10, 6, dtype=torch.float64)
    blocked = torch.tensor([False, True, False, True])
    hook = model.register_forward_hook(lambda m, a, out: out.masked_fill(blocked, -1e9))
    imp = hsu_mas(model, (x, None), batch_size=4)             # batches of 4, 4, 2
    hook.remove()
    expected = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for xb in (x[:4], x[4:8], x[8:]):
        model.zero_grad()
        model(xb)[:, [0, 2]].pow(2).mean().backward()         # the task's outputs only
        for n, p in model.named_parameters():
            expected[n] += p.grad.abs() / 3
    for n in expected:
        assert torch.allclose(imp[n], expected[n], atol=1e-12), n
    assert imp.meta["estimator"] == "mas-hsu"
