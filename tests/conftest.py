import os

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `pytest -n 2` (the README's command) runs one worker per core: one torch thread each
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="module")
def scenario():
    """Three permuted-digits tasks (scikit-learn's 8x8 digits)."""
    from myelin.scenarios import SCENARIOS

    return SCENARIOS.get("permuted-digits")(3, seed=0)


def model_for(sc, seed=0):
    """A 64-wide one-hidden-layer MLP for `sc`, initialised from `seed`."""
    from myelin.models import mlp

    torch.manual_seed(seed)
    return mlp(sc.input_shape, sc.n_classes, (64,))
