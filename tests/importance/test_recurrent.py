"""RNN, GRU and LSTM layers: exact Fisher and MAS (torch.func over a step-by-step forward), and
SIG refusing them by name (issue 22, item 11)."""

import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from myelin.importance import fisher, mas, signal
from myelin.importance._recurrent import recurrent_forward

from .test_persample import assert_close, empirical_obj, exact_obj, mas_obj, naive


class Recurrent(nn.Module):
    """A recurrent layer, then a Linear on its last output (or on its final hidden state)."""

    def __init__(self, layer: nn.RNNBase, use_state: bool = False):
        super().__init__()
        self.rnn = layer
        self.use_state = use_state
        d = 2 if layer.bidirectional else 1
        h = layer.proj_size or layer.hidden_size
        self.fc = nn.Linear(d * h, 3)

    def forward(self, x):                                     # x (N, T, 4)
        if not self.rnn.batch_first:
            x = x.transpose(0, 1)                             # time-first (T, N, 4)
        out, state = self.rnn(x)
        if self.use_state:
            h = state[0] if isinstance(state, tuple) else state
            return self.fc(torch.cat(list(h[-(2 if self.rnn.bidirectional else 1):]), -1))
        last = out[:, -1] if self.rnn.batch_first else out[-1]
        return self.fc(last)


LAYERS = {
    "rnn-tanh": lambda: nn.RNN(4, 6, batch_first=True),
    "rnn-relu-2layers-time-first": lambda: nn.RNN(4, 6, num_layers=2, nonlinearity="relu"),
    "rnn-no-bias-state": lambda: (nn.RNN(4, 6, bias=False, batch_first=True), True),
    "gru": lambda: nn.GRU(4, 6, batch_first=True),
    "gru-2layers-bidirectional": lambda: nn.GRU(4, 5, num_layers=2, bidirectional=True,
                                                batch_first=True),
    "gru-time-first-state": lambda: (nn.GRU(4, 6, bidirectional=True), True),
    "lstm": lambda: nn.LSTM(4, 6, batch_first=True),
    "lstm-proj-2layers-state": lambda: (nn.LSTM(4, 6, num_layers=2, proj_size=3,
                                                batch_first=True), True),
}


def build(name):
    torch.manual_seed(0)
    made = LAYERS[name]()
    layer, use_state = made if isinstance(made, tuple) else (made, False)
    return Recurrent(layer, use_state).double()


def data(n=11, steps=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, steps, 4, generator=g, dtype=torch.float64),
            torch.randint(0, 3, (n,), generator=g))


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_fisher_and_mas_match_a_naive_loop(name):
    model = build(name)
    x, y = data()
    with warnings.catch_warnings():
        warnings.simplefilter("error")                    # no slow loop, no batching fallback
        ours = fisher(model, (x, y), batch_size=4)
        ours_mas = mas(model, x, batch_size=4)
    assert_close(ours, naive(model, x, empirical_obj(y), torch.square), 1e-10)
    assert_close(ours_mas, naive(model, x, mas_obj, torch.abs), 1e-10)
    # (a reverse direction read at the last step has seen one step: no recurrent gradient)
    assert all(ours[n].abs().sum() > 0 for n in ours
               if not (n.startswith("rnn.weight_hh") and n.endswith("_reverse")))


@pytest.mark.parametrize("name", ["gru-2layers-bidirectional", "rnn-relu-2layers-time-first"])
def test_exact_fisher_matches_a_naive_loop(name):
    model = build(name)
    x, _ = data(7)
    ours = fisher(model, x, empirical=False, exact=True, batch_size=3)
    assert_close(ours, naive(model, x, exact_obj, torch.square), 1e-10)


def test_float32_gru_within_1e4_of_the_naive_loop():
    model = build("gru-2layers-bidirectional").float()
    x, y = data()
    ours = fisher(model, (x.float(), y), batch_size=4)
    assert_close(ours, naive(model, x.float(), empirical_obj(y), torch.square), 1e-4)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_step_by_step_forward_equals_the_fused_kernel(name):
    layer = build(name).rnn.eval()
    x, _ = data(3)
    x = x if layer.batch_first else x.transpose(0, 1)
    for args in ((x,), (x[0] if layer.batch_first else x[:, 0],)):   # batched, unbatched
        ref, ours = layer(*args), recurrent_forward(layer, *args)
        flat = [ref[0], *(ref[1] if isinstance(ref[1], tuple) else (ref[1],))]
        got = [ours[0], *(ours[1] if isinstance(ours[1], tuple) else (ours[1],))]
        for a, b in zip(flat, got):
            assert a.shape == b.shape
            torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-12)


def test_layer_restored_after_the_estimate():
    model = build("gru")
    x, y = data()
    fisher(model, (x, y), batch_size=4)
    assert "forward" not in vars(model.rnn)


def test_packed_sequences_fall_back_to_the_exact_loop():
    class Packed(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.GRU(3, 5, batch_first=True)
            self.fc = nn.Linear(5, 2)

        def forward(self, x):                               # last channel: a 0/1 step mask
            lengths = x[:, :, -1].sum(1).long().cpu()
            packed = pack_padded_sequence(x[:, :, :-1], lengths, batch_first=True,
                                          enforce_sorted=False)
            _, h = self.rnn(packed)
            return self.fc(h[-1])

    torch.manual_seed(0)
    model = Packed().double()
    x = torch.randn(7, 5, 4, dtype=torch.float64)
    x[:, :, -1] = (torch.arange(5) < torch.tensor([5, 3, 1, 4, 5, 2, 2])[:, None]).double()
    y = torch.randint(0, 2, (7,))
    with pytest.warns(UserWarning, match="one sample at a time"):
        ours = fisher(model, (x, y), batch_size=4)
    assert_close(ours, naive(model, x, empirical_obj(y), torch.square), 1e-10)


@pytest.mark.parametrize("name", ["rnn-tanh", "gru", "lstm"])
def test_signal_refuses_recurrent_layers_by_name(name):
    model = build(name)
    kind = type(model.rnn).__name__
    with pytest.raises(TypeError, match=rf"recurrent layers: layer 'rnn' \({kind}\)"):
        signal(model, data()[0])


def test_fallback_error_names_the_recurrent_layer():
    with pytest.raises(TypeError, match=r"rnn \(GRU\)"):
        fisher(build("gru"), data(), fallback="error")
