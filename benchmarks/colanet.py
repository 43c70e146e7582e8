"""CoLaNET benchmarks (issue 6): accuracy, continual learning, α and silent-synapse sweeps, speed.

    python -m benchmarks.colanet single --seeds 0-2             # (a) one pass over MNIST
    python -m benchmarks.colanet permuted --config mc15-a0.005 --seeds 0-2   # (b)
    python -m benchmarks.colanet alpha --seeds 0                 # (c) α sweep, 15 mc
    python -m benchmarks.colanet emnist --seeds 0                # (d) E/MNIST, or its stand-in
    python -m benchmarks.colanet report                          # markdown for docs/results.md

Each run is a record (`myelin.records.RecordStore`) written when it ends,
``benchmarks/results/colanet/<experiment>/<key>-seed<k>.json``; a rerun skips every record
made for the same spec (`spec`: the experiment, its settings, the preset's values, the seed),
so a stopped session resumes. Runs print progress to stdout; start long ones in the background
with a log.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks._common import (
    RESULTS,
    ROOT,
    command,
    environment,
    mnist_root,
    parse_seeds,
    seed_range,
)
from myelin import metrics
from myelin.data import DataNotFoundError, load
from myelin.records import RecordStore
from myelin.scenarios import Scenario, Task, permuted, sequence
from myelin.snn import PRESETS, CoLaNET, as_pixels, fit_scenario

OUT = RESULTS / "colanet"
FIGURES = ROOT / "docs" / "results"
PRESET = "myelin"          # the parameter set every run below uses (see myelin.snn.PRESETS)

# (b): Larionov's three permuted-MNIST configurations and his numbers (seed 001 / 2506.17169)
PERMUTED = {
    "mc15-a0.023817": {"microcolumns": 15, "alpha": 0.023817, "published": None,
                       "note": "loss of plasticity: later tasks barely learn (diagonal 94.4, "
                               "83.7, 34.2, ... 13.6 in the seed's single run)"},
    "mc15-a0.005": {"microcolumns": 15, "alpha": 0.005,
                    "published": {"aa": 89.67, "aa_ci": 0.16, "fm": 2.75, "fm_ci": 0.23}},
    "mc45-a0.01": {"microcolumns": 45, "alpha": 0.01,
                   "published": {"aa": 92.39, "aa_ci": 0.13, "fm": 0.94, "fm_ci": 0.17}},
    # seed 001's table protocol for the replay baselines (issue 19): the same streams as
    # benchmarks.catalogue_replay's seed001 (task 1 permuted too), 1000 training images a task
    "mc15-a0.005-n1000": {"microcolumns": 15, "alpha": 0.005, "per_task_samples": 1000,
                          "first_identity": False,
                          "published": {"aa": 89.67, "aa_ci": 0.16, "fm": 2.75, "fm_ci": 0.23},
                          "note": "published row trained on all 60k images a task"},
    "mc45-a0.01-n1000": {"microcolumns": 45, "alpha": 0.01, "per_task_samples": 1000,
                         "first_identity": False,
                         "published": {"aa": 92.39, "aa_ci": 0.13, "fm": 0.94, "fm_ci": 0.17},
                         "note": "published row trained on all 60k images a task"},
    # slower stability growth (preset myelin-plastic, r_s chosen on the validation stream)
    "mc15-a0.005-plastic": {"microcolumns": 15, "alpha": 0.005, "preset": "myelin-plastic",
                            "published": {"aa": 89.67, "aa_ci": 0.16, "fm": 2.75,
                                          "fm_ci": 0.23}},
    # the first KNP port as KNP runs it (no renormalisation): Larionov's starting point
    "mc15-a0.023817-knp": {"microcolumns": 15, "alpha": 0.023817, "preset": "knp-default",
                           "published": None,
                           "note": "loss of plasticity (seed: diagonal 94.4, 83.7, 34.2, 36.8, "
                                   "25.6, 24.0, 12.0, 15.3, 11.9, 13.6)"},
    # Larionov's two published configurations on the first-port dynamics, for comparison
    "mc15-a0.005-knp": {"microcolumns": 15, "alpha": 0.005, "preset": "knp-default",
                        "published": {"aa": 89.67, "aa_ci": 0.16, "fm": 2.75, "fm_ci": 0.23}},
    "mc45-a0.01-knp": {"microcolumns": 45, "alpha": 0.01, "preset": "knp-default",
                       "published": {"aa": 92.39, "aa_ci": 0.13, "fm": 0.94, "fm_ci": 0.17}},
    # issue 24: the mechanisms of the public sources (preset "sources": lateral gating with
    # exclusive same-step spikes, the teacher never blocked, bias weight 3; chosen on a
    # validation split by benchmarks/colanet_gating.py)
    "mc45-a0.01-sources": {"microcolumns": 45, "alpha": 0.01, "preset": "sources",
                           "published": {"aa": 92.39, "aa_ci": 0.13, "fm": 0.94,
                                         "fm_ci": 0.17}},
    "mc15-a0.005-sources": {"microcolumns": 15, "alpha": 0.005, "preset": "sources",
                            "published": {"aa": 89.67, "aa_ci": 0.16, "fm": 2.75,
                                          "fm_ci": 0.23}},
    "mc15-a0.023817-sources": {"microcolumns": 15, "alpha": 0.023817, "preset": "sources",
                               "published": None,
                               "note": "loss of plasticity expected (the seed's single run: "
                                       "diagonal 94.4, 83.7, 34.2, ... 13.6)"},
    # issue 24, continual: "myelin" + the sources' lateral gating, r_s chosen on the 10-task
    # validation stream (benchmarks/colanet_stability.py; see PRESETS["myelin-gated"])
    "mc45-a0.01-gated": {"microcolumns": 45, "alpha": 0.01, "preset": "myelin-gated",
                         "published": {"aa": 92.39, "aa_ci": 0.13, "fm": 0.94, "fm_ci": 0.17}},
    "mc15-a0.005-gated": {"microcolumns": 15, "alpha": 0.005, "preset": "myelin-gated",
                          "published": {"aa": 89.67, "aa_ci": 0.16, "fm": 2.75, "fm_ci": 0.23}},
    "mc15-a0.023817-gated": {"microcolumns": 15, "alpha": 0.023817, "preset": "myelin-gated",
                             "published": None,
                             "note": "loss of plasticity expected (the seed's single run: "
                                     "diagonal 94.4, 83.7, 34.2, ... 13.6)"},
}
ALPHAS = (0.0, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.023817)
SILENT = (0, 1000, 10000, 100000)
# EMNIST balanced letters A B D E G H N Q R S (seed 001, after Antonov et al. 2022)
LETTERS_BALANCED = [10, 11, 13, 14, 16, 17, 23, 26, 27, 28]


def _net(microcolumns: int, alpha: float, seed: int, silent: float | None = None,
         preset: str = PRESET) -> CoLaNET:
    params = dict(PRESETS[preset])
    params.pop("alpha", None)
    preset_silent = params.pop("silent_synapses", 0)
    return CoLaNET(784, 10, microcolumns, alpha=alpha, seed=seed,
                   silent_synapses=preset_silent if silent is None else silent, **params)


def run_single(seed: int, n_train: int | None, quick: bool = False) -> dict[str, Any]:
    """(a) One online pass over MNIST train (in a seeded random order), test accuracy, speed."""
    root = mnist_root()
    tr, te = load("mnist", "train", root=root), load("mnist", "test", root=root)
    order = np.random.RandomState(seed).permutation(len(tr))[:n_train]
    x, y = as_pixels(tr)[order], tr.targets.numpy()[order]
    xt, yt = as_pixels(te), te.targets.numpy()
    if quick:
        x, y, xt, yt = x[:300], y[:300], xt[:200], yt[:200]
    net = _net(15, PRESETS[PRESET]["alpha"], seed)
    net.fit(x[:200], y[:200])                               # compile outside the timing
    net = _net(15, PRESETS[PRESET]["alpha"], seed)
    t0 = time.perf_counter()
    net.fit(x, y, progress=None if not quick else False)
    t1 = time.perf_counter()
    acc = net.score(xt, yt)
    t2 = time.perf_counter()
    s = net.stats()
    return {"accuracy": acc, "train_images": len(x), "train_images_per_s": len(x) / (t1 - t0),
            "test_images_per_s": len(xt) / (t2 - t1), "train_seconds": t1 - t0,
            "no_spike_fraction": float((net.predict(xt) == -1).mean()),
            "recruited": s["recruited"].tolist(), "effective": s["effective"].tolist(),
            "alpha": net.alpha}


def run_permuted(config: dict[str, Any], seed: int, n_tasks: int = 10,
                 quick: bool = False) -> dict[str, Any]:
    """(b)/(c) 10-task permuted MNIST, one pass per task, evaluation after each task."""
    scenario = permuted("mnist", n_tasks, seed=seed, root=mnist_root(),
                        first_identity=config.get("first_identity", True),
                        per_task_samples=300 if quick else config.get("per_task_samples"))
    preset = config.get("preset", PRESET)
    net = _net(config["microcolumns"], config["alpha"], seed, preset=preset)
    t0 = time.perf_counter()
    result = fit_scenario(net, scenario, eval_samples=200 if quick else None,
                          progress=None if not quick else False)
    wall = time.perf_counter() - t0
    a = np.array(result.accuracy)
    return {"aa": float(a[-1].mean()), "fm": result.metrics.get("forgetting", 0.0),
            "la": result.metrics["learning_accuracy"], "accuracy": result.accuracy,
            "wall_seconds": wall, "train_seconds": sum(t["train"] for t in result.timings),
            "eval_seconds": sum(t["eval"] for t in result.timings),
            "microcolumns": config["microcolumns"], "alpha": config["alpha"], "preset": preset,
            "tasks": n_tasks}


def _permute_each(scenario: Scenario, seed: int) -> Scenario:
    rng = np.random.RandomState(seed)
    tasks = []
    for t in scenario.tasks:
        perm = torch.from_numpy(rng.permutation(784))
        tasks.append(Task(t.name + "-perm",
                          t.train.with_images(t.train.images.reshape(len(t.train), -1)[:, perm]
                                              .reshape(t.train.images.shape), t.train.name),
                          t.test.with_images(t.test.images.reshape(len(t.test), -1)[:, perm]
                                             .reshape(t.test.images.shape), t.test.name),
                          t.classes))
    return Scenario(scenario.name + "-permuted", tasks, scenario.n_classes, scenario.setting,
                    config={**scenario.config, "permutation_per_dataset": True})


def run_two_datasets(second: str, silent: float, alpha: float, seed: int, permute: bool,
                     quick: bool = False) -> dict[str, Any]:
    """(d) MNIST → second dataset, 2400 train / 400 test per class, two-task metrics."""
    classes = [None, LETTERS_BALANCED if second == "emnist-balanced" else None]
    per_class = (30, 20) if quick else (2400, 400)
    scenario = sequence("mnist", second, relabel="shared", classes=classes,
                        per_class=per_class, seed=seed, root=mnist_root())
    if permute:
        scenario = _permute_each(scenario, seed)
    net = _net(15, alpha, seed, silent)
    t0 = time.perf_counter()
    result = fit_scenario(net, scenario, progress=False)
    a = result.accuracy
    return {"task1_after_1": a[0][0], "task2_after_2": a[1][1], "task1_after_2": a[1][0],
            "fm": a[0][0] - a[1][0], "wall_seconds": time.perf_counter() - t0,
            "accuracy": a, "silent_synapses": silent, "alpha": alpha, "second": second,
            "permuted": permute}


@dataclass
class Run:
    """One planned run: its record key, its spec, and how to run it."""

    key: str
    spec: dict[str, Any]
    run: Callable[[], dict[str, Any]]
    show: Callable[[dict[str, Any]], str]


def spec(experiment: str, seed: int, preset: str = PRESET, quick: bool = False,
         **settings: Any) -> dict[str, Any]:
    """What determines a run: the experiment and its settings, the preset and its values, the
    seed; a record is reused only for the same spec (so a changed preset re-runs it)."""
    return {"experiment": experiment, **settings, "preset": preset, "params": PRESETS[preset],
            "seed": seed, "quick": quick}


def _aa_fm(m: dict[str, Any]) -> str:
    return f"AA {m['aa']:.4f} FM {m['fm']:.4f}"


def planned(experiment: str, seeds: list[int], config: str = "all", tasks: int = 10,
            preset: str = PRESET, second: str = "emnist-balanced", alpha: float = 0.00238,
            quick: bool = False) -> Iterator[Run]:
    """The runs of `experiment` (single, permuted, alpha, emnist) for the command line's options,
    seed by seed."""
    q = "-quick" if quick else ""
    for seed in seeds:
        if experiment == "single":
            yield Run(f"single{q}/mc15-seed{seed}", spec("single", seed, quick=quick),
                      lambda seed=seed: run_single(seed, None, quick),
                      lambda m, seed=seed: f"single seed {seed}: {m['accuracy']:.4f}, "
                      f"{m['train_images_per_s']:.0f} train img/s, "
                      f"{m['test_images_per_s']:.0f} test img/s")
        elif experiment == "permuted":
            for key in list(PERMUTED) if config == "all" else config.split(","):
                cfg = PERMUTED[key]
                yield Run(f"permuted{q}/{key}-seed{seed}",
                          spec("permuted", seed, cfg.get("preset", PRESET), quick,
                               microcolumns=cfg["microcolumns"], alpha=cfg["alpha"], tasks=10,
                               **{k: cfg[k] for k in ("per_task_samples", "first_identity")
                                  if k in cfg}),
                          lambda cfg=cfg, seed=seed: run_permuted(cfg, seed, 10, quick),
                          lambda m, key=key, seed=seed: f"permuted {key} seed {seed}: "
                          f"{_aa_fm(m)} ({m['wall_seconds']:.0f} s)")
        elif experiment == "alpha":
            for a in ALPHAS:
                cfg = {"microcolumns": 15, "alpha": a, "preset": preset}
                yield Run(f"alpha{q}/{preset}-t{tasks}-a{a}-seed{seed}",
                          spec("alpha", seed, preset, quick, microcolumns=15, alpha=a,
                               tasks=tasks),
                          lambda cfg=cfg, seed=seed: run_permuted(cfg, seed, tasks, quick),
                          lambda m, a=a, seed=seed: f"alpha {a} seed {seed}: {_aa_fm(m)}")
        elif experiment == "emnist":
            for permute in (False, True):
                for silent in (SILENT if not permute else (100000,)):
                    key = f"{second}-a{alpha}-ns{silent}" + ("-perm" if permute else "")
                    yield Run(f"emnist{q}/{key}-seed{seed}",
                              spec("emnist", seed, quick=quick, second=second, alpha=alpha,
                                   silent_synapses=silent, permuted=permute),
                              lambda silent=silent, seed=seed, permute=permute: run_two_datasets(
                                  second, silent, alpha, seed, permute, quick),
                              lambda m, key=key, seed=seed: f"{key} seed {seed}: "
                              f"{m['task1_after_1']:.4f} -> {m['task2_after_2']:.4f}, task 1 "
                              f"after 2 {m['task1_after_2']:.4f}, FM {m['fm']:.4f}")
        else:
            raise ValueError(f"Unknown CoLaNET experiment {experiment!r}.")


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("experiment", choices=["single", "permuted", "alpha", "emnist", "report"])
    p.add_argument("--seeds", default="0")
    p.add_argument("--config", default="all", help="permuted: a key of PERMUTED or all")
    p.add_argument("--tasks", type=int, default=10, help="alpha sweep: tasks per run")
    p.add_argument("--preset", default=PRESET, choices=sorted(PRESETS),
                   help="alpha sweep: the parameter set (α is swept)")
    p.add_argument("--second", default="emnist-balanced",
                   help="emnist: the second dataset (fashion-mnist is the stand-in here)")
    p.add_argument("--alpha", type=float, default=0.00238, help="emnist: α")
    p.add_argument("--quick", action="store_true", help="tiny smoke run (tests)")
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args(argv)
    out = Path(args.out)
    if args.experiment == "report":
        print(markdown_section(out))
        return 0
    store = RecordStore(out)
    env, cmd = environment(), command("colanet", argv)
    for run in planned(args.experiment, parse_seeds(args.seeds), args.config, args.tasks,
                       args.preset, args.second, args.alpha, args.quick):
        record, ran = store.get(run.key, run.spec), False
        if record is None:
            if run.key in store:
                print(f"{store.path(run.key)}: {store.stale[run.key]}; re-running", flush=True)
            try:
                measured = run.run()
            except DataNotFoundError as exc:
                print(f"{args.second} is not available here: {exc}\nRun the stand-in "
                      "with --second fashion-mnist.", file=sys.stderr)
                return 2
            record, ran = store.put(run.key, run.spec, {
                "measured": measured, "preset": run.spec["preset"],
                "params": run.spec["params"], "command": cmd, "environment": env}), True
        print(run.show(record["measured"]) + ("" if ran else " (recorded)"), flush=True)
    return 0


def _current(record: dict[str, Any]) -> bool:
    """Whether a result was made with its preset's present values (not an older version)."""
    preset = record.get("preset", PRESET)
    return preset in PRESETS and record.get("params") == PRESETS[preset]


def _group(store: RecordStore, experiment: str, stale: list[str]
           ) -> dict[str, list[dict[str, Any]]]:
    """The records of `experiment` by run key (seeds together); those of an older preset go to
    `stale` instead."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for name in store.keys():        # noqa: SIM118 (a RecordStore is not iterable)
        folder, _, stem = name.partition("/")
        record = store.read(name) if folder == experiment else None
        if record is None:
            continue
        if not _current(record):
            stale.append(name)
            continue
        key, seed = stem.rsplit("-seed", 1)
        record["seed"] = int(seed)
        groups.setdefault(key, []).append(record)
    return groups


def permuted_commands(seeds: dict[str, list[int]]) -> str:
    """The commands that made the (b) table: the seeds every config ran, then the extra ones."""
    common = set.intersection(*(set(v) for v in seeds.values())) if seeds else set()
    base = "python -m benchmarks.colanet permuted"
    cmds = [f"`{base} --config all --seeds {seed_range(list(common))}`"] if common else []
    cmds += [f"`{base} --config {key} --seeds {seed_range(sorted(set(v) - common))}`"
             for key, v in seeds.items() if set(v) - common]
    return "; then ".join(cmds)


def _pm(values: list[float], scale: float = 100) -> str:
    mean, half = metrics.ci95(values)
    return f"{mean * scale:.2f} ± {half * scale:.2f}" if len(values) > 1 \
        else f"{mean * scale:.2f} (1 run)"


def _alpha_plot(groups: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """Average accuracy and forgetting against α (seed 001's sweep figure)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_tasks: dict[str, list[tuple[float, float, float]]] = {}
    for recs in groups.values():
        m = [r["measured"] for r in recs]
        by_tasks.setdefault(f"{m[0]['preset']}, {m[0]['tasks']} tasks", []).append(
            (m[0]["alpha"], float(np.mean([r["aa"] for r in m])),
             float(np.mean([r["fm"] for r in m]))))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    for tasks, pts in sorted(by_tasks.items()):
        pts.sort()
        a = [p[0] for p in pts]
        ax1.plot(a, [100 * p[1] for p in pts], marker="o", label=tasks)
        ax2.plot(a, [100 * p[2] for p in pts], marker="o", label=tasks)
    ax1.set_xlabel("α")
    ax1.set_ylabel("average accuracy after the last task (%)")
    ax2.set_xlabel("α")
    ax2.set_ylabel("forgetting FM (%)")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("CoLaNET, 15 microcolumns, permuted MNIST: plasticity vs stability", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _trials(path: Path) -> list[dict[str, Any]]:
    import json

    return json.loads(path.read_text()) if path.exists() else []


def issue24_lines(out: Path = OUT) -> list[str]:
    """Issue 24's validation trials (benchmarks.colanet_gating, benchmarks.colanet_stability)
    as markdown: how presets "sources" and "myelin-gated" were chosen."""
    gating = _trials(out / "gating_trials.json")
    stability = _trials(out / "stability_trials.json")
    if not gating and not stability:
        return []
    lines = ["### (e) Issue 24: the public sources' mechanisms, chosen on validation", "",
             "Every choice below was made on validation data: one-task trials train on the "
             "first 50 000 MNIST training images and score the last 10 000; ten-task trials "
             "use permutations drawn with seed 100 + k (never the reported ones) on the same "
             "split, scoring 2 000 images a task. The test images and the reported "
             "permutations were used only for the rows of table (b).", "",
             "What they show: the sources' lateral gating (an L spike blocks its column's other "
             "L neurons for 10 steps; of simultaneous spikers only the most driven fires; the "
             "teacher's input still reaches blocked neurons) raises one-pass accuracy by ~2 "
             "points; the never-blocked teacher of the 2025 KNP port adds more on one task but "
             "makes later tasks learn less and less (preset `sources`: the diagonal falls by "
             "task 10 whatever the stability growth r_s), and with bias weight 6 it forgets "
             "instead. Preset `myelin-gated` keeps the blocked teacher and bias 6 of `myelin`, "
             "takes the gating, and sets r_s to the one value of the grid that puts both of "
             "Larionov's configurations within issue 6's bounds on the validation stream; its "
             "rows in table (b) (`*-gated`) are the reported result. The sources' dopamine "
             "delay 3, reward to the whole column and ArNI's unconditional depression lowered "
             "one-pass accuracy (stage `gated`) and were not taken.", "",
             "Which preset meets which of issue 24's points: the AA and FM bounds of both "
             "configurations, `myelin-gated` (table (b), 10 seeds each). The loss of "
             "plasticity at α 0.023817 (15 mc), only `knp-default`, the first port without "
             "renormalisation (table (b) `mc15-a0.023817-knp`, sweep (c)): with the freed "
             "resource renormalised (`myelin`, `myelin-gated`) no α of the sweep loses "
             "plasticity, so no single preset meets both. Larionov's task-1 accuracy climbing "
             "with α (88.7 → 94.36 with 15 mc) is reproduced by no preset: task 1 stays within "
             "~1 point across α in sweep (c) for all three.", ""]
    if gating:
        lines += ["One pass, one task (`python -m benchmarks.colanet_gating`; stage 1: preset "
                  "`myelin` + lateral gating 10, 15 mc, α 0.005; stage 2: + teacher never "
                  "blocked, bias weight 3, 45 mc, α 0.01; protocol: 60k train / 10k test):", "",
                  "| stage | variant | seed | accuracy | no OUT spike |", "|---|---|---|---|---|"]
        for r in gating:
            lines.append(f"| {r['stage']} | {r['variant']} | {r['seed']} | "
                         f"{100 * r['accuracy']:.2f} | {100 * r['no_spike']:.1f} |")
        lines.append("")
    if stability:
        lines += ["Ten tasks, one pass each (`python -m benchmarks.colanet_stability`): preset "
                  "`sources` with the settings shown changed (r_s: the stability growth). "
                  "`teacher_blocking` true with `bias_weight` 6 is preset `myelin-gated`'s "
                  "difference from `sources`.", "",
                  "| mc | α | r_s | changed from `sources` | seed | AA | FM | diagonal |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in sorted(stability, key=lambda r: (r["microcolumns"], r["alpha"],
                                                  json_key(r["extra"]), -r["stability"])):
            extra = ", ".join(f"{k}={v}" for k, v in r["extra"].items()) or "—"
            lines.append(f"| {r['microcolumns']} | {r['alpha']:g} | {r['stability']:g} | "
                         f"{extra} | {r['seed']} | {100 * r['aa']:.2f} | {100 * r['fm']:.2f} | "
                         + " ".join(f"{100 * v:.0f}" for v in r["diagonal"]) + " |")
        lines.append("")
    return lines


def json_key(d: dict[str, Any]) -> str:
    """A sortable text of a settings dict."""
    return ",".join(f"{k}={d[k]}" for k in sorted(d))


def markdown_section(out: Path = OUT, figures: Path = FIGURES) -> str:
    """The CoLaNET part of docs/results.md, from whatever results exist (the α-sweep figure is
    written to `figures`)."""
    store = RecordStore(out)
    stale: list[str] = []
    lines = ["## CoLaNET (issue 6)", "",
             f"Parameter preset `{PRESET}` (`myelin.snn.PRESETS`) unless a row names another "
             "(`knp-default`: the first KNP port without renormalisation, as KNP runs it); see "
             "`myelin/snn/colanet.py` for the table of values and why. Accuracies in %, "
             "mean ± 95 % CI over seeds.", ""]
    single = _group(store, "single", stale)
    if single:
        recs = [r["measured"] for r in single.get("mc15", [])]
        lines += ["### (a) One pass over MNIST, 15 microcolumns", "",
                  "`python -m benchmarks.colanet single --seeds 0-2`", "",
                  "| n | accuracy | published (Spiffy) | train img/s | test img/s |",
                  "|---|---|---|---|---|",
                  f"| {len(recs)} | {_pm([r['accuracy'] for r in recs])} | 92 | "
                  f"{np.mean([r['train_images_per_s'] for r in recs]):.0f} | "
                  f"{np.mean([r['test_images_per_s'] for r in recs]):.0f} |", ""]
    perm = _group(store, "permuted", stale)
    if perm:
        ran = {key: [r["seed"] for r in perm[key]] for key in PERMUTED if perm.get(key)}
        lines += ["### (b) 10-task permuted MNIST, one pass per task", "",
                  permuted_commands(ran), "",
                  "| config | n | AA ours | AA published | FM ours | FM published | "
                  "ours − published (AA / FM) | within bounds (AA / FM) | final row (mean) | "
                  "diagonal (mean) | min/run |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for key, cfg in PERMUTED.items():
            recs = [r["measured"] for r in perm.get(key, [])]
            if not recs:
                continue
            pub = cfg["published"]
            row = np.mean([r["accuracy"][-1] for r in recs], 0) * 100
            diag = np.mean([np.diag(r["accuracy"]) for r in recs], 0) * 100
            lines.append(
                f"| {key} | {len(recs)} | {_pm([r['aa'] for r in recs])} | "
                f"{pub['aa']:.2f} ± {pub['aa_ci']:.2f} | " if pub else
                f"| {key} | {len(recs)} | {_pm([r['aa'] for r in recs])} | — | ")
            d_aa = np.mean([r["aa"] for r in recs]) * 100 - pub["aa"] if pub else 0.0
            d_fm = np.mean([r["fm"] for r in recs]) * 100 - pub["fm"] if pub else 0.0
            gap = f"{d_aa:+.2f} / {d_fm:+.2f}" if pub else "—"
            bounds = (f"{'yes' if abs(d_aa) <= 1.5 else 'no'} / "
                      f"{'yes' if abs(d_fm) <= 1.0 else 'no'}" if pub else "—")
            lines[-1] += (f"{_pm([r['fm'] for r in recs])} | "
                          + (f"{pub['fm']:.2f} ± {pub['fm_ci']:.2f}" if pub else cfg["note"])
                          + f" | {gap} | {bounds} | {' '.join(f'{v:.1f}' for v in row)} | "
                          f"{' '.join(f'{v:.1f}' for v in diag)} | "
                          f"{np.mean([r['wall_seconds'] for r in recs]) / 60:.1f} |")
        lines += ["", "Issue 6's targets: AA within 1.5 points and FM within 1 point of the "
                  "published value.", ""]
    alpha = _group(store, "alpha", stale)
    if alpha:
        lines += ["### (c) α sweep, 15 microcolumns", "",
                  "`python -m benchmarks.colanet alpha --preset P --tasks T --seeds 0`", "",
                  "| preset | tasks | α | n | AA | FM | diagonal (mean) |",
                  "|---|---|---|---|---|---|---|"]
        runs = sorted(([r["measured"] for r in recs] for recs in alpha.values()),
                      key=lambda m: (m[0]["preset"], m[0]["tasks"], m[0]["alpha"]))
        for recs in runs:
            diag = np.mean([np.diag(r["accuracy"]) for r in recs], 0) * 100
            lines.append(f"| {recs[0]['preset']} | {recs[0]['tasks']} | {recs[0]['alpha']:g} | "
                         f"{len(recs)} | {_pm([r['aa'] for r in recs])} | "
                         f"{_pm([r['fm'] for r in recs])} | "
                         f"{' '.join(f'{v:.1f}' for v in diag)} |")
        _alpha_plot(alpha, figures / "colanet-alpha.png")
        lines += ["", "![alpha sweep](results/colanet-alpha.png)", ""]
    two = _group(store, "emnist", stale)
    if two:
        lines += ["### (d) Two datasets in sequence, 2400/400 per class", "",
                  "EMNIST is not available on this machine; the same protocol runs MNIST → "
                  "Fashion-MNIST as the stand-in (`--second fashion-mnist`). Published "
                  "(E/MNIST, seed 001): headline α 0.00238 / ns 100k: 92.9 → 84.3, task 1 "
                  "after 2 49.5, FM 43.4; with one permutation per dataset: 92.14 → 86.96, "
                  "90.87 ± 0.32, FM 1.27 ± 0.37.", "",
                  "`python -m benchmarks.colanet emnist --second fashion-mnist --seeds 0-2`", "",
                  "| run | n | task 1 after 1 | task 2 after 2 | task 1 after 2 | FM |",
                  "|---|---|---|---|---|---|"]
        for key, recs in two.items():
            m = [r["measured"] for r in recs]
            lines.append(f"| {key} | {len(m)} | {_pm([r['task1_after_1'] for r in m])} | "
                         f"{_pm([r['task2_after_2'] for r in m])} | "
                         f"{_pm([r['task1_after_2'] for r in m])} | {_pm([r['fm'] for r in m])} |")
        lines.append("")
    lines += issue24_lines(out)
    if stale:
        lines += [f"Left out until re-run ({len(stale)} file(s) made with an older version of "
                  "their preset): " + ", ".join(f"`{store.path(k).relative_to(out)}`"
                                                for k in stale), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
