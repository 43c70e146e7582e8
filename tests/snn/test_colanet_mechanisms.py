"""CoLaNET mechanisms of the public sources (issue 24): lateral gating, teacher blocking, reward
routing, unconditional depression, copies; their defaults leave the simulation bit-for-bit."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from myelin.snn import PRESETS, CoLaNET, encode, resource_for_weight

QUIET = {"hebbian": 0.0, "dopamine": 0.0, "bias_weight": 0.0}   # plasticity and teacher off
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def _hash(*arrays: np.ndarray) -> str:
    return hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in arrays)
                          ).hexdigest()[:16]


def _blobs(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three classes of 24-pixel images, each brightening its own 8 pixels, with noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.integers(0, 80, (n, 24))
    for c in range(3):
        x[y == c, 8 * c:8 * c + 8] += 170
    return x.astype(np.uint8), y


def _fixed(n_inputs: int, n_classes: int, micro: int, w: np.ndarray, **params) -> CoLaNET:
    """A network with given weights (J, n_inputs), no threshold adaptation."""
    net = CoLaNET(n_inputs, n_classes, micro, alpha=0.0, **params)
    net.w[:] = w
    p = net.params
    net.r[:] = [[resource_for_weight(v, p["w_min"], p["w_max"]) for v in row] for row in w]
    return net


# ---------------------------------------------------------------- defaults unchanged
def test_defaults_reproduce_the_previous_simulation_bit_for_bit():
    # hashes recorded with the code before issue 24 (same data, same calls)
    x, y = _blobs(400)
    net = CoLaNET(24, 3, 4, seed=5, **PRESETS["myelin"]).fit(x, y)
    assert _hash(net.r, net.sigma, net.counts) == "69c6144f3e7ac79a"
    assert _hash(CoLaNET(24, 3, 4, seed=5).fit(x, y).r) != ""   # runs; silent on blobs
    from myelin.data import DataNotFoundError, load
    try:
        tr, te = load("mnist", "train", root=SHARED), load("mnist", "test", root=SHARED)
    except DataNotFoundError:
        pytest.skip("MNIST not available")
    xm, ym = tr.images[:400].reshape(400, -1).numpy(), tr.targets[:400].numpy()
    xt = te.images[:200].reshape(200, -1).numpy()
    for kw, state, votes in (({}, "f2ae928f350e65d7", "0aecd86c3c0f3e8b"),
                             (PRESETS["myelin"], "bf1a064e91fc582c", "5442512439d3ecdb")):
        net = CoLaNET(784, 10, 3, seed=5, **kw).fit(xm, ym, chunk=150)
        assert _hash(net.r, net.sigma, net.counts, net.theta_add) == state
        assert _hash(net.out_counts(xt)) == votes


def test_new_parameters_default_to_the_old_behaviour_and_are_checked():
    net = CoLaNET(4, 2, 1)
    p = net.get_params()
    assert (p["lateral_gating"], p["teacher_blocking"], p["reward_to"],
            p["unconditional_depression"], p["copies"]) == (0, True, "gate", 0.0, 1)
    assert repr(net).endswith("seed=0)")
    with pytest.raises(ValueError, match="reward_to must be 'gate' or 'column'"):
        CoLaNET(4, 2, 1, reward_to="all")
    with pytest.raises(ValueError, match="lateral_gating must be an int"):
        CoLaNET(4, 2, 1, lateral_gating=-1)
    with pytest.raises(TypeError, match="teacher_blocking must be a bool"):
        CoLaNET(4, 2, 1, teacher_blocking=0)
    with pytest.raises(ValueError, match="copies must be a positive int"):
        CoLaNET(4, 2, 1, copies=0)
    with pytest.raises(ValueError, match="unconditional_period must be a positive int"):
        CoLaNET(4, 2, 1, unconditional_period=0)
    src = CoLaNET(784, 10, 15, **PRESETS["sources"]).get_params()
    assert (src["lateral_gating"], src["teacher_blocking"], src["bias_weight"]) == (10, False, 3)


# ---------------------------------------------------------------- lateral gating
def _reference_column(w: np.ndarray, pixels: np.ndarray, lateral: int, theta: float,
                      decay: float) -> tuple[np.ndarray, int]:
    """Hand simulation of one column: per-neuron spikes and OUT count (steps with a spike)."""
    code = encode(pixels[None])[0]
    M = w.shape[0]
    u, blocked = np.zeros(M), np.full(M, -1)
    spikes, out = np.zeros(M, dtype=int), 0
    for k in range(20):
        cur = w[:, code[k]].sum(1) if k < 10 else np.zeros(M)
        fired = np.zeros(M, dtype=bool)
        for m in range(M):
            if lateral and blocked[m] >= k:        # input discarded, cannot fire
                u[m] *= decay
                continue
            u[m] = u[m] * decay + cur[m]
            if u[m] >= theta:
                fired[m], u[m] = True, 0.0
        for m in np.flatnonzero(fired):            # blocks the column's others for `lateral`
            others = np.arange(M) != m
            blocked[others] = np.maximum(blocked[others], k + lateral)
        spikes += fired
        out += fired.any()
    return spikes, out


def test_lateral_gating_silences_the_other_neurons_of_the_column():
    # neuron 0 fires at every input step from step 0; neuron 1 alone at steps 1, 3, 5, 7, 9
    w = np.array([[0.75] * 16, [0.375] * 16])
    x = np.full((1, 16), 255, dtype=np.uint8)
    for lateral, expect in ((0, [10, 5]), (10, [10, 0])):
        net = _fixed(16, 1, 2, w, lateral_gating=lateral, **QUIET)
        net.fit(x, np.array([0]))
        np.testing.assert_array_equal(net.counts[:, 0], expect)
        assert (net.counts[:, 0] == _reference_column(w, x[0], lateral, 8.571, 2 / 3)[0]).all()


@pytest.mark.parametrize("lateral", [0, 1, 3, 10])
def test_lateral_gating_matches_a_hand_simulation_in_training_and_inference(lateral):
    rng = np.random.default_rng(lateral)
    w = rng.integers(-2, 7, size=(5, 12)) / 8.0          # exact sums in any order
    x = rng.choice(np.array([0, 60, 128, 200, 255], dtype=np.uint8), size=(6, 12))
    for img in x:
        spikes, out = _reference_column(w, img, lateral, 8.571, 2 / 3)
        net = _fixed(12, 1, 5, w, lateral_gating=lateral, **QUIET)
        net.fit(img[None], np.array([0]))
        np.testing.assert_array_equal(net.counts[:, 0], spikes)
        assert net.out_counts(img[None])[0, 0] == out


def test_lateral_gating_blocks_only_the_own_column():
    w = np.array([[0.75] * 16, [0.375] * 16, [0.375] * 16, [0.0] * 16])   # columns of 2
    net = _fixed(16, 2, 2, w, lateral_gating=10, **QUIET)
    net.fit(np.full((1, 16), 255, dtype=np.uint8), np.array([0]))
    np.testing.assert_array_equal(net.counts[:, 0], [10, 0, 5, 0])


# ---------------------------------------------------------------- teacher blocking
@pytest.mark.parametrize("blocking,forced", [(True, 0), (False, 1)])
def test_teacher_acts_after_a_correct_out_spike_only_when_not_blocked(blocking, forced):
    # L fires at every input step (OUT of the label's column fires); bias 3 alone from step 11:
    # u = 3, 5, 6.33, 7.22, 7.81, 8.21, 8.47, 8.65 ≥ 8.571 at step 18 -> one forced spike
    w = np.full((1, 16), 0.75)
    net = _fixed(16, 1, 1, w, hebbian=0.0, dopamine=0.0, bias_weight=3.0,
                 teacher_blocking=blocking)
    net.fit(np.full((1, 16), 255, dtype=np.uint8), np.array([0]))
    assert net.counts[0, 0] == 10 + forced and net.counts[0, 1] == forced


# ---------------------------------------------------------------- reward routing
@pytest.mark.parametrize("reward_to", ["gate", "column"])
def test_reward_reaches_the_winner_or_every_recently_active_neuron_of_the_column(reward_to):
    w = np.array([[0.5] * 20, [0.5] * 20, [0.0] * 20])  # two identical, one silent neuron
    net = _fixed(20, 1, 3, w, hebbian=0.0, dopamine=0.1, bias_weight=0.0, stability=0.0,
                 renorm_threshold=float("inf"), reward_to=reward_to, seed=1)
    r0 = net.r.copy()
    net.fit(np.full((2, 20), 255, dtype=np.uint8), np.array([0, 0]))
    gain = (net.r - r0).sum(1)
    assert gain[2] == 0 and net.counts[2, 3] == 0           # never spiked: nothing
    if reward_to == "column":                               # both spikers, every reward
        assert net.counts[0, 3] == net.counts[1, 3] > 0
        assert gain[0] == pytest.approx(gain[1]) and gain[0] > 0
    else:                                                   # one winner per rewarded step
        assert net.counts[:, 3].sum() <= net.counts[:, 2].sum()


# ---------------------------------------------------------------- unconditional depression
@pytest.mark.parametrize("period,times", [(10, 2), (5, 4), (20, 1)])
def test_unconditional_depression_lowers_every_resource_each_period(period, times):
    net = CoLaNET(6, 2, 2, alpha=0.0, unconditional_depression=-0.01,
                  unconditional_period=period, **QUIET)
    r0 = net.r.copy()
    net.fit(np.zeros((1, 6), dtype=np.uint8), np.array([1]))   # 20 silent steps
    np.testing.assert_allclose(net.r, r0 - 0.01 * times, rtol=0, atol=1e-12)
    assert (net.free == 0).all()                               # a leak, not redistributed


# ---------------------------------------------------------------- copies
def test_copies_sum_the_votes_of_independently_seeded_networks(tmp_path):
    x, y = _blobs(300)
    xt, _ = _blobs(60, seed=1)
    kw = {**PRESETS["sources"], "alpha": 0.002}
    ens = CoLaNET(24, 3, 2, seed=2, copies=3, **kw).fit(x, y)
    singles = [CoLaNET(24, 3, 2, seed=2 * 3 + i, **kw).fit(x, y) for i in range(3)]
    votes = [s.out_counts(xt) for s in singles]
    assert any((v != votes[0]).any() for v in votes[1:])      # the copies differ
    np.testing.assert_array_equal(ens.out_counts(xt), sum(votes))
    stats = ens.stats()
    assert stats["spikes"].shape == (3, 6)
    np.testing.assert_array_equal(stats["spikes"][:, 2:4], singles[1].stats()["spikes"])
    assert repr(ens).endswith("copies=3)") and ens.get_params()["copies"] == 3
    ens.save(tmp_path / "ens.safetensors")
    twin = CoLaNET.load(tmp_path / "ens.safetensors")
    np.testing.assert_array_equal(twin.out_counts(xt), ens.out_counts(xt))
    twin.fit(x[:50], y[:50])
    ens.fit(x[:50], y[:50])
    for a, b in zip(twin._members(), ens._members()):
        np.testing.assert_array_equal(a.r, b.r)               # continues identically
    with pytest.raises(ValueError, match="copies: saved 3, this network 1"):
        CoLaNET(24, 3, 2).load(tmp_path / "ens.safetensors")
