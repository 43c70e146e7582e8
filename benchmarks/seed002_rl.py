"""Seed 002 (Kirkpatrick et al. 2017, EWC), Fig. 4: continual reinforcement learning on MinAtar.

    python -m benchmarks.seed002_rl run --seeds 0 --threads 1        # every method, seed 0
    python -m benchmarks.seed002_rl run --methods ewc --seeds 1-2    # one method, more seeds
    python -m benchmarks.seed002_rl run --methods ewc --lams 100,1e4 # more λ (others kept)
    python -m benchmarks.seed002_rl report                           # plots + markdown
    python -m benchmarks.seed002_rl run --quick --out /tmp/q         # tiny smoke run (tests)

The paper trains one DQN agent on ten Atari games in sequence (random order, returning to
games; about 20 M frames a game), and tests every game periodically without training (Fig. 4A:
summed human-normalised score, capped at 1 a game; plain training blue, EWC red; Fig. 4B: EWC
with the true task label given, brown; Fig. 4C: perturbing a single-game agent's weights along
the inverse Fisher, uniformly, and in the Fisher's null space). Here, at the scale of one CPU
core: MinAtar (Young & Tian 2019; 10×10 versions of Atari games, `pip install minatar`),
`CONFIG["games"]` in the order given, `CONFIG["rounds"]` times (A → B → C → A → B → C),
`--frames` a visit.

**The agent** (experiment code, here): the MinAtar paper's DQN — one 3×3 convolution with 16
channels, ReLU, 128 hidden units, ReLU, a linear Q-value per action — with a replay buffer, a
target network, ε-greedy exploration, the Huber (smooth-L1) TD loss, and Adam (`CONFIG`).
*One network plays every game*: MinAtar games all take the same 6 actions (no-op, left, up,
right, down, fire; a game ignores those it does not use), so the action set is shared as it
is; their observations have 4–10 binary channels, padded with zero channels to the largest
count of the games played (a game's channel k is input channel k for every game: the
convolution's weights are shared, as the Atari agent's pixels are). As in the paper, each game
has its own replay buffer, and only the current game's is replayed. ε falls from 1 to 0.1 over
a game's first `eps_frames` frames (after `replay_start` random ones) and stays there on
returns.

**Methods.** ``plain``: the agent trained through the sequence. ``ewc``: the same with
`myelin.consolidation.EWC` (accumulated Ω, one anchor; the library's class, unchanged) whose
importance, at the end of every visit, is the mean squared per-sample gradient of the TD loss
on `fisher_samples` transitions of that game's buffer — the empirical Fisher of the Gaussian
likelihood whose negative log is the (squared) TD error, computed by the per-sample engine of
`myelin.importance` (`per_sample_sum`, the one `fisher` and `mas` run on) with the TD loss's
output gradient as its cotangent (`td_importance`; `myelin.importance.fisher` itself is the
Fisher of a classifier's softmax likelihood, which a regression loss is not). λ is a grid
(`--lams`, one run each; the summary shows the best on the first seed); the default is one
value (`CONFIG`). ``ewc-task`` (Fig. 4B's control): EWC with
the game's identity given — one output head per game. ``plain-task``: per-game heads without
EWC (not run by default). ``separate``: one agent per game, trained alone for as many frames
as the sequence gives that game: the normaliser. ``random``: the uniform random policy (the
score 0 of the normalisation).

**Measured.** Every `eval_every` frames every game is played `eval_episodes` times without
training (ε = 0.05, the sticky actions of training), seeded so that every method meets the
same episodes. A game's normalised score is (score − random) / (separate − random), capped at
1 as in the paper; the separate agent's score is its final one (`final_episodes` episodes,
mean over the seeds run). Their sum over the games is Fig. 4A's y-axis. Fig. 4C:
`myelin.analysis.perturbation_test` on the trained single-game agents (the paper's) and on the
trained EWC agent, with the TD-loss Fisher of the game as the importance and, as its "loss",
minus the game's mean score over `perturb.episodes` fixed episodes (`GameScore`).

**Resumable.** A run (method, seed) writes ``<out>/rl/<key>.json`` when it ends; a rerun skips
every run whose JSON holds the same settings. Inside a run a checkpoint
(``<out>/rl/checkpoints/<key>.pt``: networks, optimizer, EWC state, replay buffers, the game
environments, the random generators and the log; about 50 MB with three full buffers) is
written every `checkpoint_every` frames and at every game switch; a rerun continues from it,
and since every random number comes from saved generators the resumed run is the
uninterrupted one, bit for bit (tested). The summary
(``<out>/rl.json``) is rewritten after every finished run and records which runs are pending.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import pickle
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks._common import RESULTS, ROOT, command, environment, parse_seeds, seed_range
from myelin.consolidation import EWC
from myelin.importance import Importance, per_sample_sum
from myelin.metrics import ci95

OUT = RESULTS / "seed002"
FIGURES = ROOT / "docs" / "results"
FIGURE_NAMES = {"fig4ab": "seed002-fig4ab.png", "fig4c": "seed002-fig4c.png"}
QUICK_OUT = Path(tempfile.gettempdir()) / "myelin-seed002-rl-quick"
SIDE = 10                      # MinAtar observations are 10×10
N_ACTIONS = 6                  # every MinAtar game takes the same 6 actions
CHANNELS = {"asterix": 4, "breakout": 4, "freeway": 7, "seaquest": 10, "space_invaders": 6}
METHODS = ("random", "separate", "plain", "ewc", "ewc-task", "plain-task")
DEFAULT_METHODS = ("random", "separate", "plain", "ewc", "ewc-task")

# --------------------------------------------------------------------------------------------
# Settings. The MinAtar DQN (Young & Tian 2019; kenjyoung/MinAtar examples/dqn.py): 3×3 conv
# 16 + 128 hidden, Huber loss, batch 32, replay 100 000, replay start 5000, target update every
# 1000 frames, γ 0.99, ε 1 → 0.1 over 100 000 frames, sticky actions 0.1 (the environment's
# default), centered RMSProp (lr 2.5e-4, momentum 0.95, squared-gradient momentum 0.95, ε
# 0.01), one update per frame, 5 M frames. Ours keeps the network, loss, batch, γ, replay,
# target period and sticky actions, and is cheaper per frame (Adam, one update every 4 frames,
# ε annealed over 50 000 frames) so that the whole sequence of every method fits one core for
# about an hour (stated in the results).

CONFIG: dict[str, Any] = {
    "games": ["breakout", "space_invaders", "freeway"], "rounds": 2,
    "frames_per_visit": 150_000,
    "conv_channels": 16, "hidden": 128,
    "optimizer": "adam", "lr": 2.5e-4, "adam_eps": 1.5e-4,
    "batch_size": 32, "gamma": 0.99, "huber_beta": 1.0,
    "replay_capacity": 100_000, "replay_start": 5_000,
    "train_every": 4, "target_every": 1_000,
    "eps_start": 1.0, "eps_end": 0.1, "eps_frames": 50_000,
    "sticky_action_prob": 0.1,
    "eval_every": 30_000, "eval_episodes": 5, "eval_epsilon": 0.05, "eval_max_steps": 5_000,
    "final_episodes": 20, "random_episodes": 30,
    # λ: a grid key (one run per value; adding values keeps the other runs). Seed 0 ran 1000
    # first (too stiff: the third game was not learned), then 100, the default since.
    "fisher_samples": 5_000, "lams": [100.0],
    "checkpoint_every": 50_000,
    "perturb": {"norms": [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0], "samples": 2, "episodes": 5,
                "threshold": 1e-3, "damping": 0.1},
}

GRID_KEYS = ("lams",)
"""Configuration entries that say which runs are made, not what one run computes: a run's JSON
stays valid whatever they are (the λ grid can grow without rerunning the other runs)."""

QUICK: dict[str, Any] = {
    **CONFIG, "frames_per_visit": 300, "replay_capacity": 400, "replay_start": 64,
    "batch_size": 8, "target_every": 50, "eps_frames": 200, "eval_every": 150,
    "eval_episodes": 2, "eval_max_steps": 60, "final_episodes": 2, "random_episodes": 2,
    "fisher_samples": 32, "checkpoint_every": 200,
    "perturb": {**CONFIG["perturb"], "norms": [1.0, 4.0], "samples": 1, "episodes": 1},
}

PAPER: dict[str, Any] = {
    "source": "seed 002 (a Chinese translation of Kirkpatrick et al. 2017, PNAS 114:3521, §3.3 "
              "and Fig. 4)",
    "scale": "10 Atari 2600 games (chosen at random among those DQN plays at human level or "
             "better), random order with returns, about 20 M frames a game",
    "frames": 2e8,     # 10 games × ~20 M: the figure commonly quoted, not in the stored text
    "claims": {
        "fig4a": "Without EWC (plain gradient descent) the agent never learns to play more "
                 "than one game: forgetting keeps the summed normalised score below 1. With "
                 "EWC the agent learns to play several games.",
        "fig4b": "Giving the agent the true task label instead of inferring it improves "
                 "EWC's score only modestly.",
        "fig4c": "A single-game agent is always more robust to perturbations shaped by the "
                 "inverse Fisher diagonal than to uniform ones; perturbing in the Fisher's null "
                 "space, which should not hurt, hurts as much as the inverse-Fisher "
                 "perturbation (the Fisher is overconfident).",
    },
    "agent": "DQN with a task-recognition module (forget-me-not process), one replay buffer "
             "per inferred task, and game-specific biases and per-element gains in every "
             "layer; EWC with one penalty per task",
    "not_found": ["λ", "the number of samples of the Fisher", "the DQN's hyper-parameters "
                  "beyond 'as in ref. 25' (Mnih et al. 2015)", "the perturbation norms of "
                  "Fig. 4C", "the numbers behind the curves (the seed's figure image is not "
                  "stored)"],
}


# --------------------------------------------------------------------------------------------
# Games, the network, the replay buffer


def make_env(game: str, seed: int, sticky: float) -> Any:
    """A MinAtar environment seeded by `seed` (its constructor's own reset is unseeded: redone)."""
    from minatar import Environment

    env = Environment(game, sticky_action_prob=sticky)
    env.seed(seed)
    env.reset()
    return env


def observe(env: Any, channels: int) -> np.ndarray:
    """The state as a bool array (channels, 10, 10), the game's channels then zero padding."""
    s = env.state()
    out = np.zeros((channels, SIDE, SIDE), dtype=bool)
    out[:s.shape[2]] = s.transpose(2, 0, 1)
    return out


def n_channels(games: Sequence[str]) -> int:
    """Input channels of a network that plays `games`: the largest game's count."""
    unknown = [g for g in games if g not in CHANNELS]
    if unknown:
        raise ValueError(f"Unknown MinAtar game(s) {unknown}; choose from {sorted(CHANNELS)}.")
    return max(CHANNELS[g] for g in games)


class QNet(nn.Module):
    """The MinAtar DQN: conv 3×3 (16) → ReLU → 128 → ReLU → Q per action, for every head.

    Output (N, heads · 6): head h's Q-values are columns 6h .. 6h + 5 (`q`). One head is the
    shared agent; one head per game gives the network the game's identity (task label).
    """

    def __init__(self, channels: int, heads: int = 1, conv: int = 16, hidden: int = 128):
        super().__init__()
        self.heads = heads
        self.conv = nn.Conv2d(channels, conv, 3)
        self.hidden = nn.Linear(conv * (SIDE - 2) ** 2, hidden)
        self.out = nn.Linear(hidden, heads * N_ACTIONS)

    def forward(self, x: Tensor) -> Tensor:
        """Q-values of every head, (N, heads · 6), for states x of shape (N, C, 10, 10)."""
        h = F.relu(self.conv(x))
        return self.out(F.relu(self.hidden(h.flatten(1))))

    def q(self, x: Tensor, head: int) -> Tensor:
        """Head `head`'s Q-values, (N, 6)."""
        return self(x)[:, head * N_ACTIONS:(head + 1) * N_ACTIONS]


class Replay:
    """A ring buffer of transitions (s, a, r, s', done); states bit-packed (C·100 bits each)."""

    def __init__(self, capacity: int, channels: int):
        self.capacity, self.channels = capacity, channels
        nbytes = (channels * SIDE * SIDE + 7) // 8
        self.s = np.zeros((capacity, nbytes), np.uint8)
        self.s2 = np.zeros((capacity, nbytes), np.uint8)
        self.a = np.zeros(capacity, np.int64)
        self.r = np.zeros(capacity, np.float32)
        self.done = np.zeros(capacity, bool)
        self.pos = self.size = 0

    def add(self, s: np.ndarray, a: int, r: float, s2: np.ndarray, done: bool) -> None:
        """Store one transition, overwriting the oldest when full."""
        i = self.pos
        self.s[i], self.s2[i] = np.packbits(s), np.packbits(s2)
        self.a[i], self.r[i], self.done[i] = a, r, done
        self.pos = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def unpack(self, packed: np.ndarray) -> Tensor:
        """Packed states (N, bytes) as a float tensor (N, C, 10, 10)."""
        bits = np.unpackbits(packed, axis=1, count=self.channels * SIDE * SIDE)
        return torch.from_numpy(bits.reshape(-1, self.channels, SIDE, SIDE)).float()

    def batch(self, idx: np.ndarray) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """(s, a, r, s', done) of the transitions `idx` as tensors."""
        return (self.unpack(self.s[idx]), torch.from_numpy(self.a[idx]),
                torch.from_numpy(self.r[idx]), self.unpack(self.s2[idx]),
                torch.from_numpy(self.done[idx].astype(np.float32)))

    def state_dict(self) -> dict[str, Any]:
        """The filled part of the buffer and its pointer."""
        n = self.size
        return {"capacity": self.capacity, "channels": self.channels, "pos": self.pos,
                "size": n, "s": self.s[:n].copy(), "s2": self.s2[:n].copy(),
                "a": self.a[:n].copy(), "r": self.r[:n].copy(), "done": self.done[:n].copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of `state_dict`."""
        if (state["capacity"], state["channels"]) != (self.capacity, self.channels):
            raise ValueError(f"A replay buffer of capacity {state['capacity']} and "
                             f"{state['channels']} channels cannot be loaded into one of "
                             f"{self.capacity} and {self.channels}.")
        n = state["size"]
        for k in ("s", "s2", "a", "r", "done"):
            getattr(self, k)[:n] = state[k]
        self.pos, self.size = state["pos"], n


# --------------------------------------------------------------------------------------------
# The TD loss, and its per-sample squared gradient as an importance


def td_targets(target: QNet, r: Tensor, s2: Tensor, done: Tensor, head: int,
               gamma: float) -> Tensor:
    """y = r + γ (1 − done) max_a' Q_target(s', a') for head `head` (no gradient)."""
    with torch.no_grad():
        return r + gamma * (1.0 - done) * target.q(s2, head).max(1).values


def td_loss(net: QNet, s: Tensor, a: Tensor, y: Tensor, head: int, beta: float) -> Tensor:
    """Mean Huber (smooth-L1) loss of Q(s, a) against the targets y."""
    q = net.q(s, head).gather(1, a[:, None]).squeeze(1)
    return F.smooth_l1_loss(q, y, beta=beta)


def td_cotangent(head: int, beta: float) -> Callable[[Tensor, Tensor | None], Tensor]:
    """The per-sample TD loss's gradient w.r.t. the network output, for `per_sample_sum`.

    `per_sample_sum` hands it the output (N, heads · 6) and the labels y of shape (N, 2) —
    the action taken and the TD target. The loss of sample n is Huber(Q_n[a_n] − y_n), whose
    derivative w.r.t. Q_n[a_n] is clip(δ_n / β, −1, 1) (times β below |δ| < β: δ_n); every
    other output gets 0.
    """
    def cotangent(q: Tensor, y: Tensor | None) -> Tensor:
        if y is None or y.dim() != 2 or y.shape[1] != 2:
            raise ValueError("td_cotangent needs labels of shape (N, 2): action, TD target.")
        a = y[:, 0].long() + head * N_ACTIONS
        delta = q.gather(1, a[:, None]).squeeze(1) - y[:, 1].to(q.dtype)
        grad = torch.where(delta.abs() < beta, delta / beta, delta.sign())
        out = torch.zeros_like(q)
        out[torch.arange(len(q)), a] = grad
        return out.unsqueeze(0)
    return cotangent


def td_importance(net: QNet, states: Tensor, actions: Tensor, targets: Tensor, head: int,
                  beta: float, batch_size: int = 512) -> Importance:
    """Mean over transitions of the squared per-sample gradient of the Huber TD loss.

    Exact per-sample gradients from `myelin.importance`'s engine (one batched forward and
    backward per batch; the Conv2d and Linear rules), the TD loss's output gradient as the
    cotangent. Where every |δ| < β it is the empirical Fisher of the Gaussian likelihood
    N(y; Q(s, a), β) (negative log ½δ²/β, the Huber loss's quadratic part); beyond β the
    gradient is clipped, as the Huber loss clips it.
    """
    y = torch.stack([actions.to(states.dtype), targets.to(states.dtype)], 1)
    sums, n = per_sample_sum(net, (states, y), td_cotangent(head, beta), reduce="square",
                             batch_size=batch_size, progress=False, desc="td-fisher")
    return Importance({k: v / n for k, v in sums.items()},
                      {"estimator": "td-fisher", "loss": f"smooth_l1(beta={beta:g})",
                       "head": head, "n_samples": n})


# --------------------------------------------------------------------------------------------
# Playing without training


def play(net: QNet | None, game: str, head: int, episodes: int, epsilon: float,
         seeds: Sequence[int], channels: int, sticky: float, max_steps: int) -> list[float]:
    """Returns of `episodes` episodes played in parallel, ε-greedy on head `head`'s Q-values.

    `net` None plays uniformly at random. seeds[0] seeds the ε draws, seeds[1:] (one per
    episode) the games: the same seeds give the same episodes for any network. An episode
    longer than `max_steps` is cut there.
    """
    envs = [make_env(game, int(s), sticky) for s in seeds[1:episodes + 1]]
    rng = np.random.default_rng(int(seeds[0]))
    returns = [0.0] * episodes
    active = list(range(episodes))
    steps = 0
    while active and steps < max_steps:
        explore = rng.random(len(active)) < epsilon
        random_a = rng.integers(N_ACTIONS, size=len(active))
        if net is None:
            actions = random_a
        else:
            x = torch.from_numpy(np.stack([observe(envs[i], channels) for i in active])).float()
            with torch.no_grad():
                greedy = net.q(x, head).argmax(1).numpy()
            actions = np.where(explore, random_a, greedy)
        still = []
        for i, a in zip(active, actions):
            r, done = envs[i].act(int(a))
            returns[i] += float(r)
            if not done:
                still.append(i)
        active = still
        steps += 1
    return returns


TAG_FINAL, TAG_PERTURB, TAG_TRAIN, TAG_RANDOM = 10**6, 10**6 + 1, 10**6 + 2, 10**6 + 3
"""`episode_seeds` tags besides the evaluations' (0, 1, 2, ...)."""


def episode_seeds(seed: int, tag: int, game_index: int, episodes: int) -> list[int]:
    """Seeds for `play`: distinct for each (run seed, evaluation tag, game), any method."""
    ss = np.random.SeedSequence([seed, tag, game_index, 2017])
    return [int(v) for v in ss.generate_state(episodes + 1)]


class GameScore:
    """A "loss" for `myelin.analysis.perturbation_test`: minus the mean score of fixed episodes.

    `perturbation_test` calls it once per perturbed network (with a one-sample placeholder
    batch, which it ignores) and records the value as the loss; the score is its negative. The
    episodes are the same at every call (common random numbers), so the curves are smooth in
    the perturbation norm.
    """

    def __init__(self, game: str, head: int, cfg: dict[str, Any], channels: int, seed: int):
        self.game, self.head, self.cfg, self.channels = game, head, cfg, channels
        self.episodes = cfg["perturb"]["episodes"]
        self.seeds = episode_seeds(seed, TAG_PERTURB, cfg["games"].index(game), self.episodes)

    def __call__(self, model: nn.Module, batch: Any) -> Tensor:
        """−(mean score of the episodes) of `model` (a `QNet`)."""
        cfg = self.cfg
        rets = play(model, self.game, self.head, self.episodes, cfg["eval_epsilon"], self.seeds,
                    self.channels, cfg["sticky_action_prob"], cfg["eval_max_steps"])
        return torch.tensor(-float(np.mean(rets)))

    def __repr__(self) -> str:
        return (f"GameScore({self.game!r}, {self.episodes} episodes, "
                f"ε={self.cfg['eval_epsilon']:g}): minus the mean score")


# --------------------------------------------------------------------------------------------
# One run: an agent trained on its schedule of visits, evaluated, checkpointed


def visits(cfg: dict[str, Any], spec: dict[str, Any]) -> list[tuple[str, int]]:
    """(game, frames) of each visit: the sequence, or one game for a separate agent."""
    f = cfg["frames_per_visit"]
    if spec["method"] == "separate":
        return [(spec["game"], f * cfg["rounds"])]
    return [(g, f) for _ in range(cfg["rounds"]) for g in cfg["games"]]


def uses_ewc(spec: dict[str, Any]) -> bool:
    """True for the EWC methods."""
    return spec["method"] in ("ewc", "ewc-task")


def per_game_heads(spec: dict[str, Any]) -> bool:
    """True when the game's identity is given (one output head per game)."""
    return spec["method"] in ("ewc-task", "plain-task")


class Trainer:
    """One agent on its schedule of visits (`visits`): DQN training, evaluation, checkpoints.

    All randomness after the initialisation comes from saved state: the NumPy generator
    (ε-greedy and replay sampling), the games' own generators (pickled with them), and seeds
    derived from (seed, evaluation, game) for the evaluations. `state_dict` holds everything.
    """

    def __init__(self, cfg: dict[str, Any], spec: dict[str, Any], seed: int):
        self.cfg, self.spec, self.seed = cfg, spec, seed
        self.games = list(cfg["games"])
        self.schedule = visits(cfg, spec)
        played = sorted({g for g, _ in self.schedule})
        self.channels = n_channels(self.games)
        heads = len(self.games) if per_game_heads(spec) else 1
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.net = QNet(self.channels, heads, cfg["conv_channels"], cfg["hidden"])
        self.target = QNet(self.channels, heads, cfg["conv_channels"], cfg["hidden"])
        self.target.load_state_dict(self.net.state_dict())
        self.target.requires_grad_(False)
        base = torch.optim.Adam(self.net.parameters(), lr=cfg["lr"], eps=cfg["adam_eps"],
                                fused=True)
        self.ewc = EWC(self.net, spec["lam"]) if uses_ewc(spec) else None
        self.opt: torch.optim.Optimizer = self.ewc.wrap(base) if self.ewc else base
        self.replay = {g: Replay(cfg["replay_capacity"], self.channels) for g in played}
        self.envs = {g: make_env(g, int(episode_seeds(seed, TAG_TRAIN, self.games.index(g), 1)[1]),
                                 cfg["sticky_action_prob"]) for g in played}
        self.rng = np.random.default_rng(np.random.SeedSequence([seed, 2017]))
        self.visit = self.frame_in_visit = self.frame = self.updates = self.n_evals = 0
        self.game_frames = dict.fromkeys(played, 0)
        self.episode_return = dict.fromkeys(played, 0.0)
        self.log: dict[str, Any] = {"evals": [], "visits": [], "resumed_at": []}
        self._visit_log: dict[str, Any] = {}
        self.seconds = {"cpu": 0.0, "wall": 0.0}

    # -- acting and learning -------------------------------------------------------------------
    def head(self, game: str) -> int:
        """The output head that plays `game`."""
        return self.games.index(game) if self.net.heads > 1 else 0

    def epsilon(self, game: str) -> float:
        """1 for the game's first `replay_start` frames, then linear to eps_end over eps_frames."""
        cfg = self.cfg
        t = self.game_frames[game] - cfg["replay_start"]
        if t < 0:
            return 1.0
        frac = min(1.0, t / cfg["eps_frames"])
        return cfg["eps_start"] + frac * (cfg["eps_end"] - cfg["eps_start"])

    def step(self, game: str) -> None:
        """One frame of `game`: act, store, and (every `train_every` frames) one update."""
        cfg, env = self.cfg, self.envs[game]
        s = observe(env, self.channels)
        explore = self.rng.random() < self.epsilon(game)
        random_a = int(self.rng.integers(N_ACTIONS))
        if explore:
            a = random_a
        else:
            with torch.no_grad():
                a = int(self.net.q(torch.from_numpy(s).float()[None], self.head(game)).argmax())
        r, done = env.act(a)
        self.replay[game].add(s, a, float(r), observe(env, self.channels), bool(done))
        self.episode_return[game] += float(r)
        if done:
            self._visit_log["returns"].append(self.episode_return[game])
            self.episode_return[game] = 0.0
            env.reset()
        self.game_frames[game] += 1
        buf = self.replay[game]
        if buf.size >= cfg["replay_start"] and self.game_frames[game] % cfg["train_every"] == 0:
            self.update(game)
        if self.frame % cfg["target_every"] == 0:
            self.target.load_state_dict(self.net.state_dict())

    def update(self, game: str) -> None:
        """One Adam step (plus EWC's penalty gradient) on a batch of the game's buffer."""
        cfg, buf = self.cfg, self.replay[game]
        idx = self.rng.integers(buf.size, size=cfg["batch_size"])
        s, a, r, s2, done = buf.batch(idx)
        head = self.head(game)
        y = td_targets(self.target, r, s2, done, head, cfg["gamma"])
        loss = td_loss(self.net, s, a, y, head, cfg["huber_beta"])
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.updates += 1
        self._visit_log["loss_sum"] += float(loss.detach())
        self._visit_log["updates"] += 1

    def importance(self, game: str, n: int) -> Importance:
        """The TD-loss Fisher of `game` on n transitions of its buffer (targets: target net)."""
        buf = self.replay[game]
        idx = self.rng.choice(buf.size, size=min(n, buf.size), replace=False)
        s, a, r, s2, done = buf.batch(np.sort(idx))
        head = self.head(game)
        y = td_targets(self.target, r, s2, done, head, self.cfg["gamma"])
        return td_importance(self.net, s, a, y, head, self.cfg["huber_beta"])

    # -- evaluation ----------------------------------------------------------------------------
    def evaluate(self, episodes: int, tag: int) -> dict[str, list[float]]:
        """Returns of every game this agent plays (its schedule's games), without training."""
        cfg = self.cfg
        out = {}
        for g in sorted(self.envs, key=self.games.index):
            seeds = episode_seeds(self.seed, tag, self.games.index(g), episodes)
            out[g] = play(self.net, g, self.head(g), episodes, cfg["eval_epsilon"], seeds,
                          self.channels, cfg["sticky_action_prob"], cfg["eval_max_steps"])
        return out

    def _record_eval(self) -> None:
        rets = self.evaluate(self.cfg["eval_episodes"], self.n_evals)
        self.log["evals"].append({"frame": self.frame, "visit": self.visit,
                                  "scores": {g: float(np.mean(v)) for g, v in rets.items()},
                                  "returns": rets})
        self.n_evals += 1

    # -- the schedule --------------------------------------------------------------------------
    def _begin_visit(self, game: str) -> None:
        self.target.load_state_dict(self.net.state_dict())
        self.envs[game].reset()
        self.episode_return[game] = 0.0
        self._visit_log = {"game": game, "start": self.frame, "returns": [], "loss_sum": 0.0,
                           "updates": 0}

    def _end_visit(self, game: str) -> None:
        v = self._visit_log
        entry = {"game": game, "start": v["start"], "end": self.frame,
                 "episodes": len(v["returns"]),
                 "train_return_mean": float(np.mean(v["returns"])) if v["returns"] else None,
                 "train_return_last10": (float(np.mean(v["returns"][-10:])) if v["returns"]
                                         else None),
                 "updates": v["updates"],
                 "loss_mean": v["loss_sum"] / v["updates"] if v["updates"] else None}
        if self.ewc is not None:
            imp = self.importance(game, self.cfg["fisher_samples"])
            flat = torch.cat([t.flatten() for t in imp.values()]).double()
            entry["importance"] = {"mean": float(flat.mean()), "max": float(flat.max()),
                                   "zero_fraction": float((flat == 0).double().mean()),
                                   "n_samples": imp.meta["n_samples"]}
            self.ewc.consolidate(imp)
        self.log["visits"].append(entry)

    def train(self, checkpoint: Path | None = None, stop_at: int | None = None,
              log: Callable[[str], None] = print) -> bool:
        """Run the schedule to its end (True) or until frame `stop_at` (False: a test's stop).

        With `checkpoint`, the state is saved there every `checkpoint_every` frames and at the
        end of every visit.
        """
        cfg = self.cfg
        mark = [time.process_time(), time.perf_counter()]

        def clock() -> None:          # add the time since the last mark to self.seconds
            now = [time.process_time(), time.perf_counter()]
            self.seconds["cpu"] += now[0] - mark[0]
            self.seconds["wall"] += now[1] - mark[1]
            mark[:] = now

        def save() -> None:
            clock()
            if checkpoint is not None:
                save_checkpoint(self, checkpoint)

        if self.frame == 0 and not self.log["evals"]:
            self._record_eval()
        while self.visit < len(self.schedule):
            game, frames = self.schedule[self.visit]
            if self.frame_in_visit == 0:
                self._begin_visit(game)
            while self.frame_in_visit < frames:
                if stop_at is not None and self.frame >= stop_at:
                    clock()
                    return False
                self.frame += 1
                self.frame_in_visit += 1
                self.step(game)
                if self.frame % cfg["eval_every"] == 0:
                    self._record_eval()
                if self.frame % cfg["checkpoint_every"] == 0 and self.frame_in_visit < frames:
                    save()
                    log(f"  {run_key(self.spec, self.seed)}: frame {self.frame:,} "
                        f"({game}), {self.updates:,} updates"
                        + (", checkpoint saved" if checkpoint is not None else ""))
            self._end_visit(game)
            last = self.log["visits"][-1]
            log(f"  {run_key(self.spec, self.seed)}: visit {self.visit + 1}/"
                f"{len(self.schedule)} ({game}) done at frame {self.frame:,}: "
                f"{last['episodes']} episodes, training return (last 10) "
                f"{last['train_return_last10']}, eval "
                + ", ".join(f"{g} {s:.2f}" for g, s in self.log["evals"][-1]["scores"].items()))
            self.visit += 1
            self.frame_in_visit = 0
            save()
        return True

    # -- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs (a pickle-able dict)."""
        return {"frame": self.frame, "visit": self.visit, "frame_in_visit": self.frame_in_visit,
                "updates": self.updates, "n_evals": self.n_evals,
                "game_frames": dict(self.game_frames),
                "episode_return": dict(self.episode_return),
                "net": self.net.state_dict(), "target": self.target.state_dict(),
                "optimizer": self.opt.state_dict(),
                "ewc": None if self.ewc is None else self.ewc.consolidation_state(),
                "replay": {g: b.state_dict() for g, b in self.replay.items()},
                "envs": pickle.dumps(self.envs), "rng": self.rng.bit_generator.state,
                "log": self.log, "visit_log": self._visit_log, "seconds": dict(self.seconds)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of `state_dict`."""
        for k in ("frame", "visit", "frame_in_visit", "updates", "n_evals"):
            setattr(self, k, state[k])
        self.game_frames, self.episode_return = state["game_frames"], state["episode_return"]
        self.net.load_state_dict(state["net"])
        self.target.load_state_dict(state["target"])
        self.opt.load_state_dict(state["optimizer"])
        if self.ewc is not None and state["ewc"] is not None and state["ewc"]["tensors"]:
            self.ewc.load_consolidation_state(state["ewc"], "checkpoint")
        for g, b in self.replay.items():
            b.load_state_dict(state["replay"][g])
        self.envs = pickle.loads(state["envs"])
        self.rng.bit_generator.state = state["rng"]
        self.log, self._visit_log = state["log"], state["visit_log"]
        self.seconds = dict(state["seconds"])


def save_checkpoint(trainer: Trainer, path: Path) -> None:
    """Write the trainer's state and its run identity to `path` (atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save({"identity": _identity(trainer.cfg, trainer.spec, trainer.seed),
                "state": trainer.state_dict()}, buf)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, path)
    progress = {"key": run_key(trainer.spec, trainer.seed), "frame": trainer.frame,
                "frames": sum(f for _, f in trainer.schedule),
                "seconds": trainer.seconds, "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    path.with_suffix(".json").write_text(json.dumps(progress) + "\n")


def load_checkpoint(trainer: Trainer, path: Path) -> bool:
    """Restore `trainer` from `path` if it holds this run's state; False if absent or other."""
    if not path.exists():
        return False
    try:
        data = torch.load(path, weights_only=False)
    except (OSError, RuntimeError, pickle.UnpicklingError, EOFError):
        return False
    if data.get("identity") != _identity(trainer.cfg, trainer.spec, trainer.seed):
        return False
    trainer.load_state_dict(data["state"])
    return True


def perturbation(trainer: Trainer, game: str) -> dict[str, Any]:
    """Fig. 4C on `game`: `perturbation_test` with the game's TD-loss Fisher and `GameScore`."""
    from myelin.analysis import perturbation_test

    cfg, p = trainer.cfg, trainer.cfg["perturb"]
    imp = trainer.importance(game, cfg["fisher_samples"])
    score = GameScore(game, trainer.head(game), cfg, trainer.channels, trainer.seed)
    placeholder = (torch.zeros(1, trainer.channels, SIDE, SIDE), torch.zeros(1))
    res = perturbation_test(trainer.net, imp, placeholder, norms=p["norms"],
                            threshold=p["threshold"], damping=p["damping"],
                            samples=p["samples"], seed=trainer.seed, loss=score).to_dict()
    return {"norms": res["norms"], "kinds": res["kinds"],
            "score": {k: [0.0 - v for v in vs] for k, vs in res["loss"].items()},
            "score_std": res["loss_std"], "baseline_score": 0.0 - res["baseline_loss"],
            "n_parameters": res["n_parameters"], "null_space": res["null_space"],
            "meta": res["meta"]}


def run_random(cfg: dict[str, Any], seed: int) -> dict[str, Any]:
    """The uniform random policy's returns on every game (the 0 of the normalisation)."""
    ch = n_channels(cfg["games"])
    returns = {g: play(None, g, 0, cfg["random_episodes"], 1.0,
                       episode_seeds(seed, TAG_RANDOM, i, cfg["random_episodes"]), ch,
                       cfg["sticky_action_prob"], cfg["eval_max_steps"])
               for i, g in enumerate(cfg["games"])}
    return {"returns": returns, "scores": {g: float(np.mean(v)) for g, v in returns.items()}}


def run_agent(cfg: dict[str, Any], spec: dict[str, Any], seed: int, checkpoint: Path | None,
              log: Callable[[str], None] = print, stop_at: int | None = None
              ) -> dict[str, Any] | None:
    """Train one agent (resuming from `checkpoint`), then its final evaluation and Fig. 4C.

    Returns the run's result, or None when stopped at `stop_at` (tests).
    """
    trainer = Trainer(cfg, spec, seed)
    if checkpoint is not None and load_checkpoint(trainer, checkpoint):
        trainer.log["resumed_at"].append(trainer.frame)
        log(f"  {run_key(spec, seed)}: resumed from {checkpoint} at frame {trainer.frame:,}")
    if not trainer.train(checkpoint, stop_at, log):
        return None
    c0, t0 = time.process_time(), time.perf_counter()
    final = trainer.evaluate(cfg["final_episodes"], TAG_FINAL)
    perturb = {}
    if spec["method"] in ("separate", "ewc"):
        for g in sorted(trainer.envs, key=cfg["games"].index):
            perturb[g] = perturbation(trainer, g)
            log(f"  {run_key(spec, seed)}: Fig. 4C on {g}: baseline "
                f"{perturb[g]['baseline_score']:.2f}; at ‖δ‖ = {perturb[g]['norms'][-1]:g} "
                + ", ".join(f"{k} {v[-1]:.2f}" for k, v in perturb[g]["score"].items()))
    trainer.seconds["cpu"] += time.process_time() - c0
    trainer.seconds["wall"] += time.perf_counter() - t0
    return {"schedule": [list(v) for v in trainer.schedule], "frames": trainer.frame,
            "updates": trainer.updates, "evals": trainer.log["evals"],
            "visits": trainer.log["visits"], "resumed_at": trainer.log["resumed_at"],
            "final": {"scores": {g: float(np.mean(v)) for g, v in final.items()},
                      "returns": final},
            "perturbation": perturb, "train_seconds": dict(trainer.seconds),
            "parameters": sum(p.numel() for p in trainer.net.parameters()),
            "weights_digest": float(sum(p.detach().double().abs().sum()
                                        for p in trainer.net.parameters()))}


# --------------------------------------------------------------------------------------------
# Runs: one JSON each, resumable


def _plain(value: Any) -> Any:
    """`value` as JSON gives it back (tuples → lists), for comparing settings."""
    return json.loads(json.dumps(value))


def _run_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The configuration without its grids (`GRID_KEYS`)."""
    return _plain({k: v for k, v in cfg.items() if k not in GRID_KEYS})


def _identity(cfg: dict[str, Any], spec: dict[str, Any], seed: int) -> dict[str, Any]:
    """What determines one run's result: the configuration (grids aside), method and seed."""
    return _plain({"config": _run_config(cfg), "spec": spec, "seed": seed})


def run_key(spec: dict[str, Any], seed: int) -> str:
    """File name of a run: ``ewc-lam1000-seed0``, ``separate-freeway-seed1``, ``plain-seed0``."""
    parts = [spec["method"]] + ([spec["game"]] if "game" in spec else []) \
        + ([f"lam{spec['lam']:g}"] if "lam" in spec else [])
    return "-".join(parts) + f"-seed{seed}"


def specs(methods: Sequence[str], cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """The runs of `methods`: the separate agents one per game, EWC one per λ of the grid."""
    out: list[dict[str, Any]] = []
    for m in methods:
        if m == "separate":
            out += [{"method": "separate", "game": g} for g in cfg["games"]]
        elif uses_ewc({"method": m}):
            out += [{"method": m, "lam": float(lam)} for lam in cfg["lams"]]
        else:
            out.append({"method": m})
    return out


def get_run(cfg: dict[str, Any], spec: dict[str, Any], seed: int, folder: Path,
            log: Callable[[str], None] = print, stop_at: int | None = None
            ) -> dict[str, Any] | None:
    """The record of (spec, seed): read if done with these settings, else run (resuming)."""
    key = run_key(spec, seed)
    path = folder / f"{key}.json"
    identity = _identity(cfg, spec, seed)
    if path.exists():
        try:
            rec = json.loads(path.read_text())
            same = _plain(rec["identity"]) == identity
        except (json.JSONDecodeError, KeyError, TypeError):
            rec, same = {}, False
        if same:
            log(f"{key}: done before, read {path}")
            return rec
        log(f"{key}: {path} holds other settings; running it again")
    t0, c0 = time.perf_counter(), time.process_time()
    if spec["method"] == "random":
        result: dict[str, Any] | None = run_random(cfg, seed)
        seconds = {"cpu": time.process_time() - c0, "wall": time.perf_counter() - t0}
    else:
        ckpt = folder / "checkpoints" / f"{key}.pt"
        result = run_agent(cfg, spec, seed, ckpt, log, stop_at)
        if result is None:
            return None
        seconds = result["train_seconds"]
        for p in (ckpt, ckpt.with_suffix(".json")):
            p.unlink(missing_ok=True)
    rec = {"key": key, "identity": identity, "result": result, "cpu_seconds": seconds["cpu"],
           "wall_seconds": seconds["wall"], "environment": environment()}
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_plain(rec), indent=1) + "\n")
    os.replace(tmp, path)
    log(f"{key}: {rec['cpu_seconds'] / 60:.1f} min CPU ({rec['wall_seconds'] / 60:.1f} min "
        f"wall) → {path}")
    return rec


# --------------------------------------------------------------------------------------------
# Summary: normalised scores (Fig. 4A/B), perturbation curves (Fig. 4C), what is pending

SEQUENCE = ("plain", "ewc", "ewc-task", "plain-task")
LABELS = {"plain": "plain training", "ewc": "EWC", "ewc-task": "EWC, task label given",
          "plain-task": "plain, task label given", "separate": "separate agent per game"}
COLOURS = {"plain": "tab:blue", "ewc": "tab:red", "ewc-task": "tab:brown",
           "plain-task": "tab:cyan", "separate": "black"}


def stat(values: Sequence[float]) -> dict[str, Any]:
    """Mean, 95 % CI half-width (None for fewer than two values), n and the values."""
    vals = [float(v) for v in values]
    mean, half = ci95(vals)
    return {"mean": mean, "ci95": None if math.isnan(half) else half, "n": len(vals),
            "values": vals}


def pm(s: dict[str, Any], digits: int = 2) -> str:
    """'mean ± ci'; a single value is marked (1 seed)."""
    if s["ci95"] is None:
        return f"{s['mean']:.{digits}f} (1 seed)"
    return f"{s['mean']:.{digits}f} ± {s['ci95']:.{digits}f}"


def positive(values: Sequence[float]) -> int:
    """2: mean > 0 and (≥ 2 values) its 95 % CI excludes 0; 1: every value > 0; else 0."""
    s = stat(values)
    if s["mean"] > 0 and s["ci95"] is not None and s["mean"] - s["ci95"] > 0:
        return 2
    return 1 if min(s["values"]) > 0 else 0


def agrees(*levels: int | bool) -> str:
    """The verdict of claims whose parts have these levels (`positive`; a bool: 2 or 0)."""
    level = min(int(lv) * 2 if isinstance(lv, bool) else lv for lv in levels)
    return {2: "yes", 1: "in every seed, but the 95 % CI includes 0 (or 1 seed)",
            0: "no"}[level]


def read_runs(folder: Path, cfg: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every finished run under `folder` made with the configuration `cfg`, by key."""
    runs = {}
    for path in sorted(folder.glob("*.json")):
        try:
            rec = json.loads(path.read_text())
            if _plain(rec["identity"]["config"]) == _run_config(cfg):
                runs[rec["key"]] = rec
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    return runs


def in_progress(folder: Path) -> list[dict[str, Any]]:
    """The checkpointed, unfinished runs under `folder` (their progress records)."""
    out = []
    for path in sorted((folder / "checkpoints").glob("*.json")):
        try:
            out.append(json.loads(path.read_text()))
        except json.JSONDecodeError:
            continue
    return out


def normaliser(cfg: dict[str, Any], runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Per game: the random policy's and the separate agents' scores (means over seeds)."""
    out: dict[str, Any] = {}
    for g in cfg["games"]:
        rnd = [r["result"]["scores"][g] for r in runs.values()
               if r["identity"]["spec"]["method"] == "random"]
        sep = {r["identity"]["seed"]: r["result"]["final"]["scores"][g] for r in runs.values()
               if r["identity"]["spec"] == {"method": "separate", "game": g}}
        entry = {"random": float(np.mean(rnd)) if rnd else None, "random_seeds": len(rnd),
                 "separate": float(np.mean(list(sep.values()))) if sep else None,
                 "separate_per_seed": {str(k): v for k, v in sorted(sep.items())}}
        entry["usable"] = (entry["random"] is not None and entry["separate"] is not None
                           and entry["separate"] > entry["random"])
        out[g] = entry
    return out


def normalise(score: float, norm: dict[str, Any], cap: bool = True) -> float | None:
    """(score − random) / (separate − random), capped at 1; None if the game is unusable."""
    if not norm["usable"]:
        return None
    v = (score - norm["random"]) / (norm["separate"] - norm["random"])
    return min(1.0, v) if cap else v


def summed(scores: dict[str, float], norms: dict[str, Any]) -> float | None:
    """Σ over the usable games of the capped normalised score (Fig. 4A's y-axis)."""
    vals = [normalise(scores[g], norms[g]) for g in norms if norms[g]["usable"]]
    return float(sum(v for v in vals if v is not None)) if vals else None


def forgetting(rec: dict[str, Any], cfg: dict[str, Any], norms: dict[str, Any]) -> float | None:
    """Mean over the usable games but the last trained of: the game's normalised score at the
    end of its last visit minus its final one (capped scores; > 0: forgotten since)."""
    res = rec["result"]
    at = {e["frame"]: e["scores"] for e in res["evals"]}
    last_visit = {v["game"]: v["end"] for v in res["visits"]}
    last_game = res["visits"][-1]["game"] if res["visits"] else None
    drops = [normalise(at[end][g], norms[g]) - normalise(res["final"]["scores"][g], norms[g])
             for g, end in last_visit.items()
             if g != last_game and norms[g]["usable"] and end in at]
    return float(np.mean(drops)) if drops else None


def learned(rec: dict[str, Any], norms: dict[str, Any]) -> float | None:
    """Mean over the visits of the visited game's normalised score (capped) at the visit's end:
    how well the agent learns the game it is trained on."""
    res = rec["result"]
    at = {e["frame"]: e["scores"] for e in res["evals"]}
    vals = [normalise(at[v["end"]][v["game"]], norms[v["game"]]) for v in res["visits"]
            if norms[v["game"]]["usable"] and v["end"] in at]
    return float(np.mean(vals)) if vals else None


def _method_entry(recs: list[dict[str, Any]], cfg: dict[str, Any],
                  norms: dict[str, Any]) -> dict[str, Any]:
    """One sequence agent's curves and end numbers over its seeds (`recs`)."""
    games = cfg["games"]
    usable = [g for g in games if norms[g]["usable"]]
    frames = [e["frame"] for e in recs[0]["result"]["evals"]]
    raw = {g: [[e["scores"][g] for e in r["result"]["evals"]] for r in recs] for g in games}
    entry: dict[str, Any] = {"seeds": [r["identity"]["seed"] for r in recs],
                             "frames": frames, "raw": raw}
    if usable:
        entry["normalised"] = {g: [[normalise(v, norms[g]) for v in seed] for seed in raw[g]]
                               for g in usable}
        entry["sum"] = [[summed({g: raw[g][i][t] for g in games}, norms)
                         for t in range(len(frames))] for i in range(len(recs))]
        late = [t for t, fr in enumerate(frames) if fr > len(games) * cfg["frames_per_visit"]]
        entry["round2_mean"] = [float(np.mean([s[t] for t in late])) if late else None
                                for s in entry["sum"]]
        entry["final_sum"] = [summed(r["result"]["final"]["scores"], norms) for r in recs]
        entry["final_normalised"] = {
            g: [normalise(r["result"]["final"]["scores"][g], norms[g], cap=False)
                for r in recs] for g in usable}
        entry["games_at_half"] = [sum(1 for g in usable if normalise(
            r["result"]["final"]["scores"][g], norms[g]) >= 0.5) for r in recs]
        entry["forgetting"] = [forgetting(r, cfg, norms) for r in recs]
        entry["learned"] = [learned(r, norms) for r in recs]
    entry["final_raw"] = {g: [r["result"]["final"]["scores"][g] for r in recs] for g in games}
    entry["visits"] = recs[0]["result"]["visits"]
    return entry


def summarise(cfg: dict[str, Any], runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Curves and numbers of Fig. 4A/B/C from the finished runs."""
    games = cfg["games"]
    norms = normaliser(cfg, runs)
    usable = [g for g in games if norms[g]["usable"]]
    methods: dict[str, Any] = {}
    for m in SEQUENCE:
        recs = [r for r in runs.values() if r["identity"]["spec"]["method"] == m]
        if not recs:
            continue
        lams = sorted({r["identity"]["spec"].get("lam") for r in recs},
                      key=lambda v: -1.0 if v is None else v)
        entries = {lam: _method_entry(sorted(
            (r for r in recs if r["identity"]["spec"].get("lam") == lam),
            key=lambda r: r["identity"]["seed"]), cfg, norms) for lam in lams}
        chosen = lams[0]
        if len(lams) > 1 and usable:     # λ: the best mean over the returns, on the first seed
            seed0 = min(set.intersection(*(set(e["seeds"]) for e in entries.values())),
                        default=None)
            if seed0 is not None:
                chosen = max(lams, key=lambda lam: entries[lam]["round2_mean"][
                    entries[lam]["seeds"].index(seed0)] or -math.inf)
        methods[m] = {**entries[chosen], "lam": chosen,
                      "grid": [{"lam": lam, "seeds": e["seeds"],
                                "round2_mean": e.get("round2_mean")}
                               for lam, e in entries.items()]}
    separate: dict[str, Any] = {}
    for g in games:
        recs = sorted((r for r in runs.values()
                       if r["identity"]["spec"] == {"method": "separate", "game": g}),
                      key=lambda r: r["identity"]["seed"])
        if recs:
            separate[g] = {"seeds": [r["identity"]["seed"] for r in recs],
                           "frames": [e["frame"] for e in recs[0]["result"]["evals"]],
                           "raw": [[e["scores"][g] for e in r["result"]["evals"]] for r in recs],
                           "final": [r["result"]["final"]["scores"][g] for r in recs]}
    perturb: dict[str, Any] = {}
    for r in runs.values():
        spec = r["identity"]["spec"]
        if "lam" in spec and spec["lam"] != methods.get(spec["method"], {}).get("lam"):
            continue                          # Fig. 4C: the chosen λ's agents only
        agent = "separate" if spec["method"] == "separate" else spec["method"]
        for g, p in r["result"].get("perturbation", {}).items():
            perturb.setdefault(agent, {}).setdefault(g, []).append(p)
    fig4c = {agent: {g: _perturb_mean(per[g]) for g in games if g in per}
             for agent, per in sorted(perturb.items())}
    speed = {}
    for m in ("separate", *SEQUENCE):
        recs = [r for r in runs.values() if r["identity"]["spec"]["method"] == m]
        if recs:
            frames = sum(r["result"]["frames"] for r in recs)
            speed[m] = {"frames": frames, "cpu_seconds": sum(r["cpu_seconds"] for r in recs),
                        "frames_per_cpu_second": frames / sum(r["cpu_seconds"] for r in recs)}
    return {"normaliser": norms, "usable_games": usable, "methods": methods,
            "separate": separate, "fig4c": fig4c, "speed": speed}


def _perturb_mean(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean over seeds of one agent's perturbation curves on one game."""
    kinds = results[0]["kinds"]
    return {"norms": results[0]["norms"], "kinds": kinds, "seeds": len(results),
            "score": {k: np.mean([r["score"][k] for r in results], 0).tolist() for k in kinds},
            "score_sd": {k: np.std([r["score"][k] for r in results], 0).tolist() for k in kinds},
            "baseline_score": float(np.mean([r["baseline_score"] for r in results])),
            "null_space_fraction": float(np.mean([r["null_space"] / r["n_parameters"]
                                                  for r in results])),
            "per_seed": results}


def verdicts(summary: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(the paper's claim, our finding, agrees) for Fig. 4A, 4B and 4C, where measurable."""
    res, cfg = summary["result"], summary["config"]
    m, n_games = res["methods"], len(res["usable_games"])
    claims = PAPER["claims"]
    rows = []
    if "plain" in m and "ewc" in m and n_games and "round2_mean" in m["ewc"]:
        p, e = m["plain"], m["ewc"]
        seeds = sorted(set(p["seeds"]) & set(e["seeds"]))
        pi = [p["seeds"].index(s) for s in seeds]
        ei = [e["seeds"].index(s) for s in seeds]
        diff = [e["round2_mean"][j] - p["round2_mean"][i] for i, j in zip(pi, ei)]
        final = [e["final_sum"][j] - p["final_sum"][i] for i, j in zip(pi, ei)]
        first = len(cfg["games"]) * cfg["frames_per_visit"]
        peak = [max(v for t, v in zip(p["frames"], s) if t >= cfg["frames_per_visit"])
                for s in p["sum"]]
        rows.append((
            claims["fig4a"],
            f"summed normalised score (max {n_games}), mean over the evaluations after frame "
            f"{first:,} (the returns): {_label('ewc', e)} "
            f"{pm(stat([e['round2_mean'][j] for j in ei]))}, "
            f"plain {pm(stat([p['round2_mean'][i] for i in pi]))}, paired difference "
            f"{pm(stat(diff))}; at the end EWC {pm(stat([e['final_sum'][j] for j in ei]))}, "
            f"plain {pm(stat([p['final_sum'][i] for i in pi]))}; plain's highest sum after its "
            f"first visit {pm(stat(peak))}; games at ≥ 0.5 at the end: EWC "
            f"{pm(stat(e['games_at_half']), 1)}, plain {pm(stat(p['games_at_half']), 1)}",
            agrees(positive(diff), positive(final))))
    if "ewc-task" in m and "ewc" in m and n_games and "round2_mean" in m["ewc"]:
        t, e = m["ewc-task"], m["ewc"]
        seeds = sorted(set(t["seeds"]) & set(e["seeds"]))
        diff = [t["round2_mean"][t["seeds"].index(s)] - e["round2_mean"][e["seeds"].index(s)]
                for s in seeds]
        modest = abs(stat(diff)["mean"]) <= 0.5
        rows.append((claims["fig4b"],
                     f"task label given minus not, summed score over the returns: "
                     f"{pm(stat(diff))} (criterion for modest: |mean| ≤ 0.5 of {n_games})",
                     "yes" if modest and stat(diff)["mean"] >= 0 else
                     ("no: the label helps a lot" if not modest and stat(diff)["mean"] > 0
                      else "no: the label does not help")))
    for agent, per in res["fig4c"].items():
        inv_better, null_as_bad, text = True, True, []
        norms = res["normaliser"]
        unplayed = [g for g, c in per.items() if norms[g]["random"] is not None
                    and c["baseline_score"] <= norms[g]["random"]]
        if len(unplayed) == len(per):
            continue
        for g, c in per.items():
            if g in unplayed:
                continue
            inv, uni, null = (c["score"][k] for k in ("inverse-importance", "uniform",
                                                      "null-space"))
            inv_better &= float(np.mean(inv)) >= float(np.mean(uni))
            drop_inv, drop_null = c["baseline_score"] - inv[-1], c["baseline_score"] - null[-1]
            null_as_bad &= drop_null >= 0.8 * drop_inv
            wins = sum(a >= b for a, b in zip(inv, uni))
            text.append(f"{g}: unperturbed {c['baseline_score']:.1f}; mean over the norms "
                        f"inverse-Fisher {np.mean(inv):.1f}, uniform {np.mean(uni):.1f} "
                        f"(inverse ≥ uniform at {wins} of {len(inv)} norms); at ‖δ‖ = "
                        f"{c['norms'][-1]:g} inverse-Fisher {inv[-1]:.1f}, uniform {uni[-1]:.1f},"
                        f" null space {null[-1]:.1f} ({c['null_space_fraction']:.0%} of weights "
                        "in it)")
        who = "single-game agents" if agent == "separate" else f"the {LABELS[agent]} agent"
        if unplayed:
            text.append(f"not tested on {', '.join(unplayed)}: unperturbed, the agent scores no "
                        "better than the random policy there")
        rows.append((claims["fig4c"], f"{who} ({per[next(iter(per))]['seeds']} seed(s)): "
                     + "; ".join(text),
                     f"{'yes' if inv_better else 'no'} (more robust to inverse-Fisher than to "
                     f"uniform noise, mean over the norms, every game); "
                     f"{'yes' if null_as_bad else 'no'} (null space hurts ≥ 0.8 × inverse at "
                     "the largest norm, every game)"))
    return rows


# --------------------------------------------------------------------------------------------
# Plots


def _visit_marks(ax: Any, cfg: dict[str, Any], scale: float, label: bool) -> None:
    f = cfg["frames_per_visit"]
    for k in range(1, len(cfg["games"]) * cfg["rounds"]):
        ax.axvline(k * f / scale, color="grey", linewidth=0.7, linestyle=":")
    ax.set_xlim(0, len(cfg["games"]) * cfg["rounds"] * f / scale)
    if label:
        short = {"breakout": "Br", "space_invaders": "SI", "freeway": "Fw", "asterix": "As",
                 "seaquest": "Sq"}
        for k in range(len(cfg["games"]) * cfg["rounds"]):
            g = cfg["games"][k % len(cfg["games"])]
            ax.text((k + 0.5) * f / scale, 1.0, short.get(g, g), ha="center", va="bottom",
                    fontsize=7, color="grey", transform=ax.get_xaxis_transform())


def plot_fig4ab(summary: dict[str, Any], path: Path) -> Path:
    """A: plain vs EWC; B: EWC vs EWC with task labels; below: each game's normalised score."""
    from matplotlib.figure import Figure

    res, cfg = summary["result"], summary["config"]
    games = res["usable_games"]
    fig = Figure(figsize=(12, 7.2))
    grid = fig.add_gridspec(2, max(2, len(games)) * 2)
    half = max(2, len(games))
    top = [fig.add_subplot(grid[0, :half]), fig.add_subplot(grid[0, half:])]
    bottom = [fig.add_subplot(grid[1, 2 * i:2 * i + 2]) for i in range(len(games))]
    scale = 1e3
    panels = [(top[0], ("plain", "ewc"), "A: plain training vs EWC"),
              (top[1], ("ewc", "ewc-task", "plain-task"), "B: EWC vs EWC given the task label")]
    for ax, names, title in panels:
        drawn = [n for n in names if "sum" in res["methods"].get(n, {})]
        if not drawn:
            ax.text(0.5, 0.5, "runs pending", ha="center", va="center", color="grey",
                    transform=ax.transAxes)
        for name in drawn:
            m = res["methods"][name]
            x = np.array(m["frames"]) / scale
            s = np.array(m["sum"], dtype=float)
            ax.plot(x, s.mean(0), color=COLOURS[name], linewidth=1.5,
                    label=f"{LABELS[name]} ({len(m['seeds'])} seed(s))")
            ax.fill_between(x, s.min(0), s.max(0), color=COLOURS[name], alpha=0.15,
                            linewidth=0)
        _visit_marks(ax, cfg, scale, label=True)
        ax.set_ylim(-0.2, len(games) + 0.1)
        ax.set_xlabel("training frames (thousands)")
        ax.set_ylabel(f"summed normalised score (max {len(games)})")
        ax.set_title(title, fontsize=9, pad=14)
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=7, loc="upper left")
    for ax, g in zip(bottom, games):
        for name in SEQUENCE:
            m = res["methods"].get(name)
            if m is None or "normalised" not in m:
                continue
            x = np.array(m["frames"]) / scale
            v = np.array(m["normalised"][g], dtype=float)
            ax.plot(x, v.mean(0), color=COLOURS[name], linewidth=1.1, label=LABELS[name])
        _visit_marks(ax, cfg, scale, label=False)
        ax.axhline(1.0, color="black", linewidth=0.6, linestyle="--")
        ax.set_ylim(-0.3, 1.1)
        ax.set_title(f"{g} (normalised, capped at 1)", fontsize=8)
        ax.set_xlabel("frames (thousands)", fontsize=8)
        ax.grid(alpha=0.3)
    if bottom and bottom[0].lines:
        bottom[0].legend(fontsize=6, loc="upper right")
    fig.suptitle(f"Fig. 4A/B on MinAtar: {len(cfg['games'])} games × {cfg['rounds']} rounds × "
                 f"{cfg['frames_per_visit']:,} frames a visit; every game played "
                 f"{cfg['eval_episodes']}× (ε = {cfg['eval_epsilon']:g}) every "
                 f"{cfg['eval_every']:,} frames; 1 = a separate agent's final score, 0 = random"
                 f"\nline: mean over seeds, band: min–max", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def plot_fig4c(summary: dict[str, Any], path: Path) -> Path:
    """Score against perturbation norm: inverse-Fisher (blue), uniform (black), null (orange)."""
    from matplotlib.figure import Figure

    from myelin.analysis import KINDS

    res = summary["result"]["fig4c"]
    colours = {"inverse-importance": "tab:blue", "uniform": "black", "null-space": "tab:orange"}
    agents = list(res)
    games = [g for g in summary["config"]["games"] if any(g in res[a] for a in agents)]
    fig = Figure(figsize=(4.2 * max(1, len(games)), 3.0 * max(1, len(agents)) + 0.4))
    axes = np.array(fig.subplots(max(1, len(agents)), max(1, len(games)),
                                 squeeze=False))
    for i, agent in enumerate(agents):
        for j, g in enumerate(games):
            ax = axes[i, j]
            c = res[agent].get(g)
            if c is None:
                ax.set_visible(False)
                continue
            x = c["norms"]
            for k in KINDS:
                mean, sd = np.array(c["score"][k]), np.array(c["score_sd"][k])
                ax.plot(x, mean, "o-", color=colours[k], markersize=3, label=k)
                ax.fill_between(x, mean - sd, mean + sd, color=colours[k], alpha=0.12,
                                linewidth=0)
            ax.axhline(c["baseline_score"], color="grey", linestyle=":", linewidth=1,
                       label="unperturbed")
            ax.set_xscale("log")
            who = "single-game agent" if agent == "separate" else f"{LABELS[agent]} agent"
            ax.set_title(f"{g}: {who} ({c['seeds']} seed(s))", fontsize=8)
            ax.set_xlabel("perturbation norm ‖δ‖₂", fontsize=8)
            ax.set_ylabel("score", fontsize=8)
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("Fig. 4C on MinAtar: perturbing a trained agent's weights\n"
                 "(myelin.analysis.perturbation_test; importance: the game's TD-loss Fisher; "
                 "mean of the seeds)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


# --------------------------------------------------------------------------------------------
# Markdown


def _status(summary: dict[str, Any]) -> list[str]:
    """Which runs are done, which are pending (and how far they got)."""
    by_method: dict[str, list[int]] = {}
    for key in summary["done"]:
        method, _, seed = key.rpartition("-seed")
        by_method.setdefault(method, []).append(int(seed))
    lines = ["Runs finished (seeds): " + "; ".join(
        f"{m} {seed_range(s)}" for m, s in sorted(by_method.items())) + "."]
    if summary["pending"]:
        lines.append(f"Pending (rerunning the last run command, `{summary['command']}`, "
                     "continues them; a checkpointed run resumes where it stopped): " + "; ".join(
                         f"{p['key']} ({100 * p['frame'] / p['frames']:.0f} % of its "
                         f"{p['frames']:,} frames)" if p.get("frames") else p["key"]
                         for p in summary["pending"]) + ".")
    return lines


def markdown(summary: dict[str, Any], figures: dict[str, str] | None = None) -> str:
    """The Fig. 4 section of docs/results.md."""
    figures = figures or {k: f"results/{v}" for k, v in FIGURE_NAMES.items()}
    res, cfg = summary["result"], summary["config"]
    games, usable = cfg["games"], res["usable_games"]
    f = cfg["frames_per_visit"]
    speed = res["speed"]
    lines = [
        "### Seed 002, Fig. 4: continual reinforcement learning on MinAtar "
        "(`benchmarks/seed002_rl.py`)", "",
        f"`{reproduce_command(summary)}`", "",
        f"Kirkpatrick et al. (2017), §3.3: one DQN learns Atari games in sequence; every game is "
        "tested periodically without training. **Scale**: the paper, "
        f"{PAPER['scale']}; ours, {len(games)} MinAtar games ({', '.join(games)}) × "
        f"{cfg['rounds']} rounds × {f:,} frames a visit = {len(games) * cfg['rounds'] * f:,} "
        f"frames per agent, about {PAPER['frames'] / (len(games) * cfg['rounds'] * f):.0f} "
        "times fewer (the paper's frame count is the commonly quoted one; the stored text says "
        "only that each game is trained on \"for a long time\"). "
        "The agent is the MinAtar paper's small DQN (3×3 conv 16, 128 hidden, 6 shared "
        "actions, observations padded to "
        f"{n_channels(games)} channels), EWC is `myelin.consolidation.EWC` ({_lam_text(res, cfg)}"
        ", accumulated) with the TD loss's per-sample Fisher; details in the module docstring "
        "and the settings table below.", "",
        *_status(summary), ""]
    if speed:
        lines += ["Measured speed (one thread, a 2-core machine shared with two other "
                  "benchmarks): " + ", ".join(
                      f"{m} {s['frames_per_cpu_second']:.0f} frames per CPU second"
                      for m, s in speed.items())
                  + " (training, evaluations and Fig. 4C included).", ""]
    norms = res["normaliser"]
    lines += ["Normalisation (score 0 = random policy, 1 = a separate agent's final score, "
              f"{cfg['final_episodes']} episodes, ε = {cfg['eval_epsilon']:g}):", "",
              "| game | random policy | separate agent (per seed) | usable |", "|---|---:|---|---|"]
    for g in games:
        n = norms[g]
        per = ", ".join(f"{v:.2f}" for v in n["separate_per_seed"].values()) or "—"
        rnd = "—" if n["random"] is None else f"{n['random']:.2f}"
        lines.append(f"| {g} | {rnd} | {per} | "
                     f"{'yes' if n['usable'] else 'no (not learned, or not run yet)'} |")
    lines.append("")
    m = res["methods"]
    if usable and m:
        lines += [f"![Fig. 4A/B]({figures['fig4ab']})", "",
                  f"Summed normalised score (capped at 1 a game, max {len(usable)}), mean ± 95 % "
                  "CI over seeds:", "",
                  "| agent | seeds | mean over the returns (2nd round on) | at the end | games ≥ "
                  "0.5 at the end | the visited game at each visit's end | forgotten since "
                  "the game's last visit | " + " | ".join(
                      f"{g} at the end (uncapped)" for g in usable) + " |",
                  "|---|---|---:|---:|---:|---:|---:|" + "---:|" * len(usable)]
        for name, e in m.items():
            if "sum" not in e:
                continue
            lines.append(f"| {_label(name, e)} | {', '.join(map(str, e['seeds']))} | "
                         f"{pm(stat(e['round2_mean']))} | {pm(stat(e['final_sum']))} | "
                         f"{pm(stat(e['games_at_half']), 1)} | "
                         f"{_pm_or_dash([v for v in e['learned'] if v is not None])} | "
                         f"{_pm_or_dash([v for v in e['forgetting'] if v is not None])} | "
                         + " | ".join(
                             pm(stat(e["final_normalised"][g])) for g in usable) + " |")
        lines.append("")
    rows = verdicts(summary)
    if rows:
        lines += ["| the paper says | we find | agrees |", "|---|---|---|",
                  *[f"| {a} | {b} | {c} |" for a, b, c in rows], ""]
    if res["fig4c"]:
        lines += [f"![Fig. 4C]({figures['fig4c']})", "",
                  "Fig. 4C: `myelin.analysis.perturbation_test` on the trained agents, the "
                  "importance the TD-loss Fisher of the game (on "
                  f"{cfg['fisher_samples']:,} transitions of its buffer), the \"loss\" minus "
                  f"the mean score of {cfg['perturb']['episodes']} fixed episodes "
                  f"(`GameScore`); norms {', '.join(f'{v:g}' for v in cfg['perturb']['norms'])}"
                  f" (L2 over all {_n_params(res)} weights), {cfg['perturb']['samples']} "
                  "directions each; null space: importance ≤ "
                  f"{cfg['perturb']['threshold']:g} × mean.", ""]
    lines += observations(summary)
    lines += notes(summary)
    return "\n".join(lines)


def observations(summary: dict[str, Any]) -> list[str]:
    """What else the runs show, and where they differ from the paper (from the JSON)."""
    res, cfg = summary["result"], summary["config"]
    out = []
    forget = {LABELS[m]: [v for v in e.get("forgetting", []) if v is not None]
              for m, e in res["methods"].items()}
    forget = {k: v for k, v in forget.items() if v}
    if forget:
        out.append("* Forgetting: a game's normalised score at the end of its last visit minus "
                   "its final one, mean over the games but the last trained: " + ", ".join(
                       f"{k} {pm(stat(v))}" for k, v in forget.items()) + ".")
    for m in ("ewc", "ewc-task"):
        e = res["methods"].get(m)
        if e and len(e["grid"]) == 1:
            out.append(f"* {LABELS[m]}: λ = {e['lam']:g} was not searched (a grid costs one "
                       "run per value; add one with `--methods ewc --lams ...`, the other runs "
                       "are kept).")
    for agent, per in res["fig4c"].items():
        worse = [g for g, c in per.items()
                 if c["score"]["inverse-importance"][-1] < c["score"]["uniform"][-1]]
        if worse:
            who = "single-game agent" if agent == "separate" else f"{LABELS[agent]} agent"
            out.append(f"* Fig. 4C, {who}: at the largest norm ({per[worse[0]]['norms'][-1]:g}) "
                       f"the inverse-Fisher perturbation hurts more than the uniform one on "
                       f"{', '.join(worse)} (that noise is concentrated on the weights the "
                       "Fisher calls unimportant; at this size, moving them costs the score).")
    sep = res["separate"]
    if sep and any(e["raw"][0] for e in sep.values()):
        gaps = {g: (e["raw"][0][-1], e["final"][0]) for g, e in sep.items() if e["raw"][0]}
        out.append(f"* Evaluation noise: the separate agents' last {cfg['eval_episodes']}-episode "
                   f"evaluation against their final {cfg['final_episodes']}-episode one (seed "
                   f"{sep[next(iter(sep))]['seeds'][0]}): " + ", ".join(
                       f"{g} {a:.1f} vs {b:.1f}" for g, (a, b) in gaps.items())
                   + "; the curves are single evaluations of a few episodes each.")
    return ["#### What else we saw, and where we differ", "", *out, ""] if out else []


def reproduce_command(summary: dict[str, Any]) -> str:
    """The command that makes every run of the summary (its seeds, its λ grid)."""
    res, cfg = summary["result"], summary["config"]
    lams = sorted({float(g["lam"]) for m in ("ewc", "ewc-task") if m in res["methods"]
                   for g in res["methods"][m]["grid"]} or set(map(float, cfg["lams"])))
    extra = "" if lams == sorted(map(float, CONFIG["lams"])) else \
        f" --lams {','.join(f'{v:g}' for v in lams)}"
    frames = "" if cfg["frames_per_visit"] == CONFIG["frames_per_visit"] else \
        f" --frames {cfg['frames_per_visit']}"
    seeds = seed_range(summary["seeds"]) if summary["seeds"] else "0"
    return f"python -m benchmarks.seed002_rl run --seeds {seeds}{frames}{extra} --threads 1"


def _label(name: str, entry: dict[str, Any]) -> str:
    """The method's label, with its λ if it has one."""
    lam = entry.get("lam")
    return LABELS[name] + ("" if lam is None else f" (λ = {lam:g})")


def _pm_or_dash(values: list[float]) -> str:
    return pm(stat(values)) if values else "—"


def _lam_text(res: dict[str, Any], cfg: dict[str, Any]) -> str:
    """λ as used: the one value, or the grid and the λ chosen from it."""
    grid = sorted({float(g["lam"]) for m in ("ewc", "ewc-task") if m in res["methods"]
                   for g in res["methods"][m]["grid"]} or set(map(float, cfg["lams"])))
    if len(grid) == 1:
        return f"λ = {grid[0]:g}"
    chosen = ", ".join(f"{LABELS[m]} {res['methods'][m]['lam']:g}" for m in ("ewc", "ewc-task")
                       if m in res["methods"])
    return (f"λ from {{{', '.join(f'{v:g}' for v in grid)}}}, the best summed score over the "
            f"returns on the first seed: {chosen}")


def _n_params(res: dict[str, Any]) -> str:
    for per in res["fig4c"].values():
        for c in per.values():
            return f"{c['per_seed'][0]['n_parameters']:,}"
    return "?"


def notes(summary: dict[str, Any]) -> list[str]:
    """The paper's settings beside ours; what could not be found; where we differ."""
    cfg = summary["config"]
    return [
        "#### Settings: the paper's and ours", "",
        "| setting | paper | ours |", "|---|---|---|",
        f"| games | 10 Atari games, random order, returns | {', '.join(cfg['games'])} "
        f"(MinAtar), in this order, {cfg['rounds']} rounds |",
        f"| frames | about 20 M a game (not in the stored text) | {cfg['frames_per_visit']:,} a "
        f"visit, {cfg['rounds'] * cfg['frames_per_visit']:,} a game |",
        "| agent | DQN (Mnih et al. 2015) + game-specific biases and gains in every layer + "
        "task inference (forget-me-not) | the MinAtar DQN; task label only in the ewc-task "
        "control (one output head per game) |",
        f"| updates | DQN's | Adam lr {cfg['lr']:g} (ε {cfg['adam_eps']:g}), batch "
        f"{cfg['batch_size']}, one update every {cfg['train_every']} frames, Huber loss, "
        f"target network every {cfg['target_every']:,} frames |",
        f"| replay | one buffer per inferred task | one buffer per game, "
        f"{cfg['replay_capacity']:,} transitions, learning starts after "
        f"{cfg['replay_start']:,} |",
        f"| exploration | DQN's | ε 1 → {cfg['eps_end']:g} over a game's first "
        f"{cfg['eps_frames']:,} frames; sticky actions {cfg['sticky_action_prob']:g} |",
        f"| EWC | one penalty per task, λ not found | accumulated Ω, one anchor (the "
        f"library's default), {_lam_text(summary['result'], cfg)}; importance: mean squared "
        "per-sample TD-loss "
        f"gradient on {cfg['fisher_samples']:,} transitions of the game's buffer at the end "
        "of every visit |",
        "| score | human-normalised, capped at 1, summed | separate-agent-normalised, capped "
        "at 1, summed |", "",
        "Not found in any stored text: " + "; ".join(PAPER["not_found"]) + ".", ""]


# --------------------------------------------------------------------------------------------
# Command line


def write_summary(cfg: dict[str, Any], folder: Path, out: Path, quick: bool, made_by: str,
                  requested: list[str]) -> dict[str, Any]:
    """Summarise every finished run under `folder` into ``<out>/rl.json``; return it.

    `requested` are the keys of the runs asked for: those not finished are listed as pending,
    with their progress if a checkpoint holds it (as are other checkpointed runs). `made_by`
    is the command of the last ``run``.
    """
    runs = read_runs(folder, cfg)
    progress = {p["key"]: p for p in in_progress(folder)}
    pending = [progress.get(k, {"key": k}) for k in requested if k not in runs]
    pending += [p for k, p in progress.items() if k not in requested and k not in runs]
    summary = {"experiment": "seed002-fig4", "paper": PAPER, "config": cfg, "quick": quick,
               "seeds": sorted({r["identity"]["seed"] for r in runs.values()}),
               "done": sorted(runs), "pending": pending, "result": summarise(cfg, runs),
               "seconds": {"cpu": sum(r["cpu_seconds"] for r in runs.values()),
                           "wall": sum(r["wall_seconds"] for r in runs.values()),
                           "runs": len(runs)},
               "command": made_by, "environment": environment()}
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "rl.json.tmp"
    tmp.write_text(json.dumps(_plain(summary), indent=1) + "\n")
    os.replace(tmp, out / "rl.json")
    return summary


def read_summary(out: Path) -> dict[str, Any] | None:
    """``<out>/rl.json`` (None if absent, or a --quick one in the committed folder)."""
    path = out / "rl.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    return None if data.get("quick") and out == OUT else data


def draw(summary: dict[str, Any], figures: Path) -> dict[str, Path]:
    """Both figures into `figures`; only those with something to draw."""
    made = {}
    if summary["result"]["usable_games"] and summary["result"]["methods"]:
        made["fig4ab"] = plot_fig4ab(summary, figures / FIGURE_NAMES["fig4ab"])
    if summary["result"]["fig4c"]:
        made["fig4c"] = plot_fig4c(summary, figures / FIGURE_NAMES["fig4c"])
    return made


def results_section(figures: Path | None = None, out: Path = OUT) -> str:
    """The Fig. 4 section of docs/results.md from the committed JSON ('' if none).

    With `figures` (a folder), the plots are redrawn there; without, they are only named.
    """
    summary = read_summary(out)
    if summary is None or not summary["done"]:
        return ""
    if figures is not None:
        draw(summary, figures)
    return markdown(summary)


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("experiment", choices=["run", "report"])
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help=f"comma-separated, of {', '.join(METHODS)} (default: "
                        f"{','.join(DEFAULT_METHODS)}; 'separate' is one run per game)")
    p.add_argument("--seeds", default="0", help="seeds, e.g. 0-2 (default 0)")
    p.add_argument("--frames", type=int, default=None,
                   help=f"frames per visit (default {CONFIG['frames_per_visit']:,}; --quick: "
                        f"{QUICK['frames_per_visit']})")
    p.add_argument("--lams", default=None, help="EWC's λ grid, comma-separated (default "
                   f"{','.join(f'{v:g}' for v in CONFIG['lams'])}); one run per λ, the summary "
                   "shows the best on the first seed")
    p.add_argument("--quick", action="store_true", help="tiny smoke run (tests): a few hundred "
                   "frames a visit; written under a temporary folder unless --out")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--out", default=None, help="results folder (default "
                   f"{OUT.relative_to(ROOT)}; --quick: {QUICK_OUT}); runs go to <out>/rl/")
    p.add_argument("--figures", default=None, help="plots folder (default "
                   f"{FIGURES.relative_to(ROOT)} for the committed results; with --quick or "
                   "another --out, the results folder)")
    args = p.parse_args(argv)
    out = Path(args.out) if args.out else (QUICK_OUT if args.quick else OUT)
    # the docs' figures are the committed results' only: other results never overwrite them
    figures = Path(args.figures) if args.figures else (
        FIGURES if not args.quick and out.resolve() == OUT.resolve() else out)
    if args.experiment == "report":
        summary = read_summary(out)
        if summary is None or not summary["done"]:
            raise SystemExit(f"No Fig. 4 results under {out}: run `python -m "
                             "benchmarks.seed002_rl run` first.")
        # the runs finished since, and the progress of the unfinished ones
        summary = write_summary(summary["config"], out / "rl", out, summary["quick"],
                                summary["command"],
                                summary["done"] + [p["key"] for p in summary["pending"]])
        made = draw(summary, figures)
        names = {k: (str(v.relative_to(ROOT / "docs")) if v.is_relative_to(ROOT / "docs")
                     else str(v)) for k, v in made.items()}
        print(markdown(summary, {**{k: f"results/{v}" for k, v in FIGURE_NAMES.items()},
                                 **names}))
        return 0
    if args.threads < 1:
        raise SystemExit(f"--threads must be >= 1. Got {args.threads}.")
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise SystemExit(f"--methods: unknown {unknown}; choose from {', '.join(METHODS)}.")
    seeds = parse_seeds(args.seeds)
    if not seeds:
        raise SystemExit("--seeds is empty.")
    cfg = dict(QUICK if args.quick else CONFIG)
    if args.frames is not None:
        if args.frames < 1:
            raise SystemExit(f"--frames must be >= 1. Got {args.frames}.")
        cfg["frames_per_visit"] = args.frames
    if args.lams is not None:
        try:
            cfg["lams"] = [float(v) for v in args.lams.split(",") if v]
        except ValueError:
            raise SystemExit(f"--lams must be numbers, e.g. 100,1000. Got {args.lams!r}.") from None
        if not cfg["lams"] or min(cfg["lams"]) < 0:
            raise SystemExit(f"--lams must be non-empty and >= 0. Got {args.lams!r}.")
    torch.set_num_threads(args.threads)
    folder = out / "rl"
    todo = [(spec, seed) for seed in seeds for spec in specs(methods, cfg)]
    requested = [run_key(spec, seed) for spec, seed in todo]
    frames = len(cfg["games"]) * cfg["rounds"] * cfg["frames_per_visit"]
    print(f"seed002 Fig. 4: {len(todo)} runs ({', '.join(requested)}), {frames:,} frames per "
          f"agent, {torch.get_num_threads()} thread(s) → {folder}", flush=True)
    for spec, seed in todo:
        get_run(cfg, spec, seed, folder, log=lambda s: print(s, flush=True))
        summary = write_summary(cfg, folder, out, args.quick, command("seed002_rl", argv),
                                requested)
    print(f"wrote {out / 'rl.json'} ({len(summary['done'])} runs done, "
          f"{len(summary['pending'])} pending)")
    for name, path in draw(summary, figures).items():
        print(f"wrote {path} ({name})")
    for _, finding, ok in verdicts(summary):
        print(f"[{ok}] {finding}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
