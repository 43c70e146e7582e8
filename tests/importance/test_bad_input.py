"""Bad input to the estimators (issue 22): each case raises one exact exception type whose
message names the offending argument (data, labels, batch_size, max_samples, model, fallback,
...), instead of a crash deep inside PyTorch or a silently wrong importance."""

import functools
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from myelin.importance import SynapticIntelligence, fisher, mas, signal

from .models import mlp

ESTIMATORS = {
    "fisher": fisher,
    "fisher-sampled": functools.partial(fisher, empirical=False, seed=0),
    "fisher-exact": functools.partial(fisher, empirical=False, exact=True),
    "mas": mas,
    "signal": signal,
}
GRADIENT_ESTIMATORS = ["fisher", "fisher-sampled", "fisher-exact", "mas"]
LABEL_FREE = ["fisher-sampled", "fisher-exact", "mas", "signal"]


class Items(Dataset):
    """A map-style dataset of the given (x, y) items."""

    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


# -- empty data --------------------------------------------------------------------------------
EMPTY = {
    "pair": lambda x, y: (x[:0], y[:0]),
    "tensor": lambda x, y: x[:0],
    "list": lambda x, y: [],
    "dataset": lambda x, y: TensorDataset(x[:0], y[:0]),
    "loader": lambda x, y: DataLoader(TensorDataset(x[:0], y[:0]), batch_size=4),
    "empty-batches": lambda x, y: [(x[:0], y[:0]), (x[:0], y[:0])],
}


@pytest.mark.parametrize("form", sorted(EMPTY))
@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_empty_data(model, data, name, form):
    with pytest.raises(ValueError, match=r"^data yielded no samples"):
        ESTIMATORS[name](model, EMPTY[form](*data))


@pytest.mark.parametrize("bad", [42, "abc", None, 3.5])
@pytest.mark.parametrize("name", ["fisher", "mas", "signal"])
def test_data_of_an_unsupported_type(model, name, bad):
    with pytest.raises(TypeError, match=f"^data must be .* Got {type(bad).__name__}"):
        ESTIMATORS[name](model, bad)


# -- non-finite inputs -------------------------------------------------------------------------
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_non_finite_input_names_the_data_and_the_batch(model, data, name, value):
    x, y = data
    x = x.clone()
    x[11, 2] = value
    with pytest.raises(ValueError, match=r"^data: the input batch starting at sample 8 contains "
                                         r"NaN or inf"):
        ESTIMATORS[name](model, (x, y), batch_size=8)


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_non_finite_weights_name_the_model_not_the_data(model, data, name):
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf") as err:
        ESTIMATORS[name](model, data)
    assert not str(err.value).startswith("data")


# -- labels ------------------------------------------------------------------------------------
@pytest.mark.parametrize("shift", [3, 10, -1, -5])
def test_labels_out_of_range(model, data, shift):
    x, y = data
    y = y.clone()
    y[4] = shift if shift < 0 else y[4] + shift
    with pytest.raises(ValueError, match=r"^Labels must lie in \[0, 3\) .* a batch has labels "
                                         r"in \["):
        fisher(model, (x, y))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bool])
def test_integer_labels_given_as_floats(model, data, dtype):
    x, y = data
    with pytest.raises(TypeError, match=f"^Labels must be integer class indices. Got dtype "
                                        f"{dtype}"):
        fisher(model, (x, (y > 0) if dtype == torch.bool else y.to(dtype)))


@pytest.mark.parametrize("name", LABEL_FREE)
def test_label_free_estimators_do_not_read_the_labels(model, data, name):
    """Labels out of range or of a float dtype are not used, hence not refused."""
    x, y = data
    reference = ESTIMATORS[name](model, x)
    for labels in (y + 100, y.float()):
        ours = ESTIMATORS[name](model, (x, labels))
        assert all(torch.equal(ours[n], reference[n]) for n in ours)


def test_missing_labels(model, data):
    with pytest.raises(ValueError, match="needs labels"):
        fisher(model, data[0])


# -- batch_size / max_samples ------------------------------------------------------------------
@pytest.mark.parametrize("batch_size", [0, -1, -256, 2.5, True, None, "8"])
@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_bad_batch_size(model, data, name, batch_size):
    with pytest.raises(ValueError, match=f"^batch_size must be a positive int. Got "
                                         f"{batch_size!r}"):
        ESTIMATORS[name](model, data, batch_size=batch_size)


@pytest.mark.parametrize("max_samples", [0, -3, 1.5, True, "10"])
@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_bad_max_samples(model, data, name, max_samples):
    with pytest.raises(ValueError, match=f"^max_samples must be a positive int or None. Got "
                                         f"{max_samples!r}"):
        ESTIMATORS[name](model, data, max_samples=max_samples)


# -- the model ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_model_without_trainable_parameters(data, name):
    frozen = mlp((6, 8, 3)).requires_grad_(False)
    with pytest.raises(ValueError, match=r"^model has no trainable parameters"):
        ESTIMATORS[name](frozen, data)


def test_si_model_without_trainable_parameters():
    with pytest.raises(ValueError, match=r"^model has no trainable parameters"):
        SynapticIntelligence(nn.Sequential(nn.ReLU()))


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_model_not_a_module(data, name):
    with pytest.raises(TypeError, match=r"^model must be a torch.nn.Module. Got function"):
        ESTIMATORS[name](lambda x: x, data)


class Returns(nn.Module):
    def __init__(self, wrap):
        super().__init__()
        self.fc = nn.Linear(6, 3)
        self.wrap = wrap

    def forward(self, x):
        return self.wrap(self.fc(x))


WRAPS = {"tuple": lambda t: (t, t), "list": lambda t: [t], "dict": lambda t: {"out": t}}


@pytest.mark.parametrize("kind", sorted(WRAPS))
def test_signal_refuses_an_output_that_is_no_tensor(data, kind):
    with pytest.raises(TypeError, match=f"^signal needs a model returning a tensor .* this model "
                                        f"returned {kind}"):
        signal(Returns(WRAPS[kind]), data)


@pytest.mark.parametrize("kind", sorted(WRAPS))
@pytest.mark.parametrize("name", GRADIENT_ESTIMATORS)
def test_gradient_estimators_refuse_an_output_that_is_no_tensor(data, name, kind):
    with pytest.raises(TypeError, match=f"^The model must return a logits tensor .* got {kind}"):
        ESTIMATORS[name](Returns(WRAPS[kind]), data)


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_an_output_with_logits_is_read_as_its_logits(data, name):
    """Hugging Face style outputs (``.logits`` or ``["logits"]``) are accepted on purpose."""
    torch.manual_seed(0)
    plain = Returns(lambda t: t)
    ref = ESTIMATORS[name](plain, data)
    for wrap in (lambda t: SimpleNamespace(logits=t), lambda t: {"logits": t}):
        wrapped = Returns(wrap)
        wrapped.load_state_dict(plain.state_dict())
        ours = ESTIMATORS[name](wrapped, data)
        assert all(torch.allclose(ours[n], ref[n]) for n in ref)


@pytest.mark.parametrize("name", GRADIENT_ESTIMATORS)
def test_output_without_a_class_dimension(data, name):
    with pytest.raises(TypeError, match=r"logits tensor of shape \(N, C\).* got shape \(20,\)"):
        ESTIMATORS[name](Returns(lambda t: t.sum(-1)), data)


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_a_plain_callable_loss_is_refused(model, data, name):
    with pytest.raises(TypeError, match=r"per-sample logits; the loss .* is a plain callable"):
        ESTIMATORS[name](model, data, loss=nn.functional.cross_entropy)


# -- (X, Y) pairs of different lengths ---------------------------------------------------------
@pytest.mark.parametrize("as_numpy", [False, True])
@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_pair_of_different_lengths(model, data, name, as_numpy):
    x, y = data
    pair = (x.numpy(), y[:17].numpy()) if as_numpy else (x, y[:17])
    with pytest.raises(ValueError, match=r"^data is an \(X, Y\) pair of different lengths: "
                                         r"X has 20 samples .*Y has 17"):
        ESTIMATORS[name](model, pair)


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_pair_with_more_labels_than_inputs(model, data, name):
    """Y longer than X used to be read as more samples (two batches of inputs)."""
    x, y = data
    with pytest.raises(ValueError, match=r"X has 12 samples .*Y has 20"):
        ESTIMATORS[name](model, [x[:12], y])


@pytest.mark.parametrize("name", LABEL_FREE)
def test_two_batches_of_inputs_are_still_batches(model, data, name):
    x, _ = data
    ours = ESTIMATORS[name](model, [x[:12], x[12:]])
    assert ours.meta["n_samples"] == 20


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_batch_of_different_lengths_in_a_loader(model, data, name):
    x, y = data
    with pytest.raises(ValueError, match=r"^data: the batch starting at sample 8 has 12 inputs "
                                         r"but 11 labels"):
        ESTIMATORS[name](model, [(x[:8], y[:8]), (x[8:], y[9:])])


# -- options -----------------------------------------------------------------------------------
@pytest.mark.parametrize("fallback", ["nonsense", "", None, "Functional"])
@pytest.mark.parametrize("name", GRADIENT_ESTIMATORS)
def test_bad_fallback(model, data, name, fallback):
    with pytest.raises(ValueError, match=f"^fallback must be 'functional' or 'error'. Got "
                                         f"{fallback!r}"):
        ESTIMATORS[name](model, data, fallback=fallback)


def test_signal_takes_no_fallback(model, data):
    with pytest.raises(TypeError, match="unexpected keyword argument 'fallback'"):
        signal(model, data, fallback="nonsense")


@pytest.mark.parametrize(("estimator", "option", "value"), [
    (mas, "output", "probabilities"), (mas, "norm", "l1"), (signal, "last_layer", "sigmoid")])
def test_bad_choice_options(model, data, estimator, option, value):
    with pytest.raises(ValueError, match=f"^{option} must be .* Got {value!r}"):
        estimator(model, data, **{option: value})


def test_exact_needs_sampled_labels(model, data):
    with pytest.raises(ValueError, match=r"^exact=True .* needs empirical=False"):
        fisher(model, data, exact=True)


@pytest.mark.parametrize("damping", [0, -0.1, float("nan"), float("inf"), True, "0.1"])
def test_si_bad_damping(model, damping):
    with pytest.raises(ValueError, match=r"^The 'damping' parameter of SynapticIntelligence"):
        SynapticIntelligence(model, damping=damping)


def test_si_attach_needs_an_optimizer(model):
    with pytest.raises(TypeError, match=r"^attach needs a torch.optim.Optimizer. Got list"):
        SynapticIntelligence(model).attach([])


# -- a Dataset yielding wrong shapes -----------------------------------------------------------
@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_dataset_of_ragged_items(model, data, name):
    x, y = data
    items = [(x[i] if i != 5 else x[i, :4], y[i]) for i in range(20)]
    with pytest.raises(ValueError, match=r"^data \(Items\) yields items of different shapes "
                                         r"among samples 0\.\.7"):
        ESTIMATORS[name](model, Items(items), batch_size=8)


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_dataset_of_inputs_the_model_cannot_take(model, data, name):
    x, y = data
    items = [(x[i, :5], y[i]) for i in range(20)]
    with pytest.raises(RuntimeError, match=r"^The model failed on the batch of data starting at "
                                           r"sample 0 \(x: shape \(8, 5\) float32\)"):
        ESTIMATORS[name](model, Items(items), batch_size=8)


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_dataset_of_scalar_inputs(model, data, name):
    _, y = data
    items = [(torch.tensor(float(i)), y[i]) for i in range(20)]
    with pytest.raises(RuntimeError, match=r"batch of data starting at sample 0 \(x: shape "
                                           r"\(8,\) float32\)"):
        ESTIMATORS[name](model, Items(items), batch_size=8)


def test_dataset_with_labels_of_the_wrong_shape(model, data):
    x, y = data
    items = [(x[i], torch.stack([y[i], y[i]])) for i in range(20)]
    with pytest.raises(ValueError, match=r"^Labels of shape \(8, 2\) do not match model outputs "
                                         r"of shape \(8, 3\)"):
        fisher(model, Items(items), batch_size=8)
