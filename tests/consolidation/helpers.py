"""A small real continual-learning task: permuted scikit-learn digits, three tasks."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn


def permuted_digits(n_tasks: int = 3, seed: int = 0):
    x, y = load_digits(return_X_y=True)
    rng = np.random.RandomState(seed)
    order = rng.permutation(len(x))
    x = torch.tensor(x[order] / 16.0, dtype=torch.float32)
    y = torch.tensor(y[order], dtype=torch.long)
    perms = [np.arange(64)] + [rng.permutation(64) for _ in range(n_tasks - 1)]
    split = 1300
    return [(x[:split][:, p], y[:split], x[split:][:, p], y[split:]) for p in perms]


def make_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def run(tasks, *, method=None, optimizer="sgd", lr=0.1, epochs=8, batch=32, estimator=None,
        grad_mode="penalty", seed=0, si=None):
    """Train the tasks in sequence; returns the accuracy matrix a[k][j] as a list of lists.

    method(model, opt) -> (consolidator or None, optimizer to step); estimator(model, x, y) gives
    the importance after each task. grad_mode "penalty" adds method.penalty() to the loss,
    "closed" calls method.apply_to_grad() after backward, "optimizer" leaves it to the optimizer
    that method() returned (e.g. EWC.wrap).
    """
    model = make_model(seed)
    base = (torch.optim.SGD(model.parameters(), lr=lr) if optimizer == "sgd"
            else torch.optim.Adam(model.parameters(), lr=lr))
    cons, opt = (None, base) if method is None else method(model, base)
    tracker = si(model) if si is not None else None
    if tracker is not None:
        tracker.attach(opt)
    g = torch.Generator().manual_seed(seed)
    matrix = []
    for xtr, ytr, _, _ in tasks:
        for _ in range(epochs):
            order = torch.randperm(len(xtr), generator=g)
            for i in range(0, len(xtr), batch):
                idx = order[i:i + batch]
                opt.zero_grad()
                loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
                if cons is not None and grad_mode == "penalty":
                    loss = loss + cons.penalty()
                loss.backward()
                if cons is not None and grad_mode == "closed":
                    cons.apply_to_grad()
                opt.step()
        if cons is not None:
            if tracker is not None:
                imp = tracker.importance()
                tracker.reset()
            else:
                imp = estimator(model, xtr[-500:], ytr[-500:]) if cons.needs_importance else None
            cons.consolidate(imp)
        matrix.append([accuracy(model, xte, yte) for _, _, xte, yte in tasks])
    return matrix, model


def tiny_model_and_importance(dtype: torch.dtype = torch.float64, seed: int = 0):
    """A 5-7-3 tanh MLP and a random importance for it (unit tests of the closed forms)."""
    from myelin import Importance

    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).to(dtype)
    imp = Importance({n: torch.rand_like(p) for n, p in model.named_parameters()})
    return model, imp


def perturb(model: nn.Module, scale: float = 0.3) -> None:
    """Move every parameter by `scale` × N(0, 1) noise, in place."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))
