"""Cost and correctness of myelin's importance estimators on MNIST, in one process.

For the 784-300-150-10 MLP and a small CNN (briefly trained first), over the same N samples:
time of each estimator ÷ time of one plain batched forward+backward (SIG: ÷ a plain forward),
the speed-up over a naive per-sample loop, and, where installed, BackPACK's SumGradSquared,
DiagGGNExact and DiagGGNMC on the same model and batches. Also the squared mini-batch gradient
that several libraries call "Fisher" (Avalanche's EWC): its cost, scale and shape against the
exact empirical Fisher.

    python -m benchmarks.importance                 # full run, writes results/importance.json
    python -m benchmarks.importance --n 256 --quick --out /tmp/x.json   # smoke test

BackPACK is optional (``pip install --no-deps backpack-for-pytorch einops unfoldNd``; without
--no-deps pip may replace the CPU torch).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from benchmarks._common import (
    RESULTS,
    command,
    environment,
    find_mnist,
    load_mnist,
    make_mlp,
    paired,
    timed,
    write_json,
)
from myelin.importance import fisher, mas, signal


class Reshape(nn.Module):
    def forward(self, x):
        return x.reshape(-1, 1, 28, 28)


def make_cnn() -> nn.Module:
    return nn.Sequential(Reshape(), nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(32 * 7 * 7, 10))


def train_briefly(model: nn.Module, x, y, epochs: int = 1, batch: int = 100) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch):
            idx = order[i:i + batch]
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    model.zero_grad(set_to_none=True)


def plain_fwd_bwd(model, x, y, bs):
    for i in range(0, len(x), bs):
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x[i:i + bs]), y[i:i + bs], reduction="sum").backward()
    model.zero_grad(set_to_none=True)


@torch.no_grad()
def plain_fwd(model, x, bs):
    for i in range(0, len(x), bs):
        model(x[i:i + bs])


def naive_loop(model, x, y):
    """Empirical Fisher by a Python loop over samples (batch of one, autograd.grad)."""
    params = [p for p in model.parameters()]
    total = [torch.zeros_like(p) for p in params]
    for k in range(len(x)):
        loss = F.cross_entropy(model(x[k:k + 1]), y[k:k + 1])
        for t, g in zip(total, torch.autograd.grad(loss, params)):
            t += g * g
    return {n: t / len(x) for (n, _), t in zip(model.named_parameters(), total)}


def vmap_fisher(model, x, y, bs):
    """Empirical Fisher from torch.func per-sample gradients (materialises all of them)."""
    params = {n: p.detach() for n, p in model.named_parameters()}

    def loss(p, xk, yk):
        return F.cross_entropy(functional_call(model, p, (xk[None],)), yk[None])

    per_sample = vmap(grad(loss), in_dims=(None, 0, 0))
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    for i in range(0, len(x), bs):
        for n, g in per_sample(params, x[i:i + bs], y[i:i + bs]).items():
            total[n] += (g * g).sum(0)
    return {n: t / len(x) for n, t in total.items()}


def squared_batch_grad(model, x, y, bs):
    """What Avalanche's EWC computes as "Fisher": mean over batches of (batch-mean gradient)²."""
    total = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    batches = 0
    for i in range(0, len(x), bs):
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x[i:i + bs]), y[i:i + bs]).backward()
        for n, p in model.named_parameters():
            total[n] += p.grad * p.grad
        batches += 1
    model.zero_grad(set_to_none=True)
    return {n: t / batches for n, t in total.items()}


def backpack_runner(model, x, y, bs, extension_name):
    try:
        from backpack import backpack, extend
        from backpack import extensions as ext
    except ImportError:
        return None
    ext_cls = getattr(ext, extension_name)
    bmodel = extend(model)
    lossf = extend(nn.CrossEntropyLoss(reduction="sum"))
    attr = {"SumGradSquared": "sum_grad_squared", "DiagGGNExact": "diag_ggn_exact",
            "DiagGGNMC": "diag_ggn_mc"}[extension_name]

    def run():
        total = {n: torch.zeros_like(p) for n, p in bmodel.named_parameters()}
        for i in range(0, len(x), bs):
            bmodel.zero_grad(set_to_none=True)
            loss = lossf(bmodel(x[i:i + bs]), y[i:i + bs])
            with backpack(ext_cls()):
                loss.backward()
            for n, p in bmodel.named_parameters():
                total[n] += getattr(p, attr)
        bmodel.zero_grad(set_to_none=True)
        return {n: t / len(x) for n, t in total.items()}

    return run


def rel_err(a: dict, b: dict) -> float:
    return max(((a[n] - b[n]).abs().max() / b[n].abs().max().clamp_min(1e-30)).item() for n in b)


def flat(d: dict) -> torch.Tensor:
    return torch.cat([v.reshape(-1) for v in d.values()])


def bench_model(name, model, x, y, args, log):
    bs = args.cnn_batch_size if name == "cnn" else args.batch_size
    model.eval()
    row: dict[str, object] = {"model": name, "n": len(x), "batch_size": bs,
                              "parameters": sum(p.numel() for p in model.parameters())}
    t_fb, _ = timed(lambda: plain_fwd_bwd(model, x, y, bs), args.repeats)
    t_f, _ = timed(lambda: plain_fwd(model, x, bs), args.repeats)
    row["plain_fwd_bwd_s"], row["plain_fwd_s"] = t_fb, t_f
    log(f"[{name}] plain fwd+bwd {t_fb:.3f}s, fwd {t_f:.3f}s")
    ours = {
        "fisher_empirical": lambda: fisher(model, (x, y), batch_size=bs, progress=False),
        "fisher_sampled": lambda: fisher(model, x, empirical=False, seed=0, batch_size=bs,
                                         progress=False),
        "fisher_exact": lambda: fisher(model, x, empirical=False, exact=True, batch_size=bs,
                                       progress=False),
        "mas": lambda: mas(model, x, batch_size=bs, progress=False),
        "signal": lambda: signal(model, x, batch_size=bs, progress=False),
    }
    results = {}
    for key, fn in ours.items():
        base = ((lambda: plain_fwd(model, x, bs)) if key == "signal"
                else (lambda: plain_fwd_bwd(model, x, y, bs)))
        ratio, _, t, out = paired(base, fn, args.repeats)
        results[key] = out
        row[f"{key}_s"] = t
        row[f"{key}_ratio"] = ratio
        what = "fwd" if key == "signal" else "fwd+bwd"
        log(f"[{name}] {key}: {t:.3f}s = {ratio:.2f}x plain {what} (paired median)")
    if not args.quick:
        t0 = time.perf_counter()
        naive = naive_loop(model, x, y)
        t_naive = time.perf_counter() - t0
        row["naive_loop_s"] = t_naive
        row["naive_loop_ratio"] = t_naive / t_fb
        row["speedup_fisher_vs_naive"] = t_naive / row["fisher_empirical_s"]
        row["speedup_mas_vs_naive"] = t_naive / row["mas_s"]
        row["fisher_max_rel_error_vs_naive"] = rel_err(results["fisher_empirical"], naive)
        log(f"[{name}] naive loop {t_naive:.2f}s = {t_naive / t_fb:.1f}x; ours "
            f"{row['speedup_fisher_vs_naive']:.0f}x faster, max rel err "
            f"{row['fisher_max_rel_error_vs_naive']:.1e}")
    t, vm = timed(lambda: vmap_fisher(model, x, y, bs), 1)
    row["vmap_s"], row["vmap_ratio"] = t, t / t_fb
    row["fisher_max_rel_error_vs_vmap"] = rel_err(results["fisher_empirical"], vm)
    log(f"[{name}] torch.func vmap {t:.3f}s = {t / t_fb:.2f}x")
    t, sbg = timed(lambda: squared_batch_grad(model, x, y, args.avalanche_batch), args.repeats)
    ref, theirs = flat(results["fisher_empirical"]), flat(sbg)
    scale = (ref @ theirs / (theirs @ theirs)).item()
    row["squared_batch_grad"] = {
        "batch_size": args.avalanche_batch, "s": t, "ratio": t / t_fb,
        "exact_over_batched_mean": (ref.mean() / theirs.mean()).item(),
        "relative_l2_after_best_rescaling": ((ref - scale * theirs).norm() / ref.norm()).item(),
    }
    log(f"[{name}] squared batch grad: {row['squared_batch_grad']}")
    for ext_name, key in (("SumGradSquared", "fisher_empirical"), ("DiagGGNExact", "fisher_exact"),
                          ("DiagGGNMC", None)):
        run = backpack_runner(model, x, y, bs, ext_name)
        if run is None:
            row[f"backpack_{ext_name}"] = "backpack not installed"
            continue
        ratio, _, t, out = paired(lambda: plain_fwd_bwd(model, x, y, bs), run, args.repeats)
        entry = {"s": t, "ratio": ratio}
        if key is not None:
            entry["max_rel_error_vs_ours"] = rel_err(results[key], out)
        row[f"backpack_{ext_name}"] = entry
        log(f"[{name}] BackPACK {ext_name}: {t:.3f}s = {t / t_fb:.2f}x {entry}")
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=10_000, help="samples (default 10000)")
    ap.add_argument("--batch-size", type=int, default=1000, help="MLP batch size")
    ap.add_argument("--cnn-batch-size", type=int, default=256,
                    help="CNN batch size (on 2 CPU cores 256 is the fastest for plain training)")
    ap.add_argument("--avalanche-batch", type=int, default=100,
                    help="mini-batch size of the squared-batch-gradient baseline")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="skip the naive loop (smoke test)")
    ap.add_argument("--mnist", default=None, help="directory with the MNIST IDX files")
    ap.add_argument("--models", default="mlp,cnn")
    ap.add_argument("--out", default=None, help="JSON path (default results/importance.json)")
    args = ap.parse_args(argv)
    env, cmd = environment(), command("importance", argv)   # the code as it is at the start
    torch.manual_seed(0)
    x, y = load_mnist(find_mnist(args.mnist), "train", args.n)
    rows = []
    for name in args.models.split(","):
        torch.manual_seed(0)
        model = {"mlp": make_mlp, "cnn": make_cnn}[name]()
        train_briefly(model, x, y)
        rows.append(bench_model(name, model, x, y, args, lambda s: print(s, flush=True)))
    for row in rows:
        row["command"], row["environment"] = cmd, env
    previous = RESULTS / "importance.json"
    if args.out is None and previous.exists():      # keep the rows of models not re-run
        old = json.loads(previous.read_text())
        kept = [{"command": old["command"], "environment": old["environment"], **r}
                for r in old.get("results", []) if r["model"] not in {row["model"] for row in rows}]
        rows = sorted(kept + rows, key=lambda r: r["model"] != "mlp")
    payload = {"benchmark": "importance", "command": cmd, "environment": env, "results": rows}
    write_json("importance", payload, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
