"""Turn the reproduction results into a summary JSON, plots and ``docs/results.md``.

    python -m benchmarks.reproduce report

Reads every ``<experiment>/<row>/seed<k>`` record under the results folder (quick smoke runs
are ignored), computes mean ± 95 % Student-t CI per row and metric (`myelin.metrics.ci95`; no
interval for a single run), and writes ``summary.json`` beside them, the figures under
``docs/results/`` and the markdown page. Sections for CoLaNET come from
``benchmarks/results/colanet/`` (`benchmarks.colanet.markdown_section`) when present.
"""

from __future__ import annotations

import json
import math
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import catalogue_replay  # noqa: F401  (registers seed 001's experiments)
from benchmarks._common import RESULTS, seed_range
from benchmarks.catalogue import EXPERIMENTS, S3_E4_LAMS, S3_IMPORTANCE_LAMS, S3_LAMS
from myelin import metrics
from myelin.records import RecordStore

GRID_SEED = 0     # seed003-wva: every λ of every grid ran for this seed; picks use it


def _load(out: Path) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """The records (not quick ones) by experiment and row, seeds in key order."""
    runs: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    store = RecordStore(out)
    for key in sorted(store.keys(), key=lambda k: k.split("/")):     # by experiment, row, seed
        if key.count("/") == 2 and key.rsplit("/", 1)[1].startswith("seed"):
            rec = store.read(key)
            if rec is not None and not rec.get("quick"):
                runs[rec["experiment"]][rec["row"]].append(rec)
    return runs


def _stats(values: list[float]) -> dict[str, float | None]:
    """Mean and 95 % CI half-width (None for a single value)."""
    mean, half = metrics.ci95(values)
    return {"mean": mean, "ci95": None if math.isnan(half) else half}


def _fmt(mean: float, half: float | None, n: int, pct: bool = True) -> str:
    """mean ± half in % (`pct`); a single run has no interval."""
    s = 100 if pct else 1
    if math.isnan(mean):
        return "diverged"
    return f"{mean * s:.2f} ± {half * s:.2f}" if n > 1 else f"{mean * s:.2f} (1 run)"


def summarize(out: Path) -> dict[str, Any]:
    """Per experiment and row: n, mean and CI half-width of each measured number, wall time."""
    summary: dict[str, Any] = {}
    for name, rows in _load(out).items():
        exp = EXPERIMENTS.get(name)
        if exp is None:
            continue
        summary[name] = {}
        for row in exp.rows:
            recs = rows.get(row.key, [])
            resolved = row.resolve(out, False) if row.resolve is not None and recs else None
            if resolved is not None:     # only the runs of the configuration now resolved to
                recs = [r for r in recs if r.get("resolved_from") == resolved.source]
            if not recs:
                continue
            keys = recs[0]["measured"].keys()
            stats = {k: _stats([r["measured"][k] for r in recs]) for k in keys}
            walls = [r["wall_seconds"] for r in recs]
            summary[name][row.key] = {
                "label": recs[-1].get("label", row.label), "n": len(recs),
                "seeds": sorted(r["seed"] for r in recs),
                "measured": stats,
                "published": row.published if resolved is None else resolved.published,
                "wall_seconds": {"mean": float(np.mean(walls)), "min": float(np.min(walls))},
                "commits": sorted({r["environment"]["commit"] for r in recs}),
            }
            summary[name][row.key]["by_seed"] = {str(r["seed"]): dict(r["measured"])
                                                  for r in recs}
            mats = [r["result"]["accuracy"] for r in recs if "result" in r]   # not diverged
            if len(mats) == len(recs) and all(len(m) == len(m[0]) for m in mats):   # A_k
                curves = [metrics.average_accuracy_curve(m) for m in mats]
                summary[name][row.key]["aa_curve"] = np.mean(curves, axis=0).tolist()
                for r, c in zip(recs, curves):
                    summary[name][row.key]["by_seed"][str(r["seed"])]["aa_curve"] = list(c)
    return summary


def _plots(out: Path, figs: Path) -> dict[str, list[str]]:
    """Figures per experiment; returns experiment -> relative image paths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made: dict[str, list[str]] = defaultdict(list)
    figs.mkdir(parents=True, exist_ok=True)
    for name, rows in _load(out).items():
        exp = EXPERIMENTS.get(name)
        if exp is None:
            continue
        ordered = [(r, [x for x in rows[r.key] if "result" in x]) for r in exp.rows
                   if rows.get(r.key)]
        ordered = [(r, recs) for r, recs in ordered if recs]      # diverged runs: no curves
        if name == "seed001":
            made[name].append(_seed001_plot(ordered, figs, plt))
        # A_k: average accuracy over the tasks seen so far, after each task
        square = [(r, recs) for r, recs in ordered
                  if len(recs[0]["result"]["accuracy"]) == len(recs[0]["result"]["accuracy"][0])]
        if square and len(square[0][1][0]["result"]["accuracy"]) > 2:
            many = len(square) > 10         # seed003's grids: the legend goes beside the plot
            fig, ax = plt.subplots(figsize=(13, 7) if many else (6, 4))
            if many:                        # 20 distinct colours before any repeats
                ax.set_prop_cycle(color=plt.cm.tab20.colors)
            dashed = False
            for r, recs in square:
                curves = np.array([metrics.average_accuracy_curve(x["result"]["accuracy"])
                                   for x in recs])
                k = np.arange(1, curves.shape[1] + 1)
                line, = ax.plot(k, curves.mean(0), marker="o", ms=3, label=r.label)
                pub = published_curve(r.published)
                if pub is not None and len(pub) == len(k):
                    ax.plot(k, pub, ls="--", lw=1, color=line.get_color())
                    dashed = True
            if dashed:
                ax.plot([], [], ls="--", lw=1, color="gray", label="published (dashed)")
            ax.set_xlabel("tasks learned")
            ax.set_ylabel("average accuracy on learned tasks")
            ax.set_title(exp.title, fontsize=9)
            ax.grid(alpha=0.3)
            if many:
                ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                          ncol=1 + len(square) // 25)
            else:
                ax.legend(fontsize=7)
            path = figs / f"{name}-aa.png"
            fig.tight_layout()
            fig.savefig(path, dpi=110)
            plt.close(fig)
            made[name].append(path.name)
        # per-task accuracy curves over iterations (the seeds' figures)
        with_curves = [(r, recs) for r, recs in ordered
                       if exp.fit.get("eval_every") and recs[0]["result"]["curves"]]
        if with_curves:
            n = len(with_curves)
            cols = min(n, 5)
            nrows = math.ceil(n / cols)
            fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 2.6 * nrows),
                                     sharey=True, squeeze=False)
            for ax, (r, recs) in zip(axes.flat, with_curves):
                its = [c["iteration"] for c in recs[0]["result"]["curves"]]
                n_tasks = len(recs[0]["result"]["accuracy"])
                for j in range(n_tasks):
                    ys = []
                    for x in recs:
                        ys.append([c["accuracies"][j] if j < len(c["accuracies"]) else np.nan
                                   for c in x["result"]["curves"]])
                    with warnings.catch_warnings():     # tasks not yet seen are NaN
                        warnings.simplefilter("ignore", RuntimeWarning)
                        mean = np.nanmean(np.array(ys, dtype=float), 0)
                    ax.plot(its, mean, label=f"task {chr(65 + j)}")
                ax.set_title(r.label, fontsize=8)
                ax.grid(alpha=0.3)
                ax.set_xlabel("iteration", fontsize=7)
            for ax in list(axes.flat)[n:]:
                ax.axis("off")
            axes.flat[0].set_ylabel("test accuracy")
            axes.flat[0].legend(fontsize=7)
            fig.suptitle(exp.title + f" (mean of {len(with_curves[0][1])} seeds)", fontsize=9)
            fig.tight_layout()
            path = figs / f"{name}-curves.png"
            fig.savefig(path, dpi=100)
            plt.close(fig)
            made[name].append(path.name)
        if name == "seed003-wva":
            made[name] += _seed003_plots(rows, figs, plt)
    return made


def _seed001_plot(ordered: list[Any], figs: Path, plt: Any) -> str:
    """Seed 001's table as a picture: AA against FM, ours (mean ± CI) and published."""
    from benchmarks.catalogue_replay import PUBLISHED_ONLY
    fig, ax = plt.subplots(figsize=(7, 5))
    for i, (r, recs) in enumerate(ordered):
        aa = [x["measured"]["aa"] * 100 for x in recs]
        fm = [x["measured"]["fm"] * 100 for x in recs]
        color = plt.cm.tab20.colors[i % 20]
        (ma, ha), (mf, hf) = metrics.ci95(aa), metrics.ci95(fm)
        ax.errorbar(mf, ma, xerr=None if math.isnan(hf) else hf,
                    yerr=None if math.isnan(ha) else ha, fmt="o", color=color, capsize=2,
                    label=f"{r.key} (n={len(recs)})")
        if isinstance(r.published, dict) and "fm" in r.published:
            ax.plot(r.published["fm"] * 100, r.published["aa"] * 100, "s", mfc="none",
                    color=color)
    for label, pub in PUBLISHED_ONLY.values():
        ax.plot(pub["fm"] * 100, pub["aa"] * 100, "s", mfc="none", color="black",
                label=label.split(" (")[0] + " (published only)")
    ax.plot([], [], "s", mfc="none", color="gray", label="published (hollow squares)")
    ax.set_xlabel("forgetting FM (%)")
    ax.set_ylabel("average accuracy AA (%)")
    ax.set_title("Seed 001 protocol: 10 permuted tasks × 1000 samples, batch 10, 1 epoch",
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    path = figs / "seed001-aa-fm.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def _seed003_plots(rows: dict[str, list[dict[str, Any]]], figs: Path, plt: Any) -> list[str]:
    """Seed 003's four questions, one panel each, from the seed003-wva rows.

    Lines: the λ grid of seed 0 (every λ ran for it); error bars: mean ± 95 % CI over every
    seed run at that λ, where more than one was.
    """
    def aa(key: str) -> float | None:
        recs = [r for r in rows.get(key, []) if r["seed"] == GRID_SEED]
        return float(recs[0]["measured"]["aa"]) if recs else None

    def bars(ax: Any, keys: list[tuple[float, str]], color: str) -> None:
        for lam, key in keys:
            recs = rows.get(key, [])
            if len(recs) > 1:
                mean, half = metrics.ci95([r["measured"]["aa"] for r in recs])
                ax.errorbar([lam], [mean], yerr=[half], color=color, capsize=3, marker="s",
                            ms=4, alpha=0.7)

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    lams = S3_LAMS["sgd", "grad"]
    for opt in ("sgd", "adam"):
        for on in ("grad", "step"):
            pts = [(lam, aa(f"{opt}-{on}-{lam}")) for lam in S3_LAMS[opt, on]]
            pts = [p for p in pts if p[1] is not None]
            if pts:
                line, = axes[0].plot(*zip(*pts), marker="o", label=f"{opt}, on {on}")
                bars(axes[0], [(lam, f"{opt}-{on}-{lam}") for lam in S3_LAMS[opt, on]],
                     line.get_color())
    axes[0].set_title("WVA-SIG: attenuate the gradient or the step?", fontsize=9)
    for curve, keys in (("hyperbolic", [(lam, f"sgd-grad-{lam}") for lam in lams]),
                        ("exponential", [(lam, f"sgd-exp-{lam}") for lam in (10, 30, 100, 300)])):
        pts = [(lam, aa(k)) for lam, k in keys if aa(k) is not None]
        if pts:
            line, = axes[1].plot(*zip(*pts), marker="o", label=curve)
            bars(axes[1], keys, line.get_color())
    axes[1].set_title("hyperbolic 1/(1+λΩ) vs exponential exp(−λΩ), SGD", fontsize=9)
    _, best = best_lam_per_task_count(
        {lam: {str(r["seed"]): metrics.average_accuracy_curve(r["result"]["accuracy"])
               for r in rows.get(f"sgd-grad-{lam}", [])} for lam in lams})
    if best:
        axes[2].plot(*zip(*best), marker="o")
        axes[2].set_yscale("log")
    axes[2].set_title("best λ (WVA-SIG, SGD) vs number of tasks", fontsize=9)
    axes[2].set_xlabel("tasks")
    for imp, ls in S3_IMPORTANCE_LAMS.items():
        pts = [(lam, aa(f"sgd-{imp}-{lam:g}")) for lam in ls]
        pts = [p for p in pts if p[1] is not None]
        if pts:
            line, = axes[3].plot(*zip(*pts), marker="o", label=f"WVA-{imp}")
            bars(axes[3], [(lam, f"sgd-{imp}-{lam:g}") for lam in ls], line.get_color())
    pts = [(lam, aa(f"sgd-grad-{lam}")) for lam in lams if aa(f"sgd-grad-{lam}") is not None]
    if pts:
        line, = axes[3].plot(*zip(*pts), marker="o", label="WVA-SIG")
        bars(axes[3], [(lam, f"sgd-grad-{lam}") for lam in lams], line.get_color())
    axes[3].set_title("importance for WVA (SGD)", fontsize=9)
    for ax in axes[[0, 1, 3]]:
        ax.set_xscale("log")
        ax.set_xlabel("λ")
        ax.set_ylabel("AA after 10 tasks")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(f"lines: seed {GRID_SEED}'s λ grid; squares: mean ± 95 % CI over the seeds "
                 "run at that λ", fontsize=8)
    fig.tight_layout()
    path = figs / "seed003-wva-questions.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [path.name]


def best_lam_per_task_count(curves: dict[float, dict[str, Any]]
                            ) -> tuple[list[str], list[tuple[int, float]]]:
    """λ with the best mean A_k after k ≥ 2 tasks, A_k averaged over the seeds every λ ran.

    `curves`: λ → seed → A_k curve (None where missing). Returns the seeds used and (k, λ).
    """
    have = [{s for s, c in by.items() if c is not None} for by in curves.values()]
    seeds = sorted(set.intersection(*have), key=int) if have else []
    if not seeds:
        return [], []
    mean = {lam: np.mean([by[s] for s in seeds], axis=0) for lam, by in curves.items()}
    n = min(len(m) for m in mean.values())
    return seeds, [(k, max(mean, key=lambda lam: mean[lam][k - 1])) for k in range(2, n + 1)]


def seed003_answers(rows: dict[str, Any]) -> list[str]:
    """Seed 003's four questions answered in words from the summary rows.

    Each best λ is picked on seed 0's grid (the only seed every λ ran for), so that rows with
    more seeds are not favoured; the AA shown is the mean ± 95 % CI over all seeds at that λ.
    """
    def grid(key: str) -> float | None:
        seed = rows[key]["by_seed"].get(str(GRID_SEED)) if key in rows else None
        return seed["aa"] if seed else None

    def best(keys: list[str]) -> str | None:
        found = [(grid(k), k) for k in keys if grid(k) is not None]
        return max(found)[1] if found else None

    def shown(key: str | None) -> str:
        row = rows.get(key) if key else None
        if row is None:
            return "—"
        aa = row["measured"]["aa"]
        spread = f" ± {100 * aa['ci95']:.2f}" if row["n"] > 1 else ""
        lam = key.removesuffix("-e4").rsplit("-", 1)[1]
        where = f"λ {lam}, " if lam[0].isdigit() else ""
        return f"{100 * aa['mean']:.2f}{spread} ({where}n {row['n']})"

    lams = S3_LAMS["sgd", "grad"]
    out = [f"Best λ per question picked on seed {GRID_SEED}'s grid; AA there: mean ± 95 % CI "
           "over the seeds run at that λ (n)."]
    placements = {(o, on): best([f"{o}-{on}-{lam}" for lam in S3_LAMS[o, on]])
                  for o in ("sgd", "adam") for on in ("grad", "step")}
    if all(placements.values()):
        pairs = [(rows[f"sgd-grad-{lam}"]["by_seed"], rows[f"sgd-step-{lam}"]["by_seed"])
                 for lam in lams if f"sgd-grad-{lam}" in rows and f"sgd-step-{lam}" in rows]
        same = max((abs(g[seed]["aa"] - st[seed]["aa"]) for g, st in pairs
                    for seed in g.keys() & st.keys()), default=0.0)
        text = ", ".join(f"{o} on {on} {shown(k)}" for (o, on), k in placements.items())
        out.append(f"- **Gradient or step?** Best AA per placement: {text}. With plain SGD "
                   "the two placements are the same update up to floating-point rounding (the "
                   "two steps order the arithmetic differently, and training amplifies the "
                   "last-bit differences; largest AA difference over the λ grid and seeds: "
                   f"{100 * same:.2f} points). Unprotected: SGD {shown('sgd-none')}, "
                   f"Adam {shown('adam-none')}.")
    e4 = {on: best([f"adam-{on}-{lam}-e4" for lam in ls]) for on, ls in S3_E4_LAMS.items()}
    if all(e4.values()) and "adam-none-e4" in rows:
        out.append("- **Adam with the paper's 4 epochs per task:** gradient attenuation "
                   f"{shown(e4['grad'])}, step attenuation {shown(e4['step'])}, unprotected "
                   f"Adam {shown('adam-none-e4')} (published: 40.7 on the gradient, 84.1 on the "
                   "step). With 4 epochs Adam's normalisation largely undoes gradient "
                   "attenuation, as the paper found; with 1 epoch per task the gap was small."
                   + (" The gradient form's best λ is the largest tried: its AA still rises "
                      "with λ, staying below the step form's."
                      if e4["grad"] == f"adam-grad-{max(S3_E4_LAMS['grad'])}-e4" else ""))
    hyp = best([f"sgd-grad-{lam}" for lam in lams])
    exp = best([f"sgd-exp-{lam}" for lam in (10, 30, 100, 300)])
    if hyp and exp:
        out.append(f"- **Hyperbolic or exponential?** Best AA: hyperbolic {shown(hyp)}, "
                   f"exponential {shown(exp)}.")
    imps = {name: best([k for k in rows if k.startswith(prefix)])
            for name, prefix in (("Fisher", "sgd-fisher-"), ("MAS", "sgd-mas-"))}
    imps["SIG"] = hyp
    if all(imps.values()):
        text = ", ".join(f"{n} {shown(k)}" for n, k in
                         sorted(imps.items(), key=lambda kv: -rows[kv[1]]["measured"]["aa"]
                                ["mean"]))
        out.append(f"- **Which importance for WVA (SGD)?** Best AA: {text}.")
    seeds, best_k = best_lam_per_task_count(
        {lam: {seed: r.get("aa_curve") for seed, r in rows[f"sgd-grad-{lam}"]["by_seed"].items()}
         if f"sgd-grad-{lam}" in rows else {} for lam in lams})
    if best_k:
        picks = [f"{k}: {lam}" for k, lam in best_k]
        out.append("- **Best λ vs number of tasks** (WVA-SIG, SGD; λ with the best A_k after k "
                   f"tasks, A_k averaged over seeds {', '.join(seeds)}, from the grid "
                   + ", ".join(map(str, lams)) + "): " + ", ".join(picks) + ".")
    return out


def published_curve(published: Any) -> list[float] | None:
    """A row's published A_k curve (accuracy after k tasks, k = 1..T), if the source has one."""
    if isinstance(published, dict) and published.get("aa_curve"):
        return list(published["aa_curve"])
    return None


def curve_gap_lines(rows: dict[str, Any]) -> list[str]:
    """A table of A_k after k tasks, ours and ours − published, for rows with a published curve."""
    shown = [(row, published_curve(row["published"])) for row in rows.values()]
    shown = [(row, pub) for row, pub in shown
             if pub is not None and len(row.get("aa_curve") or []) == len(pub)]
    if not shown:
        return []
    n = len(shown[0][1])
    out = ["A_k (average accuracy over the tasks learned, after k tasks), ours, and in brackets "
           "ours − published, in points:", "",
           "| method | " + " | ".join(f"k={k}" for k in range(1, n + 1)) + " |",
           "|" + "---|" * (n + 1)]
    for row, pub in shown:
        cells = [f"{o * 100:.1f} ({(o - q) * 100:+.1f})" for o, q in zip(row["aa_curve"], pub)]
        out.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    return out


def _pub(value: Any, key: str) -> str:
    if isinstance(value, dict) and key in value:
        return f"{value[key] * 100:.2f}"
    return "—"


def walltime_lines(path: Path | None = None) -> list[str]:
    """The timed whole-run comparison of benchmarks/walltime.py, if it has been run."""
    path = path or RESULTS / "walltime.json"
    if not path.exists():
        return ["Timed run: `python -m benchmarks.walltime` has not been run yet."]
    d = json.loads(path.read_text())
    med, ratio = d["median_seconds"], d["ratio_to_plain"]
    text = (f"Timed whole run (`{d['command'].strip()}`, {d['environment']['threads']} "
            f"threads, median of {d['setup']['repeats']}): EWC-F {med['myelin-ewc-f']:.1f} s, "
            f"a plain PyTorch loop without consolidation {med['plain']:.1f} s "
            f"({ratio['myelin-ewc-f']:.2f}×).")
    best, walls, probes = d["best_seconds"], d["wall_seconds"], d["probe_ms_per_step"]
    ewc = best["myelin-ewc-f"]
    before, after = probes["myelin-ewc-f"][walls["myelin-ewc-f"].index(ewc)]
    text += (f" Best run: EWC-F {ewc:.1f} s (a plain step of the MLP took {before:.2f} ms "
             f"just before it and {after:.2f} ms just after), plain loop "
             f"{best['plain']:.1f} s. This shared machine alternates, for minutes at a "
             "time, between a fast state (a plain step ≈ 1.3 ms) and a slow one (≈ 2.3 ms); "
             "the issue's 27 s for the plain loop is the fast state.")
    if (d["setup"]["tasks"], d["setup"]["iterations"]) == (10, 2000):
        text += f" The ≤ 35 s target {'holds' if ewc <= 35 else 'is missed'} there."
    return [text + " The s/run column above is one thread per run, two runs in parallel."]


def warm_adam_lines(results: Path | None = None) -> list[str]:
    """benchmarks/warm_adam.py: the 2021 rows with Adam's state carried from run to run."""
    results = results or RESULTS
    lines = []
    rows = EXPERIMENTS["kutalev2021-fc"].rows
    for path in sorted(results.glob("warm-adam-*.json")):
        d = json.loads(path.read_text())
        runs = d["runs"]
        warm = [r for r in runs if r["warm"]]
        if d.get("quick") or not warm:
            continue
        mean, half = metrics.ci95([r["aa"] for r in runs])
        pub = next((r.published["aa"] for r in rows if r.method == "ewc" and r.options ==
                    {"lam": d["lam"], "importance": d["importance"]}
                    and isinstance(r.published, dict)), None)
        text = (f"EWC {d['importance']} λ={d['lam']:g}, a chain of {len(runs)} runs (the first "
                f"cold): {_fmt(mean, half, len(runs))}"
                + (f" (published {pub * 100:.2f}, their 20 runs)" if pub else "")
                + f"; the {len(warm)} warm runs alone {d['mean_warm_aa'] * 100:.2f}")
        if d.get("complete") is False:
            text += " (chain still running when this page was written)"
        paired = [r for r in warm if r["cold_harness_aa"] is not None]
        if paired:
            warm_mean = sum(r["aa"] for r in paired) / len(paired)
            cold_mean = sum(r["cold_harness_aa"] for r in paired) / len(paired)
            text += (f"; on the seeds that also ran cold, warm {warm_mean * 100:.2f} vs cold "
                     f"{cold_mean * 100:.2f} ("
                     + ", ".join(f"seed {r['seed']} {r['aa'] * 100:.2f} / "
                                 f"{r['cold_harness_aa'] * 100:.2f}" for r in paired) + ")")
        text += f". `{d['command'].strip()}`"
        if not lines:
            lines.append("With a warm Adam (`benchmarks/warm_adam.py`): the 2021 scripts create "
                         "one Adam per λ and re-initialise only the layers between runs, so "
                         "each run after the first starts from its predecessor's Adam state; "
                         "their published number is the mean over such a chain of 20 runs. "
                         "Chained that way (ours: mean ± 95 % CI over the chain's runs):")
        lines.append(f"- {text}")
    return lines


def seed001_extra_lines(keys: list[str], extra: list[str]) -> list[str]:
    """Table lines for seed 001's CoLaNET rows (benchmarks.colanet records) and NCCL."""
    from benchmarks.catalogue_replay import extra_rows
    lines = []
    for row in extra_rows(RESULTS / "colanet"):
        cells = [row["label"], str(row["n"]) if row["n"] else "published only"]
        for k in keys:
            values = row["values"].get(k)
            cells.append(_fmt(*metrics.ci95(values), len(values)) if values else "—")
        cells += [_pub(row["published"], k) for k in keys]
        cells += ["—"] * (len(extra) + 1)
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def run_commands(name: str, rows: dict[str, Any]) -> list[str]:
    """The commands that made the rows shown: the seeds every row has, then the extra seeds
    of some rows (``--rows``), so that nobody is told to run a grid 5× that ran once."""
    seeds = {key: set(row["seeds"]) for key, row in rows.items()}
    common = set.intersection(*seeds.values())
    base = f"python -m benchmarks.reproduce run {name}"
    cmds = [f"`{base} --seeds {seed_range(sorted(common))}`"] if common else []
    extra: dict[tuple[int, ...], list[str]] = defaultdict(list)
    for key, s in seeds.items():
        if s - common:
            extra[tuple(sorted(s - common))].append(key)
    cmds += [f"`{base} --seeds {seed_range(list(more))} --rows {','.join(keys)}`"
             for more, keys in extra.items()]
    return [("Command: " if len(cmds) == 1 else "Commands: ") + "; then ".join(cmds)]


def markdown(summary: dict[str, Any], figures: dict[str, list[str]],
             colanet: str = "") -> str:
    """The results page."""
    lines = [
        "# Results: the seeds' experiments, reproduced",
        "",
        "Every number below was measured by the command shown, on this repository's code, on "
        "2 CPU cores; per-run JSON (accuracy matrix, curves, timings, config, commit) lives "
        "in `benchmarks/results/reproduce/`. Ours: mean ± 95 % Student-t CI over the seeds "
        "listed (n runs); published: the authors' numbers (SPEC / ANCHORS). Accuracies in %.",
        "Regenerate this page with `python -m benchmarks.reproduce report`.",
        "",
    ]
    for name, exp in EXPERIMENTS.items():
        rows = summary.get(name)
        if not rows:
            continue
        under = name == "seed001"         # the issue: provenance caveats under the table
        lines += [f"## {exp.title}", "", f"Source: {exp.source}." + ("" if under
                                                                     else f" {exp.notes}"),
                  "", *run_commands(name, rows), ""]
        keys = exp.published_keys
        extra = [k for k in next(iter(rows.values()))["measured"] if k not in keys]
        head = ["method", "n"] + [f"{k} ours" for k in keys] + [f"{k} published" for k in keys]
        head += [f"{k} ours" for k in extra] + ["s/run"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row in rows.values():
            m = row["measured"]
            cells = [row["label"], str(row["n"])]
            cells += [_fmt(m[k]["mean"], m[k]["ci95"], row["n"]) if k in m else "—"
                      for k in keys]
            cells += [_pub(row["published"], k) for k in keys]
            cells += [_fmt(m[k]["mean"], m[k]["ci95"], row["n"]) if k in m else "—"
                      for k in extra]
            cells.append(f"{row['wall_seconds']['mean']:.0f}")
            lines.append("| " + " | ".join(cells) + " |")
        if name == "seed001":
            lines += [*seed001_extra_lines(keys, extra), "", f"*Provenance.* {exp.notes}"]
        lines.append("")
        gaps = curve_gap_lines(rows)
        if gaps:
            lines += [*gaps, ""]
        if name == "seed003-wva":
            lines += [*seed003_answers(rows), ""]
        if name == "seed000-fig4":
            lines += [*walltime_lines(), ""]
        if name == "kutalev2021-fc":
            lines += [line for text in warm_adam_lines() for line in (text, "")]
        for fig in figures.get(name, []):
            lines += [f"![{name}](results/{fig})", ""]
    if colanet:
        lines += [colanet, ""]
    return "\n".join(lines)


def write_report(out: Path, docs: Path) -> None:
    """Write summary.json, the figures and docs/results.md."""
    summary = summarize(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    figures = _plots(out, docs / "results")
    # imported here: benchmarks.colanet brings numba, which running experiments does not need
    from benchmarks.colanet import markdown_section
    colanet = markdown_section(figures=docs / "results")
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "results.md").write_text(markdown(summary, figures, colanet))
    print(f"wrote {out / 'summary.json'}, {docs / 'results.md'} and "
          f"{sum(len(v) for v in figures.values())} figures")
