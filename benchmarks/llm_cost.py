"""Cost on a transformer (issue 20): estimators and consolidated Trainer steps ÷ plain ones.

One process, ratios of paired alternating timings (`benchmarks._common.paired`):

* per-sequence Fisher (myelin's exact estimator, one batched pass) ÷ one plain forward +
  backward of the mean loss over the same sequences — target ≤ 1.5×;
* the batch-1 loop public EWC code uses (one backward per sequence, squared) ÷ the same plain
  pass — for comparison;
* a ``transformers.Trainer`` step with `ConsolidationCallback(EWC)` ÷ a plain Trainer step —
  target ≤ 1.10×; with WVA (around the AdamW the plain Trainer builds for itself: fused) as the
  Trainer's optimizer — target ≤ 1.05× (the steps alone, timed
  by a callback from step begin to step end, after the first step of each run: building the
  Trainer and the consolidator and the first step, which creates AdamW's state (two tensors
  the size of the model, lazily) and EWC's coefficients, are paid once per fine-tuning run
  and on this machine vary by seconds with how fast fresh memory faults in);
* the two Trainer rows again after `myelin.memory.keep_freed_memory()` (rows ``*_kept_memory``):
  with glibc's default malloc, whether a step's activations and gradients fault in as fresh
  pages depends on the process's allocation history, and holding the consolidator's state
  (or an equal dummy allocation in a plain run) moved plain steps here from 0 to ~230 000
  minor faults per step; the minor faults per timed step are recorded in every Trainer row;
* state bytes ÷ the fp32 model's bytes for EWC and WVA, fp32 and bf16 state.

    python -m benchmarks.llm_cost                     # SmolLM2-135M → results/llm_cost.json
    python -m benchmarks.llm_cost --quick --out /tmp/c.json     # tiny random Llama (tests)
"""

from __future__ import annotations

import argparse
import copy
import statistics
from typing import Any

import torch

from benchmarks._common import command, environment, paired, write_json
from benchmarks.llm import load_smollm2, tiny_model
from myelin.consolidation import EWC, WVA
from myelin.importance import fisher
from myelin.losses import CausalLM
from myelin.memory import keep_freed_memory


def plain_pass(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> None:
    """One forward + backward of the mean loss (what a training step computes)."""
    model.zero_grad(set_to_none=True)
    CausalLM()(model, batch).backward()


def batch1_loop(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> None:
    """Per-sequence squared gradients by one backward per sequence (public EWC code)."""
    params = [p for p in model.parameters() if p.requires_grad]
    sums = [torch.zeros_like(p) for p in params]
    loss = CausalLM()
    for k in range(len(batch["input_ids"])):
        one = {key: v[k:k + 1] for key, v in batch.items()}
        for s, g in zip(sums, torch.autograd.grad(loss(model, one), params)):
            s.add_(g.square())


def trainer_runner(model: torch.nn.Module, batch: dict[str, torch.Tensor], steps: int,
                   kind: str, out: str) -> Any:
    """A function training `steps` Trainer steps from the same state on every call.

    It returns the seconds of the steps themselves (from each step's begin to its end: forward,
    backward, the consolidator's work and the optimizer step) after the first, not of building
    the Trainer or the consolidator or of the first step's lazy state, which a fine-tuning run
    pays once. `steps` ≥ 2. Each call also appends to ``run.optimizer_seconds`` the seconds of
    the same steps' optimizer phase alone (from the Trainer's ``on_pre_optimizer_step`` to its
    ``on_optimizer_step``: EWC's pull, or WVA's attenuated step, and the step itself), and to
    ``run.faults`` the minor page faults of the timed steps.
    """
    import resource
    import time

    import transformers

    from myelin.integrations.hf import ConsolidationCallback

    state = copy.deepcopy(model.state_dict())

    class Rows(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(batch["input_ids"]) * steps

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            k = i % len(batch["input_ids"])
            return {"input_ids": batch["input_ids"][k], "labels": batch["input_ids"][k]}

    args = transformers.TrainingArguments(
        output_dir=out, per_device_train_batch_size=len(batch["input_ids"]), max_steps=steps,
        learning_rate=1e-4, report_to=[], use_cpu=True, save_strategy="no",
        logging_strategy="no", disable_tqdm=True, dataloader_num_workers=0, seed=0)
    imp = fisher(model, batch, progress=False)

    class StepTimer(transformers.TrainerCallback):
        def __init__(self) -> None:
            self.seconds, self.optimizer_seconds = 0.0, 0.0
            self.faults, self.faults_at_start = 0, 0
            self.start = self.pre_optimizer = 0.0

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.start = time.perf_counter()
            self.faults_at_start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt

        def on_pre_optimizer_step(self, args: Any, state: Any, control: Any,
                                  **kwargs: Any) -> None:
            self.pre_optimizer = time.perf_counter()

        def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step > 0:                # (not yet incremented: the 2nd step on)
                self.optimizer_seconds += time.perf_counter() - self.pre_optimizer

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step > 1:                # the first step creates the state
                self.seconds += time.perf_counter() - self.start
                self.faults += (resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                                - self.faults_at_start)

    def run() -> float:
        model.load_state_dict(state)
        timer = StepTimer()
        callbacks: list[Any] = []
        optimizers: tuple[Any, Any] = (None, None)
        if kind == "ewc":
            ewc = EWC(model, 1.0)
            ewc.consolidate(imp)
            callbacks = [ConsolidationCallback(ewc)]
        elif kind == "wva":
            # the optimizer the plain Trainer builds for itself (fused AdamW), wrapped
            cls, kwargs = transformers.Trainer.get_optimizer_cls_and_kwargs(args, model)
            wva = WVA(model, 1.0, optimizer=cls(model.parameters(), **kwargs))
            wva.consolidate(imp)
            optimizers = (wva, None)
        trainer = transformers.Trainer(model=model, args=args, train_dataset=Rows(),
                                       callbacks=[*callbacks, timer], optimizers=optimizers)
        trainer.train()
        run.optimizer_seconds.append(timer.optimizer_seconds)  # type: ignore[attr-defined]
        run.faults.append(timer.faults)  # type: ignore[attr-defined]
        return timer.seconds

    run.optimizer_seconds = []  # type: ignore[attr-defined]
    run.faults = []  # type: ignore[attr-defined]
    return run


def trainer_rows(model: torch.nn.Module, batch: dict[str, torch.Tensor], args: Any, tmp: str,
                 rows: dict[str, Any], suffix: str) -> None:
    """Rows ``trainer_ewc{suffix}`` and ``trainer_wva{suffix}``: paired against plain steps."""
    plain = trainer_runner(model, batch, args.steps, "plain", tmp)
    timed = args.steps - 1
    for kind, target in (("ewc", "≤ 1.10×"), ("wva", "≤ 1.05×")):
        plain.optimizer_seconds.clear()
        plain.faults.clear()
        runner = trainer_runner(model, batch, args.steps, kind, tmp)
        ratio, t_base, t_fn, _ = paired(plain, runner, args.repeats, self_timed=True)
        # the runs `paired` timed: not its first call of each (a warm-up), so that each
        # phase's median is over the same runs as the step's
        for timer in (plain, runner):
            del timer.optimizer_seconds[0], timer.faults[0]
        opt_plain = statistics.median(plain.optimizer_seconds) / timed
        opt_fn = statistics.median(runner.optimizer_seconds) / timed
        rows[f"trainer_{kind}{suffix}"] = {
            "ratio": ratio, "plain_s": t_base / timed, "s": t_fn / timed, "target": target,
            # the optimizer phase alone, and the step ratio if only it differed
            "optimizer_phase_s": opt_fn, "plain_optimizer_phase_s": opt_plain,
            "ratio_optimizer_phase_only": (t_base / timed + opt_fn - opt_plain)
            / (t_base / timed),
            "minor_faults_per_step": statistics.median(runner.faults) / timed,
            "plain_minor_faults_per_step": statistics.median(plain.faults) / timed}
        print(f"Trainer step with {kind}{suffix} {ratio:.3f}× a plain Trainer step; optimizer "
              f"phase {opt_fn:.3f} s vs {opt_plain:.3f} s", flush=True)


def state_ratios(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, float]:
    """State bytes ÷ fp32 model bytes, EWC and WVA, fp32 and bf16 state."""
    imp = fisher(model, batch, progress=False)
    fp32 = sum(p.numel() * 4 for p in model.parameters())
    out = {}
    for dtype, label in ((None, "fp32"), (torch.bfloat16, "bf16")):
        ewc = EWC(model, 1.0, state_dtype=dtype)
        ewc.consolidate(imp)
        out[f"ewc_{label}"] = ewc.state_nbytes() / fp32
    for dtype, label in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
        wva = WVA(model, 1.0, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                  dtype=dtype)
        wva.consolidate(imp)
        out[f"wva_{label}"] = wva.state_nbytes() / fp32
    return out


def main(argv: list[str] | None = None) -> int:
    """Measure; write the JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny random Llama (tests)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=4,
                   help="Trainer steps per run; all but the first are timed (≥ 2)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.steps < 2:
        p.error("--steps must be ≥ 2: the first step of a run is not timed")
    if args.threads:
        torch.set_num_threads(args.threads)
    model, _ = tiny_model() if args.quick else load_smollm2()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (args.batch, args.tokens), generator=g)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    model.eval()
    rows: dict[str, Any] = {}
    base = lambda: plain_pass(model, batch)  # noqa: E731
    ratio, t_base, t_fn, _ = paired(base, lambda: fisher(model, batch, progress=False),
                                    args.repeats)
    rows["fisher"] = {"ratio": ratio, "plain_s": t_base, "s": t_fn, "target": "≤ 1.5×"}
    print(f"per-sequence Fisher {ratio:.2f}× a plain forward+backward", flush=True)
    ratio, t_base, t_fn, _ = paired(base, lambda: batch1_loop(model, batch), args.repeats)
    rows["batch1_loop"] = {"ratio": ratio, "plain_s": t_base, "s": t_fn, "target": "—"}
    print(f"batch-1 loop {ratio:.2f}× a plain forward+backward", flush=True)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        # first with glibc's malloc as the process has it, then with freed memory kept for
        # reuse (`myelin.memory.keep_freed_memory`): whether a step's activations and
        # gradients fault in afresh depends on the allocation history (see that module)
        for suffix in ("", "_kept_memory"):
            if suffix:
                kept = keep_freed_memory()
                print(f"keep_freed_memory(): {kept}", flush=True)
                if not kept:
                    break
            trainer_rows(model, batch, args, tmp, rows, suffix)
    write_json("llm_cost", {
        "what": "time ÷ the plain computation, one process, paired alternating rounds; "
                f"{'tiny random Llama' if args.quick else 'SmolLM2-135M'}, batch "
                f"{args.batch} × {args.tokens} tokens",
        "command": command("llm_cost", argv), "environment": environment(),
        "parameters": sum(q.numel() for q in model.parameters()), "rows": rows,
        "state_bytes_per_fp32_model": state_ratios(model, batch),
        "repeats": args.repeats}, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
