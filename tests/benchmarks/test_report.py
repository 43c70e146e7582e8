"""Report lines built from benchmark JSON (benchmarks/report.py)."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from benchmarks.report import warm_adam_lines


def test_warm_adam_lines_skip_quick_runs_and_average_only_warm_runs(tmp_path):
    runs = [{"seed": 0, "warm": False, "aa": 0.5, "cold_harness_aa": 0.5},
            {"seed": 1, "warm": True, "aa": 0.92, "cold_harness_aa": 0.90},
            {"seed": 2, "warm": True, "aa": 0.94, "cold_harness_aa": None}]
    record = {"importance": "signal", "lam": 0.2, "runs": runs, "mean_warm_aa": 0.93,
              "mean_cold_aa_same_seeds": 0.90, "command": "python benchmarks/warm_adam.py",
              "quick": False}
    (tmp_path / "warm-adam-signal.json").write_text(json.dumps(record))
    (tmp_path / "warm-adam-fisher.json").write_text(json.dumps({**record, "quick": True}))
    lines = warm_adam_lines(tmp_path)
    assert len(lines) == 2 and "warm Adam" in lines[0]          # the protocol, then one row
    assert "EWC signal λ=0.2 reaches 93.00 over 2 warm runs vs 90.00 cold" in lines[1]
    assert "seed 1 92.00 (cold 90.00)" in lines[1] and "seed 2 94.00" in lines[1]
    assert "seed 0" not in lines[1]
    (tmp_path / "warm-adam-fisher.json").write_text(json.dumps({**record, "importance": "fisher"}))
    lines = warm_adam_lines(tmp_path)
    assert [line[:12] for line in lines[1:]] == ["- EWC fisher", "- EWC signal"]
    assert warm_adam_lines(tmp_path / "missing") == []
