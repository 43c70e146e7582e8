"""Run the catalogue's rows: one `myelin.Result` record per (row, seed), resumable.

Each run is a record of a `myelin.records.RecordStore` under the results folder, key
``<experiment>/<row>/seed<k>`` (the file ``<experiment>/<row>/seed<k>.json``), written as soon as
the run ends: a stopped session loses at most one run, and a later run skips every record made
for the same spec (`run_spec`: experiment, row, seed, method, options, `fit` options, scenario
options, quick, and for a resolved row the row it resolved to). A record made for another spec
is run again and replaced.

Seeds: run seed k builds its model with ``torch.manual_seed(k)``, draws its permutations with
seed k and shuffles batches with seed k, so every run is independent and repeatable.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks._common import RESULTS, environment
from benchmarks.catalogue import BENCHMARK_ESTIMATORS, Experiment, Row, small
from myelin import Result, fit
from myelin.data.datasets import ArrayDataset
from myelin.records import RecordStore
from myelin.scenarios import Scenario, Task
from myelin.train import evaluate

OUT = RESULTS / "reproduce"
_ENV: dict[str, object] = {}      # captured once when a session starts (the code that ran)


def record_key(exp: Experiment, row: Row, seed: int) -> str:
    """The record of (row, seed): ``<experiment>/<row>/seed<k>``."""
    return f"{exp.name}/{row.key}/seed{seed}"


def run_spec(exp: Experiment, row: Row, seed: int, quick: bool = False) -> dict[str, Any]:
    """Everything that determines the run of (row, seed); a record is reused only for it."""
    spec = {"experiment": exp.name, "row": row.key, "seed": seed, "method": row.method,
            "options": row.options, "fit": exp.fit_options(row, quick),
            "scenario": row.scenario, "quick": quick}
    if row.source is not None:
        spec["resolved_from"] = row.source
    return spec


def method_options(row: Row) -> dict[str, Any] | None:
    """The row's options for `myelin.fit`, a benchmark estimator's name replaced by itself."""
    options = dict(row.options)
    if options.get("importance") in BENCHMARK_ESTIMATORS:
        options["importance"] = BENCHMARK_ESTIMATORS[options["importance"]]
    return options or None


def offline(scenario: Scenario, model: torch.nn.Module, kw: dict[str, Any]) -> Result:
    """Joint training on the union of all tasks, then the usual per-task evaluation."""
    images = torch.cat([t.train.images for t in scenario.tasks])
    targets = torch.cat([t.train.targets for t in scenario.tasks])
    first = scenario.tasks[0].train
    joint = ArrayDataset(images, targets, scale=first.scale, classes=first.classes, name="joint")
    classes = sorted({c for t in scenario.tasks for c in (t.classes or [])}) or None
    # Task-IL's union is trained unmasked over all classes; the evaluation masks per task.
    one = Scenario("joint", [Task("joint", joint, scenario.tasks[0].test, classes)],
                   scenario.n_classes, "class" if scenario.setting == "class" else "domain")
    res = fit(one, model, "finetune", **kw)
    last = len(scenario.tasks) - 1
    res.accuracy = [[evaluate(model, t.test, scenario.eval_mask(t, after=last))
                     for t in scenario.tasks]]
    res.random_init = [0.0] * len(scenario.tasks)
    res.metrics = {"aa": float(np.mean(res.accuracy[0]))}
    return res


def run_one(exp: Experiment, row: Row, seed: int, out: Path = OUT, quick: bool = False,
            progress: bool = False) -> tuple[dict[str, Any], bool]:
    """Run (row, seed) unless its record exists for the same spec.

    Returns the measured numbers and whether they were run now (False: recorded before).
    """
    store = RecordStore(out)
    key = record_key(exp, row, seed)
    if row.resolve is not None:
        row = row.resolve(out, quick)
    spec = run_spec(exp, row, seed, quick)
    done = store.get(key, spec)
    if done is not None:
        return done["measured"], False
    if key in store:
        print(f"{store.path(key)}: {store.stale[key]}; re-running", flush=True)
    kw = spec["fit"]
    scenario = exp.scenario(seed, **row.scenario)
    if quick:
        scenario = small(scenario)
    torch.manual_seed(seed)
    model = (row.model or exp.model)(scenario)
    t0 = time.perf_counter()
    try:
        if row.method == "offline":
            result = offline(scenario, model, {**kw, "seed": seed, "progress": progress})
        else:
            result = fit(scenario, model, row.method, method_options=method_options(row),
                         seed=seed, progress=progress, **kw)
    except FloatingPointError as exc:          # a diverging configuration is a result too
        measured = {k: float("nan") for k in (exp.published_keys or ["aa"])}
        store.put(key, spec, {
            "experiment": exp.name, "row": row.key, "label": row.label, "seed": seed,
            "method": row.method, "options": row.options, "fit": kw, "quick": quick,
            "wall_seconds": time.perf_counter() - t0, "measured": measured,
            "diverged": str(exc), "environment": _ENV or environment()})
        return measured, True
    wall = time.perf_counter() - t0
    measured = exp.measure(result)
    store.put(key, spec, {
        "experiment": exp.name, "row": row.key, "label": row.label, "seed": seed,
        "method": row.method, "options": row.options, "fit": kw, "wall_seconds": wall,
        "measured": measured, "quick": quick, "result": asdict(result),
        **({"resolved_from": row.source} if row.source else {}),
        "command": f"python -m benchmarks.reproduce run {exp.name} --seeds {seed} "
                   f"--rows {row.key}" + (" --quick" if quick else ""),
        "environment": _ENV or environment()})
    return measured, True


def run(experiments: list[Experiment], seeds: list[int], rows: list[str] | None = None,
        out: Path = OUT, quick: bool = False, progress: bool = False) -> None:
    """Run every (row, seed) of `experiments` (only `rows` if given), seed by seed; print each."""
    _ENV.update(environment())
    for exp in experiments:
        chosen = [r for r in exp.rows if not rows or r.key in rows]
        for seed in seeds:
            for row in chosen:
                t0 = time.perf_counter()
                m, ran = run_one(exp, row, seed, out, quick=quick, progress=progress)
                shown = ", ".join(f"{k} {v:.4f}" for k, v in m.items())
                took = f"{time.perf_counter() - t0:.1f} s" if ran else "recorded"
                print(f"[{time.strftime('%H:%M:%S')}] {exp.name} {row.key} seed {seed}: {shown} "
                      f"({took})", flush=True)
