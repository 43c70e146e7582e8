"""The ``myelin`` command line: info, run, sweep, report, demo."""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

EXAMPLES = """examples:
  myelin demo
  myelin run --scenario permuted-mnist --tasks 10 --method ewc --importance fisher --lam 41 \\
             --optimizer adam --lr 1e-3 --epochs 6 --model mlp --widths 300,150 --out runs/ewc
  myelin run --config experiment.toml
  myelin sweep --scenario permuted-digits --tasks 3 --method ewc --grid lam=1,10,100 \\
               --seeds 0,1,2 --jobs 2 --out sweeps/ewc
  myelin report runs/ewc runs/wva --out report/
  myelin info
"""

RUN_DEFAULTS: dict[str, Any] = {
    "scenario": "permuted-digits", "tasks": None, "labels_trick": False, "seen_classes": False,
    "per_task_samples": None,
    "data_root": None, "method": "finetune", "lam": None, "importance": None, "mode": None,
    "gamma": None, "stabilized": None, "curve": None, "on": None, "model": "mlp",
    "widths": "100", "channels": "16,32", "activation": "relu", "optimizer": "sgd", "lr": 0.1,
    "epochs": 1.0, "iterations": None, "batch_size": 100, "eval_every": None,
    "eval_samples": None, "closing_samples": 1000, "closing": "tail", "seed": 0,
}
_METHOD_KEYS = ("lam", "importance", "mode", "gamma", "stabilized", "curve", "on")


class CLIError(Exception):
    """A user error: printed without a traceback, exit code 2."""


# shared option groups --------------------------------------------------------------------------
def _add_run_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("scenario")
    g.add_argument("--config", help="TOML (or YAML) file with any of these options")
    g.add_argument("--scenario", help="e.g. permuted-mnist, split-mnist-class, permuted-digits "
                   "(see `myelin info`)")
    g.add_argument("--tasks", type=int, help="number of tasks")
    g.add_argument("--labels-trick", action="store_const", const=True, dest="labels_trick",
                   help="class-IL: loss only on the current task's classes")
    g.add_argument("--seen-classes", action="store_const", const=True, dest="seen_classes",
                   help="class-IL: loss and prediction over the classes seen so far")
    g.add_argument("--per-task-samples", type=int, help="training samples per task")
    g.add_argument("--data-root", help="directory with the dataset files")
    g = p.add_argument_group("method")
    g.add_argument("--method", help="finetune, ewc, wva, l2, si, mas")
    g.add_argument("--lam", type=float, help="λ, the consolidation strength")
    g.add_argument("--importance", help="fisher, fisher-sampled, fisher-exact, mas, signal, si")
    g.add_argument("--mode", help="EWC mode: accumulate, separate, online")
    g.add_argument("--gamma", type=float, help="online EWC decay")
    g.add_argument("--stabilized", action="store_const", const=True,
                   help="stabilized EWC coefficient")
    g.add_argument("--curve", help="WVA curve: hyperbolic or exponential")
    g.add_argument("--on", help="WVA placement: step or grad")
    g = p.add_argument_group("model and training")
    g.add_argument("--model", help="mlp or cnn")
    g.add_argument("--widths", help="MLP hidden widths, e.g. 300,150")
    g.add_argument("--channels", help="CNN channels, e.g. 16,32")
    g.add_argument("--activation", help="relu, leaky_relu, tanh, gelu, sigmoid")
    g.add_argument("--optimizer", help="sgd, adam, adamw, rmsprop")
    g.add_argument("--lr", type=float)
    g.add_argument("--epochs", type=float, help="passes over each task")
    g.add_argument("--iterations", type=int, help="steps per task (overrides --epochs)")
    g.add_argument("--batch-size", type=int, dest="batch_size")
    g.add_argument("--eval-every", type=int, dest="eval_every",
                   help="evaluate seen tasks every N steps (curves)")
    g.add_argument("--eval-samples", type=int, dest="eval_samples",
                   help="test samples per task for the curves")
    g.add_argument("--closing-samples", type=int, dest="closing_samples",
                   help="samples the importance is estimated on")
    g.add_argument("--closing", help="tail (last training samples), holdout (last samples, not "
                   "trained on) or random")
    g.add_argument("--seed", type=int)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def _read_config(path: str) -> dict[str, Any]:
    text = Path(path).read_text()
    if path.endswith((".yaml", ".yml")):
        try:
            import yaml
        except ImportError as exc:
            raise CLIError("YAML configs need PyYAML (pip install pyyaml); TOML works "
                           "without it.") from exc
        data = yaml.safe_load(text) or {}
    else:
        import tomllib

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise CLIError(f"{path}: not valid TOML: {exc}") from exc
    if not isinstance(data, dict):
        raise CLIError(f"{path}: expected a table of options.")
    data = {k.replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(data) - set(RUN_DEFAULTS) - {"grid", "seeds", "jobs"})
    if unknown:
        raise CLIError(f"{path}: unknown option(s) {unknown}. Known: {sorted(RUN_DEFAULTS)}.")
    return data


def _resolve(args: argparse.Namespace) -> dict[str, Any]:
    """Defaults < config file < command-line flags."""
    cfg = dict(RUN_DEFAULTS)
    if getattr(args, "config", None):
        cfg.update({k: v for k, v in _read_config(args.config).items() if k in RUN_DEFAULTS})
    for key in RUN_DEFAULTS:
        value = getattr(args, key, None)
        if value is not None:
            cfg[key] = value
    return cfg


def _ints(text: Any, what: str) -> list[int]:
    if isinstance(text, (list, tuple)):
        return [int(v) for v in text]
    try:
        return [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError as exc:
        raise CLIError(f"{what} must be comma-separated integers, e.g. 300,150. "
                       f"Got {text!r}.") from exc


def build_and_fit(cfg: dict[str, Any], progress: bool | None = None):
    """Build scenario, model and method from a resolved config, and run `myelin.fit`."""
    import torch

    from .models import MODELS
    from .scenarios import SCENARIOS
    from .train import fit

    scenario = SCENARIOS.get(cfg["scenario"])(
        n_tasks=cfg["tasks"], seed=cfg["seed"], root=cfg["data_root"],
        per_task_samples=cfg["per_task_samples"], labels_trick=bool(cfg["labels_trick"]),
        seen_classes=bool(cfg["seen_classes"]))
    torch.manual_seed(cfg["seed"])
    factory = MODELS.get(cfg["model"])
    if cfg["model"] == "mlp":
        model = factory(scenario.input_shape, scenario.n_classes,
                        _ints(cfg["widths"], "--widths"), activation=cfg["activation"])
    else:
        model = factory(scenario.input_shape, scenario.n_classes,
                        _ints(cfg["channels"], "--channels"), activation=cfg["activation"])
    options = {k: cfg[k] for k in _METHOD_KEYS if cfg.get(k) is not None}
    result = fit(scenario, model, cfg["method"], cfg["optimizer"], lr=cfg["lr"],
                 epochs=cfg["epochs"], iterations=cfg["iterations"],
                 batch_size=cfg["batch_size"], eval_every=cfg["eval_every"],
                 eval_samples=cfg["eval_samples"], closing_samples=cfg["closing_samples"],
                 closing=cfg["closing"], method_options=options, seed=cfg["seed"],
                 progress=progress)
    result.config["cli"] = cfg
    return result


def _write_run(result: Any, out: Path, title: str) -> None:
    from .plots import accuracy_heatmap, task_curves

    out.mkdir(parents=True, exist_ok=True)
    result.save(out / "result.json")
    (out / "config.json").write_text(json.dumps(result.config.get("cli", {}), indent=1) + "\n")
    accuracy_heatmap(result.accuracy, out / "accuracy.png", title)
    task_curves(result.curves, out / "curves.png", title)


def _print_matrix(label: str, accuracy: list[list[float]]) -> None:
    from . import metrics

    print(f"{label}: AA {metrics.average_accuracy(accuracy):.3f}"
          + (f", FM {metrics.forgetting(accuracy):.3f}" if len(accuracy) > 1 else ""))
    for k, row in enumerate(accuracy):
        print(f"  after task {k + 1}: " + " ".join(f"{v:.3f}" for v in row))


# commands --------------------------------------------------------------------------------------
def _cmd_info(args: argparse.Namespace) -> int:
    import torch

    from . import __version__
    from .data.datasets import DATASETS
    from .importance import ESTIMATORS
    from .methods import METHODS
    from .scenarios import SCENARIOS

    print(f"myelin {__version__}")
    print(f"python {platform.python_version()} ({sys.executable})")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"cuda {'available' if torch.cuda.is_available() else 'not available'}")
    for title, reg in (("importance estimators", ESTIMATORS), ("methods", METHODS),
                       ("scenarios", SCENARIOS), ("datasets", DATASETS)):
        print(f"{title}:")
        for entry in reg.entries():
            print(f"  {entry.name:<24} {entry.summary}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    cfg = _resolve(args)
    start = time.perf_counter()
    result = build_and_fit(cfg, progress=False if args.quiet else None)
    result.config["wall_seconds"] = time.perf_counter() - start
    out = Path(args.out or f"runs/{cfg['scenario']}-{cfg['method']}-seed{cfg['seed']}")
    _write_run(result, out, f"{cfg['method']} on {cfg['scenario']}")
    _print_matrix(cfg["method"], result.accuracy)
    print(f"wrote {out}/ (result.json, config.json, accuracy.png, curves.png) in "
          f"{result.config['wall_seconds']:.1f}s")
    return 0


def _parse_grid(items: Sequence[str]) -> dict[str, list[Any]]:
    grid: dict[str, list[Any]] = {}
    for item in items:
        if "=" not in item:
            raise CLIError(f"--grid takes key=v1,v2,...; got {item!r}.")
        key, values = item.split("=", 1)
        key = key.strip().replace("-", "_")
        if key not in RUN_DEFAULTS:
            raise CLIError(f"--grid: unknown option {key!r}. Known: {sorted(RUN_DEFAULTS)}.")
        parsed: list[Any] = []
        for v in values.split(","):
            v = v.strip()
            try:
                parsed.append(int(v) if v.lstrip("-").isdigit() else float(v))
            except ValueError:
                parsed.append(v)
        grid[key] = parsed
    return grid


def _point_dir(root: Path, params: dict[str, Any], seed: int) -> Path:
    name = ",".join(f"{k}={v}" for k, v in sorted(params.items())) or "default"
    return root / name / f"seed={seed}"


def _sweep_point(cfg: dict[str, Any], out: str) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)          # parallel processes: one thread each
    start = time.perf_counter()
    result = build_and_fit(cfg, progress=False)
    result.config["wall_seconds"] = time.perf_counter() - start
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    result.save(path / "result.json")
    return {"dir": out, "metrics": result.metrics}


def _ci95(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of the 95 % Student-t confidence interval."""
    from statistics import mean, stdev

    n = len(values)
    if n < 2:
        return mean(values), float("nan")
    t = {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776, 6: 2.571, 7: 2.447, 8: 2.365, 9: 2.306,
         10: 2.262, 20: 2.093}.get(n)
    if t is None:
        from scipy.stats import t as student  # scikit-learn brings scipy

        t = float(student.ppf(0.975, n - 1))
    return mean(values), t * stdev(values) / math.sqrt(n)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from .plots import sweep_plot

    cfg = _resolve(args)
    file_cfg = _read_config(args.config) if args.config else {}
    grid = _parse_grid(args.grid or []) if args.grid else {
        k: (v if isinstance(v, list) else [v]) for k, v in file_cfg.get("grid", {}).items()}
    if not grid:
        raise CLIError("sweep needs at least one --grid key=v1,v2,... (e.g. lam=1,10,100).")
    seeds = _ints(args.seeds or file_cfg.get("seeds", "0"), "--seeds")
    out = Path(args.out or f"sweeps/{cfg['scenario']}-{cfg['method']}")
    keys = sorted(grid)
    points = [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]
    todo, done = [], []
    for params in points:
        for seed in seeds:
            d = _point_dir(out, params, seed)
            if (d / "result.json").exists():
                done.append((params, seed, d))
            else:
                todo.append((params, seed, d))
    print(f"sweep: {len(points)} grid point(s) x {len(seeds)} seed(s); "
          f"{len(done)} already done, {len(todo)} to run with {args.jobs} process(es)")
    if todo:
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            futures = {pool.submit(_sweep_point, {**cfg, **params, "seed": seed}, str(d)):
                       (params, seed, d) for params, seed, d in todo}
            for i, fut in enumerate(as_completed(futures), 1):
                params, seed, d = futures[fut]
                try:
                    r = fut.result()
                except Exception as exc:  # report which point failed, keep the others
                    print(f"  [{i}/{len(todo)}] {params} seed {seed}: FAILED: {exc}")
                    continue
                print(f"  [{i}/{len(todo)}] {params} seed {seed}: "
                      f"AA {r['metrics']['average_accuracy']:.3f}", flush=True)
    from .train import Result

    rows = []
    for params in points:
        values: dict[str, list[float]] = {}
        for seed in seeds:
            path = _point_dir(out, params, seed) / "result.json"
            if path.exists():
                for k, v in Result.load(path).metrics.items():
                    values.setdefault(k, []).append(v)
        if values:
            row: dict[str, Any] = {"params": params, "n_seeds": len(values["average_accuracy"])}
            for k, vs in values.items():
                m, ci = _ci95(vs)
                row[k] = {"mean": m, "ci95": ci, "values": vs}
            rows.append(row)
    (out / "summary.json").write_text(json.dumps({"config": cfg, "grid": grid, "seeds": seeds,
                                                  "rows": rows}, indent=1) + "\n")
    lines = ["| " + " | ".join(keys) + " | seeds | AA (mean ± 95% CI) | FM (mean ± 95% CI) |",
             "|" + "---|" * (len(keys) + 3)]
    for r in rows:
        fm = r.get("forgetting")
        fm_text = f"{fm['mean']:.4f} ± {fm['ci95']:.4f}" if fm else "—"
        aa = r["average_accuracy"]
        lines.append("| " + " | ".join(str(r["params"][k]) for k in keys)
                     + f" | {r['n_seeds']} | {aa['mean']:.4f} ± {aa['ci95']:.4f} | {fm_text} |")
    table = "\n".join(lines)
    (out / "summary.md").write_text(table + "\n")
    print(table)
    param = "lam" if "lam" in grid else keys[0]
    if rows and all(isinstance(r["params"][param], (int, float)) for r in rows):
        others = [k for k in keys if k != param]
        sweep_plot(rows, param, out / f"{param}-vs-aa.png", group=others[0] if others else None)
        print(f"wrote {out}/summary.md, summary.json, {param}-vs-aa.png")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .plots import accuracy_heatmap, average_accuracy_plot, markdown_table, task_curves
    from .train import Result

    runs: dict[str, Any] = {}
    for d in args.runs:
        path = Path(d) / "result.json" if Path(d).is_dir() else Path(d)
        if not path.exists():
            raise CLIError(f"No result.json in {d!r} (give run directories written by "
                           "`myelin run`).")
        try:
            result = Result.load(path)
        except (ValueError, json.JSONDecodeError) as exc:
            raise CLIError(f"{path}: {exc}") from exc
        label = Path(d).name if Path(d).is_dir() else path.stem
        while label in runs:
            label += "'"
        runs[label] = {"accuracy": result.accuracy, "curves": result.curves}
    out = Path(args.out or "report")
    out.mkdir(parents=True, exist_ok=True)
    for label, r in runs.items():
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in label)
        accuracy_heatmap(r["accuracy"], out / f"{safe}-accuracy.png", label)
        if r["curves"]:
            task_curves(r["curves"], out / f"{safe}-curves.png", label)
    average_accuracy_plot({k: v["accuracy"] for k, v in runs.items()}, out / "aa.png")
    table = markdown_table(runs)
    (out / "report.md").write_text(table + "\n\n![average accuracy](aa.png)\n")
    print(table)
    print(f"wrote {out}/ (report.md, aa.png, per-run heat-maps and curves)")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from . import metrics
    from .plots import average_accuracy_plot, markdown_table

    out = Path(args.out or "myelin-demo")
    base = {**RUN_DEFAULTS, "scenario": "permuted-digits", "tasks": 3, "widths": "128",
            "epochs": 8, "batch_size": 32, "lr": 0.1, "eval_every": 45, "seed": args.seed,
            "closing_samples": 500}
    methods = {"finetune": {}, "ewc": {"lam": 100.0, "importance": "fisher"},
               "wva": {"lam": 100.0, "importance": "signal"}}
    print("myelin demo: 3 permuted-digits tasks (scikit-learn's 8x8 digits), MLP 64-128-10, "
          "SGD lr 0.1, 8 epochs per task")
    runs = {}
    start = time.perf_counter()
    for name, options in methods.items():
        cfg = {**base, "method": name, **options}
        result = build_and_fit(cfg, progress=False if args.quiet else None)
        _write_run(result, out / name, f"{name} on permuted digits")
        _print_matrix(name, result.accuracy)
        runs[name] = {"accuracy": result.accuracy}
    average_accuracy_plot({k: v["accuracy"] for k, v in runs.items()}, out / "aa.png",
                          "average accuracy over learned tasks")
    table = markdown_table(runs)
    (out / "report.md").write_text(table + "\n")
    print()
    print(table)
    aa = {k: metrics.average_accuracy(v["accuracy"]) for k, v in runs.items()}
    print(f"\nEWC keeps {aa['ewc'] - aa['finetune']:+.3f} and WVA {aa['wva'] - aa['finetune']:+.3f}"
          " average accuracy over fine-tuning.")
    print(f"plots: {out}/aa.png and {out}/<method>/accuracy.png, curves.png "
          f"({time.perf_counter() - start:.0f}s)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="myelin", description="Stop neural networks from forgetting.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"myelin {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("info", help="versions, estimators, methods, scenarios, datasets")
    p.set_defaults(func=_cmd_info)
    p = sub.add_parser("run", help="one continual-learning run", epilog=EXAMPLES,
                       formatter_class=fmt)
    _add_run_options(p)
    p.add_argument("--out", help="run directory (default runs/<scenario>-<method>-seed<seed>)")
    p.set_defaults(func=_cmd_run)
    p = sub.add_parser("sweep", help="grid x seeds in parallel, mean ± 95%% CI, resumable",
                       epilog=EXAMPLES, formatter_class=fmt)
    _add_run_options(p)
    p.add_argument("--grid", action="append", help="key=v1,v2,... (repeatable)")
    p.add_argument("--seeds", help="comma-separated seeds (default 0)")
    p.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 1)),
                   help="parallel processes")
    p.add_argument("--out", help="sweep directory")
    p.set_defaults(func=_cmd_sweep)
    p = sub.add_parser("report", help="plots and a table from run directories")
    p.add_argument("runs", nargs="+", help="run directories (or result.json files)")
    p.add_argument("--out", help="report directory (default ./report)")
    p.set_defaults(func=_cmd_report)
    p = sub.add_parser("demo", help="fine-tuning vs EWC vs WVA in under a minute")
    p.add_argument("--out", help="output directory (default ./myelin-demo)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with `argv` (default: sys.argv[1:]); returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except CLIError as exc:
        print(f"myelin {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, FileNotFoundError, FloatingPointError) as exc:
        print(f"myelin {args.command}: error: {exc}", file=sys.stderr)
        return 2
