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


def tiny_llama() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=24,
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


def test_resume_restores_the_consolidation_state_from_the_checkpoint(tmp_path):
    model = tiny_llama()
    ewc = consolidated_ewc(model)
    args = arguments(tmp_path, save_strategy="steps", save_steps=2)
    full = train(model, args, [ConsolidationCallback(ewc)])
    assert (tmp_path / "checkpoint-2" / STATE_FILE).is_file()

    # a new process: a fresh model and an EWC that was never consolidated
    again = tiny_llama()
    fresh = EWC(again, 10.0)
    resumed = train(again, args, [ConsolidationCallback(fresh)],
                    resume=str(tmp_path / "checkpoint-2"))
    for n in full:
        torch.testing.assert_close(resumed[n], full[n], rtol=1e-5, atol=1e-7)
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


def test_bf16_mixed_precision_keeps_float32_state(tmp_path):
    model = tiny_llama()
    start = params(model)
    ewc = consolidated_ewc(model)
    after = train(model, arguments(tmp_path / "a", bf16=True), [ConsolidationCallback(ewc)])
    plain = train(tiny_llama(), arguments(tmp_path / "b", bf16=True))
    assert all(v.dtype == torch.float32 for v in ewc.anchor.values())
    assert all(torch.isfinite(v).all() for v in after.values())
    assert drift(after, start) < drift(plain, start)


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
