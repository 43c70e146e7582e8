"""Helpers shared by the benchmarks' reports (benchmarks/_common.py)."""

from benchmarks._common import at_grid_edge


def _entry(chosen: str, criteria: dict[str, float]) -> dict:
    return {"chosen": chosen, "lams": {k: {"criterion": v} for k, v in criteria.items()}}


GRID = {"finetune": (0.0,), "ewc": (0.1, 0.01), "l2": (0.1, 0.01), "wva": (10.0, 1.0)}


def test_grid_edge_names_methods_at_either_end_of_a_complete_grid_only():
    methods = {"finetune": _entry("0", {"0": 5.0}),
               "ewc": _entry("0.01", {"0.1": 4.9, "0.01": 4.8}),     # smallest λ run
               "l2": _entry("0.1", {"0.1": 4.7, "0.01": 4.8}),       # largest
               "wva": _entry("10", {"10": 4.7})}                     # grid not all run
    text = at_grid_edge(methods, GRID)
    assert "smallest λ run for ewc (0.01)" in text and "largest for l2 (0.1)" in text
    assert "wva" not in text and "finetune" not in text
    assert at_grid_edge({"ewc": _entry("0.1", {"0.1": 4.0, "0.01": 4.1, "0.001": 4.2})},
                        {"ewc": (1.0, 0.1, 0.001)}) == ""           # 1 not run yet
    assert at_grid_edge({"l2": _entry("0.1", {"0.1": 4.0, "0.01": 4.1})},
                        {"l2": (1.0, 0.1, 0.01)}) == ""             # interior: no sentence


def test_grid_edge_says_when_lambda_0_brackets_the_smallest_lambda():
    zero = {"ewc": "finetune", "l2": "finetune"}
    methods = {"finetune": _entry("0", {"0": 5.2}),
               "ewc": _entry("0.01", {"0.1": 4.9, "0.01": 4.8}),
               "l2": _entry("0.01", {"0.1": 5.4, "0.01": 5.3})}    # fine-tuning scores better
    text = at_grid_edge(methods, GRID, zero)
    assert ("ewc (0.01; λ = 0, finetune, scores worse: 5.200 against 4.800, so the best λ lies "
            "between 0 and 0.1)") in text
    assert "l2 (0.01):" in text                                     # no bracket to report
    # Higher is better (accuracies): fine-tuning's 0.55 is worse than ewc's 0.6, not l2's 0.5.
    accuracies = {"finetune": _entry("0", {"0": 0.55}),
                  "ewc": _entry("0.01", {"0.1": 0.5, "0.01": 0.6}),
                  "l2": _entry("0.01", {"0.1": 0.4, "0.01": 0.5})}
    text = at_grid_edge(accuracies, GRID, zero, lower_is_better=False)
    assert "ewc (0.01; λ = 0, finetune, scores worse: 0.550 against 0.600" in text
    assert "l2 (0.01):" in text
