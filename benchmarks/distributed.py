"""Scaling over processes (issue 23 item 5), and what it implies for a 1B and a 7B model.

Measured here, on CPU (gloo, one torch thread per process):

1. **Scaling at 1 and 2 processes.** One session of two spawned gloo ranks measures, on fixed
   random data, for the 784-300-150-10 MLP and a small random-init `LlamaForCausalLM` (no
   download):

   * importance throughput (samples/s) of `myelin.importance.fisher` (empirical, exact
     per-sample): one process on all N samples (rank 0, ``distributed=False``) against both
     ranks on N/2 each (summed over the ranks: every rank gets the union's Fisher). Speed-up
     = t1 / t2, parallel efficiency = speed-up / 2. Also, in one process, Fisher ÷ one plain
     forward+backward over the same samples;
   * a training step of a `DistributedDataParallel` model with the same global batch at 1 and
     2 processes, plain SGD and EWC (``EWC(model, lam).wrap(SGD)``, one consolidated task):
     time per step, EWC step ÷ plain step at each world size, throughput 2 vs 1 processes.

   The one-process arms run on rank 0 (DDP over a one-rank subgroup) while rank 1 waits in a
   barrier; its CPU use while waiting is recorded (``idle_rank_cpu_share``). The arms are
   timed alternately, in both orders, and every ratio is the median of per-round ratios
   (`benchmarks._common.paired`'s scheme). This machine has 2 cores: 2 processes occupy all of
   them, so anything else running (and gloo's own threads) competes with the ranks.

2. **Per-layer costs** (this process, one thread): LayerNorm → Linear(d_in, d_out) blocks over
   sequences of T tokens (the norm makes both passes compute the Linear's input gradient, as
   inside a network), for d × d and d × 4d: plain forward+backward per sequence against
   myelin's per-sequence Fisher; and the bytes of state per parameter of a real EWC (fp32 and
   ``state_dtype=torch.bfloat16``) and WVA (fp32 and ``dtype=torch.bfloat16``) instance.

3. **An estimate** for Llama-3.2-1B and Llama-2-7B on 8 GPUs (`estimate`): importance time for
   S sequences of T tokens and EWC/WVA state memory per GPU, computed from the measured
   numbers and the stated assumptions (`Assumptions`; each figure in the JSON says which).

    python -m benchmarks.distributed            # full run → results/distributed.json (~5 min)
    python -m benchmarks.distributed --quick --out /tmp/d.json     # tiny sizes, seconds
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks._common import command, environment, make_mlp, write_json

WORLD = 2


# -- the estimate (pure arithmetic; unit-tested on fixed inputs) ---------------------------------
@dataclass(frozen=True)
class LlamaShape:
    """The layer shapes of a Llama-like decoder (no biases; RMSNorm weights counted)."""

    name: str
    layers: int
    d: int                 # hidden size
    ffn: int               # intermediate size of the gated MLP
    vocab: int
    heads: int
    kv_heads: int
    tied: bool             # input embedding shared with the output projection

    def parameters(self) -> int:
        """Every parameter: per layer q, k, v, o, gate, up, down and two norms; embeddings."""
        kv = self.kv_heads * self.d // self.heads
        per_layer = 2 * self.d * self.d + 2 * self.d * kv + 3 * self.d * self.ffn + 2 * self.d
        return self.layers * per_layer + self.vocab * self.d * (1 if self.tied else 2) + self.d

    def matmul_parameters(self) -> int:
        """Parameters used in a matrix product per token (an untied input embedding is a
        lookup; the norms are elementwise)."""
        norms = (2 * self.layers + 1) * self.d
        return self.parameters() - norms - (0 if self.tied else self.vocab * self.d)

    def largest_layer(self) -> int:
        """Parameters of the largest single weight matrix."""
        return max(self.vocab * self.d, self.d * self.ffn, self.d * self.d)


#: Llama-3.2-1B (config.json of meta-llama/Llama-3.2-1B): 1 235 814 400 parameters.
LLAMA_1B = LlamaShape("Llama-3.2-1B", layers=16, d=2048, ffn=8192, vocab=128256, heads=32,
                      kv_heads=8, tied=True)
#: Llama-2-7B (config.json of meta-llama/Llama-2-7b-hf): 6 738 415 616 parameters.
LLAMA_7B = LlamaShape("Llama-2-7B", layers=32, d=4096, ffn=11008, vocab=32000, heads=32,
                      kv_heads=32, tied=False)


@dataclass(frozen=True)
class Assumptions:
    """What the estimate assumes (none of it is measured here)."""

    gpus: int = 8
    sequences: int = 10_000            # the importance set
    tokens: int = 512                  # per sequence
    peak_flops: float = 312e12         # A100 bf16 dense tensor-core peak (NVIDIA datasheet)
    utilisation: float = 0.40          # sustained share of the peak (model FLOPs utilisation)
    allreduce_bytes_per_s: float = 200e9   # NCCL all-reduce bus bandwidth, 8 GPUs over NVLink
    gpu_memory_bytes: float = 80e9     # A100 80 GB
    training_bytes_per_param: float = 16.0   # mixed-precision Adam (ZeRO paper: 2+2+12 B)


def estimate(shape: LlamaShape, *, fisher_over_plain: float, efficiency: float,
             state_bytes_per_param: dict[str, float],
             assume: Assumptions = Assumptions()) -> dict[str, Any]:
    """Importance time and consolidation state memory per GPU for `shape`.

    Importance time: plain forward+backward FLOPs per token 6·N_matmul + 6·L·T·d (Kaplan et al.
    2020, Table 1, with the attention context T) × S·T tokens, at `peak_flops` × `utilisation`
    on one GPU; × `fisher_over_plain` (measured); ÷ (gpus × `efficiency`) (the measured
    2-process efficiency, capped at 1: an optimistic stand-in for 8 GPUs); plus one ring
    all-reduce of the fp32 sums, 2(p − 1)/p × 4N bytes at `allreduce_bytes_per_s`.

    Memory: `state_bytes_per_param` (measured, e.g. {"ewc_fp32": 8, "ewc_bf16": 4, ...}) × N
    on every GPU under DDP (replicated), ÷ gpus if sharded like the parameters under FSDP; as
    a multiple of the bf16 model's bytes (2N) and a share of one GPU's memory.
    """
    n, p = shape.parameters(), assume.gpus
    eff = min(1.0, efficiency)
    flops_per_token = 6 * shape.matmul_parameters() + 6 * shape.layers * assume.tokens * shape.d
    tokens = assume.sequences * assume.tokens
    plain_one = flops_per_token * tokens / (assume.peak_flops * assume.utilisation)
    allreduce = 2 * (p - 1) / p * 4 * n / assume.allreduce_bytes_per_s
    fisher_s = fisher_over_plain * plain_one / (p * eff) + allreduce
    model_bf16 = 2 * n
    memory = {}
    for key, bpp in state_bytes_per_param.items():
        replicated = bpp * n
        memory[key] = {"bytes_per_param": bpp,
                       "ddp_replicated_bytes_per_gpu": replicated,
                       "fsdp_sharded_bytes_per_gpu": replicated / p,
                       "times_bf16_model": replicated / model_bf16,
                       "ddp_share_of_gpu_memory": replicated / assume.gpu_memory_bytes,
                       "times_training_state": bpp / assume.training_bytes_per_param}
    from myelin.importance import CHUNK_ELEMENTS
    return {
        "model": shape.name, "shape": dataclasses.asdict(shape), "parameters": n,
        "matmul_parameters": shape.matmul_parameters(),
        "flops_per_token": flops_per_token, "tokens": tokens,
        "plain_fwd_bwd_s_one_gpu": plain_one,
        "plain_fwd_bwd_s_all_gpus_ideal": plain_one / p,
        "fisher_over_plain": fisher_over_plain, "efficiency_used": eff,
        "allreduce_s": allreduce,
        "importance_s": fisher_s,
        "importance_gpu_hours": fisher_s * p / 3600,
        "bf16_model_bytes": model_bf16,
        # per-sample gradients are materialised in chunks of at least one sample's largest
        # layer (myelin/importance/_persample.py), in float32, with their square: about twice
        "transient_per_sample_bytes": 2 * 4 * max(shape.largest_layer(), CHUNK_ELEMENTS),
        "state": memory,
    }


def estimates(fisher_over_plain: float, efficiency: float,
              state_bytes_per_param: dict[str, float],
              assume: Assumptions = Assumptions()) -> dict[str, Any]:
    """`estimate` for both Llama shapes, with what was measured and what assumed."""
    return {
        "measured_inputs": {"fisher_over_plain": fisher_over_plain,
                            "two_process_efficiency": efficiency,
                            "state_bytes_per_param": state_bytes_per_param},
        "assumptions": dataclasses.asdict(assume),
        "assumption_notes": [
            "GPU throughput: peak_flops × utilisation, bf16 (A100: 312 TFLOPS dense).",
            "Fisher ÷ plain on a GPU taken equal to the CPU per-layer ratio measured here at the "
            "largest d (the worst of its shapes).",
            "Scaling to 8 GPUs: the 2-process CPU efficiency of the transformer's importance, "
            "capped at 1 (optimistic: 8 GPUs over NVLink/PCIe are not 2 cores of one CPU).",
            "FLOPs: 6·N_matmul + 6·layers·T·d per token (Kaplan et al. 2020).",
            "FSDP figures: the state sharded like the parameters (EWC, L2 and WVA created "
            "after FSDP2's fully_shard keep it so). The importance is estimated on a whole, "
            "unsharded model on every GPU, data-parallel (the estimators do not run on a "
            "sharded model): the importance time assumes this, and it needs the bf16 model "
            "(bf16_model_bytes) plus the transient per-sample gradients on each GPU.",
        ],
        "models": {s.name: estimate(s, fisher_over_plain=fisher_over_plain,
                                    efficiency=efficiency,
                                    state_bytes_per_param=state_bytes_per_param, assume=assume)
                   for s in (LLAMA_1B, LLAMA_7B)},
    }


# -- models and data -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Sizes:
    """What one run measures (full or --quick)."""

    mlp_samples: int
    mlp_batch: int                 # importance batch size
    mlp_step_batch: int            # global training batch
    mlp_steps: int                 # steps per timed block
    llama: dict[str, int]          # LlamaConfig sizes
    llama_sequences: int
    llama_tokens: int
    llama_batch: int
    llama_step_batch: int
    llama_steps: int
    repeats: int
    layer_dims: tuple[int, ...]
    layer_sequences: int
    layer_tokens: int
    layer_repeats: int


FULL = Sizes(mlp_samples=20_000, mlp_batch=1000, mlp_step_batch=256, mlp_steps=40,
             llama={"hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 4,
                    "num_attention_heads": 8, "num_key_value_heads": 4, "vocab_size": 4096},
             llama_sequences=32, llama_tokens=128, llama_batch=8, llama_step_batch=8,
             llama_steps=3, repeats=7, layer_dims=(256, 512, 1024), layer_sequences=4,
             layer_tokens=512, layer_repeats=5)
QUICK = Sizes(mlp_samples=512, mlp_batch=128, mlp_step_batch=32, mlp_steps=2,
              llama={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 64},
              llama_sequences=8, llama_tokens=16, llama_batch=4, llama_step_batch=4,
              llama_steps=1, repeats=1, layer_dims=(64,), layer_sequences=2, layer_tokens=16,
              layer_repeats=1)


def make_llama(sizes: Sizes) -> nn.Module:
    """A random-init LlamaForCausalLM (fixed seed, tied embeddings, eager attention)."""
    import transformers

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(**sizes.llama, max_position_embeddings=sizes.llama_tokens,
                                   tie_word_embeddings=True, attn_implementation="eager")
    return transformers.LlamaForCausalLM(cfg)


def mlp_data(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 784, generator=g), torch.randint(0, 10, (n,), generator=g)


def llama_data(sizes: Sizes, n: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, sizes.llama["vocab_size"], (n, sizes.llama_tokens), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


class Case:
    """One model: its data, importance call, plain pass and training loss."""

    def __init__(self, kind: str, sizes: Sizes):
        self.kind, self.sizes = kind, sizes
        if kind == "mlp":
            self.n, self.batch = sizes.mlp_samples, sizes.mlp_batch
            self.step_batch, self.steps = sizes.mlp_step_batch, sizes.mlp_steps
            self.x, self.y = mlp_data(max(self.n, self.steps * self.step_batch))
        else:
            self.n, self.batch = sizes.llama_sequences, sizes.llama_batch
            self.step_batch, self.steps = sizes.llama_step_batch, sizes.llama_steps
            self.data = llama_data(sizes, max(self.n, self.steps * self.step_batch))

    def model(self) -> nn.Module:
        torch.manual_seed(0)
        return make_mlp() if self.kind == "mlp" else make_llama(self.sizes)

    def rows(self, start: int, stop: int) -> Any:
        if self.kind == "mlp":
            return self.x[start:stop], self.y[start:stop]
        return {k: v[start:stop] for k, v in self.data.items()}

    def loss(self, model: nn.Module, rows: Any) -> torch.Tensor:
        """The mean training loss of `rows` (model may be DDP-wrapped)."""
        if self.kind == "mlp":
            return F.cross_entropy(model(rows[0]), rows[1])
        return model(**rows, labels=rows["input_ids"]).loss

    def plain_pass(self, model: nn.Module) -> None:
        """One plain forward+backward over all n samples, in importance-sized batches."""
        for i in range(0, self.n, self.batch):
            model.zero_grad(set_to_none=True)
            self.loss(model, self.rows(i, min(i + self.batch, self.n))).backward()
        model.zero_grad(set_to_none=True)

    def fisher(self, model: nn.Module, start: int, stop: int, distributed: bool) -> Any:
        from myelin.importance import fisher
        return fisher(model, self.rows(start, stop), batch_size=self.batch, progress=False,
                      distributed=distributed)


# -- the two-rank session ------------------------------------------------------------------------
def _median(values: list[float]) -> float:
    return statistics.median(values)


class Clock:
    """Timed blocks on both ranks: "one" runs on rank 0 alone, "two" on both ranks."""

    def __init__(self, rank: int):
        self.rank = rank
        self.idle_cpu: list[float] = []
        self.idle_wall: list[float] = []

    def one(self, fn: Callable[[], object]) -> float:
        import torch.distributed as dist
        dist.barrier()
        if self.rank == 0:
            t0 = time.perf_counter()
            fn()
            elapsed = time.perf_counter() - t0
            dist.barrier()
            return elapsed
        c0, t0 = time.process_time(), time.perf_counter()
        dist.barrier()                   # waits while rank 0 works alone
        self.idle_cpu.append(time.process_time() - c0)
        self.idle_wall.append(time.perf_counter() - t0)
        return float("nan")

    def two(self, fn: Callable[[], object]) -> float:
        import torch.distributed as dist
        dist.barrier()
        t0 = time.perf_counter()
        fn()
        dist.barrier()
        return time.perf_counter() - t0


def _rounds(clock: Clock, arms: dict[str, tuple[str, Callable[[], object]]],
            repeats: int) -> dict[str, list[float]]:
    """Time every arm once per round (after a warm-up round), reversing the order every other
    round; each arm's list of times (rank 0; NaN on rank 1)."""
    names = list(arms)
    times: dict[str, list[float]] = {n: [] for n in names}
    for i in range(repeats + 1):
        order = names if i % 2 == 0 else names[::-1]
        for name in order:
            where, fn = arms[name]
            t = clock.one(fn) if where == "one" else clock.two(fn)
            if i > 0:
                times[name].append(t)
    return times


def _ratio(times: dict[str, list[float]], num: str, den: str) -> float:
    return _median([a / b for a, b in zip(times[num], times[den])])


def importance_scaling(case: Case, clock: Clock, rank: int, repeats: int) -> dict[str, Any]:
    """Fisher over n samples: rank 0 alone on all of them vs both ranks on half each."""
    from myelin.distributed import shard_bounds

    model = case.model().eval()
    start, stop = shard_bounds(case.n)
    arms = {"plain_one": ("one", lambda: case.plain_pass(model)),
            "fisher_one": ("one", lambda: case.fisher(model, 0, case.n, distributed=False)),
            "fisher_two": ("two", lambda: case.fisher(model, start, stop, distributed=True))}
    t = _rounds(clock, arms, repeats)
    if rank != 0:
        return {}
    t1, t2 = _median(t["fisher_one"]), _median(t["fisher_two"])
    speedup = _ratio(t, "fisher_one", "fisher_two")
    return {"samples": case.n, "batch_size": case.batch,
            "parameters": sum(p.numel() for p in model.parameters()),
            "one_process_s": t1, "two_processes_s": t2,
            "one_process_samples_per_s": case.n / t1,
            "two_processes_samples_per_s": case.n / t2,
            "speedup": speedup, "efficiency": speedup / WORLD,
            "fisher_over_plain_one_process": _ratio(t, "fisher_one", "plain_one"),
            "plain_fwd_bwd_one_process_s": _median(t["plain_one"])}


def training_scaling(case: Case, clock: Clock, rank: int, repeats: int,
                     lam: float = 1.0, lr: float = 0.01) -> dict[str, Any]:
    """DDP training steps on the same global batch at 1 and 2 processes, plain and EWC."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from myelin.consolidation import EWC
    from myelin.distributed import shard_bounds

    solo = dist.new_group([0])           # a one-rank group for the one-process DDP models
    base = case.model()
    state = base.state_dict()
    start, stop = shard_bounds(case.n)
    importance = case.fisher(base, start, stop, distributed=True)   # every rank: the union's
    b = case.step_batch
    batches = [(i * b, (i + 1) * b) for i in range(case.steps)]
    lo, hi = shard_bounds(b)

    def build(group: Any, ewc: bool) -> tuple[nn.Module, Any]:
        model = case.model()
        model.load_state_dict(state)
        model.train()
        ddp = DDP(model, process_group=group)
        opt: Any = torch.optim.SGD(ddp.parameters(), lr=lr)
        if ewc:
            method = EWC(model, lam)
            method.consolidate(importance)
            opt = method.wrap(opt)
        return ddp, opt

    def runner(ddp: nn.Module, opt: Any, world: int) -> Callable[[], None]:
        def run() -> None:
            for s, _ in batches:
                a, z = (s, s + b) if world == 1 else (s + lo, s + hi)
                opt.zero_grad(set_to_none=True)
                case.loss(ddp, case.rows(a, z)).backward()
                opt.step()
        return run

    arms: dict[str, tuple[str, Callable[[], object]]] = {}
    if rank == 0:
        for name, ewc in (("plain_one", False), ("ewc_one", True)):
            ddp, opt = build(solo, ewc)
            arms[name] = ("one", runner(ddp, opt, 1))
    else:
        arms["plain_one"] = arms["ewc_one"] = ("one", lambda: None)
    for name, ewc in (("plain_two", False), ("ewc_two", True)):
        ddp, opt = build(None, ewc)
        arms[name] = ("two", runner(ddp, opt, 2))
    t = _rounds(clock, arms, repeats)
    dist.destroy_process_group(solo)
    if rank != 0:
        return {}
    per_step = {k: _median(v) / case.steps for k, v in t.items()}
    return {"global_batch": b, "steps_per_block": case.steps, "lam": lam, "lr": lr,
            "optimizer": "SGD; EWC: EWC(model, lam).wrap(SGD), one consolidated task",
            "ms_per_step": {k: 1000 * v for k, v in per_step.items()},
            "samples_per_s": {k: b / v for k, v in per_step.items()},
            "ewc_over_plain_one_process": _ratio(t, "ewc_one", "plain_one"),
            "ewc_over_plain_two_processes": _ratio(t, "ewc_two", "plain_two"),
            "speedup_plain": _ratio(t, "plain_one", "plain_two"),
            "speedup_ewc": _ratio(t, "ewc_one", "ewc_two"),
            "efficiency_plain": _ratio(t, "plain_one", "plain_two") / WORLD,
            "efficiency_ewc": _ratio(t, "ewc_one", "ewc_two") / WORLD}


def _session(rank: int, sizes: Sizes) -> dict[str, Any]:
    clock = Clock(rank)
    out: dict[str, Any] = {}
    for kind in ("mlp", "llama"):
        case = Case(kind, sizes)
        imp = importance_scaling(case, clock, rank, sizes.repeats)
        train = training_scaling(case, clock, rank, sizes.repeats)
        out[kind] = {"importance": imp, "training": train}
    out["idle_rank_cpu_s"] = sum(clock.idle_cpu)
    out["idle_rank_wall_s"] = sum(clock.idle_wall)
    return out


def _worker(rank: int, sizes: Sizes, directory: str, timeout: float) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    root = Path(directory)
    result: dict[str, Any]
    try:
        dist.init_process_group("gloo", init_method=f"file://{root / 'rendezvous'}", rank=rank,
                                world_size=WORLD, timeout=datetime.timedelta(seconds=timeout))
        try:
            result = _session(rank, sizes)
        finally:
            dist.destroy_process_group()
    except BaseException:
        result = {"crash": traceback.format_exc()}
    (root / f"rank{rank}.json").write_text(json.dumps(result))


def run_ranks(sizes: Sizes, timeout: float, deadline: float) -> dict[str, Any]:
    """Run `_session` on two spawned gloo ranks; rank 0's results with rank 1's idle CPU."""
    import torch.multiprocessing as mp

    from benchmarks import distributed as this  # picklable by module name under -m

    ctx = mp.get_context("spawn")
    saved = os.environ.get("OMP_NUM_THREADS")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["OMP_NUM_THREADS"] = "1"
        try:
            procs = [ctx.Process(target=this._worker, args=(r, sizes, tmp, timeout), daemon=True)
                     for r in range(WORLD)]
            for p in procs:
                p.start()
        finally:
            if saved is None:
                os.environ.pop("OMP_NUM_THREADS", None)
            else:
                os.environ["OMP_NUM_THREADS"] = saved
        end = time.monotonic() + deadline
        for p in procs:
            p.join(max(0.0, end - time.monotonic()))
        hung = [r for r, p in enumerate(procs) if p.is_alive()]
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)
        if hung:
            raise RuntimeError(f"ranks {hung} did not finish within {deadline:.0f} s (a hang?); "
                               "killed. Pass a larger --deadline for a slow machine.")
        results = []
        for r, p in enumerate(procs):
            file = Path(tmp) / f"rank{r}.json"
            if not file.exists():
                raise RuntimeError(f"rank {r} exited with code {p.exitcode} and wrote nothing")
            results.append(json.loads(file.read_text()))
            if "crash" in results[-1]:
                raise RuntimeError(f"rank {r} failed:\n{results[-1]['crash']}")
    out = results[0]
    wall = results[1]["idle_rank_wall_s"]
    out["idle_rank_cpu_share"] = results[1]["idle_rank_cpu_s"] / wall if wall > 0 else 0.0
    for key in ("idle_rank_cpu_s", "idle_rank_wall_s"):
        out.pop(key, None)
    return out


# -- per-layer costs (this process, one thread) --------------------------------------------------
def layer_costs(sizes: Sizes) -> list[dict[str, Any]]:
    """Plain forward+backward vs per-sequence Fisher of LayerNorm → Linear blocks."""
    from benchmarks._common import paired
    from myelin.importance import fisher

    rows = []
    n, t = sizes.layer_sequences, sizes.layer_tokens
    for d in sizes.layer_dims:
        for d_out in (d, 4 * d):
            torch.manual_seed(0)
            model = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d_out)).eval()
            g = torch.Generator().manual_seed(0)
            x = torch.randn(n, t, d, generator=g)
            y = torch.randint(0, d_out, (n, t), generator=g)

            def plain(model: nn.Module = model, x: torch.Tensor = x, y: torch.Tensor = y) -> None:
                model.zero_grad(set_to_none=True)
                F.cross_entropy(model(x).flatten(0, 1), y.flatten(), reduction="sum").backward()
                model.zero_grad(set_to_none=True)

            def ours(model: nn.Module = model, x: torch.Tensor = x,
                     y: torch.Tensor = y) -> None:
                fisher(model, (x, y), batch_size=n, progress=False)

            ratio, t_plain, t_fisher, _ = paired(plain, ours, sizes.layer_repeats)
            rows.append({"d_in": d, "d_out": d_out, "sequences": n, "tokens": t,
                         "parameters": sum(p.numel() for p in model.parameters()),
                         "plain_ms_per_sequence": 1000 * t_plain / n,
                         "fisher_ms_per_sequence": 1000 * t_fisher / n,
                         "fisher_over_plain": ratio})
            print(f"  LayerNorm → Linear {d}×{d_out}, {t} tokens: plain "
                  f"{rows[-1]['plain_ms_per_sequence']:.2f} ms/seq, Fisher "
                  f"{rows[-1]['fisher_ms_per_sequence']:.2f} ms/seq = {ratio:.2f}×", flush=True)
    return rows


def state_bytes_per_param() -> dict[str, float]:
    """Bytes of state per parameter of real EWC and WVA instances, fp32 and bf16 storage."""
    from myelin.consolidation import EWC, WVA
    from myelin.importance import fisher

    torch.manual_seed(0)
    model = make_mlp()
    x, y = mlp_data(64)
    imp = fisher(model, (x, y), progress=False)
    n = sum(p.numel() for p in model.parameters())
    out = {}
    for dtype, label in ((None, "fp32"), (torch.bfloat16, "bf16")):
        ewc = EWC(model, 1.0, state_dtype=dtype)
        ewc.consolidate(imp)
        out[f"ewc_{label}"] = ewc.state_nbytes() / n
    for dtype, label in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
        wva = WVA(model, 1.0, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                  dtype=dtype)
        wva.consolidate(imp)
        out[f"wva_{label}"] = wva.state_nbytes() / n
    return out


# -- report --------------------------------------------------------------------------------------
def _gib(b: float) -> str:
    return f"{b / 2**30:.1f} GiB"


def _duration(s: float) -> str:
    return f"{s / 60:.1f} min" if s < 3600 else f"{s / 3600:.2f} h"


def summary_lines(data: dict[str, Any]) -> list[str]:
    """The printed summary of a result."""
    lines = [data["machine_note"]]
    for kind, label in (("mlp", "MLP 784-300-150-10"), ("llama", "tiny Llama")):
        imp, tr = data["scaling"][kind]["importance"], data["scaling"][kind]["training"]
        lines.append(
            f"{label}: Fisher {imp['one_process_samples_per_s']:.0f} → "
            f"{imp['two_processes_samples_per_s']:.0f} samples/s (speed-up "
            f"{imp['speedup']:.2f}×, efficiency {imp['efficiency']:.0%}; Fisher ÷ plain "
            f"{imp['fisher_over_plain_one_process']:.2f}×); DDP step plain "
            f"{tr['ms_per_step']['plain_one']:.1f} → {tr['ms_per_step']['plain_two']:.1f} ms "
            f"(speed-up {tr['speedup_plain']:.2f}×), EWC ÷ plain "
            f"{tr['ewc_over_plain_one_process']:.2f}× / {tr['ewc_over_plain_two_processes']:.2f}×"
            f" at 1 / 2 processes")
    lines.append(f"idle rank's CPU use while rank 0 ran alone: {data['idle_rank_cpu_share']:.1%}")
    lines.append("state bytes per parameter: " + ", ".join(
        f"{k} {v:g}" for k, v in data["state_bytes_per_param"].items()))
    est = data["estimate"]
    a = est["assumptions"]
    lines.append(f"estimate ({a['gpus']} GPUs, {a['sequences']:,} sequences × {a['tokens']} "
                 f"tokens, {a['peak_flops'] / 1e12:.0f} TFLOPS × {a['utilisation']:.0%}; "
                 f"measured Fisher ÷ plain {est['measured_inputs']['fisher_over_plain']:.2f}×, "
                 f"efficiency {est['measured_inputs']['two_process_efficiency']:.0%}):")
    for name, m in est["models"].items():
        s = m["state"]
        lines.append(
            f"  {name} ({m['parameters'] / 1e9:.2f}B): importance {_duration(m['importance_s'])}"
            f" ({m['importance_gpu_hours']:.2f} GPU-h); EWC state per GPU DDP "
            f"{_gib(s['ewc_fp32']['ddp_replicated_bytes_per_gpu'])} fp32 / "
            f"{_gib(s['ewc_bf16']['ddp_replicated_bytes_per_gpu'])} bf16, FSDP "
            f"{_gib(s['ewc_fp32']['fsdp_sharded_bytes_per_gpu'])} / "
            f"{_gib(s['ewc_bf16']['fsdp_sharded_bytes_per_gpu'])} "
            f"(= {s['ewc_fp32']['times_bf16_model']:g}× / {s['ewc_bf16']['times_bf16_model']:g}×"
            " the bf16 model)")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, one round (smoke test)")
    ap.add_argument("--repeats", type=int, default=None, help="timed rounds (default 7; quick 1)")
    ap.add_argument("--timeout", type=float, default=None,
                    help="seconds a collective may wait (default 300; quick 60)")
    ap.add_argument("--deadline", type=float, default=None,
                    help="seconds for the whole two-rank session (default 1800; quick 180)")
    ap.add_argument("--out", default=None, help="JSON path (default results/distributed.json)")
    args = ap.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.repeats is not None:
        sizes = dataclasses.replace(sizes, repeats=args.repeats,
                                    layer_repeats=max(1, args.repeats))
    torch.set_num_threads(1)            # per-layer costs: one thread, like each rank
    env, cmd = environment(), command("distributed", argv)   # the code as it is at the start
    cores = os.cpu_count() or 1
    note = (f"{cores} CPU cores; 2 processes of 1 thread each"
            + (" = every core of this machine (nothing left for other work)" if cores <= 2
               else "") + "; gloo over localhost.")
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    print("scaling at 1 and 2 processes (two gloo ranks) ...", flush=True)
    scaling = run_ranks(sizes, args.timeout or (60.0 if args.quick else 300.0),
                        args.deadline or (180.0 if args.quick else 1800.0))
    print(f"  done in {time.perf_counter() - t0:.0f} s", flush=True)
    print("per-layer costs (one thread) ...", flush=True)
    layers = layer_costs(sizes)
    state = state_bytes_per_param()
    largest = max(r["d_in"] for r in layers)
    fisher_ratio = max(r["fisher_over_plain"] for r in layers if r["d_in"] == largest)
    efficiency = scaling["llama"]["importance"]["efficiency"]
    idle = scaling.pop("idle_rank_cpu_share")
    data = {"benchmark": "distributed", "command": cmd, "environment": env,
            "quick": args.quick, "machine_note": note,
            "load_average_before_after": [load_before[0], os.getloadavg()[0]],
            "sizes": dataclasses.asdict(sizes),
            "what": {
                "scaling": "measured: two gloo ranks, 1 thread each; one-process arms on rank 0 "
                           "alone; medians of per-round paired ratios",
                "layers": "measured: LayerNorm → Linear, one thread, per sequence of T tokens",
                "state_bytes_per_param": "measured: state_nbytes() of real EWC/WVA instances",
                "estimate": "computed from the measured numbers and the stated assumptions"},
            "scaling": scaling, "idle_rank_cpu_share": idle, "layers": layers,
            "state_bytes_per_param": state,
            "estimate": estimates(fisher_ratio, efficiency, state),
            "seconds": time.perf_counter() - t0}
    for line in summary_lines(data):
        print(line, flush=True)
    write_json("distributed", data, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
