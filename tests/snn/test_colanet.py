"""CoLaNET: encoding, neuron update, resource map, renormalisation, threshold, WTA, learning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from myelin.snn import CoLaNET, encode, fit_scenario, resource_for_weight, weight_of_resource
from myelin.snn import _kernels as K

QUIET = {"hebbian": 0.0, "dopamine": 0.0, "bias_weight": 0.0}   # plasticity and teacher off


SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def _digits(n_train: int = 600, n_test: int = 300):
    """Real MNIST digits from ../shared/data (present beside the repository in CI)."""
    from myelin.data import DataNotFoundError, load
    try:
        tr, te = load("mnist", "train", root=SHARED), load("mnist", "test", root=SHARED)
        return (tr.images[:n_train].reshape(n_train, -1).numpy(), tr.targets[:n_train].numpy(),
                te.images[:n_test].reshape(n_test, -1).numpy(), te.targets[:n_test].numpy())
    except DataNotFoundError:
        pytest.skip("MNIST not available")


# ---------------------------------------------------------------- encoding
def test_encoding_gives_floor_10b_over_255_spikes_for_every_intensity():
    b = np.arange(256, dtype=np.uint8)[None, :]
    spikes = encode(b)                                   # (1, 10, 256)
    assert spikes.shape == (1, 10, 256)
    np.testing.assert_array_equal(spikes.sum(1)[0], (10 * np.arange(256)) // 255)


def test_encoding_matches_the_incrementing_accumulator():
    rng = np.random.default_rng(0)
    b = rng.integers(0, 256, size=(3, 50)).astype(np.uint8)
    s = np.zeros(b.shape)
    ref = np.zeros((3, 10, 50), dtype=bool)
    for k in range(10):                                  # s += b/255; spike at s >= 1
        s += b / 255.0
        ref[:, k] = s >= 1 - 1e-12
        s[ref[:, k]] -= 1
    np.testing.assert_array_equal(encode(b), ref)


def test_float_input_in_unit_range_and_errors():
    x = np.linspace(0, 1, 784)[None]
    assert encode(x).sum() == encode((x * 255).round().astype(np.uint8)).sum()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        encode(x * 2)
    with pytest.raises(ValueError, match="NaN"):
        encode(np.full((1, 4), np.nan))
    with pytest.raises(ValueError, match="no samples"):
        encode(np.zeros((0, 4)))


# ---------------------------------------------------------------- resource <-> weight
def test_resource_weight_map():
    wmin, wmax = -0.7, 0.864
    r0 = resource_for_weight(0.0, wmin, wmax)
    assert weight_of_resource(r0, wmin, wmax) == pytest.approx(0.0, abs=1e-12)
    r = np.linspace(-5, 500, 2000)
    w = weight_of_resource(r, wmin, wmax)
    assert np.all(np.diff(w) >= 0) and w.min() == wmin and w.max() < wmax
    assert np.all(w[r <= 0] == wmin)
    for target in (-0.5, 0.0, 0.3, 0.8):
        assert weight_of_resource(resource_for_weight(target, wmin, wmax), wmin, wmax) \
            == pytest.approx(target)
    with pytest.raises(ValueError):
        resource_for_weight(wmax, wmin, wmax)


# ---------------------------------------------------------------- neuron update
def _one_neuron(weight: float, pixel: int, **params) -> CoLaNET:
    net = CoLaNET(1, 1, 1, alpha=0.0, **{**QUIET, **params})
    net.r[:] = resource_for_weight(weight, net.params["w_min"], net.params["w_max"])
    net.w[:] = weight
    return net


@pytest.mark.parametrize("weight,pixel", [(0.8, 255), (0.5, 255), (0.8, 128), (0.3, 255)])
def test_lif_update_matches_a_hand_simulation(weight, pixel):
    net = _one_neuron(weight, pixel)
    net.fit(np.array([[pixel]], dtype=np.uint8), np.array([0]))
    code = encode(np.array([[pixel]], dtype=np.uint8))[0, :, 0]
    u, spikes, theta, decay = 0.0, 0, net.params["theta"], net.params["decay"]
    for k in range(net.params["steps"]):
        u = u * decay + (net.w[0, 0] if k < 10 and code[k] else 0.0)
        if u >= theta:
            spikes, u = spikes + 1, 0.0
    assert net.counts[0, 0] == spikes
    assert net.out_counts(np.array([[pixel]], dtype=np.uint8))[0, 0] == spikes


def test_adaptive_threshold_is_alpha_times_positive_weight_sum():
    rng = np.random.default_rng(1)
    net = CoLaNET(20, 1, 1, alpha=0.05, **QUIET)
    w = rng.uniform(-0.2, 0.8, size=20)
    net.r[0] = [resource_for_weight(v, -0.7, 0.864) for v in w]
    net.w[0] = weight_of_resource(net.r[0], -0.7, 0.864)
    net.fit(np.full((1, 20), 255, dtype=np.uint8), np.array([0]))
    assert net.counts[0, 0] > 0                           # it spiked, so θ_add was set
    assert net.theta_add[0] == pytest.approx(0.05 * np.clip(net.w[0], 0, None).sum())
    # a higher threshold silences the same input at inference
    spikes_low = net.out_counts(np.full((1, 20), 255, dtype=np.uint8))[0, 0]
    net.theta_add[0] += 100
    assert net.out_counts(np.full((1, 20), 255, dtype=np.uint8))[0, 0] < spikes_low


def test_wta_passes_one_winner_per_column_and_step():
    net = CoLaNET(5, 2, 4, alpha=0.0, **QUIET)
    net.r[:] = resource_for_weight(0.8, -0.7, 0.864)      # identical neurons fire together
    net.w[:] = weight_of_resource(net.r, -0.7, 0.864)
    net.fit(np.full((3, 5), 255, dtype=np.uint8), np.array([0, 1, 0]))
    spikes = net.counts[:, 0].reshape(2, 4)
    wins = net.counts[:, 2].reshape(2, 4)
    assert (spikes == spikes[0, 0]).all() and spikes[0, 0] > 0
    steps_with_spikes = spikes[0, 0]                       # all four spike in the same steps
    np.testing.assert_array_equal(wins.sum(1), [steps_with_spikes, steps_with_spikes])
    assert (wins > 0).sum() >= 3                           # random tie-break spreads the wins


# ---------------------------------------------------------------- plasticity
def test_renormalisation_conserves_resource_without_silent_synapses():
    x, y, _, _ = _digits(300, 10)
    net = CoLaNET(784, 10, 3, alpha=0.005, silent_synapses=0)
    total0 = net.r.sum(1)
    net.fit(x, y)
    assert np.abs(net.r - net.r[0, 0]).max() > 0.01       # something was learned
    np.testing.assert_allclose(net.r.sum(1) + net.free, total0, rtol=0, atol=1e-6)


def test_silent_synapses_leak_resource():
    x, y, _, _ = _digits(300, 10)
    net = CoLaNET(784, 10, 3, alpha=0.005, silent_synapses=1000)
    total0 = net.r.sum(1)
    net.fit(x, y)
    lost = total0 - (net.r.sum(1) + net.free)
    assert np.abs(lost).max() > 1e-3


def test_state_only_changes_through_fit_and_save_load_round_trip(tmp_path):
    x, y, xt, _ = _digits(200, 50)
    net = CoLaNET(784, 10, 2, alpha=0.01, seed=3).fit(x[:100], y[:100])
    before = net.r.copy()
    net.predict(xt)
    np.testing.assert_array_equal(net.r, before)           # inference never learns
    net.save(tmp_path / "net.safetensors")
    twin = CoLaNET.load(tmp_path / "net.safetensors")
    np.testing.assert_array_equal(twin.predict(xt), net.predict(xt))
    net.fit(x[100:], y[100:])
    twin.fit(x[100:], y[100:])
    np.testing.assert_array_equal(twin.r, net.r)           # continues identically
    assert twin.stats()["images_seen"] == 200


def test_errors():
    with pytest.raises(ValueError, match="alpha"):
        CoLaNET(alpha=-1)
    with pytest.raises(TypeError, match="Unknown CoLaNET parameter"):
        CoLaNET(alpah=0.1)
    net = CoLaNET(4, 2, 1)
    with pytest.raises(ValueError, match="4 inputs"):
        net.fit(np.zeros((2, 5), dtype=np.uint8), np.array([0, 1]))
    with pytest.raises(ValueError, match="Labels must lie"):
        net.fit(np.zeros((2, 4), dtype=np.uint8), np.array([0, 2]))
    with pytest.raises(ValueError, match="shape"):
        net.fit(np.zeros((2, 4), dtype=np.uint8), np.array([0]))
    with pytest.raises(FileNotFoundError):
        CoLaNET.load("/nonexistent/net.safetensors")


# ---------------------------------------------------------------- end to end
def test_learns_mnist_digits_far_above_chance():
    x, y, xt, yt = _digits(3000, 500)
    net = CoLaNET(784, 10, 10, alpha=0.005, seed=0).fit(x, y)
    acc = net.score(xt, yt)
    assert acc > 0.6, acc                                  # chance is 0.1
    stats = net.stats()
    assert stats["recruited"].min() >= 1
    assert np.all((stats["effective"] >= 1) & (stats["effective"] <= stats["recruited"] + 1e-9))
    assert (net.predict(xt) == -1).mean() < 0.2


def test_fit_scenario_fills_the_accuracy_matrix():
    from myelin.scenarios import permuted
    _digits(1, 1)                                          # skips without MNIST
    scenario = permuted("mnist", 2, seed=0, per_task_samples=800, root=SHARED)
    net = CoLaNET(784, 10, 5, alpha=0.005)
    result = fit_scenario(net, scenario, eval_samples=200)
    a = np.array(result.accuracy)
    assert a.shape == (2, 2)
    assert a[0, 0] > 0.3 and a[1, 1] > 0.3
    assert result.metrics["average_accuracy"] == pytest.approx(a[-1].mean())


def test_kernel_constants_are_consistent():
    fp_names = [n for n in dir(K) if n.startswith("F_")]
    assert sorted(getattr(K, n) for n in fp_names) == list(range(len(fp_names)))


def test_stats_effective_microcolumns_is_the_exp_entropy_of_reward_shares():
    net = CoLaNET(4, 3, 3)
    net.counts[:, 3] = [5, 5, 0,  9, 0, 0,  0, 0, 0]      # rewards, class by class
    eff = net.stats()["effective"]
    assert eff == pytest.approx([2.0, 1.0, 0.0])
    net.counts[:, 3] = [1, 1, 1,  1, 2, 1,  0, 0, 4]
    p = np.array([0.25, 0.5, 0.25])
    assert net.stats()["effective"] == pytest.approx([3.0, np.exp(-(p * np.log(p)).sum()), 1.0])
