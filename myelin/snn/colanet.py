"""CoLaNET: Kiselev's columnar spiking network with local plasticity, as used by Larionov (2025).

One column per class, `microcolumns` L/WTA/REW-GATE triples per column, OUT and BIAS-GATE per
column. Only the input → L synapses learn, through a saturating synaptic resource with an
anti-Hebbian term (spikes that were not forced weaken the synapses that caused them), dopamine
from the REW-GATE when the winning microcolumn belongs to the label's column, a per-neuron
stability σ that halves later changes for every +1, and renormalisation of the freed resource
over the real plus `silent_synapses` virtual synapses. No backpropagation anywhere.

Parameters (defaults: the first KNP BLIFAT port, which Larionov started from; SPEC §2.6):

=====================  ==========  ============================================================
parameter              default     note (where the sources disagree)
=====================  ==========  ============================================================
alpha                  0.005       adaptive threshold θ_add = α·Σw⁺. First port 0.023817
                                   (Larionov's start: stable but loses plasticity), current
                                   KNP 0.218. Larionov's best: 0.005 (15 mc), 0.01 (45 mc).
theta                  8.571       θ_const of BLIFAT (float units).
decay                  2/3         u ← u·(1 − 1/τ), τ = 3 steps (the `.nnc` uses τ = 5).
w_min, w_max           −0.7, 0.864 first port (current KNP: −0.253 / 0.0924).
hebbian                −0.042      d_h, anti-Hebbian step (first port; current −0.177).
dopamine               0.042       reward per REW-GATE spike (first port; current 0.18).
stability              0.0         r_s; the first port leaves it at 0, current KNP 0.05.
sigma_isi              0.0         σ decrease at a new unforced burst (0 in KNP).
window                 10          steps a presynaptic spike counts as contributing.
dopamine_time          10          dopamine acts if the neuron spiked this recently.
isi_max                10          burst = spikes closer than this.
dopamine_delay         1           REW-GATE → L delay (the current port: 3).
bias_weight            3.0         BIAS-GATE → L (weak; vs θ 8.571).
bias_delay             10          label → BIAS-GATE delay: the gate acts in the silent phase.
block                  20          OUT_c blocks BIAS-GATE_c for this many steps.
silent_synapses        0           virtual synapses in renormalisation (KNP 27, `.nnc` 9).
renorm_threshold       0.0         |F| needed to renormalise. KNP's default FLT_MAX disables
                                   it (math.inf here, preset "knp-default"): then α = 0.023817
                                   freezes the network after ~2 permuted tasks, as in seed 001.
active_steps, steps    10, 20      10 input steps then 10 silent steps per image.
dopamine_ends_burst    1           dopamine arriving in the step of a spike starts a new burst
                                   (KNP's ISI rule); 0 never lets dopamine restart a burst.
=====================  ==========  ============================================================

`PRESETS["myelin"]` is the set this library uses for its benchmarks: the first-port values
reach ~85 % on one MNIST pass here, the preset 91.3 ± 0.6 % (benchmarks/colanet.py, 3 seeds).

Mechanisms of the public sources (issue 24; the defaults leave the simulation bit-for-bit as
before). `lateral_gating` N (0 = off): ArNI's L→L "gating" link; an L spike at step t blocks
the other L neurons of its column at steps t+1 … t+N: their input (the teacher's too) is
discarded and they cannot fire, so they are not depressed; applied at test time too (training
runs continuously, so a block may reach into the next image; inference starts every image
unblocked). Its variant (issue 24 follow-up; the defaults are the reading above):
`gating_renew` (True: a spike during a running block restarts it for the others; False: the
block runs `lateral_gating` steps from the spike that started it, and only a spike after it
ends starts a new one), `gating_simultaneous` ("mutual": L neurons of a column spiking in the
same step all fire and block each other; "free": they fire and do not block each other;
"exclusive": only the most driven one — largest u − θ, lowest index on ties — fires, the
others' input of that step is discarded and they are blocked), `gating_potential` of a blocked
neuron ("leak": decays as without input, KNP's BLIFAT, which restores the pre-impact potential
of a blocked neuron; "hold": frozen; "reset": set to 0 when the block starts), `gating_teacher`
(True: the BIAS-GATE's input to a blocked neuron is discarded too; False: it still arrives, and
may force a spike), `gating_image_reset` (True: every training image starts unblocked, as
inference does). `teacher_blocking` False: OUT never blocks the BIAS-GATE (KNP until commit
ecaa73d1), so the teacher acts in the silent phase of every training image. `reward_to`
"column": no REW-GATE; when the label's column spikes, dopamine reaches every L neuron of that
column after `dopamine_delay` steps (ArNI, Kiselev's Nov-2025 port: delay 3) and acts on those
that spiked within `dopamine_time`. `unconditional_depression` d_u: every synapse's resource
changes by d_u every `unconditional_period` steps, not credited to F (our reading of ArNI's
`_1_factor_plasticity`, −2.6e−5 per 10 steps; untried). `copies=k` (constructor argument): k
independent networks on the same stream, OUT votes summed. Preset "sources": see PRESETS.

Deliberate differences from the public C++ port (SPEC §2.4 "do not copy"): burst and ISI tests
use signed time differences; the rate-code accumulator starts from 0 for every image (KNP
never resets it), so an image always gives exactly ⌊10·b/255⌋ spikes per pixel and prediction
does not depend on the order of the test set; input spikes act in the step they are emitted.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from .._progress import progress_bar
from .._state import read_state, write_state
from . import _kernels as K

__all__ = ["DEFAULTS", "PRESETS", "CoLaNET", "as_pixels", "encode", "resource_for_weight",
           "weight_of_resource"]

DEFAULTS: dict[str, float | int | bool | str] = {
    "theta": 8.571, "decay": 2.0 / 3.0, "w_min": -0.7, "w_max": 0.864,
    "hebbian": -0.042, "dopamine": 0.042, "stability": 0.0, "sigma_isi": 0.0,
    "bias_weight": 3.0, "renorm_threshold": 0.0, "dopamine_ends_burst": 1,
    "window": 10, "dopamine_time": 10, "isi_max": 10, "dopamine_delay": 1, "bias_delay": 10,
    "block": 20, "active_steps": 10, "steps": 20,
    # issue 24: mechanisms of the public sources; these defaults leave the simulation as it was
    "lateral_gating": 0, "teacher_blocking": True, "reward_to": "gate",
    "unconditional_depression": 0.0, "unconditional_period": 10,
    # the lateral gating's variant (issue 24 follow-up; these defaults are the first reading)
    "gating_renew": True, "gating_simultaneous": "mutual", "gating_potential": "leak",
    "gating_teacher": True, "gating_image_reset": False,
}
_GATING_SIMUL = {"mutual": K.SIMUL_MUTUAL, "free": K.SIMUL_FREE, "exclusive": K.SIMUL_EXCLUSIVE}
_GATING_POT = {"leak": K.POT_LEAK, "hold": K.POT_HOLD, "reset": K.POT_RESET}
_BOOL_PARAMS = ("teacher_blocking", "gating_renew", "gating_teacher", "gating_image_reset")
_STR_PARAMS = {"reward_to": ("gate", "column"), "gating_simultaneous": tuple(_GATING_SIMUL),
               "gating_potential": tuple(_GATING_POT)}
# Named parameter sets: use as ``CoLaNET(784, 10, **PRESETS["myelin"])``.
PRESETS: dict[str, dict[str, float | int | bool | str]] = {
    # The first KNP BLIFAT port with Larionov's starting α (stable, but loses plasticity).
    "knp-first-port": {"alpha": 0.023817},
    # The first port as KNP runs it by default: renormalisation threshold FLT_MAX, i.e. no
    # renormalisation (SPEC §2.4 caveat; seed 001's E/MNIST sweep has an "ns: none" column).
    # With α = 0.023817 this reproduces the seed's loss of plasticity on permuted MNIST.
    "knp-default": {"alpha": 0.023817, "renorm_threshold": math.inf},
    # What worked best here (random search on 30k MNIST training images, 3k test images, then
    # confirmed on the full pass; benchmarks/colanet.py): stronger but still balanced
    # anti-Hebbian / dopamine steps, a stronger teacher (bias) input that recruits a fresh
    # microcolumn even after weights have grown, slow stability growth (0.02 froze 15-mc
    # networks by task 6 of permuted MNIST: AA 76 %; 0.005 gives 85.5 %), 27 silent synapses.
    # A second search (60 single-task 45-mc runs, then 26 five-task runs on a validation stream:
    # new permutations, the last 10k training images) found nothing better than this by more
    # than noise (45 mc: +0.4 AA on average over 2 validation seeds; 15 mc: equal). The sets
    # that maximised one-task accuracy (92.2 % with 45 mc vs 91.2 %) lost plasticity by task 5:
    # σ grows by r_s·D per reward, so large dopamine steps freeze neurons unless r_s shrinks.
    # The stability growth r_s sets the forgetting / plasticity trade-off (10-task validation
    # stream, 15 mc, α 0.005; r_s = 0 / 0.001 / 0.0015 / 0.002 / 0.005 → AA 82.0 / 88.5 /
    # 88.8 / 89.6 / 89.5, FM 9.5 / 2.7 / 2.3 / 1.25 / 0.6): Larionov's 15-mc point (89.67,
    # FM 2.75) lies near that curve but no r_s reaches both his AA and his FM; with 45 mc,
    # r_s 0.0015 lowers AA (90.1 vs 90.7) and raises FM (0.70 vs 0.36). So r_s stays 0.005.
    # Why 45 mc barely beats 15 here: stats()["effective"] (20k images, one task) is ~2 per
    # class for 15 and 45 mc and for α 0.005-0.2: two generalists take >92 % of a class's
    # rewards. A stronger anti-Hebbian step spreads the rewards (hebbian -0.13: 11 effective;
    # -0.168: 40) but silences the network at test time (no OUT spike on 21 % / 53 % of images).
    # KNP's unsigned ISI test (SPEC §2.4) makes every non-forced spike start a new burst, so
    # KNP depresses contributing synapses at every spike, not once per burst. Emulated here
    # with isi_max=1 (20k images, one task): the same trade — effective microcolumns 2.0 → 6.7
    # (15 mc; 45 mc: 2.4 → 12.0) but 20 % of test images without an OUT spike and accuracy
    # 89 → 73-75 %, for this preset and for the first-port values alike. So the bug does not
    # explain the published 45-mc accuracy either.
    "myelin": {"alpha": 0.005, "hebbian": -0.084, "dopamine": 0.084, "bias_weight": 6.0,
               "stability": 0.005, "silent_synapses": 27},
    # The same with slower stability growth (r_s 0.0015): the point of the trade-off above
    # whose forgetting on the 15-mc validation stream (FM 2.3, AA 88.8) is nearest Larionov's
    # 15-mc result; more plasticity, more forgetting. For comparison, not the default.
    "myelin-plastic": {"alpha": 0.005, "hebbian": -0.084, "dopamine": 0.084, "bias_weight": 6.0,
                       "stability": 0.0015, "silent_synapses": 27},
    # Issue 24: "myelin" moved towards the public sources where short trials (one MNIST pass)
    # found them better. lateral_gating 10: Kiselev's ArNI `.nnc` has no WTA / REW-GATE
    # layers but an L→L link "all-to-all-sections", type "gating", weight −10 (block 10 steps);
    # the WTA and REW-GATE of the KNP port stay, so the REW-GATE still rewards one winner.
    # teacher_blocking False: KNP's OUT→BIAS-GATE weight −20 was cast to "open" until KNP
    # commit ecaa73d1, so in the 2025 port the teacher acted on every training image.
    # bias_weight 3: the KNP BLIFAT port's BIAS-GATE→L weight (6, the "myelin" value, with the
    # teacher never blocked gave 86.9-89.2 % in the trials). The rest is "myelin". Not taken
    # (tried later on "myelin-gated", all worse): the current port's dopamine delay 3 and
    # reward_to="column" (ArNI, Kiselev's Nov-2025 port), ArNI's unconditional depression.
    # The gating variant (benchmarks/colanet_gating.py, gating_trials.json; validation split:
    # first 50k training images / last 10k, one pass, 45 mc α 0.01): "exclusive" (only the
    # most driven of a column's simultaneous spikers fires) with the teacher's input reaching
    # blocked neurons: 94.37 / 94.35 % (seeds 0 / 1) vs 90.97 % for the first reading (mutual
    # blocking, teacher discarded), 93.52 / 92.65 % exclusive alone, 92.00 % without gating.
    # Renewal, potential (leak / hold / reset) and a fresh block every image changed < 0.5.
    # One pass, 60k / 10k test, seed 0: 93.68 %. Nothing is random then (at most one L spike
    # per column and step, so the WTA never draws): seeds and copies= give identical networks.
    "sources": {"alpha": 0.005, "hebbian": -0.084, "dopamine": 0.084, "bias_weight": 3.0,
                "stability": 0.005, "silent_synapses": 27, "lateral_gating": 10,
                "teacher_blocking": False, "gating_simultaneous": "exclusive",
                "gating_teacher": False},
    # Issue 24, continual learning: "sources" loses plasticity on 10 permuted tasks (reported
    # stream, 45 mc α 0.01: diagonal 94 → 48-64 %, AA 74.5 / 81.2 on seeds 0 / 5), and no
    # stability growth cures it (validation stream, benchmarks/colanet_stability.py: 15 mc
    # r_s 0.005 / 0.002 / 0.001 → AA 72.2 / 77.3 / 74.2). The never-blocked teacher is the
    # cause: with the teacher blocked (bias 3) AA 84.3; without the lateral gating (teacher
    # never blocked) 57.7; never blocked with bias 6 keeps plasticity but forgets (FM 23.7).
    # So this preset is "myelin" (teacher blocked, bias 6) plus the gating that won the
    # one-task trials (stage 1: exclusive, teacher passes; 93.43 vs 91.70 % one pass, 15 mc),
    # and r_s chosen on the 10-task validation stream as the one value that puts both of
    # Larionov's configurations within issue 6's bounds (AA ± 1.5, FM ± 1): r_s 0.005 /
    # 0.003 / 0.002 / 0.0015 → 15 mc α 0.005 AA 89.37 / 89.75 / 89.11 / 88.63, FM 0.79 / 1.61
    # / 2.35 / 2.99 (published 89.67, 2.75); 45 mc α 0.01 (r_s 0.005 / 0.003 / 0.002) AA
    # 92.05 / 91.96 / 91.86, FM 0.33 / 0.56 / 0.61 (published 92.39, 0.94). Not "sources":
    # the teacher is blocked, as in KNP after commit ecaa73d1. Tried on this preset and not
    # taken (one pass, 15 mc, validation split; gating_trials.json stage "gated"): dopamine
    # delay 3 (93.08 → 89.78 %), reward to the label's whole column with delay 3 (89.78),
    # ArNI's unconditional depression −2.6e−5 per 10 steps (87.49; ×10: 53.00).
    "myelin-gated": {"alpha": 0.005, "hebbian": -0.084, "dopamine": 0.084, "bias_weight": 6.0,
                     "stability": 0.002, "silent_synapses": 27, "lateral_gating": 10,
                     "gating_simultaneous": "exclusive", "gating_teacher": False},
}
_INT_PARAMS = ("window", "dopamine_time", "isi_max", "dopamine_delay", "bias_delay", "block",
               "active_steps", "steps", "unconditional_period")
_STATE = ("r", "theta_add", "sigma", "free", "u", "last_spike", "burst_start", "status",
          "last_step", "contributed", "updated", "dopa_at", "last_in", "clock", "counts",
          "blocked_until")
_OPTIONAL_STATE = ("blocked_until",)       # absent from files saved before issue 24


def weight_of_resource(r: np.ndarray | float, w_min: float, w_max: float) -> np.ndarray:
    """The weight of resource r: w_min + Δ·r⁺/(Δ + r⁺), Δ = w_max − w_min, in [w_min, w_max)."""
    span = w_max - w_min
    rp = np.maximum(np.asarray(r, dtype=np.float64), 0.0)
    return w_min + span * rp / (span + rp)


def resource_for_weight(w: float, w_min: float, w_max: float) -> float:
    """The resource r ≥ 0 giving weight `w` (w_min ≤ w < w_max), e.g. the initial r for w = 0."""
    if not w_min <= w < w_max:
        raise ValueError(f"w must lie in [w_min, w_max) = [{w_min}, {w_max}). Got {w}.")
    span = w_max - w_min
    return (w - w_min) * span / (span - (w - w_min))


def encode(images: Any, active_steps: int = 10) -> np.ndarray:
    """Deterministic rate code: (N, I) intensities → spikes (N, active_steps, I) bool.

    Pixel b ∈ 0..255 spikes ⌊active_steps·b/255⌋ times (s += b/255 each step, spike at s ≥ 1).
    """
    b = as_pixels(images, None).astype(np.int64)
    k = np.arange(1, active_steps + 1, dtype=np.int64)[None, :, None]
    return (k * b[:, None, :]) // 255 > ((k - 1) * b[:, None, :]) // 255


def as_pixels(x: Any, n_inputs: int | None = None) -> np.ndarray:
    """Images as uint8 (N, I) 0..255: uint8 as is, floats in [0, 1], ArrayDataset scaled."""
    if hasattr(x, "images") and hasattr(x, "scale"):        # an ArrayDataset: apply its scale
        raw = x.images.dtype == torch.uint8 and abs(float(x.scale) - 1 / 255) < 1e-12
        x = x.images if raw else x.images.to(torch.float64) * float(x.scale)
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"X must have shape (N, n_inputs) or (N, C, H, W). Got {x.shape}.")
    if len(x) == 0:
        raise ValueError("X holds no samples.")
    x = x.reshape(len(x), -1)
    if n_inputs is not None and x.shape[1] != n_inputs:
        raise ValueError(f"Each sample must have {n_inputs} inputs; got {x.shape[1]}.")
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if not np.issubdtype(x.dtype, np.number):
        raise TypeError(f"X must be numeric. Got dtype {x.dtype}.")
    if np.issubdtype(x.dtype, np.integer):      # pixel values given as another integer type
        if x.size and (x.min() < 0 or x.max() > 255):
            raise ValueError("Integer X must hold pixel values 0..255 (or pass floats in "
                             f"[0, 1]). Got range [{x.min()}, {x.max()}].")
        return np.ascontiguousarray(x.astype(np.uint8))
    xf = x.astype(np.float64)
    if not np.isfinite(xf).all():
        raise ValueError("X contains NaN or infinite values.")
    if xf.min() < 0 or xf.max() > 1:
        raise ValueError("Float X must hold intensities in [0, 1] (or pass uint8 0..255). "
                         f"Got range [{xf.min():.3g}, {xf.max():.3g}].")
    return np.ascontiguousarray(np.rint(xf * 255).astype(np.uint8))


def _as_labels(y: Any, n: int, n_classes: int) -> np.ndarray:
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    y = np.asarray(y)
    if y.shape != (n,):
        raise ValueError(f"y must have shape ({n},). Got {y.shape}.")
    if not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"y must hold integer class labels. Got dtype {y.dtype}.")
    if len(y) and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"Labels must lie in 0..{n_classes - 1}. Got {y.min()}..{y.max()}.")
    return y.astype(np.int64)


class _Load:
    """``net.load(path)`` loads in place, ``CoLaNET.load(path)`` builds a network.

    On an instance it is `CoLaNET.load_` (as ``EWC.load`` and ``WVA.load`` load in place); on
    the class, `CoLaNET.from_file` (what ``CoLaNET.load`` always was).
    """

    def __get__(self, net: CoLaNET | None, cls: type[CoLaNET]) -> Callable[..., CoLaNET]:
        return cls.from_file if net is None else net.load_


class CoLaNET:
    """Columnar spiking network with local plasticity (SPEC §2), trained online, one pass.

    Args:
        n_inputs: Input nodes (pixels), e.g. 784.
        n_classes: Columns (one per class).
        microcolumns: L/WTA/REW-GATE triples per column.
        alpha: Adaptive-threshold coefficient α in θ_add = α·Σ w⁺.
        silent_synapses: Virtual synapses absorbing part of each renormalisation.
        seed: Seeds the WTA tie-breaks.
        copies: Independent networks trained on the same stream whose OUT votes are summed
            (Kiselev's ensemble, `.nnc` "ncopies=15 merge=yes"). Copy i draws its tie-breaks
            as a single network with seed ``seed·copies + i`` would, so seeds never share copies.
        **params: Any of `DEFAULTS` (see the module docstring's table).

    Example:
        >>> net = CoLaNET(784, 10, microcolumns=15, alpha=0.005)
        >>> net.fit(X_train, y_train).score(X_test, y_test)   # X: (N, 784) uint8
    """

    def __init__(self, n_inputs: int = 784, n_classes: int = 10, microcolumns: int = 15,
                 alpha: float = 0.005, silent_synapses: float = 0, seed: int = 0,
                 copies: int = 1, **params: Any) -> None:
        for name, value in (("n_inputs", n_inputs), ("n_classes", n_classes),
                            ("microcolumns", microcolumns)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int. Got {value!r}.")
        if not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha < 0:
            raise ValueError(f"alpha must be a finite float ≥ 0. Got {alpha!r}.")
        if not math.isfinite(silent_synapses) or silent_synapses < 0:
            raise ValueError(f"silent_synapses must be ≥ 0. Got {silent_synapses!r}.")
        unknown = set(params) - set(DEFAULTS)
        if unknown:
            raise TypeError(f"Unknown CoLaNET parameter(s) {sorted(unknown)}. "
                            f"Known: {', '.join(DEFAULTS)}.")
        p = {**DEFAULTS, **params}
        for name, allowed in _STR_PARAMS.items():
            if p[name] not in allowed:
                raise ValueError(f"{name} must be {' or '.join(map(repr, allowed))}. "
                                 f"Got {p[name]!r}.")
        for name in _BOOL_PARAMS:
            if not isinstance(p[name], (bool, np.bool_)):
                raise TypeError(f"{name} must be a bool. Got {p[name]!r}.")
            p[name] = bool(p[name])
        lat = p["lateral_gating"]
        if isinstance(lat, bool) or int(lat) != lat or lat < 0:
            raise ValueError(f"lateral_gating must be an int ≥ 0 (steps; 0 = off). Got {lat!r}.")
        p["lateral_gating"] = int(lat)
        if isinstance(copies, bool) or not isinstance(copies, (int, np.integer)) or copies < 1:
            raise ValueError(f"copies must be a positive int. Got {copies!r}.")
        for name in _INT_PARAMS:
            if int(p[name]) != p[name] or p[name] < 1:
                raise ValueError(f"{name} must be a positive int. Got {p[name]!r}.")
            p[name] = int(p[name])
        for name, value in p.items():
            if name == "renorm_threshold" and value == math.inf:      # KNP's FLT_MAX: never
                continue
            if name in _STR_PARAMS:
                continue
            if not math.isfinite(float(value)):
                raise ValueError(f"{name} must be finite. Got {value!r}.")
        if not p["w_min"] <= 0 < p["w_max"]:
            raise ValueError("Need w_min ≤ 0 < w_max (weights start at 0).")
        if not 0 < p["decay"] <= 1:
            raise ValueError(f"decay must lie in (0, 1]. Got {p['decay']}.")
        if p["active_steps"] > p["steps"]:
            raise ValueError("active_steps cannot exceed steps.")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise TypeError(f"seed must be a non-negative int. Got {seed!r}.")
        self.n_inputs, self.n_classes, self.microcolumns = n_inputs, n_classes, microcolumns
        self.alpha, self.silent_synapses = float(alpha), float(silent_synapses)
        self.seed, self.copies = int(seed), int(copies)
        self.params = p
        self._run_seed = self.seed * self.copies       # copy i runs as seed·copies + i
        self._init_state()
        # copies 1 … k−1: independent networks on the same stream; OUT votes are summed
        self._others = [CoLaNET(n_inputs, n_classes, microcolumns, alpha, silent_synapses,
                                self.seed * self.copies + i, **params)
                        for i in range(1, self.copies)]

    def _members(self) -> list[CoLaNET]:
        return [self, *self._others]

    # ------------------------------------------------------------------ state
    def _init_state(self) -> None:
        J, n = self.n_classes * self.microcolumns, self.n_inputs
        r0 = resource_for_weight(0.0, self.params["w_min"], self.params["w_max"])
        self.r = np.full((J, n), r0, dtype=np.float64)
        self.w = np.zeros((J, n), dtype=np.float64)
        self.theta_add = np.zeros(J)
        self.sigma = np.zeros(J)
        self.free = np.zeros(J)
        self.u = np.zeros(J)
        self.last_spike = np.full(J, K.NEVER, dtype=np.int64)
        self.burst_start = np.full(J, K.NEVER, dtype=np.int64)
        self.status = np.zeros(J, dtype=np.int8)       # 0 none, 1/2 burst, 3 forced
        self.last_step = np.full(J, K.NEVER, dtype=np.int64)
        self.contributed = np.zeros((J, n), dtype=np.bool_)
        self.updated = np.zeros((J, n), dtype=np.bool_)
        self.dopa_at = np.full(J, K.NEVER, dtype=np.int64)
        self.last_in = np.full(n, K.NEVER, dtype=np.int64)
        self.clock = np.zeros(1, dtype=np.int64)
        self.counts = np.zeros((J, 4), dtype=np.int64)
        self.blocked_until = np.full(J, K.NEVER, dtype=np.int64)
        self.images_seen = 0

    def _vectors(self) -> tuple[np.ndarray, np.ndarray]:
        p = self.params
        fp = np.zeros(14)
        fp[K.F_DOPA_ENDS], fp[K.F_UNCOND] = p["dopamine_ends_burst"], p["unconditional_depression"]
        fp[K.F_DECAY], fp[K.F_THETA], fp[K.F_ALPHA] = p["decay"], p["theta"], self.alpha
        fp[K.F_WMIN], fp[K.F_WMAX] = p["w_min"], p["w_max"]
        fp[K.F_DH], fp[K.F_DOPA], fp[K.F_RS] = p["hebbian"], p["dopamine"], p["stability"]
        fp[K.F_SIGMA_ISI], fp[K.F_BIAS_W] = p["sigma_isi"], p["bias_weight"]
        fp[K.F_NSILENT], fp[K.F_RENORM_THR] = self.silent_synapses, p["renorm_threshold"]
        ip = np.zeros(17, dtype=np.int64)
        ip[K.I_GATE_RENEW], ip[K.I_GATE_TEACHER] = p["gating_renew"], p["gating_teacher"]
        ip[K.I_GATE_SIMUL] = _GATING_SIMUL[p["gating_simultaneous"]]
        ip[K.I_GATE_POT] = _GATING_POT[p["gating_potential"]]
        ip[K.I_GATE_IMAGE] = p["gating_image_reset"]
        ip[K.I_LATERAL], ip[K.I_TEACHER_BLOCK] = p["lateral_gating"], p["teacher_blocking"]
        ip[K.I_REWARD_COLUMN] = p["reward_to"] == "column"
        ip[K.I_UNCOND_PERIOD] = p["unconditional_period"]
        ip[K.I_ACTIVE], ip[K.I_STEPS], ip[K.I_WINDOW] = (p["active_steps"], p["steps"],
                                                        p["window"])
        ip[K.I_DOPA_TIME], ip[K.I_ISI] = p["dopamine_time"], p["isi_max"]
        ip[K.I_DOPA_DELAY], ip[K.I_BIAS_DELAY], ip[K.I_BLOCK] = (
            p["dopamine_delay"], p["bias_delay"], p["block"])
        return fp, ip

    # ------------------------------------------------------------------ learning
    def fit(self, X: Any, y: Any, *, progress: bool | None = None,
            chunk: int = 500) -> CoLaNET:
        """One online pass over (X (N, n_inputs) uint8 or floats in [0, 1], y (N,)), in order.

        Calling it again continues learning (the next task of a sequence). Returns self.
        """
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise ValueError(f"chunk must be a positive int (images per compiled call). "
                             f"Got {chunk!r}.")
        pixels = as_pixels(X, self.n_inputs)
        labels = _as_labels(y, len(pixels), self.n_classes)
        for net in self._members():
            net._fit_one(pixels, labels, progress, chunk)
        self.images_seen += len(pixels)
        return self

    def _fit_one(self, pixels: np.ndarray, labels: np.ndarray, progress: bool | None,
                 chunk: int) -> None:
        fp, ip = self._vectors()
        K.seed_numba((self._run_seed * 1_000_003 + int(self.clock[0])) % (2**31 - 1))
        starts = range(0, len(pixels), chunk)
        for s in progress_bar(starts, progress=progress, desc="CoLaNET fit",
                              unit=f"×{chunk} img"):
            K.train_chunk(pixels[s:s + chunk], labels[s:s + chunk], self.n_classes,
                          self.microcolumns, fp, ip, self.r, self.w, self.theta_add,
                          self.sigma, self.free, self.u, self.last_spike, self.burst_start,
                          self.status, self.last_step, self.contributed, self.updated,
                          self.dopa_at, self.last_in, self.clock, self.counts,
                          self.blocked_until)
        if not np.isfinite(self.r).all():
            raise FloatingPointError("A synaptic resource became non-finite.")

    # ------------------------------------------------------------------ inference
    def out_counts(self, X: Any, *, batch_size: int = 2000,
                   progress: bool | None = None) -> np.ndarray:
        """OUT spike counts per class, (N, n_classes) int, with plasticity off.

        With copies > 1: the sum over the copies (each copy's OUT_c votes once per step).
        """
        pixels = as_pixels(X, self.n_inputs)
        out = self._out_counts_one(pixels, batch_size, progress)
        for net in self._others:
            out += net._out_counts_one(pixels, batch_size, progress)
        return out

    def _out_counts_one(self, pixels: np.ndarray, batch_size: int,
                        progress: bool | None) -> np.ndarray:
        p = self.params
        w_t = np.ascontiguousarray(self.w.T)
        theta = p["theta"] + self.theta_add
        out = np.empty((len(pixels), self.n_classes), dtype=np.int32)
        for s in progress_bar(range(0, len(pixels), batch_size), progress=progress,
                              desc="CoLaNET predict", unit="batch"):
            out[s:s + batch_size] = K.infer_counts(pixels[s:s + batch_size], w_t, theta,
                                                   p["decay"], p["active_steps"], p["steps"],
                                                   self.n_classes, self.microcolumns,
                                                   p["lateral_gating"], p["gating_renew"],
                                                   _GATING_SIMUL[p["gating_simultaneous"]],
                                                   _GATING_POT[p["gating_potential"]])
        return out

    def predict(self, X: Any, *, batch_size: int = 2000,
                progress: bool | None = None) -> np.ndarray:
        """Class with most OUT spikes per sample (N,); −1 where no OUT neuron fired."""
        counts = self.out_counts(X, batch_size=batch_size, progress=progress)
        pred = counts.argmax(axis=1).astype(np.int64)       # first maximum wins
        pred[counts.max(axis=1) == 0] = -1
        return pred

    def score(self, X: Any, y: Any, **kwargs: Any) -> float:
        """Accuracy on (X, y); a sample with no OUT spike counts as wrong."""
        pred = self.predict(X, **kwargs)
        labels = _as_labels(y, len(pred), self.n_classes)
        return float((pred == labels).mean())

    # ------------------------------------------------------------------ introspection
    def stats(self) -> dict[str, Any]:
        """Per-microcolumn activity and state: arrays of shape (n_classes, microcolumns).

        Keys: spikes, forced, wins, rewards (counts since creation), sigma, theta_add,
        positive_weight (Σw⁺); and per class (n_classes,): recruited, the microcolumns rewarded
        at least once, and effective, exp of the entropy of the class's reward shares (how
        many microcolumns really share the work: 1.0 if one takes every reward, M if all
        share equally; 0 before any reward). With copies > 1 the copies' microcolumns stand side
        by side: arrays of shape (n_classes, copies·microcolumns), copy 0 first.
        """
        members = self._members()

        def cat(a: list[np.ndarray]) -> np.ndarray:
            return np.concatenate([v.reshape(self.n_classes, self.microcolumns, *v.shape[1:])
                                   for v in a], axis=1)

        c = cat([net.counts for net in members])
        rewards = c[..., 3].astype(np.float64)
        total = rewards.sum(1, keepdims=True)
        share = np.divide(rewards, total, out=np.zeros_like(rewards), where=total > 0)
        plogp = share * np.log(share, out=np.zeros_like(share), where=share > 0)
        effective = np.where(total[:, 0] > 0, np.exp(-plogp.sum(1)), 0.0)
        return {"spikes": c[..., 0].copy(), "forced": c[..., 1].copy(), "wins": c[..., 2].copy(),
                "rewards": c[..., 3].copy(), "sigma": cat([n.sigma for n in members]),
                "theta_add": cat([n.theta_add for n in members]),
                "positive_weight": cat([np.clip(n.w, 0, None).sum(1) for n in members]),
                "recruited": (c[..., 3] > 0).sum(1), "effective": effective,
                "images_seen": self.images_seen}

    # ------------------------------------------------------------------ persistence
    def _meta(self) -> dict[str, Any]:
        return {"n_inputs": self.n_inputs, "n_classes": self.n_classes,
                "microcolumns": self.microcolumns, "alpha": self.alpha,
                "silent_synapses": self.silent_synapses, "seed": self.seed,
                "copies": self.copies, "params": self.params, "images_seen": self.images_seen}

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the whole network state and its parameters (safetensors)."""
        tensors = {}
        for i, net in enumerate(self._members()):           # copy i > 0: "copy{i}.<name>"
            pre = f"copy{i}." if i else ""
            tensors.update({pre + k: torch.from_numpy(np.ascontiguousarray(getattr(net, k)))
                            for k in _STATE})
        write_state(path, tensors, "myelin.colanet", self._meta())

    # net.load(path): load_ (in place, returns net); CoLaNET.load(path): from_file (a new one)
    load = _Load()

    def load_(self, path: str | os.PathLike[str]) -> CoLaNET:
        """Replace this network's state by the one `save` wrote to `path`; returns self.

        ``net.load(path)`` is this method. The file's settings (alpha, silent_synapses, seed,
        the `DEFAULTS` parameters) replace this network's, with a `UserWarning` naming those
        that differ.

        Raises:
            FileNotFoundError: No file at `path`.
            ValueError: The file is no CoLaNET state, or was saved for another architecture
                (n_inputs, n_classes or microcolumns differ).
        """
        saved = type(self).from_file(path)
        shape = ("n_inputs", "n_classes", "microcolumns", "copies")
        wrong = [f"{k}: saved {getattr(saved, k)}, this network {getattr(self, k)}"
                 for k in shape if getattr(saved, k) != getattr(self, k)]
        if wrong:
            raise ValueError(f"{os.fspath(path)!r} holds a network of another architecture "
                             f"({'; '.join(wrong)}). Use CoLaNET.from_file(path) to build it.")
        mine, theirs = self.get_params(), saved.get_params()
        changed = [k for k in theirs if mine.get(k) != theirs[k]]
        self.__dict__.update(vars(saved))
        if changed:
            warnings.warn(f"CoLaNET: {os.fspath(path)!r} was saved with "
                          f"{', '.join(f'{k}={theirs[k]!r}' for k in changed)}; this network "
                          f"had {', '.join(f'{k}={mine.get(k)!r}' for k in changed)}. The "
                          "saved values are used.", stacklevel=2)
        return self

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> CoLaNET:
        """Rebuild a network written by `save`, ready to predict or keep learning.

        ``CoLaNET.load(path)``, called on the class, is this method.

        Raises:
            FileNotFoundError: No file at `path`.
            ValueError: The file is no CoLaNET state, or its tensors do not fit its settings.
        """
        tensors, meta = read_state(path, "myelin.colanet", "CoLaNET")
        net = cls(meta["n_inputs"], meta["n_classes"], meta["microcolumns"], meta["alpha"],
                  meta["silent_synapses"], meta["seed"], meta.get("copies", 1),
                  **meta["params"])
        for i, member in enumerate(net._members()):
            for k in _STATE:
                name = f"copy{i}.{k}" if i else k
                if name not in tensors:
                    if k in _OPTIONAL_STATE:
                        continue
                    raise ValueError(f"{os.fspath(path)!r} lacks the state tensor {name!r}.")
                want = getattr(member, k)
                got = tensors[name].numpy()
                if got.shape != want.shape:
                    raise ValueError(f"State tensor {name!r} has shape {got.shape}; this "
                                     f"network needs {want.shape}.")
                setattr(member, k, got.astype(want.dtype).copy())
            member.w = weight_of_resource(member.r, net.params["w_min"], net.params["w_max"])
        net.images_seen = int(meta.get("images_seen", 0))
        return net

    def __repr__(self) -> str:
        return (f"CoLaNET(n_inputs={self.n_inputs}, n_classes={self.n_classes}, "
                f"microcolumns={self.microcolumns}, alpha={self.alpha}, "
                f"silent_synapses={self.silent_synapses:g}, seed={self.seed}"
                + (f", copies={self.copies})" if self.copies > 1 else ")"))

    def get_params(self) -> Mapping[str, Any]:
        """All settings, as passed to the constructor."""
        return {"n_inputs": self.n_inputs, "n_classes": self.n_classes,
                "microcolumns": self.microcolumns, "alpha": self.alpha,
                "silent_synapses": self.silent_synapses, "seed": self.seed,
                "copies": self.copies, **self.params}
