"""Plots and tables of results: accuracy heat-maps, per-task curves, AA comparisons, λ sweeps."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from . import metrics

__all__ = ["accuracy_heatmap", "average_accuracy_plot", "markdown_table", "sweep_plot",
           "task_curves"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def accuracy_heatmap(accuracy: Sequence[Sequence[float]], path: str | os.PathLike[str],
                     title: str = "") -> None:
    """Heat-map of a[k, j] (rows: after task k; columns: task j) with the values written in."""
    plt = _pyplot()
    a = np.asarray(accuracy)
    t = a.shape[0]
    fig, ax = plt.subplots(figsize=(1.2 + 0.55 * t, 1.0 + 0.5 * t))
    im = ax.imshow(a, vmin=0, vmax=1, cmap="viridis")
    for k in range(t):
        for j in range(t):
            ax.text(j, k, f"{a[k, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if a[k, j] < 0.6 else "black")
    ax.set_xlabel("evaluated on task")
    ax.set_ylabel("after training task")
    ax.set_xticks(range(t), [str(i + 1) for i in range(t)])
    ax.set_yticks(range(t), [str(i + 1) for i in range(t)])
    ax.set_title(title or f"accuracy matrix (AA {metrics.average_accuracy(a):.3f})", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def task_curves(curves: Sequence[Mapping[str, Any]], path: str | os.PathLike[str],
                title: str = "") -> None:
    """Accuracy of every seen task over training iterations (the seeds' Fig. 1-5 style)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    n_tasks = max((len(c["accuracies"]) for c in curves), default=0)
    for j in range(n_tasks):
        pts = [(c["iteration"], c["accuracies"][j]) for c in curves if len(c["accuracies"]) > j]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, label=f"task {j + 1}", lw=1.4)
    last_of_task: dict[int, int] = {}
    for c in curves:
        last_of_task[c["task"]] = max(last_of_task.get(c["task"], 0), c["iteration"])
    for _, it in sorted(last_of_task.items())[:-1]:      # task boundaries
        ax.axvline(it, color="grey", lw=0.6, ls=":")
    ax.set_xlabel("training iteration")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2 if n_tasks > 5 else 1, loc="lower left")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def average_accuracy_plot(runs: Mapping[str, Sequence[Sequence[float]]],
                          path: str | os.PathLike[str], title: str = "") -> None:
    """A_k, the mean accuracy over the tasks seen so far, after each task, one line per run."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    longest = 1
    for label, accuracy in runs.items():
        curve = metrics.average_accuracy_curve(accuracy)
        longest = max(longest, len(curve))
        ax.plot(range(1, len(curve) + 1), curve, marker="o", ms=3, label=label)
    ax.set_xticks(range(1, longest + 1))
    ax.set_xlabel("tasks learned")
    ax.set_ylabel("average accuracy over learned tasks")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def sweep_plot(rows: Sequence[Mapping[str, Any]], param: str, path: str | os.PathLike[str],
               metric: str = "average_accuracy", group: str | None = None) -> None:
    """Mean ± 95 % CI of `metric` against a swept parameter (log x-axis when all > 0)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault(str(r["params"].get(group, "")) if group else "", []).append(r)
    for label, rs in groups.items():
        rs = sorted(rs, key=lambda r: float(r["params"][param]))
        xs = [float(r["params"][param]) for r in rs]
        ys = [r[metric]["mean"] for r in rs]
        es = [r[metric]["ci95"] for r in rs]
        ax.errorbar(xs, ys, yerr=es, marker="o", ms=3, capsize=3,
                    label=f"{group}={label}" if group else None)
        if all(x > 0 for x in xs):
            ax.set_xscale("log")
    ax.set_xlabel(param)
    ax.set_ylabel(metric.replace("_", " "))
    ax.grid(alpha=0.3)
    if group:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown_table(runs: Mapping[str, Mapping[str, Any]]) -> str:
    """One row per run: AA, FM, BWT, LA and the final accuracy on each task."""
    lines = ["| run | AA | FM | BWT | LA | final accuracy per task |",
             "|---|---:|---:|---:|---:|---|"]
    for label, r in runs.items():
        m = metrics.summary(r["accuracy"])
        fm = f"{m['forgetting']:.3f}" if "forgetting" in m else "—"
        bwt = f"{m['backward_transfer']:+.3f}" if "backward_transfer" in m else "—"
        last = " ".join(f"{v:.3f}" for v in r["accuracy"][-1])
        lines.append(f"| {label} | {m['average_accuracy']:.3f} | {fm} | {bwt} | "
                     f"{m['learning_accuracy']:.3f} | {last} |")
    return "\n".join(lines)
