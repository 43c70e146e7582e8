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
    # mutual gating: the WTA's random tie-breaks make the copies differ (with "exclusive"
    # gating, as in "sources", one L neuron per column spikes and nothing is random)
    kw = {**PRESETS["sources"], "alpha": 0.002, "gating_simultaneous": "mutual"}
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


# ---------------------------------------------------------------- gating variants
# One column of two L neurons on 16 (or 32) pixels at 255, which spike at every input step
# 0 … 9: neuron 0 gets 16·0.75 = 12 ≥ θ = 8.571 per step and fires whenever it is not blocked.
# Decay 2/3, plasticity and teacher off unless stated.
_BRIGHT = np.full((1, 16), 255, dtype=np.uint8)


def _pair(w1: float, **params) -> CoLaNET:
    return _fixed(16, 1, 2, np.array([[0.75] * 16, [w1] * 16]), **{**QUIET, **params})


@pytest.mark.parametrize("renew,expect,out", [(True, [10, 0], 10), (False, [8, 2], 8)])
def test_gating_renew(renew, expect, out):
    # neuron 1 gets 7 per step, lateral 2. renew: neuron 0's spikes at 0 … 9 keep it blocked.
    # no renewal: blocked at 1-2 (u 7 → 4.67 → 3.11), free at 3: 2.07 + 7 ≥ θ, fires with
    # neuron 0 and both block each other at 4-5; neuron 0 fires at 6 and blocks it at 7-8;
    # at 9 it fires again (u 7 → 4.67 → 3.11 → 9.07). Neuron 0: steps 0-3, 6-9.
    net = _pair(7 / 16, lateral_gating=2, gating_renew=renew)
    net.fit(_BRIGHT, np.array([0]))
    np.testing.assert_array_equal(net.counts[:, 0], expect)
    assert net.out_counts(_BRIGHT)[0, 0] == out      # steps with a spike


@pytest.mark.parametrize("mode,expect,out", [("mutual", [4, 4], 4), ("free", [10, 10], 10),
                                             ("exclusive", [10, 0], 10)])
def test_gating_simultaneous_spikers(mode, expect, out):
    # neuron 1 gets 9 ≥ θ per step: both cross the threshold at step 0. mutual: they block
    # each other for 2 steps, fire at 0, 3, 6, 9; free: neither blocks the other; exclusive:
    # only neuron 0 (12 − θ > 9 − θ) fires, and its spikes keep neuron 1 blocked.
    net = _pair(9 / 16, lateral_gating=2, gating_simultaneous=mode)
    net.fit(_BRIGHT, np.array([0]))
    np.testing.assert_array_equal(net.counts[:, 0], expect)
    assert net.out_counts(_BRIGHT)[0, 0] == out


def test_gating_exclusive_discards_the_losers_input_of_that_step():
    # lateral 1, no renewal, neuron 1 gets 9: it loses at 0 (u back to 0), is blocked at 1,
    # free at 2 (u = 9 ≥ θ, loses again: neuron 0 is blocked at no step) ... it never fires
    # and ends the input phase at potential 0.
    net = _pair(9 / 16, lateral_gating=1, gating_simultaneous="exclusive", gating_renew=False)
    net.fit(_BRIGHT[:, :16], np.array([0]))
    np.testing.assert_array_equal(net.counts[:, 0], [10, 0])
    assert net.u[1] == 0.0


@pytest.mark.parametrize("pot,u1", [("leak", 5.5 * (2 / 3) ** 19), ("hold", 5.5),
                                    ("reset", 0.0)])
def test_gating_potential_of_a_blocked_neuron(pot, u1):
    # neuron 1 gets 5.5 at step 0 (below θ), then neuron 0's spikes block it for the rest of
    # the image (steps 1 … 19): its potential leaks 19 times, is held, or was reset to 0.
    net = _pair(5.5 / 16, lateral_gating=10, gating_potential=pot)
    net.fit(_BRIGHT, np.array([0]))
    assert net.u[1] == pytest.approx(u1, abs=1e-12)
    np.testing.assert_array_equal(net.counts[:, 0], [10, 0])


@pytest.mark.parametrize("pot,expect,out", [("leak", [10, 0], 10), ("hold", [8, 2], 8),
                                            ("reset", [10, 0], 10)])
def test_gating_potential_changes_the_spikes(pot, expect, out):
    # no renewal, lateral 2, neuron 1 gets 5.5: leaking (5.5 → 3.67 → 2.44, + 5.5 = 7.13) or
    # reset it never reaches θ; held at 5.5 it does at step 3 (3.67 + 5.5 = 9.17) and step 9,
    # blocking neuron 0 at 4-5 as in test_gating_renew. Inference follows the same rule.
    net = _pair(5.5 / 16, lateral_gating=2, gating_renew=False, gating_potential=pot)
    net.fit(_BRIGHT, np.array([0]))
    np.testing.assert_array_equal(net.counts[:, 0], expect)
    assert net.out_counts(_BRIGHT)[0, 0] == out


@pytest.mark.parametrize("discarded,expect", [(True, [11, 0]), (False, [11, 1])])
def test_gating_teacher_input_to_a_blocked_neuron(discarded, expect):
    # the teacher (bias 3, never blocked) reaches both neurons at steps 11 … 19; neuron 0 is
    # forced at 18 (as in the teacher-blocking test). Neuron 1 (no input weights) is blocked
    # through 19 by neuron 0's spikes: the teacher's input is discarded, or forces it at 18 too.
    net = _fixed(16, 1, 2, np.array([[0.75] * 16, [0.0] * 16]), hebbian=0.0, dopamine=0.0,
                 bias_weight=3.0, teacher_blocking=False, lateral_gating=10,
                 gating_teacher=discarded)
    net.fit(_BRIGHT, np.array([0]))
    np.testing.assert_array_equal(net.counts[:, 0], expect)
    np.testing.assert_array_equal(net.counts[:, 1], [1, expect[1]])


@pytest.mark.parametrize("reset,expect", [(False, [10, 5]), (True, [10, 10])])
def test_gating_block_across_images(reset, expect):
    # image 1 drives neuron 0 (pixels 0-15), which blocks neuron 1 through step 9 + 15 = 24,
    # i.e. steps 0-4 of image 2, which drives neuron 1 (pixels 16-31) at every input step.
    w = np.zeros((2, 32))
    w[0, :16] = w[1, 16:] = 0.75
    x = np.zeros((2, 32), dtype=np.uint8)
    x[0, :16] = x[1, 16:] = 255
    net = _fixed(32, 1, 2, w, lateral_gating=15, gating_image_reset=reset, **QUIET)
    net.fit(x, np.array([0, 0]))
    np.testing.assert_array_equal(net.counts[:, 0], expect)
    assert net.out_counts(x[1:])[0, 0] == 10                 # inference: every image unblocked


def test_gating_parameters_are_checked():
    p = CoLaNET(4, 2, 1).get_params()
    assert (p["gating_renew"], p["gating_simultaneous"], p["gating_potential"],
            p["gating_teacher"], p["gating_image_reset"]) == (True, "mutual", "leak", True, False)
    src = PRESETS["sources"]                  # the variant the validation trials chose
    assert (src["gating_simultaneous"], src["gating_teacher"]) == ("exclusive", False)
    with pytest.raises(ValueError, match="gating_simultaneous must be 'mutual' or 'free'"):
        CoLaNET(4, 2, 1, gating_simultaneous="first")
    with pytest.raises(ValueError, match="gating_potential must be"):
        CoLaNET(4, 2, 1, gating_potential="zero")
    for name in ("gating_renew", "gating_teacher", "gating_image_reset"):
        with pytest.raises(TypeError, match=f"{name} must be a bool"):
            CoLaNET(4, 2, 1, **{name: 1})


def test_preset_myelin_gated_is_myelin_plus_the_gating_with_slower_stability_growth():
    gated, myelin, sources = PRESETS["myelin-gated"], PRESETS["myelin"], PRESETS["sources"]
    changed = {k for k in {*gated, *myelin} if gated.get(k) != myelin.get(k)}
    assert changed == {"lateral_gating", "gating_simultaneous", "gating_teacher", "stability"}
    assert gated["stability"] < myelin["stability"]
    net = CoLaNET(784, 10, 2, **gated)
    assert net.get_params()["teacher_blocking"] is True        # unlike "sources"
    assert sources["teacher_blocking"] is False
    assert (gated["gating_simultaneous"], gated["gating_teacher"]) == \
        (sources["gating_simultaneous"], sources["gating_teacher"])


def test_gated_teacher_is_blocked_once_the_network_answers():
    # the teacher of "myelin-gated" is blocked by OUT: far fewer forced spikes than the same
    # training with the teacher never blocked (as in "sources")
    x, y = _blobs(600, seed=3)
    kw = {k: v for k, v in PRESETS["myelin-gated"].items() if k != "silent_synapses"}
    blocked = CoLaNET(24, 3, 4, seed=0, **kw).fit(x, y)
    open_ = CoLaNET(24, 3, 4, seed=0, **{**kw, "teacher_blocking": False}).fit(x, y)
    assert 2 * blocked.stats()["forced"].sum() < open_.stats()["forced"].sum()
