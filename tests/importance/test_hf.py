"""Estimators on Hugging Face models (tiny random-init configs, no downloads) against naive
per-sequence loops: dict batches, the causal-LM shift, -100 and padding ignored, tied
embeddings, GPT-2's Conv1D, Llama's RMSNorm, attention projections, PEFT/LoRA."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import myelin.importance as mi
from myelin.losses import CausalLM, ModelLoss, default_loss

from .models import inverse_cdf

transformers = pytest.importorskip("transformers")

VOCAB = 40


def tiny_llama(tied: bool = True) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=24,
                                   num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, max_position_embeddings=32,
                                   tie_word_embeddings=tied)
    return transformers.LlamaForCausalLM(cfg).eval()


def tiny_gpt2() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=16, n_layer=2,
                                  n_head=2)
    return transformers.GPT2LMHeadModel(cfg).eval()


def tiny_bert() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=24,
                                  max_position_embeddings=32, num_labels=3)
    return transformers.BertForSequenceClassification(cfg).eval()


def lm_batch(n: int = 5, t: int = 8, seed: int = 1) -> dict[str, torch.Tensor]:
    """Right-padded sequences of different lengths; labels -100 on padding and on one token."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (n, t), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 5:] = 0
    mask[2, 3:] = 0
    labels = ids.masked_fill(mask == 0, -100)
    labels[1, 4] = -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def naive_lm(model, batch, objective) -> dict[str, torch.Tensor]:
    """mean over sequences of f(per-sequence gradient), each sequence alone and unpadded."""
    params = dict(model.named_parameters())
    names = [k for k, p in params.items() if p.requires_grad]
    out = {k: torch.zeros_like(params[k]) for k in names}
    n = len(batch["input_ids"])
    for k in range(n):
        length = int(batch["attention_mask"][k].sum())
        ids = batch["input_ids"][k:k + 1, :length]
        logits = model(input_ids=ids).logits[0, :-1]
        targets = batch["labels"][k, 1:length]
        value, reduce = objective(logits, targets)
        grads = torch.autograd.grad(value, [params[k] for k in names])
        for name, g in zip(names, grads):
            out[name] += reduce(g)
    return {k: v / n for k, v in out.items()}


def empirical(logits, targets):
    keep = targets != -100
    logp = F.log_softmax(logits, -1)[keep]
    return logp.gather(1, targets[keep, None]).sum(), torch.square


def mas_objective(logits, targets):
    keep = targets != -100
    p = F.softmax(logits, -1)[keep]
    return (p * p).sum(), torch.abs


def assert_close(imp, ref, tol=1e-4):
    assert set(imp) == set(ref)
    for name, r in ref.items():
        err = float((imp[name] - r).norm() / r.norm().clamp_min(1e-30))
        assert err <= tol, f"{name}: relative error {err:.2e}"


@pytest.mark.parametrize("build", [tiny_llama, tiny_gpt2], ids=["llama-tied", "gpt2-conv1d"])
def test_causal_lm_empirical_fisher_is_exact_per_sequence(build):
    model = build()
    batch = lm_batch()
    imp = mi.fisher(model, batch, batch_size=2, fallback="error")
    assert imp.meta["n_samples"] == 5
    assert_close(imp, naive_lm(model, batch, empirical))


@pytest.mark.parametrize("build", [tiny_llama, tiny_gpt2], ids=["llama-tied", "gpt2-conv1d"])
def test_causal_lm_mas_is_exact_per_sequence(build):
    model = build()
    batch = lm_batch()
    assert_close(mi.mas(model, batch, batch_size=3, fallback="error"),
                 naive_lm(model, batch, mas_objective))


def naive_per_token(model, batch, objective):
    """mean over counted tokens of f(gradient of that token's objective alone)."""
    params = dict(model.named_parameters())
    out = {k: torch.zeros_like(p) for k, p in params.items()}
    count = 0
    for k in range(len(batch["input_ids"])):
        length = int(batch["attention_mask"][k].sum())
        logits = model(input_ids=batch["input_ids"][k:k + 1, :length]).logits[0, :-1]
        targets = batch["labels"][k, 1:length]
        for t in range(length - 1):
            if targets[t] == -100:
                continue
            only = torch.full_like(targets, -100)
            only[t] = targets[t]
            value, reduce = objective(logits, only)
            grads = torch.autograd.grad(value, list(params.values()), retain_graph=True)
            for name, g in zip(params, grads):
                out[name] += reduce(g)
            count += 1
    return {k: v / count for k, v in out.items()}, count


@pytest.mark.parametrize("estimator,objective", [(mi.fisher, empirical), (mi.mas, mas_objective)],
                         ids=["fisher", "mas"])
def test_per_token_option_makes_every_token_a_sample(estimator, objective):
    model = tiny_llama()
    batch = lm_batch(n=3, t=6)
    ref, count = naive_per_token(model, batch, objective)
    imp = estimator(model, batch, per_token=True, batch_size=4, fallback="error")
    assert imp.meta["n_samples"] == count and imp.meta["per_token"]
    assert_close(imp, ref)


def test_untied_llama_and_a_list_of_dict_batches():
    model = tiny_llama(tied=False)
    batch = lm_batch()
    chunks = [{k: v[i:i + 2] for k, v in batch.items()} for i in range(0, 5, 2)]
    assert_close(mi.fisher(model, chunks, fallback="error"), naive_lm(model, batch, empirical))


@pytest.mark.parametrize("build", [tiny_llama, tiny_gpt2], ids=["llama-tied", "gpt2-conv1d"])
def test_sampled_fisher_draws_every_token_from_the_model(build):
    """Labels drawn per token from the model's own next-token distribution (same generator
    as the estimator, one batch), padding ignored."""
    model = build()
    batch = lm_batch()
    del batch["labels"]
    imp = mi.fisher(model, batch, empirical=False, seed=3, batch_size=8)
    with torch.no_grad():
        logits = model(**batch).logits[:, :-1]
    g = torch.Generator().manual_seed(3)
    p = F.softmax(logits, -1)
    drawn = inverse_cdf(p.reshape(-1, VOCAB), g).reshape(p.shape[:-1])
    pad = batch["attention_mask"][:, 1:] == 0
    labels = torch.cat([batch["input_ids"][:, :1], drawn.masked_fill(pad, -100)], 1)
    ref = naive_lm(model, {**batch, "labels": labels}, empirical)
    assert_close(imp, ref)
    assert imp.meta["labels"] == "sampled"


def test_sampled_fisher_differs_from_empirical_and_is_seeded():
    model = tiny_llama()
    batch = lm_batch()
    a = mi.fisher(model, batch, empirical=False, seed=1)
    b = mi.fisher(model, batch, empirical=False, seed=1)
    e = mi.fisher(model, batch)
    name = "model.layers.0.mlp.up_proj.weight"
    assert torch.equal(a[name], b[name])
    assert not torch.allclose(a[name], e[name])


def test_sequence_classifier_with_dict_batches():
    model = tiny_bert()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, VOCAB, (4, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    batch = {"input_ids": ids, "attention_mask": mask,
             "token_type_ids": torch.zeros_like(ids), "labels": torch.tensor([0, 2, 1, 2])}
    imp = mi.fisher(model, batch, batch_size=3, fallback="error")
    params = {k: p for k, p in model.named_parameters()}
    ref = {k: torch.zeros_like(p) for k, p in params.items()}
    for k in range(4):
        one = {key: v[k:k + 1] for key, v in batch.items() if key != "labels"}
        logp = F.log_softmax(model(**one).logits, -1)[0, batch["labels"][k]]
        for (name, _), gr in zip(params.items(), torch.autograd.grad(logp, list(params.values()),
                                                                       allow_unused=True)):
            if gr is not None:
                ref[name] += gr.square()
    # BERT's pooler and classifier see (N, D) inputs: the rank-one shortcut; the rest tokens
    assert_close(imp, {k: v / 4 for k, v in ref.items()})


def classifier_batch() -> dict[str, torch.Tensor]:
    """Right-padded sequences of different lengths with a class label each."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, VOCAB, (4, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    mask[3, 4:] = 0
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids),
            "labels": torch.tensor([0, 2, 1, 2])}


def naive_classifier(model, batch, objective) -> dict[str, torch.Tensor]:
    """mean over sequences of f(per-sequence gradient), each sequence alone and unpadded;
    `objective(logits (C,), label)` gives (value, f)."""
    params = {k: p for k, p in model.named_parameters() if p.requires_grad}
    out = {k: torch.zeros_like(p) for k, p in params.items()}
    n = len(batch["input_ids"])
    for k in range(n):
        length = int(batch["attention_mask"][k].sum())
        one = {key: batch[key][k:k + 1, :length] for key in ("input_ids", "token_type_ids")}
        value, reduce = objective(model(**one).logits[0], batch["labels"][k])
        grads = torch.autograd.grad(value, list(params.values()), allow_unused=True)
        for name, g in zip(params, grads):
            if g is not None:
                out[name] += reduce(g)
    return {k: v / n for k, v in out.items()}


def test_sequence_classifier_mas_is_exact_per_sequence():
    model = tiny_bert()
    batch = classifier_batch()

    def objective(logits, label):
        p = F.softmax(logits, -1)
        return (p * p).sum(), torch.abs

    assert_close(mi.mas(model, batch, batch_size=3, fallback="error"),
                 naive_classifier(model, batch, objective))


def test_sequence_classifier_sampled_fisher_draws_the_labels_from_the_model():
    """One label per sequence drawn from the model's class distribution (same generator as the
    estimator, one batch); the batch's own labels unused."""
    model = tiny_bert()
    batch = classifier_batch()
    imp = mi.fisher(model, batch, empirical=False, seed=5, batch_size=8, fallback="error")
    with torch.no_grad():
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    drawn = inverse_cdf(F.softmax(logits, -1), torch.Generator().manual_seed(5))
    assert not torch.equal(drawn, batch["labels"])        # else this would be the empirical one

    def objective(logits, label):
        return F.log_softmax(logits, -1)[label], torch.square

    assert_close(imp, naive_classifier(model, {**batch, "labels": drawn}, objective))
    assert imp.meta["labels"] == "sampled"


def test_signal_ignores_padding_and_counts_tied_embeddings_twice():
    model = tiny_llama()
    batch = lm_batch()
    padded = mi.signal(model, batch)
    alone = [mi.signal(model, {"input_ids": batch["input_ids"][k:k + 1,
                                                             :int(batch["attention_mask"][k].sum())]})
             for k in range(5)]
    ref = {n: sum(s[n] for s in alone) / 5 for n in padded}
    assert_close(padded, ref, tol=1e-5)
    # the tied matrix carries the embedding lookups and the output projection's input
    untied = tiny_llama(tied=False)
    untied.load_state_dict(model.state_dict(), strict=False)
    untied.lm_head.weight.data.copy_(model.model.embed_tokens.weight.data)
    u = mi.signal(untied, batch)
    torch.testing.assert_close(padded["model.embed_tokens.weight"],
                               u["model.embed_tokens.weight"] + u["lm_head.weight"])


def naive_gpt2_signal(model, batch) -> dict[str, torch.Tensor]:
    """SIG by its definition, from forward hooks on each sequence alone and unpadded (T tokens):
    Conv1D weight (in, out) |w[i, o]| Σ_t |x_t,i|, bias Σ_t |y_t| (GPT-2's GELU is no
    nn.Module activation SIG looks through); LayerNorm γ: |γ| Σ_t |x̂_t|, β: Σ_t |y_t|;
    embedding row v: |w[v]| · count(v), the token and the position embeddings alike; the
    output head (tied to the token embedding, no bias) adds |w[v, i]| Σ_t |x_t,i|. Mean over
    sequences."""
    from transformers.pytorch_utils import Conv1D

    params = dict(model.named_parameters())
    name = {id(p): n for n, p in params.items()}
    out = {n: torch.zeros_like(p) for n, p in params.items()}

    def hook(module, args, output):
        x, y = args[0][0], output[0]                          # (T, in), (T, out); ids (T,)
        if isinstance(module, Conv1D):
            out[name[id(module.weight)]] += module.weight.abs() * x.abs().sum(0)[:, None]
            out[name[id(module.bias)]] += y.abs().sum(0)
        elif isinstance(module, torch.nn.LayerNorm):
            x_hat = (x - x.mean(-1, keepdim=True)) / torch.sqrt(
                x.var(-1, unbiased=False, keepdim=True) + module.eps)
            out[name[id(module.weight)]] += module.weight.abs() * x_hat.abs().sum(0)
            out[name[id(module.bias)]] += y.abs().sum(0)
        elif isinstance(module, torch.nn.Embedding):
            counts = torch.bincount(x, minlength=module.num_embeddings)
            out[name[id(module.weight)]] += module.weight.abs() * counts[:, None]
        else:                                                 # the tied output head
            out[name[id(module.weight)]] += module.weight.abs() * x.abs().sum(0)

    kinds = (Conv1D, torch.nn.LayerNorm, torch.nn.Embedding, torch.nn.Linear)
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, kinds)]
    n = len(batch["input_ids"])
    try:
        with torch.no_grad():
            for k in range(n):
                length = int(batch["attention_mask"][k].sum())
                model(input_ids=batch["input_ids"][k:k + 1, :length])
    finally:
        for h in handles:
            h.remove()
    return {k: v / n for k, v in out.items()}


def test_gpt2_signal_is_exact_per_sequence():
    """Conv1D's (in, out) layout, LayerNorm, padding ignored, the tied head, and the position
    embedding GPT-2 looks up once per batch (ids (1, T)) counted for every sequence."""
    model = tiny_gpt2()
    batch = lm_batch()
    imp = mi.signal(model, batch, batch_size=3)
    w = model.transformer.h[0].attn.c_attn.weight                     # (in, out)
    assert imp["transformer.h.0.attn.c_attn.weight"].shape == w.shape
    assert_close(imp, naive_gpt2_signal(model, batch), tol=1e-5)


def test_default_loss_and_causal_lm_loss_match_the_model():
    model = tiny_llama()
    batch = lm_batch()
    assert isinstance(default_loss(model), CausalLM)
    assert isinstance(default_loss(tiny_bert()), ModelLoss)
    assert default_loss(torch.nn.Linear(2, 2)) is None
    ours = CausalLM()(model, batch)
    theirs = model(**batch).loss
    torch.testing.assert_close(ours, theirs)
    # without labels: input_ids shifted, padding ignored
    no_labels = {k: v for k, v in batch.items() if k != "labels"}
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    torch.testing.assert_close(CausalLM()(model, no_labels),
                               model(**batch | {"labels": labels}).loss)


def test_lora_importance_covers_the_trainable_parameters_only():
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(tiny_llama(), peft.LoraConfig(
        r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.0,
        init_lora_weights=False))
    batch = lm_batch()
    imp = mi.fisher(model, batch, fallback="error")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(imp) == trainable and all("lora_" in n for n in trainable)
    assert_close(imp, naive_lm(model, batch, empirical))


# bad input ---------------------------------------------------------------------------------
def test_sequence_classifier_without_labels_says_so():
    with pytest.raises(ValueError, match="needs labels"):
        mi.fisher(tiny_bert(), {"input_ids": torch.randint(0, VOCAB, (2, 5))})


def test_frozen_model_says_so():
    model = tiny_llama()
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        mi.fisher(model, lm_batch())


def test_token_ids_outside_the_vocabulary_are_named():
    batch = lm_batch()
    batch["input_ids"][0, 0] = VOCAB + 3
    with pytest.raises(ValueError, match=r"input_ids.*vocabulary"):
        mi.fisher(tiny_llama(), batch)
    with pytest.raises(ValueError, match=r"input_ids.*vocabulary"):
        mi.signal(tiny_llama(), batch)


def test_dict_batch_with_mismatched_lengths_is_refused():
    batch = lm_batch()
    batch["attention_mask"] = batch["attention_mask"][:3]
    with pytest.raises(ValueError, match="disagree"):
        mi.fisher(tiny_llama(), batch)


def test_all_labels_ignored_is_refused_by_the_loss():
    batch = lm_batch()
    batch["labels"][:] = -100
    with pytest.raises(ValueError, match="ignored"):
        CausalLM()(tiny_llama(), batch)


@pytest.mark.parametrize("chunk", [1, 800])   # 1 or several samples a chunk
def test_chunked_per_sample_buffers_give_the_same_sums(monkeypatch, chunk):
    """Per-sample gradients materialised a few samples at a time (scratch for one-call layers,
    own buffers for the tied embedding / output head) sum to the same Fisher and MAS."""
    from myelin.importance import _persample

    model = tiny_llama()
    batch = lm_batch()
    full_f, full_m = mi.fisher(model, batch), mi.mas(model, batch)
    monkeypatch.setattr(_persample, "CHUNK_ELEMENTS", chunk)
    assert_close(mi.fisher(model, batch), full_f, tol=1e-5)
    assert_close(mi.mas(model, batch), full_m, tol=1e-5)
    assert_close(mi.fisher(model, batch), naive_lm(model, batch, empirical))
