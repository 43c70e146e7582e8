"""benchmarks/colanet_stability.py: issue 24's 10-task validation stream never touches what is
reported, trials append and resume, and the results page shows them."""

import json

import numpy as np
import pytest
import torch

from benchmarks import colanet, colanet_stability
from benchmarks._common import mnist_root
from myelin.data import load
from myelin.scenarios import permuted


def test_validation_stream_is_training_images_only_with_new_permutations():
    stream = colanet_stability.validation_stream(0, n_tasks=2)
    train = load("mnist", "train", mnist_root())
    reported = permuted("mnist", 2, seed=0, root=mnist_root(), first_identity=False)
    for task, shown in zip(stream.tasks, reported.tasks):
        assert len(task.train) == 50_000 and len(task.test) == 10_000
        # the scored images are the last 10k training images, permuted like the training ones
        first = task.test.images.reshape(len(task.test), -1)[0]
        source = train.images.reshape(len(train), -1)[50_000]
        assert torch.equal(torch.sort(first).values, torch.sort(source).values)
        assert not torch.equal(task.train.images[:5], shown.train.images[:5])
    assert not torch.equal(stream.tasks[0].train.images[:5], stream.tasks[1].train.images[:5])


def test_trials_append_skip_recorded_and_reach_the_results_page(tmp_path, monkeypatch):
    monkeypatch.setattr(colanet_stability, "OUT", tmp_path / "stability_trials.json")
    calls = []

    def fake_run(mc, alpha, stability, extra, seed, n_eval, n_tasks=10):
        calls.append(stability)
        acc = np.full((n_tasks, n_tasks), 0.9)
        return {"microcolumns": mc, "alpha": alpha, "stability": stability, "extra": extra,
                "seed": seed, "eval_per_task": n_eval, "tasks": n_tasks, "aa": 0.9,
                "fm": 0.01 * stability * 1000, "diagonal": list(np.diag(acc)),
                "accuracy": acc.tolist(), "wall_seconds": 1.0, "split": "x", "command": "c"}

    monkeypatch.setattr(colanet_stability, "run", fake_run)
    argv = ["--microcolumns", "15", "--alpha", "0.005", "--stability", "0.002,0.005",
            "--extra", '{"teacher_blocking": true}']
    assert colanet_stability.main(argv) == 0
    assert colanet_stability.main(argv) == 0                 # nothing re-run
    assert calls == [0.002, 0.005]
    trials = json.loads((tmp_path / "stability_trials.json").read_text())
    assert [t["stability"] for t in trials] == [0.002, 0.005]
    text = "\n".join(colanet.issue24_lines(tmp_path))
    assert "| 15 | 0.005 | 0.002 | teacher_blocking=True | 0 | 90.00 | 2.00 |" in text
    assert "0.005" in colanet_stability.show()


def test_no_trials_no_section_and_bad_settings_are_refused(tmp_path, capsys):
    assert colanet.issue24_lines(tmp_path) == []
    for bad in ("not json", "[1]", '{"no_such_setting": 1}'):
        with pytest.raises(SystemExit):
            colanet_stability.main(["--extra", bad])
        assert "--extra" in capsys.readouterr().err
