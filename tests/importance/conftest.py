"""Fixtures shared by the estimator tests: a small MLP and a labelled batch for it."""

import pytest
import torch

from .models import mlp


@pytest.fixture
def model():
    torch.manual_seed(0)
    return mlp((6, 8, 3))


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(20, 6, generator=g), torch.randint(0, 3, (20,), generator=g)
