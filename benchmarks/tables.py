"""Render the committed benchmark JSON as the markdown tables shown in README.md.

    python -m benchmarks.tables                  # prints the tables for results/*.json
    python -m benchmarks.tables --write-readme   # replaces them between markers in README.md

The README's "Reproductions" highlights and the numbers its prose quotes from them are made
here too, from the reproduction records (`benchmarks.report.readme_sections`), between
``<!-- table:reproductions -->``, ``<!-- text:reproductions -->`` and ``<!-- text:wva-adam -->``
markers.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from benchmarks._common import RESULTS, ROOT


def _fmt(v: object, digits: int = 2) -> str:
    if isinstance(v, dict):
        v = v.get("ratio")
    return "—" if not isinstance(v, (int, float)) else f"{v:.{digits}f}×"


def importance_table(data: dict) -> str:
    runs = {(r.get("command", data["command"]),
             r.get("environment", data["environment"])["commit"]) for r in data["results"]}
    env = data["environment"]
    made_by = "; ".join(f"`{c}` (commit {commit})" for c, commit in sorted(runs))
    lines = [f"{made_by} — torch {env['torch']}, {env['threads']} threads. Time ÷ one plain "
             "batched forward+backward over the same samples (SIG: ÷ a plain forward); paired "
             "medians; batches of 1000 (MLP) and 256 (CNN).", "",
             "| | MLP 784-300-150-10 | small CNN |", "|---|---:|---:|"]
    rows = {r["model"]: r for r in data["results"]}
    mlp, cnn = rows.get("mlp", {}), rows.get("cnn", {})
    spec = [
        ("empirical Fisher (exact per-sample)", "fisher_empirical_ratio"),
        ("sampled (\"true\") Fisher", "fisher_sampled_ratio"),
        ("exact true Fisher (Σ over classes)", "fisher_exact_ratio"),
        ("MAS", "mas_ratio"),
        ("SIG (÷ plain forward)", "signal_ratio"),
        ("naive per-sample loop", "naive_loop_ratio"),
        ("torch.func vmap (all per-sample grads)", "vmap_ratio"),
        ("BackPACK SumGradSquared", "backpack_SumGradSquared"),
        ("BackPACK DiagGGNExact", "backpack_DiagGGNExact"),
        ("BackPACK DiagGGNMC", "backpack_DiagGGNMC"),
        ("squared mini-batch gradient (Avalanche's \"Fisher\")", "squared_batch_grad"),
    ]
    for label, key in spec:
        lines.append(f"| {label} | {_fmt(mlp.get(key))} | {_fmt(cnn.get(key))} |")
    for label, key in (("Fisher speed-up over the naive loop", "speedup_fisher_vs_naive"),
                       ("MAS speed-up over the naive loop", "speedup_mas_vs_naive")):
        lines.append(f"| {label} | {_fmt(mlp.get(key), 0)} | {_fmt(cnn.get(key), 0)} |")
    lines.append("| max relative error of our Fisher vs the naive loop (float32) | "
                 + " | ".join(f"{r.get('fisher_max_rel_error_vs_naive', float('nan')):.1e}"
                              for r in (mlp, cnn)) + " |")
    sbg = [r.get("squared_batch_grad", {}) for r in (mlp, cnn)]
    lines.append("| squared mini-batch gradient: exact Fisher ÷ it (mean) | "
                 + " | ".join(f"{s.get('exact_over_batched_mean', float('nan')):.0f}" for s in sbg)
                 + " |")
    lines.append("| squared mini-batch gradient: relative L2 error after best rescaling | "
                 + " | ".join(f"{s.get('relative_l2_after_best_rescaling', float('nan')):.2f}"
                              for s in sbg) + " |")
    return "\n".join(lines)


def overhead_table(data: dict) -> str:
    env = data["environment"]
    by_batch = data.get("by_batch") or {str(data["setup"]["batch"]): {
        "summary": data["summary"]}}
    batches = list(by_batch)
    first = by_batch[batches[0]]["summary"]
    lines = [f"`{data['command']}` — torch {env['torch']}, {env['threads']} threads, "
             f"commit {env['commit']}. Time per training step ÷ a plain step, over 1…"
             f"{len(data['per_task'])} consolidated tasks (mean, with the 95 % interval over "
             "tasks where recorded, and worst task); paired medians. Plain SGD step: " + ", ".join(
                 f"{next(iter(by_batch[b]['summary'].values()))['plain_ms_per_step']:.2f} "
                 f"ms at batch {b}" for b in batches) + ".", ""]
    head = ["method"] + [f"batch {b}: mean / worst" for b in batches] + ["extra tensors per "
                                                                           "parameter"]
    lines += ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    labels = {"ewc_autograd": "EWC, `penalty()` in the loss",
              "ewc_closed_form": "EWC, `apply_to_grad()`",
              "ewc_wrap": "EWC, `ewc.wrap(opt)` (SGD: the pull fused into the step, one pass)",
              "ewc_stabilized": "stabilized EWC, `penalty()`",
              "wva_step": "WVA `on=\"step\"` (SGD: the fused one-op step θ − lr·A ⊙ g)",
              "wva_grad": "WVA `on=\"grad\"` (scales `.grad`, then the SGD step)",
              "wva_step_adam": "WVA `on=\"step\"` around Adam (÷ plain Adam step)",
              "sgd_bare": "reference: a bare foreach SGD step, no torch.optim machinery"}
    for key, label in labels.items():
        if key not in first:
            continue
        cells = [label]
        for b in batches:
            r = by_batch[b]["summary"][key]
            ci = f" ± {r['ci95_over_tasks']:.2f}" if "ci95_over_tasks" in r else ""
            cells.append(f"{r['mean_ratio']:.2f}×{ci} / {r['max_ratio']:.2f}×")
        cells.append(f"{first[key]['extra_tensors_per_parameter']:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def walltime_table(data: dict) -> str:
    env, setup = data["environment"], data["setup"]
    best, probes = data["best_seconds"], data["probe_ms_per_step"]
    lines = [f"`{data['command']}` — torch {env['torch']}, {env['threads']} threads, "
             f"commit {env['commit']}. {setup['protocol']}, {setup['iterations']} steps per task, "
             f"{setup['tasks']} tasks, accuracy on every test set after each task; median and "
             f"best of {setup['repeats']} alternating repeats; the probe is a plain step of the "
             "MLP (ms) timed just before and after the best run.", "",
             "| run | wall (s), median | best (s) | probe at best | ÷ plain loop (median) "
             "| train / importance / eval (s) | AA |", "|---|---:|---:|---|---:|---|---:|"]
    labels = {"plain": "plain PyTorch loop, no consolidation",
              "myelin-finetune": "`myelin.fit`, no consolidation",
              "myelin-ewc-f": "`myelin.fit`, EWC (sampled Fisher on 5000 held-out, λ 14)"}
    for key, label in labels.items():
        parts = data["last_run_parts_seconds"].get(key)
        split = " / ".join(f"{parts[p]:.1f}" for p in ("train", "importance", "eval")) \
            if parts else "—"
        i = data["wall_seconds"][key].index(best[key])
        cells = [label, f"{data['median_seconds'][key]:.1f}", f"{best[key]:.1f}",
                 " / ".join(f"{v:.2f}" for v in probes[key][i]),
                 f"{data['ratio_to_plain'][key]:.2f}×", split, f"{data['aa'][key] * 100:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def replay_cost_table(data: dict) -> str:
    env = data["environment"]
    # JSON written before work ratios were counted holds one batch size and no work
    batches = data.get("batches") or {str(data["batch"]): {"methods": data["methods"]}}
    sizes = list(batches)
    lines = [f"`{data['command']}` — torch {env['torch']}, {env['threads']} thread(s), commit "
             f"{env['commit']}. {data['what']}; median of per-round ratios over "
             f"{data['repeats']} alternating rounds of {data['steps']} steps. *Work* is the "
             "rows each step sends through the model, counted by a forward hook, in forward-"
             "pass equivalents (backward ≈ 2 forwards), ÷ a plain step's.", "",
             "| method (options) | " + " | ".join(f"batch {b}: step ÷ plain (work)"
                                                   for b in sizes)
             + " | ms / step (plain), batch " + sizes[0] + " | issue's target "
             "| bytes per stored sample |",
             "|---|" + "---:|" * len(sizes) + "---:|---|---:|"]
    first = batches[sizes[0]]["methods"]
    for name, r in first.items():
        options = ", ".join(f"{k} {v}" for k, v in r["options"].items())
        cells = []
        for b in sizes:
            m = batches[b]["methods"].get(name)
            work = f" ({m['work_ratio']:.1f}×)" if m and "work_ratio" in m else ""
            cells.append(f"{m['ratio']:.2f}×{work}" if m else "—")
        lines.append(f"| {name} ({options}) | " + " | ".join(cells)
                     + f" | {r['ms_per_step']:.2f} ({r['plain_ms_per_step']:.2f}) | "
                     f"{r['target']} | {r['bytes_per_stored_sample'] or '—'} |")
    gem = data["gem_ms"]
    lines += ["", "GEM's dual QP alone / the whole projection (Gram matrix, float64 QP, Mᵀv + g) "
              f"over {data['parameters']:,} parameters, ms, by number of past tasks: "
              + "; ".join(f"{t}: {v['qp']:.3f} / {v['projection']:.1f}" for t, v in gem.items())
              + "."]
    return "\n".join(lines)


RENDERERS = {"importance": importance_table, "overhead": overhead_table,
             "walltime": walltime_table, "replay_cost": replay_cost_table}


def rendered() -> dict[str, str]:
    """Markdown for every benchmark whose JSON exists."""
    out = {}
    for name, render in RENDERERS.items():
        path = RESULTS / f"{name}.json"
        out[name] = render(json.loads(path.read_text())) if path.exists() \
            else f"(no {path.name} yet)"
    return out


def readme_blocks(summary: dict | None = None) -> dict[str, str]:
    """Every generated block of README.md, by marker name: the benchmark tables
    (``table:NAME``) and the reproduction highlights with the figures quoted in the prose
    (`benchmarks.report.readme_sections`; `summary`: `benchmarks.report.summarize` of the
    reproduction records, computed if not given)."""
    from benchmarks.report import readme_sections, summarize
    from benchmarks.runner import OUT
    blocks = {f"table:{name}": text for name, text in rendered().items()}
    blocks.update(readme_sections(summarize(OUT) if summary is None else summary))
    return blocks


def fill(text: str, blocks: dict[str, str]) -> str:
    """`text` with the text between ``<!-- NAME -->`` and ``<!-- /NAME -->`` replaced by
    ``blocks[NAME]``, for every block whose markers it has."""
    for name, block in blocks.items():
        start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
        if start in text and end in text:
            head, rest = text.split(start, 1)
            _, tail = rest.split(end, 1)
            text = f"{head}{start}\n{block}\n{end}{tail}"
    return text


def write_readme(readme: Path) -> None:
    """Replace every generated block of `readme` (`readme_blocks`) between its markers."""
    readme.write_text(fill(readme.read_text(), readme_blocks()))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--write-readme" in argv:
        write_readme(ROOT / "README.md")
        print("README.md tables and reproduction highlights updated")
        return 0
    for name, table in readme_blocks().items():
        print(f"### {name.removeprefix('table:')}\n\n{table}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
