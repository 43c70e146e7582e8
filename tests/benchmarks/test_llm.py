"""benchmarks.llm (issue 20) in-process: a stopped run resumes to the uninterrupted one, longer
records cover shorter requests, the plan's order, the report's compared step."""

import json

import pytest

pytest.importorskip("transformers")
pytest.importorskip("peft")

from benchmarks import llm
from myelin.records import RecordStore
from tests.benchmarks.test_smoke import _have_llm_texts

needs_texts = pytest.mark.skipif(not _have_llm_texts(),
                                 reason="needs Debian bible-kjv and python3.11-doc")


class Stop(Exception):
    pass


@needs_texts
@pytest.mark.parametrize("method", ["ewc", "lora"])
def test_a_stopped_run_resumes_to_the_uninterrupted_one(tmp_path, monkeypatch, method):
    monkeypatch.setattr(llm, "CACHE", tmp_path / "cache")
    monkeypatch.setattr(llm, "EVAL_EVERY", 1)
    spec = llm.run_spec(method, 100.0, 0, 3, 1e-3, True)
    whole = llm.run_one(method, 100.0, 0, 3, 1e-3, True, tmp_path, lambda m: None)

    def stop_at_step_2(message: str) -> None:
        if "step 2:" in message:
            raise Stop

    ckpt = tmp_path / "ckpt.pt"
    with pytest.raises(Stop):
        llm.run_one(method, 100.0, 0, 3, 1e-3, True, tmp_path, stop_at_step_2, ckpt, spec)
    assert ckpt.exists()                                   # saved after step 1
    said = []
    resumed = llm.run_one(method, 100.0, 0, 3, 1e-3, True, tmp_path, said.append, ckpt, spec)
    assert any("resumed at step 1" in m for m in said)
    assert [c["step"] for c in resumed["curve"]] == [0, 1, 2, 3]
    assert resumed["curve"] == whole["curve"]
    # a checkpoint of other settings is not resumed
    other = llm.run_spec(method, 10.0, 0, 3, 1e-3, True)
    said.clear()
    llm.run_one(method, 10.0, 0, 3, 1e-3, True, tmp_path, said.append, ckpt, other)
    assert not any("resumed" in m for m in said)


def _record(store: RecordStore, method: str, lam: float, seed: int, steps: int,
            losses: dict[int, tuple[float, float]]) -> None:
    """A fake record: per step (kjv loss, old-skill loss) on both parts."""
    curve = [{"step": s, **{part: {"kjv": k, **dict.fromkeys(llm.SKILLS, o)}
                            for part in ("validation", "test")}} for s, (k, o) in losses.items()]
    store.put(f"{method}-lam{lam:g}-seed{seed}",
              llm.run_spec(method, lam, seed, steps, 1e-4, False),
              {"measured": {"curve": curve, "step_seconds": 1.0, "state_bytes": 0,
                            "model_bytes": 1}})


def test_longer_records_cover_shorter_runs_and_the_plan_goes_in_order(tmp_path):
    store = RecordStore(tmp_path)
    _record(store, "finetune", 0.0, 0, 200, {0: (3, 2), 100: (2.5, 2.4), 200: (2.4, 2.6)})
    key, spec = "finetune-lam0-seed0", llm.run_spec("finetune", 0.0, 0, 100, 1e-4, False)
    assert llm.covered(store, key, spec)
    assert not llm.covered(store, key, {**spec, "steps": 300})
    assert not llm.covered(store, key, {**spec, "lr": 1e-3})
    assert llm.next_planned(tmp_path, 100, 1e-4, False) == ("ewc", llm.GRID["ewc"][0], 0)
    # the whole seed-0 grid recorded: λ of lower validation criterion chosen, bf16 next
    for method, lams in llm.GRID.items():
        for i, lam in enumerate(lams):
            if method != "finetune":
                _record(store, method, lam, 0, 100, {0: (3, 2), 100: (2.6 + i / 10, 2.2)})
    assert llm.next_planned(tmp_path, 100, 1e-4, False) == ("ewc-bf16", llm.GRID["ewc"][0], 0)
    for method, sibling in llm.BF16_OF.items():
        _record(store, method, llm.GRID[sibling][0], 0, 100, {0: (3, 2), 100: (2.6, 2.2)})
    assert llm.next_planned(tmp_path, 100, 1e-4, False) == ("finetune", 0.0, 1)
    # another seed at the chosen λ cannot move the choice (made on seed 0)
    _record(store, "ewc", llm.GRID["ewc"][0], 1, 100, {0: (3, 2), 100: (9.0, 9.0)})
    assert llm.summary(tmp_path)["methods"]["ewc"]["chosen"] == f"{llm.GRID['ewc'][0]:g}"


def test_summary_compares_every_run_at_the_fewest_steps(tmp_path):
    store = RecordStore(tmp_path)
    _record(store, "finetune", 0.0, 0, 200, {0: (3, 2), 100: (2.5, 2.4), 200: (2.4, 2.6)})
    _record(store, "ewc", 1.0, 0, 100, {0: (3, 2), 100: (2.6, 2.1)})
    data = llm.summary(tmp_path)
    assert data["step"] == 100
    assert data["methods"]["finetune"]["lams"]["0"]["test"]["kjv"] == 2.5
    assert llm.summary(tmp_path, 200)["methods"]["finetune"]["lams"]["0"]["test"]["kjv"] == 2.4
    page = llm.report(tmp_path, tmp_path / "docs")
    assert "after step 100" in page and "| finetune | — | 1 | 2.500 |" in page


def test_paired_self_timed_counts_what_the_calls_return():
    from benchmarks._common import paired

    ratio, t_base, t_fn, _ = paired(lambda: 2.0, lambda: 3.0, repeats=3, self_timed=True)
    assert (ratio, t_base, t_fn) == (1.5, 2.0, 3.0)


def keep_freed_memory_works() -> bool:
    """True where `myelin.memory.keep_freed_memory` can act (Linux with glibc's mallopt)."""
    import ctypes
    import sys

    return sys.platform.startswith("linux") and hasattr(ctypes.CDLL(None), "mallopt")


def test_llm_cost_quick_times_trainer_steps(tmp_path):
    import json

    from benchmarks import llm_cost

    out = tmp_path / "cost.json"
    assert llm_cost.main(["--quick", "--repeats", "1", "--steps", "2", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    trainer = {"trainer_ewc", "trainer_wva"}
    if keep_freed_memory_works():     # the same rows again with freed memory kept for reuse
        trainer |= {"trainer_ewc_kept_memory", "trainer_wva_kept_memory"}
    assert set(data["rows"]) == {"fisher", "batch1_loop", *trainer}
    assert all(r["ratio"] > 0 and 0 < r["plain_s"] < 60 for r in data["rows"].values())
    for key in trainer:                                   # the optimizer phase, apart
        row = data["rows"][key]
        assert 0 < row["optimizer_phase_s"] < row["s"] and row["plain_optimizer_phase_s"] > 0
        assert row["minor_faults_per_step"] >= 0 and row["plain_minor_faults_per_step"] >= 0
    assert data["state_bytes_per_fp32_model"] == {"ewc_fp32": 2.0, "ewc_bf16": 1.0,
                                                  "wva_fp32": 1.0, "wva_bf16": 0.5}
    with pytest.raises(SystemExit):                  # the first step is never timed
        llm_cost.main(["--quick", "--steps", "1", "--out", str(out)])


def test_recorded_commands_carry_no_machine_paths():
    from benchmarks._common import command, portable

    assert portable("/tmp/snap/x/benchmarks/results/llm") == "benchmarks/results/llm"
    assert portable("--out=/w/main/benchmarks/results/c") == "--out=benchmarks/results/c"
    assert portable("/tmp/elsewhere") == "/tmp/elsewhere" and portable("--seeds") == "--seeds"
    assert command("llm", ["run", "--out", "/a/b/benchmarks/results/llm"]) == \
        "python -m benchmarks.llm run --out benchmarks/results/llm"


def test_records_on_other_data_are_left_out_and_run_again(tmp_path):
    store = RecordStore(tmp_path)
    pre = llm.read_pinned()["pretrained"]
    _record(store, "finetune", 0.0, 0, 100, {0: (3, 2), 100: (2.5, 2.4)})
    _record(store, "l2", 0.1, 0, 100, {0: (3, 2), 100: (2.6, 2.1)})
    record = store.read("l2-lam0.1-seed0")
    other = {**record["spec"], "data": "0123456789abcdef"}        # another pinned file's
    store.put("l2-lam0.1-seed0", other, {k: v for k, v in record.items() if k != "spec"})
    # made before the data was pinned: recognised by the pinned pretrained losses at step 0
    for lam, step0 in ((0.01, pre), (1.0, {p: {**v, "code": v["code"] + 0.15}
                                           for p, v in pre.items()})):
        spec = {k: v for k, v in llm.run_spec("l2", lam, 0, 100, 1e-4, False).items()
                if k != "data"}
        store.put(f"l2-lam{lam:g}-seed0", spec, {"measured": {
            "curve": [{"step": 0, **step0}, {"step": 100, **step0}], "step_seconds": 1.0,
            "state_bytes": 0, "model_bytes": 1}})
    assert llm.other_data(tmp_path) == ["l2-lam0.1-seed0", "l2-lam1-seed0"]
    assert sorted(llm.summary(tmp_path)["methods"]["l2"]["lams"]) == ["0.01"]
    assert not llm.covered(store, "l2-lam0.1-seed0", llm.run_spec("l2", 0.1, 0, 100, 1e-4, False))
    assert llm.covered(store, "l2-lam0.01-seed0", llm.run_spec("l2", 0.01, 0, 100, 1e-4, False))
    page = llm.report(tmp_path, tmp_path / "docs")
    assert "Left out, made on other old-skill windows" in page and "l2-lam1-seed0" in page


def test_selfgen_records_from_other_prompts_are_left_out_and_run_again(tmp_path):
    """The first ewc-selfgen runs sampled their importance text from the chat skill's
    evaluation prompts: their records name no (or another) generic-prompt digest."""
    store = RecordStore(tmp_path)
    _record(store, "finetune", 0.0, 0, 100, {0: (3, 2), 100: (2.5, 2.4)})
    _record(store, "ewc-selfgen", 0.01, 0, 100, {0: (3, 2), 100: (2.6, 2.1)})
    _record(store, "ewc-selfgen", 0.1, 0, 100, {0: (3, 2), 100: (2.7, 2.0)})
    spec = llm.run_spec("ewc-selfgen", 0.1, 0, 100, 1e-4, False)
    assert spec["selfgen_prompts"] == llm.selfgen_digest()
    assert "selfgen_prompts" not in llm.run_spec("ewc", 0.1, 0, 100, 1e-4, False)
    record = store.read("ewc-selfgen-lam0.1-seed0")
    old = {k: v for k, v in record["spec"].items() if k != "selfgen_prompts"}
    store.put("ewc-selfgen-lam0.1-seed0", old, {k: v for k, v in record.items() if k != "spec"})
    assert llm.stale(tmp_path) == {"data": [], "selfgen": ["ewc-selfgen-lam0.1-seed0"]}
    assert not llm.covered(store, "ewc-selfgen-lam0.1-seed0", spec)
    assert llm.covered(store, "ewc-selfgen-lam0.01-seed0",
                       llm.run_spec("ewc-selfgen", 0.01, 0, 100, 1e-4, False))
    assert sorted(llm.summary(tmp_path)["methods"]["ewc-selfgen"]["lams"]) == ["0.01"]
    page = llm.report(tmp_path, tmp_path / "docs")
    assert "ewc-selfgen runs whose importance was sampled from other prompts" in page
    # the generic prompts are not the evaluation's
    generic = json.loads(llm.SELFGEN_PROMPTS.read_text())["prompts"]
    assert not set(generic) & set(json.loads(llm.PROMPTS.read_text())["prompts"])


def test_pinned_windows_are_read_and_checked(tmp_path, monkeypatch):
    pinned = llm.read_pinned()
    assert set(pinned["windows"]) == {"code", "prose"}
    test = llm.old_skill_windows(None, "code", "test", llm.EVAL_WINDOWS, 0, pinned)
    assert test.shape == (llm.EVAL_WINDOWS, llm.WINDOW) and test.dtype.is_floating_point is False
    with pytest.raises(SystemExit, match="holds windows of shape"):
        llm.old_skill_windows(None, "code", "test", llm.EVAL_WINDOWS + 1, 0, pinned)
    monkeypatch.setattr(llm, "PINNED", tmp_path / "absent.json")
    with pytest.raises(SystemExit, match=r"benchmarks\.llm pin"):
        llm.read_pinned()
    (tmp_path / "absent.json").write_text("{}")
    with pytest.raises(SystemExit, match="exists: the recorded runs were made on it"):
        llm.main(["pin"])


def test_early_stopping_compares_at_the_same_new_domain_loss(tmp_path):
    path = [(0, 3.0, 2.0), (25, 2.8, 2.2), (50, 2.6, 2.6)]
    assert llm.old_at(path, 2.9) == pytest.approx(2.1)
    assert llm.old_at(path, 2.7) == pytest.approx(2.4)
    assert llm.old_at(path, 2.5) is None and llm.old_at(path, 3.1) is None
    assert llm.old_at([(0, 3.0, 2.0), (25, 2.8, 2.2), (50, 2.9, 2.0)], 2.85) == \
        pytest.approx(2.1)           # passed twice (2.15, then 2.1): the lower old-skill loss
    assert llm.old_against(path, 2.7) == (pytest.approx(2.4), False)
    assert llm.old_against(path, 2.5) == (2.6, True)    # past: the lowest-KJV evaluation
    assert llm.old_against(path, 3.1) == (None, False)  # above the whole path
    store = RecordStore(tmp_path)
    _record(store, "finetune", 0.0, 0, 100, {0: (3.0, 2.0), 25: (2.8, 2.2), 50: (2.7, 2.3),
                                             75: (2.6, 2.4), 100: (2.5, 2.6)})
    _record(store, "ewc", 0.1, 0, 100, {0: (3.0, 2.0), 100: (2.7, 2.25)})
    _record(store, "ewc", 0.1, 1, 100, {0: (3.0, 2.0), 100: (2.7, 2.15)})
    data = llm.summary(tmp_path)
    assert data["methods"]["ewc"]["lams"]["0.1"]["test_sd"]["old"] == pytest.approx(0.0707, 1e-3)
    assert data["methods"]["finetune"]["lams"]["0"]["path"][2] == (50, 2.7, 2.3)
    lines = llm.early_stopping(data["methods"], data["step"])
    # the validation criterion is seed 0's: 2.7 + 2.25
    assert "| ewc | 0.1 (chosen) | 4.950 | 2.700 | 2.200 | 2.300 | -0.100 ± 0.071 |" in lines
    page = llm.report(tmp_path, tmp_path / "docs")
    assert "| ewc | 0.1 | 2 | 2.700 ± 0.000 |" in page


def test_two_plan_processes_share_the_grid(tmp_path):
    store = RecordStore(tmp_path)
    first = ("finetune", 0.0, 0)
    assert llm.next_planned(tmp_path, 100, 1e-4, False) == first
    # another process runs finetune: the next point of the grid instead
    assert llm.next_planned(tmp_path, 100, 1e-4, False, frozenset({"finetune-lam0-seed0"})) \
        == ("ewc", llm.GRID["ewc"][0], 0)
    for method, lams in llm.GRID.items():
        for i, lam in enumerate(lams):
            if method != "ewc" or i != 1:
                _record(store, method, lam, 0, 100, {0: (3, 2), 100: (2.6 + i / 10, 2.2)})
    # ewc's second λ is being run elsewhere: no ewc seed 1 nor ewc-bf16 before it is recorded
    busy = frozenset({f"ewc-lam{llm.GRID['ewc'][1]:g}-seed0"})
    assert llm.next_planned(tmp_path, 100, 1e-4, False, busy) == ("wva-bf16",
                                                                  llm.GRID["wva"][0], 0)
    _record(store, "wva-bf16", llm.GRID["wva"][0], 0, 100, {0: (3, 2), 100: (2.6, 2.2)})
    assert llm.next_planned(tmp_path, 100, 1e-4, False, busy) == ("finetune", 0.0, 1)
    for method in llm.GRID:
        if method != "ewc":
            lam = float(llm.summary(tmp_path)["methods"][method]["chosen"])
            for seed in (1, 2):
                _record(store, method, lam, seed, 100, {0: (3, 2), 100: (2.6, 2.2)})
    _record(store, "wva-bf16", llm.GRID["wva"][0], 1, 100, {0: (3, 2), 100: (2.6, 2.2)})
    _record(store, "wva-bf16", llm.GRID["wva"][0], 2, 100, {0: (3, 2), 100: (2.6, 2.2)})
    assert llm.next_planned(tmp_path, 100, 1e-4, False, busy) is None


def test_a_claimed_run_is_refused_to_a_second_claim(tmp_path):
    lock = tmp_path / "locks" / "a.lock"
    with llm.claim(lock) as mine:
        assert mine
        with llm.claim(lock) as again:            # a second open file: as another process
            assert not again
    with llm.claim(lock) as mine:                 # released
        assert mine


def _findings(out) -> str:
    """The findings sentences of the records in `out`, as one text."""
    data = llm.summary(out)
    return "\n".join(llm.findings(data["methods"], data["step"], data["pretrained"]))


def test_findings_are_computed_from_the_records(tmp_path):
    store = RecordStore(tmp_path)
    _record(store, "finetune", 0.0, 0, 100, {0: (3.0, 2.0), 50: (2.8, 2.2), 100: (2.6, 2.6)})
    for seed, old in enumerate((2.25, 2.15, 2.2)):            # Δ −0.15, −0.25, −0.2
        _record(store, "ewc", 0.1, seed, 100, {0: (3.0, 2.0), 100: (2.7, old)})
    _record(store, "l2", 0.1, 0, 100, {0: (3.0, 2.0), 100: (2.9, 2.2)})      # Δ +0.1
    _record(store, "ewc-bf16", 0.1, 0, 100, {0: (3.0, 2.0), 100: (2.7, 1.4)})  # not "best"
    _record(store, "wva", 10.0, 0, 100, {0: (3.0, 2.0), 100: (2.5, 2.0)})    # past the path
    _record(store, "wva", 10.0, 1, 100, {0: (3.0, 2.0), 100: (2.7, 2.2)})
    text = _findings(tmp_path)
    # wva's seed 0 is past the path: against its lowest-KJV evaluation (2.6, 2.6), Δ −0.6
    assert "less forgetting for ewc-bf16 -1.000, wva -0.400, ewc -0.200; more for l2 +0.100." \
        in text
    assert "over ≥ 3 seeds below 0; fine-tuning's path is the mean of its 1 seed(s)): ewc; " \
        "fewer than 3 seeds so far: ewc-bf16, wva, l2." in text
    assert "compared with its lowest-KJV evaluation): wva (1 of 2 seed(s))." in text
    assert "wva (the best of 2, picked after the fact): -0.400 (2 seed(s)): L2 forgets 0.500 " \
        "more; L2 minus wva seed by seed +0.700 (1 seed), fewer than 3 seeds." in text
    assert "Above fine-tuning's path" not in text
    assert "from 2.000 before fine-tuning to" in text
    data = llm.summary(tmp_path)
    table = "\n".join(llm.early_stopping(data["methods"], data["step"]))
    assert "| wva | 10 (chosen) | 4.500 | 2.600 | 2.100 | 2.600 | -0.400 ± 0.283 (1 past) |" \
        in table
    # LoRA's path stops far short of these points: no comparison past it
    _record(store, "lora", 0.0, 0, 100, {0: (3.0, 2.0), 100: (2.9, 2.05)})
    data = llm.summary(tmp_path)
    table = "\n".join(llm.early_stopping(data["methods"], data["step"]))
    assert "| 2.600 | -0.400 ± 0.283 (1 past) | — | — |" in table
    (tmp_path / "lora-lam0-seed0.json").unlink()
    # two seeds: never called resolved, however close
    (tmp_path / "ewc-lam0.1-seed2.json").unlink()
    text = _findings(tmp_path)
    assert "below 0; fine-tuning's path is the mean of its 1 seed(s)): none yet; fewer than 3 " \
        "seeds so far: ewc-bf16, wva, ewc, l2." in text


def test_l2_against_the_best_method_seed_by_seed(tmp_path):
    store = RecordStore(tmp_path)
    _record(store, "finetune", 0.0, 0, 100, {0: (3.0, 2.0), 50: (2.8, 2.2), 100: (2.6, 2.6)})
    for seed, (ewc, l2) in enumerate(((2.25, 2.3), (2.15, 2.25), (2.2, 2.28))):
        _record(store, "ewc", 0.1, seed, 100, {0: (3.0, 2.0), 100: (2.7, ewc)})
        _record(store, "l2", 0.1, seed, 100, {0: (3.0, 2.0), 100: (2.7, l2)})
    text = _findings(tmp_path)
    # L2 − EWC by seed: 0.05, 0.1, 0.08 (mean 0.077, half-width 0.063)
    assert "L2 forgets 0.077 more; L2 minus ewc seed by seed +0.077 ± 0.063, resolved." in text
    _record(store, "l2", 0.1, 2, 100, {0: (3.0, 2.0), 100: (2.7, 2.1)})     # now −0.1
    text = _findings(tmp_path)
    assert "L2 minus ewc seed by seed +0.017 ± 0.259, not resolved: L2 is as good within " \
        "these seeds." in text


def test_pairwise_questions_compare_at_the_same_seed(tmp_path):
    store = RecordStore(tmp_path)
    _record(store, "finetune", 0.0, 0, 100, {0: (3.0, 2.0), 50: (2.8, 2.2), 100: (2.6, 2.6)})
    for seed, old in enumerate((2.25, 2.15, 2.2)):        # vs stopped early: −0.15, −0.25, −0.2
        _record(store, "ewc", 0.1, seed, 100, {0: (3.0, 2.0), 100: (2.7, old)})
    for seed, old in enumerate((2.26, 2.16, 2.22)):       # bf16: +0.01, +0.01, +0.02 more
        _record(store, "ewc-bf16", 0.1, seed, 100, {0: (3.0, 2.0), 100: (2.7, old)})
    for seed, old in enumerate((2.45, 2.36, 2.4)):        # selfgen: +0.2, +0.21, +0.2 more
        _record(store, "ewc-selfgen", 0.1, seed, 100, {0: (3.0, 2.0), 100: (2.7, old)})
    _record(store, "lora", 0.0, 0, 100, {0: (3.0, 2.0), 100: (2.9, 2.05)})
    _record(store, "lora-ewc", 0.1, 0, 100, {0: (3.0, 2.0), 100: (2.95, 2.0)})
    data = llm.summary(tmp_path)
    table = "\n".join(llm.questions(data["methods"]))
    assert ("| ewc-selfgen − ewc: importance on the model's own generated text, not real "
            "old-domain text | 0.1 / 0.1 | 3 | +0.000 ± 0.000 | +0.203 ± 0.014 | "
            "+0.203 ± 0.014 | more forgetting |") in table
    assert "| 0.1 / 0.1 | 3 | +0.000 ± 0.000 | +0.013 ± 0.014 | +0.013 ± 0.014 | " \
        "no resolved difference |" in table                       # bf16: the interval holds 0
    assert "| lora-ewc − lora: EWC on LoRA's parameters, not LoRA alone | 0.1 / — | 1 | " \
        "+0.050 (1 seed) | -0.050 (1 seed) |" in table and "fewer than 3 seeds |" in table
    assert "wva-bf16" not in table                                # not recorded: no row


def test_readme_summary_is_computed_from_the_records(tmp_path):
    store = RecordStore(tmp_path)
    assert "No runs recorded yet" in llm.readme_text(tmp_path)
    for seed in range(3):
        _record(store, "finetune", 0.0, seed, 100,
                {0: (3.0, 2.0), 50: (2.8, 2.2), 100: (2.6, 2.6)})
    for seed, old in enumerate((2.25, 2.15, 2.2)):        # vs stopped early: −0.15, −0.25, −0.2
        _record(store, "ewc", 0.1, seed, 100, {0: (3.0, 2.0), 100: (2.7, old)})
        _record(store, "ewc-sampled", 0.1, seed, 100, {0: (3.0, 2.0), 100: (2.7, old + 0.01)})
    _record(store, "lora", 0.0, 0, 100, {0: (3.0, 2.0), 100: (2.9, 2.25)})
    text = llm.readme_text(tmp_path)
    flat = " ".join(text.split())                                   # the sentences are wrapped
    assert "| pretrained | — | — | 3.000 | 2.000 | 2.000 | |" in text
    assert "| finetune | — | 3 | 2.600 | 2.600 | 2.600 |  |" in text
    assert "| ewc | 0.1 | 3 | 2.700 | 2.200 | 2.200 | -0.200 ± 0.124 |" in text
    assert "Less forgetting than fine-tuning stopped early, resolved over the seeds: ewc, " \
        "ewc-sampled." in flat
    assert "ewc, ewc-sampled learn more of the KJV *and* keep as much or more" in flat
    assert "| ewc-sampled − ewc: labels sampled from the model, not the data's (true vs " \
        "empirical Fisher) | 3 | +0.010 ± 0.000 | more forgetting |" in text
    assert "Runs in progress: lora (1 of 3 seeds), l2 (none)," in flat
    # LoRA keeping more than any full-model point: no claim of dominance
    _record(store, "lora", 0.0, 0, 100, {0: (3.0, 2.0), 100: (2.9, 2.1)})
    assert "no full-model method dominates it." in " ".join(llm.readme_text(tmp_path).split())


def test_a_run_held_by_another_process_is_left_to_it_then_looked_at_again(tmp_path,
                                                                          monkeypatch):
    import argparse

    monkeypatch.setattr(llm, "CACHE", tmp_path / "cache")
    args = argparse.Namespace(steps=3, lr=1e-3, quick=True, out=str(tmp_path))
    lock = tmp_path / "cache" / "llm-checkpoints-quick" / "ewc-lam1-seed0.lock"
    with llm.claim(lock) as mine:                  # "another process" trains ewc λ=1 seed 0
        assert mine
        assert llm.run_point(RecordStore(tmp_path), "ewc", 1.0, 0, args, {}, "cmd") is False
    # the plan loop: a held run is skipped, waited for, and taken once free
    script = iter([("ewc", 1.0, 0), None, ("ewc", 1.0, 0), None])
    seen, held = [], iter([False, True])
    monkeypatch.setattr(llm, "next_planned", lambda *a: (seen.append(a[-1]), next(script))[1])
    monkeypatch.setattr(llm, "run_point", lambda *a: next(held))
    monkeypatch.setattr(llm, "PLAN_POLL_SECONDS", 0)
    assert llm.main(["run", "--plan", "--quick", "--out", str(tmp_path)]) == 0
    assert seen == [frozenset(), frozenset({"ewc-lam1-seed0"}), frozenset(), frozenset()]
