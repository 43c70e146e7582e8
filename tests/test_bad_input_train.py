"""Bad arguments to training, models and scenarios fail at once with messages naming them."""

import numpy as np
import pytest
import torch

from myelin.cli import main
from myelin.methods import Method
from myelin.models import mlp, small_cnn
from myelin.scenarios import SCENARIOS
from myelin.scenarios.builders import permuted, rotated, sequence, split
from myelin.train import GradientLearner, fit
from tests.conftest import model_for

RUN = ["run", "--scenario", "permuted-digits", "--tasks", "2", "--iterations", "2",
       "--batch-size", "32", "-q"]


# --widths 0 / channels ---------------------------------------------------------------------------
@pytest.mark.parametrize("widths", [(0,), (100, 0), (-3,), (True,), (2.5,), ("8",)])
def test_mlp_widths_must_be_positive_ints(widths):
    with pytest.raises(ValueError) as err:
        mlp((1, 8, 8), 10, widths)
    assert str(err.value) == (f"widths must be positive ints (hidden layer sizes). "
                              f"Got {list(widths)!r}.")


def test_mlp_widths_must_be_a_sequence():
    with pytest.raises(ValueError) as err:
        mlp((1, 8, 8), 10, 100)
    assert str(err.value) == ("widths must be a sequence of positive ints (hidden layer sizes), "
                              "e.g. (300, 150). Got 100.")
    assert mlp((1, 8, 8), 10, np.array([5, 3]))[1].out_features == 5     # numpy ints are ints
    assert len(mlp((1, 8, 8), 10, ())) == 2                              # no hidden layer: fine


def test_cnn_channels_must_be_positive_ints():
    with pytest.raises(ValueError) as err:
        small_cnn((1, 8, 8), 10, (16, 0))
    assert str(err.value) == ("channels must be positive ints (output channels of each "
                              "convolution). Got [16, 0].")


def test_cli_widths_zero(tmp_path, capsys):
    assert main([*RUN, "--widths", "0", "--out", str(tmp_path / "r")]) == 2
    assert "widths must be positive ints (hidden layer sizes). Got [0]." in \
        capsys.readouterr().err
    assert not (tmp_path / "r").exists()                   # the claimed directory is released


# seeds -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", ["x", 1.5, True, None])
def test_fit_seed_must_be_an_int(scenario, seed):
    with pytest.raises(TypeError) as err:
        fit(scenario, model_for(scenario), seed=seed, iterations=1, progress=False)
    assert str(err.value) == f"seed must be an int. Got {seed!r}."
    with pytest.raises(TypeError, match=r"^seed must be an int\. Got "):
        GradientLearner(model_for(scenario), Method(), seed=seed)


def test_fit_takes_numpy_ints_as_seeds(scenario):
    r = fit(scenario, model_for(scenario), seed=np.int64(3), iterations=1, progress=False)
    assert r.config["seed"] == 3


@pytest.mark.parametrize("build", [
    lambda seed: permuted("digits", 2, seed),
    lambda seed: split("digits", [[0, 1], [2, 3]], seed=seed),
    lambda seed: rotated("digits", [0, 45], seed=seed),
    lambda seed: sequence("digits", "digits", seed=seed),
    lambda seed: SCENARIOS.get("permuted-digits")(2, seed=seed),
])
def test_scenario_seed_must_be_an_int(build):
    for seed in ("x", True, 2.0):
        with pytest.raises(TypeError) as err:
            build(seed)
        assert str(err.value) == f"seed must be an int. Got {seed!r}."
    with pytest.raises(ValueError) as err:
        build(-1)
    assert str(err.value) == ("seed must be an int in [0, 2**32 - 1] (it seeds "
                              "numpy.random.RandomState). Got -1.")


# --labels-trick on a task/domain split -----------------------------------------------------------
@pytest.mark.parametrize("setting", ["task", "domain"])
def test_labels_trick_outside_class_il_names_the_scenario(setting):
    with pytest.raises(ValueError) as err:
        split("digits", [[0, 1], [2, 3]], setting, labels_trick=True)
    assert str(err.value) == (
        "labels_trick applies to class-incremental learning (scenario='class'); got "
        f"scenario={setting!r}. On the command line use a split-<dataset>-class scenario "
        "(e.g. --scenario split-mnist-class).")


def test_cli_labels_trick_on_a_task_split(tmp_path, capsys):
    argv = ["run", "--scenario", "split-digits-task", "--labels-trick", "--iterations", "1",
            "--widths", "8", "-q", "--out", str(tmp_path / "r")]
    assert main(argv) == 2
    assert "got scenario='task'. On the command line use a split-<dataset>-class scenario" in \
        capsys.readouterr().err


# --eval-every 0 (was: silently no curves, like None; -1 evaluated after every step) --------------
@pytest.mark.parametrize("value", [0, -1, 2.5, True])
def test_eval_every_must_be_positive(scenario, value):
    with pytest.raises(ValueError) as err:
        fit(scenario, model_for(scenario), eval_every=value, iterations=1, progress=False)
    assert str(err.value) == ("eval_every must be a positive int (evaluate the seen tasks every "
                              "N steps) or None (only at the end of each task). "
                              f"Got {value!r}.")


def test_eval_samples_must_be_positive(scenario):
    with pytest.raises(ValueError, match=r"^eval_samples must be a positive int .* Got 0\.$"):
        fit(scenario, model_for(scenario), eval_samples=0, iterations=1, progress=False)


def test_cli_eval_every_zero(tmp_path, capsys):
    assert main([*RUN, "--widths", "8", "--eval-every", "0", "--out", str(tmp_path / "r")]) == 2
    assert "eval_every must be a positive int" in capsys.readouterr().err


# checkpoint options ------------------------------------------------------------------------------
def test_checkpoint_options_are_checked(scenario, tmp_path):
    m = model_for(scenario)
    with pytest.raises(ValueError) as err:
        fit(scenario, m, checkpoint_every=10, progress=False)
    assert str(err.value) == ("checkpoint_every needs checkpoint_dir (the directory the "
                              "checkpoints are saved in and resumed from).")
    with pytest.raises(ValueError, match=r"^resume=True needs checkpoint_dir "):
        fit(scenario, m, resume=True, progress=False)
    with pytest.raises(ValueError, match=r"^checkpoint_every must be a positive int .* Got 0"):
        fit(scenario, m, checkpoint_dir=tmp_path, checkpoint_every=0, progress=False)
    with pytest.raises(TypeError, match=r"^checkpoint_dir must be a path .* Got 3\.$"):
        fit(scenario, m, checkpoint_dir=3, progress=False)
    with pytest.raises(TypeError, match=r"^resume must be True or False\. Got 'yes'\.$"):
        fit(scenario, m, checkpoint_dir=tmp_path, resume="yes", progress=False)
    assert main([*RUN, "--widths", "8", "--checkpoint-every", "0",
                 "--out", str(tmp_path / "r")]) == 2


def test_torch_state_is_untouched_by_a_refused_call(scenario):
    model = model_for(scenario)
    state = torch.random.get_rng_state()
    with pytest.raises(TypeError):
        fit(scenario, model, seed="x", progress=False)
    assert torch.equal(torch.random.get_rng_state(), state)
