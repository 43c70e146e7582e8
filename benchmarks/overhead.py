"""Training-step cost of EWC and WVA relative to a plain step, across 1..10 consolidated tasks.

EWC three ways: `penalty()` in the loss, `apply_to_grad()` after backward, and `EWC.wrap(opt)`
(the penalty folded into the SGD step).

One process, MLP 784-300-150-10 (ReLU), SGD lr 0.01 (stable under the accumulated
penalty; and Adam 1e-3 for the WVA step attenuation that Adam needs), batches of 100 and of
256 real MNIST images (the overhead is a fixed cost per step, so its ratio falls as the step
grows). After
each of 10 consolidations (importance: empirical Fisher on 1000 images), each method's time per
step is divided by a plain SGD step's, timing the two alternately (median of per-round ratios).
Also the extra memory each method keeps, in parameter-sized tensors.

    python -m benchmarks.overhead              # batches of 100 and 256 → results/overhead.json
    python -m benchmarks.overhead --tasks 2 --steps 5 --repeats 1 --batch 20 --out /tmp/o.json
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F

from benchmarks._common import (
    command,
    environment,
    find_mnist,
    load_mnist,
    make_mlp,
    paired,
    write_json,
)
from myelin import EWC, WVA, metrics
from myelin.importance import fisher


def make_runner(model, opt, x, y, steps, batch, penalty=None, closed=None):
    """A function running `steps` SGD steps of one method on fixed batches."""
    batches = [(x[i:i + batch], y[i:i + batch]) for i in range(0, steps * batch, batch)]

    def run():
        for xb, yb in batches:
            opt.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            if penalty is not None:
                loss = loss + penalty()
            loss.backward()
            if closed is not None:
                closed()
            opt.step()
    return run


class BareSGD:
    """θ ← θ − lr·g in one foreach op: the floor of an SGD step, without torch.optim's own
    per-step work (hooks, profiling, grad-mode and argument handling)."""

    def __init__(self, params, lr: float):
        self.params, self.lr = list(params), lr

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        torch._foreach_add_(self.params, [p.grad for p in self.params], alpha=-self.lr)


METHODS = ("ewc_autograd", "ewc_closed_form", "ewc_wrap", "ewc_stabilized", "wva_step", "wva_grad",
           "wva_step_adam", "sgd_bare")


def measure(x, y, batch: int, tasks: int, steps: int, repeats: int,
            methods_timed: tuple[str, ...] = METHODS) -> dict:
    """Per-task step-time ratios of the methods in `methods_timed` at one batch size."""
    torch.manual_seed(0)
    models = {k: make_mlp() for k in ("plain", "plain_adam", "wva_step_adam", "ewc_autograd",
                                      "ewc_closed_form", "ewc_wrap", "ewc_stabilized", "sgd_bare",
                                      "wva_step", "wva_grad")}
    for m in models.values():
        m.load_state_dict(models["plain"].state_dict())
    opts = {k: (torch.optim.Adam(m.parameters(), lr=1e-3) if k.endswith("adam")
                else torch.optim.SGD(m.parameters(), lr=0.01)) for k, m in models.items()}
    methods = {
        "ewc_autograd": EWC(models["ewc_autograd"], 41.0),
        "ewc_closed_form": EWC(models["ewc_closed_form"], 41.0),
        "ewc_wrap": EWC(models["ewc_wrap"], 41.0),
        "ewc_stabilized": EWC(models["ewc_stabilized"], 41.0, stabilized=True, lr=0.01),
        "wva_step": WVA(models["wva_step"], 1000.0, optimizer=opts["wva_step"]),
        "wva_grad": WVA(models["wva_grad"], 1000.0, optimizer=opts["wva_grad"], on="grad"),
        "wva_step_adam": WVA(models["wva_step_adam"], 1000.0, optimizer=opts["wva_step_adam"]),
    }
    penalties = {"ewc_autograd": methods["ewc_autograd"].penalty,
                 "ewc_stabilized": methods["ewc_stabilized"].penalty}
    closed = {"ewc_closed_form": methods["ewc_closed_form"].apply_to_grad}
    opts["ewc_wrap"] = methods["ewc_wrap"].wrap(opts["ewc_wrap"])     # the step applies it
    opts["sgd_bare"] = BareSGD(models["sgd_bare"].parameters(), lr=0.01)
    timed = list(methods_timed)        # sgd_bare: how much of a step is torch.optim's own
    runners = {}
    for name in models:
        opt = methods[name] if name.startswith("wva") else opts[name]
        runners[name] = make_runner(models[name], opt, x, y, steps, batch,
                                    penalty=penalties.get(name), closed=closed.get(name))
    param_bytes = sum(p.numel() * p.element_size() for p in models["plain"].parameters())
    rows = []
    for task in range(1, tasks + 1):
        for name, method in methods.items():
            imp = fisher(models[name], (x[:1000], y[:1000]), progress=False)
            method.consolidate(imp)
        row = {"tasks_consolidated": task}
        for name in timed:
            base = runners["plain_adam" if name.endswith("adam") else "plain"]
            ratio, t_plain, t_method, _ = paired(base, runners[name], repeats)
            row[name] = {"ratio": ratio, "ms_per_step": 1000 * t_method / steps,
                         "plain_ms_per_step": 1000 * t_plain / steps,
                         "extra_tensors_per_parameter": methods[name].memory_bytes()
                         / param_bytes if name in methods else 0.0}
        rows.append(row)
        print(f"batch {batch}, after {task} task(s): " + ", ".join(
            f"{n} {row[n]['ratio']:.3f}x" for n in timed), flush=True)
    spread = {name: metrics.ci95([r[name]["ratio"] for r in rows]) for name in timed}
    summary = {name: {"mean_ratio": spread[name][0],
                      # the interval over tasks needs two of them (tables show it where recorded)
                      **({"ci95_over_tasks": spread[name][1]} if len(rows) > 1 else {}),
                      "max_ratio": max(r[name]["ratio"] for r in rows),
                      "ratio_after_last_task": rows[-1][name]["ratio"],
                      "plain_ms_per_step": sum(r[name]["plain_ms_per_step"] for r in rows)
                      / len(rows),
                      "extra_tensors_per_parameter": rows[-1][name]
                      ["extra_tensors_per_parameter"]}
               for name in timed}
    return {"batch": batch, "parameter_bytes": param_bytes, "summary": summary,
            "per_task": rows}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=int, default=10)
    ap.add_argument("--steps", type=int, default=100, help="steps per timed block")
    ap.add_argument("--batch", default="100,256", help="batch sizes, comma-separated")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--methods", default=",".join(METHODS),
                    help="methods to time, comma-separated (default all)")
    ap.add_argument("--mnist", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    env, cmd = environment(), command("overhead", argv)   # the code as it is at the start
    batches = [int(b) for b in args.batch.split(",")]
    chosen = tuple(m for m in args.methods.split(",") if m)
    unknown = [m for m in chosen if m not in METHODS]
    if unknown or not chosen:
        ap.error(f"--methods: unknown {unknown}; choose from {', '.join(METHODS)}")
    x, y = load_mnist(find_mnist(args.mnist), "train",
                      max(args.steps * max(batches), 1000))
    by_batch = {str(b): measure(x, y, b, args.tasks, args.steps, args.repeats, chosen)
                for b in batches}
    first = by_batch[str(batches[0])]
    payload = {"benchmark": "overhead", "command": cmd, "environment": env,
               "setup": {"model": "784-300-150-10 ReLU", "optimizer": "SGD lr 0.01",
                         "batch": batches[0], "batches": batches,
                         "steps_per_block": args.steps, "repeats": args.repeats,
                         "parameter_bytes": first["parameter_bytes"],
                         "note": "WVA on='step' also copies the parameters for the duration "
                                 "of each step (transient, one parameter-sized copy)."},
               "summary": first["summary"], "per_task": first["per_task"],
               "by_batch": by_batch}
    write_json("overhead", payload, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
