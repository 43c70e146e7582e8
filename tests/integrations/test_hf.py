"""The transformers Trainer integration on a tiny random-init Llama (CPU, seconds)."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from myelin.consolidation import EWC, L2, WVA  # noqa: E402
from myelin.importance import fisher  # noqa: E402
from myelin.integrations.hf import STATE_FILE, ConsolidationCallback  # noqa: E402

VOCAB = 32


class Tokens(torch.utils.data.Dataset):
    """Fixed random token sequences as Hugging Face dict samples."""

    def __init__(self, n: int = 16, t: int = 8, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, VOCAB, (n, t), generator=g)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "attention_mask": torch.ones_like(self.ids[i]),
                "labels": self.ids[i]}


def tiny_llama(intermediate_size: int = 24) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=16,
                                   intermediate_size=intermediate_size,
                                   num_hidden_layers=1, num_attention_heads=2,
                                   num_key_value_heads=1, max_position_embeddings=16)
    return transformers.LlamaForCausalLM(cfg)


def arguments(out, **kw) -> transformers.TrainingArguments:
    base = dict(output_dir=str(out), per_device_train_batch_size=4, max_steps=4,
                learning_rate=0.05, optim="sgd", lr_scheduler_type="constant", warmup_steps=0,
                max_grad_norm=0.0, report_to=[], use_cpu=True, save_strategy="no",
                logging_strategy="no", seed=0, data_seed=0, dataloader_num_workers=0,
                disable_tqdm=True)
    base.update(kw)
    return transformers.TrainingArguments(**base)


def consolidated_ewc(model, lam=10.0) -> EWC:  # lr·λ·max Ω ≈ 1.6 < 2: stable
    ewc = EWC(model, lam)
    ewc.consolidate(fisher(model, {"input_ids": Tokens(8, seed=1).ids}))
    return ewc


def params(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def train(model, args, callbacks=(), optimizers=(None, None), resume=None, trainer_cls=None):
    cls = trainer_cls or transformers.Trainer
    trainer = cls(model=model, args=args, train_dataset=Tokens(), callbacks=list(callbacks),
                  optimizers=optimizers)
    trainer.train(resume_from_checkpoint=resume)
    return params(model)


def drift(after, before) -> float:
    return sum(float((after[n] - before[n]).norm()) for n in before)


class PenaltyInLoss(transformers.Trainer):
    """The reference: EWC's penalty added to the loss (no clipping, no accumulation)."""

    ewc: EWC

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        return loss + self.ewc.penalty()


def test_callback_step_equals_the_penalty_in_the_loss(tmp_path):
    model = tiny_llama()
    start = params(model)
    ewc = consolidated_ewc(model)
    with_callback = train(model, arguments(tmp_path / "a"), [ConsolidationCallback(ewc)])

    ref_model = tiny_llama()
    ref_ewc = consolidated_ewc(ref_model)
    PenaltyInLoss.ewc = ref_ewc
    reference = train(ref_model, arguments(tmp_path / "b"), trainer_cls=PenaltyInLoss)
    plain = train(tiny_llama(), arguments(tmp_path / "c"))
    for n in reference:
        torch.testing.assert_close(with_callback[n], reference[n], rtol=1e-4, atol=1e-6)
    assert drift(with_callback, start) < drift(plain, start)


def test_the_pull_is_added_once_per_optimizer_step_under_accumulation(tmp_path):
    one = tiny_llama()
    a = train(one, arguments(tmp_path / "a"), [ConsolidationCallback(consolidated_ewc(one))])
    two = tiny_llama()
    b = train(two, arguments(tmp_path / "b", per_device_train_batch_size=2,
                             gradient_accumulation_steps=2),
              [ConsolidationCallback(consolidated_ewc(two))])
    for n in a:
        torch.testing.assert_close(a[n], b[n], rtol=1e-4, atol=1e-6)


def resumed_matches_full(build, model, ewc, lam, tmp_path):
    """Train `model` (consolidated by `ewc`) with checkpoints, then resume a fresh `build()`
    with a never consolidated EWC(λ) from step 2; the resumed weights equal the full run's.
    Returns (full weights, the fresh EWC, the Trainer arguments)."""
    args = arguments(tmp_path, save_strategy="steps", save_steps=2)
    full = train(model, args, [ConsolidationCallback(ewc)])
    assert (tmp_path / "checkpoint-2" / STATE_FILE).is_file()
    again = build()                     # a new process: a fresh model
    fresh = EWC(again, lam)
    resumed = train(again, args, [ConsolidationCallback(fresh)],
                    resume=str(tmp_path / "checkpoint-2"))
    for n in full:
        torch.testing.assert_close(resumed[n], full[n], rtol=1e-5, atol=1e-7)
    return full, fresh, args


def test_resume_restores_the_consolidation_state_from_the_checkpoint(tmp_path):
    model = tiny_llama()
    ewc = consolidated_ewc(model)
    _, fresh, _ = resumed_matches_full(tiny_llama, model, ewc, 10.0, tmp_path)
    for n in ewc.anchor:
        torch.testing.assert_close(fresh.anchor[n], ewc.anchor[n])


def test_resume_without_saved_state_says_where_it_looked(tmp_path):
    model = tiny_llama()
    args = arguments(tmp_path, save_strategy="steps", save_steps=2)
    train(model, args)                                  # checkpoints without myelin's state
    again = tiny_llama()
    with pytest.raises(ValueError, match="no saved consolidation state"):
        train(again, args, [ConsolidationCallback(consolidated_ewc(again))],
              resume=str(tmp_path / "checkpoint-2"))


def test_wva_is_the_trainer_optimizer_and_resumes(tmp_path):
    def build():
        model = tiny_llama()
        wva = WVA(model, 1e3, optimizer=torch.optim.SGD(model.parameters(), lr=0.05))
        wva.consolidate(fisher(model, {"input_ids": Tokens(8, seed=1).ids}))
        return model, wva

    model, wva = build()
    start = params(model)
    args = arguments(tmp_path, save_strategy="steps", save_steps=2)
    full = train(model, args, optimizers=(wva, None))
    plain = train(tiny_llama(), arguments(tmp_path / "plain"))
    assert drift(full, start) < 0.5 * drift(plain, start)

    again = tiny_llama()
    empty = WVA(again, 1e3, optimizer=torch.optim.SGD(again.parameters(), lr=0.05))
    resumed = train(again, args, optimizers=(empty, None), resume=str(tmp_path / "checkpoint-2"))
    for n in full:
        torch.testing.assert_close(resumed[n], full[n], rtol=1e-5, atol=1e-7)


class StepRecorder(transformers.TrainerCallback):
    """Record every optimizer step: the trainable parameters and gradients the step's pre-hooks
    see, and the parameters after it. Listed before a ConsolidationCallback, it sees the
    gradients before the pull (step pre-hooks run in the order they were registered)."""

    def __init__(self) -> None:
        self.steps: list[dict[str, dict[str, torch.Tensor]]] = []
        self.hooked = False

    def _hook(self, model, optimizer) -> None:
        inner = getattr(optimizer, "optimizer", optimizer)      # under AcceleratedOptimizer
        named = {n: p for n, p in model.named_parameters() if p.requires_grad}

        def pre(opt, args, kwargs):
            self.steps.append({"before": {n: p.detach().clone() for n, p in named.items()},
                               "grad": {n: p.grad.clone() for n, p in named.items()}})

        def post(opt, args, kwargs):
            self.steps[-1]["after"] = {n: p.detach().clone() for n, p in named.items()}

        inner.register_step_pre_hook(pre)
        inner.register_step_post_hook(post)
        self.hooked = True

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        if optimizer is not None:
            self._hook(model, optimizer)

    def on_step_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        if not self.hooked and optimizer is not None:
            self._hook(model, optimizer)


def assert_close_to_float32_run(mixed, fp32, start, tol=0.02):
    """bf16 autocast changes the loss gradient by its rounding: the update (weights − start)
    of the mixed-precision run is within `tol` of the float32 run's, but not equal to it."""
    assert drift(mixed, fp32) > 0                                 # autocast did run
    assert drift(mixed, fp32) < tol * drift(fp32, start)


def test_bf16_step_adds_the_hand_computed_pull_to_float32_gradients(tmp_path):
    """Under bf16 autocast every SGD step is θ − lr·(g + λΩ(θ − θ*)), all in float32."""
    model = tiny_llama()
    start = params(model)
    ewc = consolidated_ewc(model)
    omega = {n: v.clone() for n, v in ewc.omega.items()}
    anchor = {n: v.clone() for n, v in ewc.anchor.items()}
    recorder = StepRecorder()
    after = train(model, arguments(tmp_path / "a", bf16=True),
                  [recorder, ConsolidationCallback(ewc)])
    assert len(recorder.steps) == 4
    assert all(v.dtype == torch.float32 for v in [*ewc.omega.values(), *ewc.anchor.values()])
    for step in recorder.steps:
        for n, theta in step["before"].items():
            g = step["grad"][n]
            assert g.dtype == torch.float32
            expected = theta - 0.05 * (g + 10.0 * omega[n] * (theta - anchor[n]))
            torch.testing.assert_close(step["after"][n], expected, rtol=1e-5, atol=1e-7)
    for n in omega:                        # the state is not changed by training
        assert torch.equal(ewc.omega[n], omega[n]) and torch.equal(ewc.anchor[n], anchor[n])

    reference = tiny_llama()
    fp32 = train(reference, arguments(tmp_path / "b"),
                 [ConsolidationCallback(consolidated_ewc(reference))])
    assert_close_to_float32_run(after, fp32, start)


def consolidated_wva(model, lam=1e3, **sgd) -> WVA:
    trainable = [p for p in model.parameters() if p.requires_grad]
    wva = WVA(model, lam, optimizer=torch.optim.SGD(trainable, lr=0.05, **sgd))
    wva.consolidate(fisher(model, {"input_ids": Tokens(8, seed=1).ids}))
    return wva


def test_wva_under_accumulation_equals_the_full_batch(tmp_path):
    """Accumulating 2 micro-batches of 2 gives the batch-of-4 step: one attenuated step per
    optimizer step, on the mean gradient."""
    one = tiny_llama()
    start = params(one)
    a = train(one, arguments(tmp_path / "a"), optimizers=(consolidated_wva(one), None))
    two = tiny_llama()
    b = train(two, arguments(tmp_path / "b", per_device_train_batch_size=2,
                             gradient_accumulation_steps=2),
              optimizers=(consolidated_wva(two), None))
    for n in a:
        torch.testing.assert_close(a[n], b[n], rtol=1e-4, atol=1e-6)
    # a different run (4 steps of 2 sequences, no accumulation) is far from it
    three = tiny_llama()
    c = train(three, arguments(tmp_path / "c", per_device_train_batch_size=2),
              optimizers=(consolidated_wva(three), None))
    assert drift(c, a) > 0.1 * drift(a, start)


def test_wva_bf16_step_is_the_attenuated_float32_step(tmp_path):
    """Under bf16 autocast every step is θ − lr·A ⊙ g with float32 g and A."""
    model = tiny_llama()
    start = params(model)
    wva = consolidated_wva(model)
    factor = wva.factor
    assert all(v.dtype == torch.float32 for v in factor.values())
    recorder = StepRecorder()
    after = train(model, arguments(tmp_path / "a", bf16=True), [recorder],
                  optimizers=(wva, None))
    assert len(recorder.steps) == 4
    for step in recorder.steps:
        for n, theta in step["before"].items():
            assert step["grad"][n].dtype == torch.float32
            expected = theta - 0.05 * factor[n] * step["grad"][n]
            torch.testing.assert_close(step["after"][n], expected, rtol=1e-5, atol=1e-7)
    assert all(torch.equal(wva.factor[n], factor[n]) for n in factor)

    reference = tiny_llama()
    fp32 = train(reference, arguments(tmp_path / "b"),
                 optimizers=(consolidated_wva(reference), None))
    assert_close_to_float32_run(after, fp32, start)


def micro_batches() -> list[dict[str, torch.Tensor]]:
    """The 16 training sequences as 4 dict batches of 4."""
    ids = Tokens().ids
    return [{"input_ids": ids[i:i + 4], "attention_mask": torch.ones_like(ids[i:i + 4]),
             "labels": ids[i:i + 4]} for i in range(0, 16, 4)]


def fp16_loop(method, scaled, poison=None, skip=None):
    """SGD with momentum under fp16 autocast on the CPU, the EWC callback (its step hook) or WVA
    stepping; `scaled`: through a torch.amp.GradScaler, with an inf put into one gradient after
    the backward of batch `poison`; `skip`: leave batch `skip` out."""
    model = tiny_llama()
    if method == "ewc":
        consolidator = consolidated_ewc(model)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        ConsolidationCallback(consolidator).on_train_begin(None, None, None, model=model,
                                                           optimizer=optimizer)
    else:
        consolidator = optimizer = consolidated_wva(model, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 8, growth_interval=1000) \
        if scaled else None
    report = {"consolidator": consolidator, "scaler": scaler}
    for i, batch in enumerate(micro_batches()):
        if i == skip:
            continue
        with torch.autocast("cpu", dtype=torch.float16):
            loss = model(**batch).loss
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            if i == poison:
                model.model.layers[0].mlp.up_proj.weight.grad[0, 0] = float("inf")
                report["weights_before"] = params(model)
                report["state_before"] = consolidator.state_dict() if method == "wva" \
                    else optimizer.state_dict()
            scaler.step(optimizer)
            scaler.update()
            if i == poison:
                report["weights_after"] = params(model)
                report["state_after"] = consolidator.state_dict() if method == "wva" \
                    else optimizer.state_dict()
        optimizer.zero_grad()
    report["weights"] = params(model)
    return report


def same_state(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same_state(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.parametrize("method", ["ewc", "wva"])
def test_fp16_grad_scaler_unscales_first_and_a_skipped_step_changes_nothing(method, monkeypatch):
    """The Trainer's fp16 needs a GPU (accelerate runs fp16=True on the CPU as float32), so the
    loss scaling is tested with torch.amp.GradScaler directly. The pull (EWC) or attenuation
    (WVA) acts on the unscaled gradient: the scaled run equals an unscaled one. A step the
    scaler skips (inf gradient) leaves the weights, the momentum and the consolidator's state
    as they were, and adds no pull: the run equals one without that batch."""
    start = params(tiny_llama())
    calls = []
    original = EWC.apply_to_grad

    def counted(self):
        calls.append(1)
        original(self)

    monkeypatch.setattr(EWC, "apply_to_grad", counted)
    scaled = fp16_loop(method, scaled=True, poison=1)
    assert scaled["scaler"].get_scale() == 2.0 ** 7                 # exactly one skipped step
    assert same_state(scaled["weights_after"], scaled["weights_before"])
    assert same_state(scaled["state_after"], scaled["state_before"])
    if method == "ewc":
        assert len(calls) == 3                                      # no pull on the skipped step
    reference = fp16_loop(method, scaled=False, skip=1)
    # fp16 gradients scaled by 2⁸ differ only where they were subnormal unscaled
    weights, ref = scaled["weights"], reference["weights"]
    assert drift(weights, ref) < 1e-3 * drift(ref, start)
    assert same_state(scaled["consolidator"].consolidation_state(),
                      reference["consolidator"].consolidation_state())


def lora_llama(targets=("q_proj", "v_proj")) -> torch.nn.Module:
    """A LoRA model on the tiny Llama, adapters random (B ≠ 0: every adapter weight matters)."""
    peft = pytest.importorskip("peft")
    return peft.get_peft_model(tiny_llama(), peft.LoraConfig(
        r=2, lora_alpha=4, target_modules=list(targets), lora_dropout=0.0,
        init_lora_weights=False))


def test_wva_on_a_lora_model_attenuates_the_adapters_only_and_resumes(tmp_path):
    model = lora_llama()
    start = params(model)
    wva = consolidated_wva(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(wva.factor) == trainable and all("lora_" in n for n in trainable)
    args = arguments(tmp_path, save_strategy="steps", save_steps=2)
    full = train(model, args, optimizers=(wva, None))
    moved = [n for n in start if not torch.equal(start[n], full[n])]
    assert moved and all("lora_" in n for n in moved)
    plain = lora_llama()
    unattenuated = train(plain, arguments(tmp_path / "plain"), optimizers=(
        torch.optim.SGD([p for p in plain.parameters() if p.requires_grad], lr=0.05), None))
    assert drift(full, start) < 0.5 * drift(unattenuated, start)

    again = lora_llama()                       # a new process: a WVA never consolidated
    empty = WVA(again, 1e3, optimizer=torch.optim.SGD(
        [p for p in again.parameters() if p.requires_grad], lr=0.05))
    resumed = train(again, args, optimizers=(empty, None), resume=str(tmp_path / "checkpoint-2"))
    for n in full:
        torch.testing.assert_close(resumed[n], full[n], rtol=1e-5, atol=1e-7)
    for n, a in wva.factor.items():
        torch.testing.assert_close(empty.factor[n], a)


def test_lora_resume_restores_the_consolidation_state_from_the_checkpoint(tmp_path):
    model = lora_llama()
    start = params(model)
    ewc = EWC(model, 200.0)                     # lr·λ·max Ω ≈ 1.0 < 2: stable
    ewc.consolidate(fisher(model, {"input_ids": Tokens(8, seed=1).ids}))
    full, fresh, args = resumed_matches_full(lora_llama, model, ewc, 200.0, tmp_path)
    for n in ewc.anchor:
        torch.testing.assert_close(fresh.anchor[n], ewc.anchor[n])
        torch.testing.assert_close(fresh.omega[n], ewc.omega[n])
    # the restored pull matters: resumed without it, the last two steps go elsewhere
    unrestored = lora_llama()
    without = train(unrestored, args, [ConsolidationCallback(EWC(unrestored, 200.0),
                                                             restore=False)],
                    resume=str(tmp_path / "checkpoint-2"))
    assert drift(without, full) > 0.1 * drift(full, start)


def test_lora_consolidator_must_be_built_after_wrapping(tmp_path):
    peft = pytest.importorskip("peft")
    config = peft.LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"],
                             lora_dropout=0.0)
    base = tiny_llama()
    early = L2(base, 1.0)                          # built on the unwrapped model
    model = peft.get_peft_model(base, config)
    with pytest.raises(ValueError, match="get_peft_model"):
        train(model, arguments(tmp_path / "a"), [ConsolidationCallback(early)])

    model = peft.get_peft_model(tiny_llama(), config)
    ewc = EWC(model, 50.0)
    ewc.consolidate(fisher(model, {"input_ids": Tokens(8, seed=1).ids}))
    assert all("lora_" in n for n in ewc.anchor)
    before = params(model)
    after = train(model, arguments(tmp_path / "b"), [ConsolidationCallback(ewc)])
    moved = [n for n in before if not torch.equal(before[n], after[n])]
    assert moved and all("lora_" in n for n in moved)


def test_wva_built_before_peft_wrapping_is_refused_at_the_first_step(tmp_path):
    """Built on the bare model, a WVA holds the base weights that get_peft_model freezes; in
    the Trainer its first step names the adapters it lacks and the weights it would guard."""
    peft = pytest.importorskip("peft")
    base = tiny_llama()
    early = consolidated_wva(base)
    model = peft.get_peft_model(base, peft.LoraConfig(r=2, lora_alpha=4,
                                                      target_modules=["q_proj", "v_proj"],
                                                      lora_dropout=0.0))
    before = params(model)
    with pytest.raises(ValueError, match=r"trainable parameters changed.*added \[.*lora_A.*"
                                         r"removed \[.*embed_tokens\.weight.*\] and \d+ more"
                                         r".*wrapped by peft \(get_peft_model\) after the WVA "
                                         r"was built"):
        train(model, arguments(tmp_path), optimizers=(early, None))
    assert same_state(params(model), before)


def test_resume_with_another_models_consolidation_state_names_the_mismatch(tmp_path):
    """A callback restoring a state saved for a model of other shapes says which and where."""
    other = tiny_llama(intermediate_size=20)
    train(other, arguments(tmp_path / "other", save_strategy="steps", save_steps=2),
          [ConsolidationCallback(consolidated_ewc(other))])
    args = arguments(tmp_path / "mine", save_strategy="steps", save_steps=2)
    train(tiny_llama(), args)
    model = tiny_llama()
    callback = ConsolidationCallback(consolidated_ewc(model),
                                     restore=tmp_path / "other" / "checkpoint-2")
    with pytest.raises(ValueError, match=r"(?s)resumed at step 2.*other.*checkpoint-2.*"
                                         r"different model.*mlp.down_proj.weight: saved "
                                         r"\(16, 20\) vs model \(16, 24\)"):
        train(model, args, [callback], resume=str(tmp_path / "mine" / "checkpoint-2"))


def test_wva_resume_from_another_models_checkpoint_names_the_mismatch(tmp_path):
    """A checkpoint of LoRA on q, v resumed by LoRA on q, k, v: WVA's state (in the Trainer's
    optimizer checkpoint) is refused, naming the adapters the checkpoint lacks."""
    model = lora_llama()
    args = arguments(tmp_path, save_strategy="steps", save_steps=2)
    train(model, args, optimizers=(consolidated_wva(model), None))
    wider = lora_llama(("q_proj", "k_proj", "v_proj"))
    with pytest.raises(ValueError, match=r"different model.*only in the model \[.*k_proj.lora_A"):
        train(wider, args, optimizers=(consolidated_wva(wider), None),
              resume=str(tmp_path / "checkpoint-2"))


def test_wva_in_a_callback_is_refused():
    model = tiny_llama()
    with pytest.raises(TypeError, match="optimizers"):
        ConsolidationCallback(WVA(model, 1.0, optimizer=torch.optim.SGD(model.parameters(), 0.1)))


def word_tokenizer():
    """An offline word-level tokenizer over the tiny model's vocabulary."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["<pad>", "<eos>", "<unk>"] + [f"w{i}" for i in range(VOCAB - 3)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>",
                                                eos_token="<eos>", unk_token="<unk>")


def test_self_generated_text_masks_the_prompts_and_is_seeded():
    from myelin.integrations.hf import self_generated

    model = tiny_llama().eval()
    tok = word_tokenizer()
    prompts = ["w1 w2 w3", "w4 w5"]
    a = self_generated(model, tok, prompts, samples_per_prompt=3, max_new_tokens=5, seed=7,
                       batch_size=4)
    b = self_generated(model, tok, prompts, samples_per_prompt=3, max_new_tokens=5, seed=7,
                       batch_size=4)
    assert [len(x["input_ids"]) for x in a] == [4, 2]
    for x, y in zip(a, b):
        assert all(torch.equal(x[k], y[k]) for k in x)
    first = a[0]
    assert torch.equal(first["input_ids"][0, :3], torch.tensor([4, 5, 6]))
    assert (first["labels"][:3, :3] == -100).all()          # prompt tokens do not count
    assert (first["labels"][3, :2] == -100).all() and first["labels"][3, 2] != -100
    counted = first["labels"] != -100
    assert counted.any() and (first["attention_mask"][counted] == 1).all()
    imp = fisher(model, a, empirical=False, seed=0)
    assert imp.meta["n_samples"] == 6
    with pytest.raises(ValueError, match="prompts"):
        self_generated(model, tok, [])


def test_self_generated_refuses_a_tokenizer_larger_than_the_vocabulary():
    from myelin.integrations.hf import self_generated

    tok = word_tokenizer()
    tok.add_tokens([f"extra{i}" for i in range(4)])                # VOCAB + 4 tokens
    model = tiny_llama().eval()
    calls = []
    model.generate = lambda *a, **kw: calls.append(1)                 # must not be reached
    with pytest.raises(ValueError, match=rf"tokenizer has {VOCAB + 4} tokens.*embedding has "
                                         rf"{VOCAB} rows"):
        self_generated(model, tok, ["w1 w2"], max_new_tokens=2)
    assert not calls


def test_readme_hf_example_runs(tmp_path, monkeypatch):
    import io
    import math
    from contextlib import redirect_stdout
    from pathlib import Path

    text = (Path(__file__).parents[2] / "README.md").read_text()
    block = text.split("<!-- example:hf -->")[1].split("<!-- /example:hf -->")[0]
    code = block.split("```python\n")[1].split("```")[0]
    assert len(code.strip().splitlines()) <= 25          # the bound
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    value = float(out.getvalue().strip().splitlines()[-1].split(":")[-1])
    assert math.isfinite(value) and value > 0
