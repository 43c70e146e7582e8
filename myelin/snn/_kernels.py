"""Numba kernels of CoLaNET: the online training simulation, one image at a time.

Everything that changes while an image is shown lives in plain NumPy arrays so that the whole
pass over a chunk of images is one compiled call. Index conventions:

* L neurons are numbered ``j = c * M + m`` (column c = class, microcolumn m); ``J = C * M``.
* ``r``, ``w`` (J, I): synaptic resource and weight of input i → L neuron j.
* Times are global step counters (int64) that never reset, so bursts and windows may span
  two images exactly as in a continuously running network.

The encoding, neuron update and plasticity follow SPEC §2.2–2.4; see `colanet.py` for the
parameter table and where the sources disagree.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

# Indices into the float parameter vector `fp`.
F_DECAY, F_THETA, F_ALPHA, F_WMIN, F_WMAX, F_DH, F_DOPA, F_RS, F_SIGMA_ISI, F_BIAS_W, \
    F_NSILENT, F_RENORM_THR, F_DOPA_ENDS, F_UNCOND = range(14)
# Indices into the int parameter vector `ip`.
I_ACTIVE, I_STEPS, I_WINDOW, I_DOPA_TIME, I_ISI, I_DOPA_DELAY, I_BIAS_DELAY, I_BLOCK, \
    I_LATERAL, I_TEACHER_BLOCK, I_REWARD_COLUMN, I_UNCOND_PERIOD, I_GATE_RENEW, I_GATE_SIMUL, \
    I_GATE_POT, I_GATE_TEACHER, I_GATE_IMAGE = range(17)
NEVER = -(1 << 40)
# Lateral gating semantics (`colanet.py`, gating_*): simultaneous spikers, blocked potential.
SIMUL_MUTUAL, SIMUL_FREE, SIMUL_EXCLUSIVE = 0, 1, 2
POT_LEAK, POT_HOLD, POT_RESET = 0, 1, 2


@njit(cache=True)
def seed_numba(seed: int) -> None:
    """Seed numba's own generator (used for WTA tie-breaks)."""
    np.random.seed(seed)


@njit(cache=True, inline="always")
def _weight(r: float, wmin: float, span: float) -> float:
    rp = r if r > 0.0 else 0.0
    return wmin + span * rp / (span + rp)


@njit(cache=True)
def spike_steps(pixels: np.ndarray, active: int) -> np.ndarray:
    """Per pixel, the first of its spikes' steps: (I, active) bool, ⌊active·b/255⌋ spikes.

    The incrementing rate code s += b/255, spike when s ≥ 1 (then s −= 1), started from 0 for
    every image, written in exact integer arithmetic: step k spikes iff ⌊k·b/255⌋ grows.
    """
    n = pixels.shape[0]
    out = np.zeros((n, active), dtype=np.bool_)
    for i in range(n):
        b = np.int64(pixels[i])
        for k in range(active):
            if ((k + 1) * b) // 255 > (k * b) // 255:
                out[i, k] = True
    return out


@njit(cache=True)
def _recompute_row(r: np.ndarray, w: np.ndarray, j: int, wmin: float, span: float) -> None:
    for i in range(r.shape[1]):
        w[j, i] = _weight(r[j, i], wmin, span)


@njit(cache=True)
def _theta_add(w: np.ndarray, j: int, alpha: float) -> float:
    s = 0.0
    for i in range(w.shape[1]):
        if w[j, i] > 0.0:
            s += w[j, i]
    return alpha * s


@njit(cache=True)
def train_chunk(images: np.ndarray, labels: np.ndarray, n_classes: int, micro: int,
                fp: np.ndarray, ip: np.ndarray,
                r: np.ndarray, w: np.ndarray, theta_add: np.ndarray, sigma: np.ndarray,
                free: np.ndarray, u: np.ndarray, last_spike: np.ndarray,
                burst_start: np.ndarray, status: np.ndarray, last_step: np.ndarray,
                contributed: np.ndarray, updated: np.ndarray, dopa_at: np.ndarray,
                last_in: np.ndarray, clock: np.ndarray, counts: np.ndarray,
                blocked_until: np.ndarray) -> None:
    """Show `images` (N, I) uint8 with `labels` (N,) once each, updating the state in place.

    counts (J, 4) accumulates per L neuron: spikes, forced spikes, WTA wins, rewards.
    blocked_until (J,): lateral gating; L neuron j discards its input and cannot fire at any
    step t ≤ blocked_until[j] (set to t_spike + lateral_gating when another L neuron of its
    column spikes at t_spike). ip[I_GATE_*] select the variant (see `colanet.py`): renew (a
    spike during a running block extends it), simultaneous spikers (mutual: block each other;
    free: do not; exclusive: only the most driven one fires, the others' input of that step
    is discarded and they are blocked), the blocked potential (leak, hold, reset to 0 at the
    block's start), whether the teacher's input is discarded too, a fresh start every image.
    """
    J = n_classes * micro
    n_in = images.shape[1]
    decay, theta0, alpha = fp[F_DECAY], fp[F_THETA], fp[F_ALPHA]
    wmin = fp[F_WMIN]
    span = fp[F_WMAX] - fp[F_WMIN]
    d_h, dopa, r_s, sigma_isi = fp[F_DH], fp[F_DOPA], fp[F_RS], fp[F_SIGMA_ISI]
    bias_w, n_silent, renorm_thr = fp[F_BIAS_W], fp[F_NSILENT], fp[F_RENORM_THR]
    dopa_ends = fp[F_DOPA_ENDS] != 0.0
    active, steps, window, dopa_time = ip[I_ACTIVE], ip[I_STEPS], ip[I_WINDOW], ip[I_DOPA_TIME]
    isi, dopa_delay, bias_delay, block = ip[I_ISI], ip[I_DOPA_DELAY], ip[I_BIAS_DELAY], \
        ip[I_BLOCK]
    lateral, teacher_block = ip[I_LATERAL], ip[I_TEACHER_BLOCK] != 0
    reward_column, uncond_period = ip[I_REWARD_COLUMN] != 0, ip[I_UNCOND_PERIOD]
    d_u = fp[F_UNCOND]
    g_renew, g_simul, g_pot = ip[I_GATE_RENEW] != 0, ip[I_GATE_SIMUL], ip[I_GATE_POT]
    g_teacher, g_image = ip[I_GATE_TEACHER] != 0, ip[I_GATE_IMAGE] != 0
    exclusive = lateral > 0 and g_simul == SIMUL_EXCLUSIVE
    u_pre = np.zeros(J)
    margin = np.zeros(J)
    spiking = np.empty(n_in, dtype=np.int64)
    fired = np.zeros(J, dtype=np.bool_)
    forced_now = np.zeros(J, dtype=np.bool_)
    cand = np.empty(micro, dtype=np.int64)
    t = clock[0]
    for n in range(images.shape[0]):
        label = labels[n]
        code = spike_steps(images[n], active)
        bias_blocked_until = NEVER
        bias_arrives = NEVER
        if lateral > 0 and g_image:
            blocked_until[:] = NEVER
        for k in range(steps):
            # 1. input spikes of this step
            ns = 0
            if k < active:
                for i in range(n_in):
                    if code[i, k]:
                        spiking[ns] = i
                        ns += 1
                        last_in[i] = t
            # 2. L neurons: leak, inputs, teacher (bias gate) input, threshold. A laterally
            #    gated neuron leaks (or holds its potential): its input is discarded, the
            #    teacher's too unless gating_teacher is off.
            for j in range(J):
                forced_now[j] = False
                if lateral > 0 and blocked_until[j] >= t:
                    uj = u[j] if g_pot == POT_HOLD else u[j] * decay
                    if g_teacher or not (bias_arrives == t and j // micro == label):
                        u[j] = uj
                        fired[j] = False
                        continue
                    uj += bias_w
                    forced_now[j] = True
                else:
                    cur = 0.0
                    for q in range(ns):
                        cur += w[j, spiking[q]]
                    uj = u[j] * decay + cur
                    if bias_arrives == t and j // micro == label:
                        uj += bias_w
                        forced_now[j] = True
                fired[j] = uj >= theta0 + theta_add[j]
                if exclusive:
                    u_pre[j] = u[j] if g_pot == POT_HOLD else u[j] * decay
                    margin[j] = uj - theta0 - theta_add[j]
                u[j] = 0.0 if fired[j] else uj
            # 2a. exclusive gating: of a column's simultaneous spikers only the most driven
            #     (lowest index on ties) fires; the others' input of this step is discarded
            #     and 2b blocks them.
            if exclusive:
                for c in range(n_classes):
                    best = -1
                    for j in range(c * micro, c * micro + micro):
                        if fired[j] and (best < 0 or margin[j] > margin[best]):
                            best = j
                    if best < 0:
                        continue
                    for j in range(c * micro, c * micro + micro):
                        if fired[j] and j != best:
                            fired[j] = False
                            forced_now[j] = False
                            u[j] = u_pre[j]
            # 2b. lateral gating: an L spike blocks the other L neurons of its column for the
            #     next `lateral` steps (by default simultaneous spikers block each other and
            #     a spike during a running block extends it).
            if lateral > 0:
                for j in range(J):
                    if not fired[j]:
                        continue
                    c0 = (j // micro) * micro
                    for m in range(c0, c0 + micro):
                        if m == j or (g_simul == SIMUL_FREE and fired[m]):
                            continue
                        if not g_renew and blocked_until[m] >= t:
                            continue
                        if blocked_until[m] < t + lateral:
                            if g_pot == POT_RESET and blocked_until[m] < t:
                                u[m] = 0.0
                            blocked_until[m] = t + lateral
            # 3. plasticity at each L spike (anti-Hebbian part). Burst status: 0 none,
            #    1 started, 2 continued, 3 forced. Forced spikes neither start nor continue a
            #    burst (they leave last_step alone); a burst restarts after a gap ≥ isi_max or
            #    when dopamine arrives in the step of the spike.
            for j in range(J):
                if not fired[j]:
                    continue
                counts[j, 0] += 1
                f = forced_now[j]
                last_spike[j] = t
                if f:
                    counts[j, 1] += 1
                    status[j] = 3
                elif status[j] == 0 or status[j] == 3 or t - last_step[j] >= isi \
                        or (dopa_ends and dopa_at[j] == t):
                    status[j] = 1
                    burst_start[j] = t
                    sigma[j] = max(0.0, sigma[j] - sigma_isi)
                else:
                    status[j] = 2
                if not f:
                    last_step[j] = t
                theta_add[j] = _theta_add(w, j, alpha)
                fresh = status[j] != 2
                for i in range(n_in):
                    had = t - last_in[i] <= window
                    if fresh:
                        contributed[j, i] = had
                        updated[j, i] = False
                    elif had:
                        contributed[j, i] = True
                if not f and d_h != 0.0:
                    dr = d_h * min(2.0 ** (-sigma[j]), 1.0)
                    for i in range(n_in):
                        if contributed[j, i] and not updated[j, i]:
                            r[j, i] += dr
                            free[j] -= dr
                            updated[j, i] = True
                            w[j, i] = _weight(r[j, i], wmin, span)
            # 4. WTA per column (random tie-break) -> OUT, REWGATE -> dopamine
            for c in range(n_classes):
                nc = 0
                for m in range(micro):
                    if fired[c * micro + m]:
                        cand[nc] = c * micro + m
                        nc += 1
                if nc == 0:
                    continue
                win = cand[np.random.randint(nc)] if nc > 1 else cand[0]
                counts[win, 2] += 1
                if c == label:
                    if teacher_block:
                        bias_blocked_until = t + block     # OUT_c blocks its bias gate
                    if reward_column:                      # reward to the whole column
                        for m in range(c * micro, c * micro + micro):
                            dopa_at[m] = t + dopa_delay
                    else:                                  # REW-GATE: the winner only
                        counts[win, 3] += 1
                        dopa_at[win] = t + dopa_delay
            # 5. dopamine arriving now (a newer reward replaces a pending one). Routed to the
            #    whole column, it only reaches neurons that spiked within dopamine_time.
            for j in range(J):
                if dopa_at[j] != t:
                    continue
                dopa_at[j] = NEVER
                if reward_column:
                    if t - last_spike[j] > dopa_time:
                        continue
                    counts[j, 3] += 1
                if dopa != 0.0 and t - last_spike[j] <= dopa_time:
                    scale = min(2.0 ** (-sigma[j]), 1.0)
                    dr = dopa * scale
                    for i in range(n_in):
                        if contributed[j, i]:
                            r[j, i] += dr
                            free[j] -= dr
                            w[j, i] = _weight(r[j, i], wmin, span)
                if status[j] == 3 or dopa < 0.0:
                    sigma[j] = max(0.0, sigma[j] - r_s * dopa)
                else:
                    phase = abs(t - burst_start[j] - isi) / isi
                    sigma[j] += r_s * dopa * max(2.0 - phase, -1.0)
            # 5b. unconditional depression: every synapse loses |d_u| of resource every
            #     uncond_period steps (a leak: the free resource F is not credited).
            if d_u != 0.0 and (t + 1) % uncond_period == 0:
                for j in range(J):
                    for i in range(n_in):
                        r[j, i] += d_u
                        w[j, i] = _weight(r[j, i], wmin, span)
            # 6. renormalisation outside bursts: the free resource over real + silent synapses
            for j in range(J):
                if free[j] == 0.0 or abs(free[j]) < renorm_thr:
                    continue
                if t - last_step[j] > isi or status[j] == 3:
                    share = free[j] / (n_in + n_silent)
                    for i in range(n_in):
                        r[j, i] += share
                        w[j, i] = _weight(r[j, i], wmin, span)
                    free[j] = 0.0
            # 7. the label's bias gate: fires once its delay has passed, unless OUT blocked it
            #    (never blocked when teacher_blocking is off)
            if k >= bias_delay and t > bias_blocked_until:
                bias_arrives = t + 1
            t += 1
    clock[0] = t


@njit(cache=True, parallel=True)
def infer_counts(pixels: np.ndarray, w_t: np.ndarray, theta: np.ndarray, decay: float,
                 active: int, steps: int, n_classes: int, micro: int,
                 lateral: int = 0, renew: bool = True, simul: int = SIMUL_MUTUAL,
                 pot: int = POT_LEAK) -> np.ndarray:
    """OUT spike counts (N, C) for images (N, I) uint8, without plasticity.

    w_t is the (I, J) transposed weight matrix. Input currents are summed over the spiking
    pixels only (MNIST is ~80 % zeros), images in parallel. OUT_c spikes at a step iff some L
    neuron of column c does (the WTA passes one winner on), so no tie-break is needed.
    With lateral > 0 an L spike at step k blocks the other L neurons of its column (input
    discarded, no spike) at steps k+1 … k+lateral; every image starts unblocked, as u starts at 0.
    renew, simul, pot: the gating variant, as in `train_chunk`.
    """
    n, n_in = pixels.shape
    J = w_t.shape[1]
    out = np.zeros((n, n_classes), dtype=np.int32)
    for b in prange(n):                    # images are independent: spread over the cores
        u = np.zeros(J)
        cur = np.empty(J)
        blocked = np.full(J, -1, dtype=np.int64)         # blocked at steps k ≤ blocked[j]
        fired = np.zeros(micro, dtype=np.bool_)
        u_pre = np.zeros(micro)
        margin = np.zeros(micro)
        for k in range(steps):
            cur[:] = 0.0
            if k < active:
                for i in range(n_in):
                    v = np.int64(pixels[b, i])
                    if ((k + 1) * v) // 255 > (k * v) // 255:
                        for j in range(J):
                            cur[j] += w_t[i, j]
            for c in range(n_classes):
                any_spike = False
                if lateral > 0:
                    for m in range(micro):
                        j = c * micro + m
                        fired[m] = False
                        if blocked[j] >= k:
                            if pot != POT_HOLD:
                                u[j] = u[j] * decay
                            continue
                        u_pre[m] = u[j] if pot == POT_HOLD else u[j] * decay
                        uj = u[j] * decay + cur[j]
                        margin[m] = uj - theta[j]
                        if uj >= theta[j]:
                            any_spike = True
                            fired[m] = True
                            uj = 0.0
                        u[j] = uj
                    if any_spike and simul == SIMUL_EXCLUSIVE:
                        best = -1
                        for m in range(micro):
                            if fired[m] and (best < 0 or margin[m] > margin[best]):
                                best = m
                        for m in range(micro):
                            if fired[m] and m != best:
                                fired[m] = False
                                u[c * micro + m] = u_pre[m]
                    if any_spike:
                        for m in range(micro):
                            if not fired[m]:
                                continue
                            for m2 in range(micro):
                                j2 = c * micro + m2
                                if m2 == m or (simul == SIMUL_FREE and fired[m2]):
                                    continue
                                if not renew and blocked[j2] >= k:
                                    continue
                                if blocked[j2] < k + lateral:
                                    if pot == POT_RESET and blocked[j2] < k:
                                        u[j2] = 0.0
                                    blocked[j2] = k + lateral
                else:
                    for m in range(micro):
                        j = c * micro + m
                        uj = u[j] * decay + cur[j]
                        if uj >= theta[j]:
                            any_spike = True
                            uj = 0.0
                        u[j] = uj
                if any_spike:
                    out[b, c] += 1
    return out
