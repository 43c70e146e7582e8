"""CoLaNET.load: in place on an instance (as EWC.load / WVA.load), a constructor on the class."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from myelin.snn import CoLaNET

STATE = ("r", "w", "theta_add", "sigma", "free", "u", "counts", "clock", "last_spike")


def _data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two classes of 16-pixel images: bright left half or bright right half, with noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.integers(0, 60, (n, 16))
    x[y == 0, :8] += 190
    x[y == 1, 8:] += 190
    return x.astype(np.uint8), y


def _trained(tmp_path, **kwargs) -> tuple[CoLaNET, str]:
    x, y = _data(200)
    net = CoLaNET(16, 2, 2, alpha=0.01, seed=3, **kwargs).fit(x, y)
    path = str(tmp_path / "net.safetensors")
    net.save(path)
    return net, path


def _assert_same_state(a: CoLaNET, b: CoLaNET) -> None:
    for k in STATE:
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k), err_msg=k)
    assert a.get_params() == b.get_params() and a.images_seen == b.images_seen


def test_load_on_an_instance_loads_in_place(tmp_path):
    saved, path = _trained(tmp_path)
    net = CoLaNET(16, 2, 2, alpha=0.01, seed=3)
    assert np.abs(net.r - saved.r).max() > 0                  # something was learned
    with warnings.catch_warnings():
        warnings.simplefilter("error")                       # same settings: nothing to say
        assert net.load(path) is net
    _assert_same_state(net, saved)
    x, y = _data(100, seed=1)
    np.testing.assert_array_equal(net.predict(x), saved.predict(x))
    net.fit(x, y)
    saved.fit(x, y)
    _assert_same_state(net, saved)                           # continues identically
    assert net.r is not saved.r


def test_load_on_the_class_still_builds_a_network(tmp_path):
    saved, path = _trained(tmp_path)
    for twin in (CoLaNET.load(path), CoLaNET.from_file(path)):
        assert isinstance(twin, CoLaNET) and twin is not saved
        _assert_same_state(twin, saved)


def test_load_in_place_takes_the_saved_settings_and_says_so(tmp_path):
    saved, path = _trained(tmp_path, stability=0.01)
    net = CoLaNET(16, 2, 2, alpha=0.5, seed=3)
    with pytest.warns(UserWarning, match=r"saved with alpha=0\.01, stability=0\.01; this "
                                         r"network had alpha=0\.5, stability=0\.0\. The saved "
                                         "values are used"):
        net.load(path)
    _assert_same_state(net, saved)


def test_load_in_place_refuses_another_architecture(tmp_path):
    _, path = _trained(tmp_path)
    net = CoLaNET(16, 3, 2)
    before = net.r.copy()
    with pytest.raises(ValueError, match=r"another architecture \(n_classes: saved 2, this "
                                         r"network 3\)\. Use CoLaNET\.from_file"):
        net.load(path)
    np.testing.assert_array_equal(net.r, before)             # left as it was
    with pytest.raises(FileNotFoundError):
        net.load(tmp_path / "missing.safetensors")
