"""Fisher and MAS against a naive per-sample loop (batch of 1, autograd, float64)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from myelin.importance import fisher, mas
from myelin.importance.fisher import draw_labels

from .models import inverse_cdf, mixed_data, mlp, trained_bn_mixed


def naive(model, x, objective, reduce):
    """Σ_n f(∂ objective_n / ∂θ) / n by a loop; objective(logits (1, C)) -> list of scalars."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    model.eval()
    for k in range(len(x)):
        logits = model(x[k:k + 1])
        for weight, obj in objective(logits, k):
            grads = torch.autograd.grad(obj, list(params.values()), retain_graph=True,
                                        allow_unused=True)
            for (n, _), g in zip(params.items(), grads):
                if g is not None:
                    total[n] += weight * reduce(g)
    return {n: v / len(x) for n, v in total.items()}


def assert_close(ours, ref, tol=1e-4):
    assert set(ours) == set(ref)
    for n in ref:
        scale = ref[n].abs().max().clamp_min(1e-12)
        err = ((ours[n] - ref[n]).abs().max() / scale).item()
        assert err <= tol, f"{n}: relative error {err:.2e}"


def empirical_obj(y):
    return lambda logits, k: [(1.0, F.log_softmax(logits, -1)[0, y[k]])]


def exact_obj(logits, k):
    logp = F.log_softmax(logits, -1)[0]
    return [(logp[c].exp().detach(), logp[c]) for c in range(logp.shape[0])]


def mas_obj(logits, k):
    return [(1.0, (F.softmax(logits, -1) ** 2).sum())]


@pytest.fixture(scope="module")
def setup():
    model = trained_bn_mixed()
    x, y = mixed_data(24)
    return model, x, y


def test_empirical_fisher_matches_naive_on_mixed_model(setup):
    model, x, y = setup
    ours = fisher(model, (x, y), batch_size=10)
    assert_close(ours, naive(model, x, empirical_obj(y), torch.square))
    assert ours.meta["labels"] == "empirical" and ours.meta["n_samples"] == 24


def test_exact_fisher_matches_naive_on_mixed_model(setup):
    model, x, y = setup
    ours = fisher(model, (x, y), empirical=False, exact=True, batch_size=7)
    assert_close(ours, naive(model, x, exact_obj, torch.square))


def test_sampled_fisher_is_empirical_fisher_of_the_sampled_labels(setup):
    model, x, _ = setup
    ours = fisher(model, x, empirical=False, seed=3, batch_size=len(x))
    with torch.no_grad():
        p = F.softmax(model.eval()(x), -1)
    labels = inverse_cdf(p, torch.Generator().manual_seed(3))
    assert_close(ours, naive(model, x, empirical_obj(labels), torch.square))
    again = fisher(model, x, empirical=False, seed=3, batch_size=len(x))
    assert all(torch.equal(ours[n], again[n]) for n in ours)


def test_sampled_fisher_averages_to_exact_fisher():
    torch.manual_seed(1)
    model = mlp().double()
    x = torch.randn(40, 10, dtype=torch.float64)
    exact = fisher(model, x, empirical=False, exact=True)
    runs = [fisher(model, x, empirical=False, seed=s) for s in range(300)]
    for n in exact:
        mean = torch.stack([r[n] for r in runs]).mean(0)
        rel = (mean - exact[n]).norm() / exact[n].norm()
        assert rel < 0.1, (n, rel.item())


def test_mas_matches_naive_on_mixed_model(setup):
    model, x, y = setup
    ours = mas(model, (x, y), batch_size=9)
    assert_close(ours, naive(model, x, mas_obj, torch.abs))


def test_mas_variants_match_naive(setup):
    model, x, _ = setup
    logit_l2 = mas(model, x, output="logits", norm="l2")
    ref = naive(model, x, lambda logits, k: [(1.0, logits.norm())], torch.abs)
    assert_close(logit_l2, ref)
    batched = mas(model, x, per_sample=False, batch_size=5)
    summed = naive(model, x, mas_obj, lambda g: g)
    assert_close(batched, {n: v.abs() for n, v in summed.items()})


def test_functional_fallback_alone_matches_rules(setup):
    """Routing every layer through torch.func gives the same numbers as the rules."""
    model, x, y = setup
    ours = fisher(model, (x, y))
    from myelin.importance import _rules
    saved = dict(_rules.RULES)
    _rules.RULES.clear()
    try:
        generic = fisher(model, (x, y))
    finally:
        _rules.RULES.update(saved)
    assert_close(generic, ours, tol=1e-8)


def test_fallback_error_names_the_layer(setup):
    model, x, y = setup
    with pytest.raises(TypeError, match=r"attn \(MultiheadAttention\)"):
        fisher(model, (x, y), fallback="error")


class Tied(nn.Module):
    """Embedding tied to the output layer, and a Linear called twice."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(7, 6)
        self.mid = nn.Linear(6, 6)
        self.out = nn.Linear(6, 7, bias=False)
        self.out.weight = self.emb.weight
        self.scale = nn.Parameter(torch.tensor(1.5))   # a raw parameter: fallback path

    def forward(self, ids):
        h = self.emb(ids).mean(1)
        h = torch.tanh(self.mid(torch.tanh(self.mid(h))))
        return self.scale * self.out(h)


def test_shared_weights_and_repeated_calls_match_naive():
    torch.manual_seed(2)
    model = Tied().double()
    ids = torch.randint(0, 7, (15, 4))
    y = torch.randint(0, 7, (15,))
    ours = fisher(model, (ids, y), batch_size=6)
    assert_close(ours, naive(model, ids, empirical_obj(y), torch.square))
    ours = mas(model, ids, batch_size=6)
    assert_close(ours, naive(model, ids, mas_obj, torch.abs))


class SeqFirst(nn.Module):
    """A Linear applied to (T, N, I): samples are not on the first dimension."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(5, 5)
        self.head = nn.Linear(5, 3)

    def forward(self, x):                       # x: (N, T, 5)
        h = torch.relu(self.proj(x.transpose(0, 1)))   # (T, N, 5)
        return self.head(h.mean(0))


def test_layer_seeing_time_first_tensors_falls_back():
    torch.manual_seed(3)
    model = SeqFirst().double()
    x = torch.randn(9, 4, 5, dtype=torch.float64)
    y = torch.randint(0, 3, (9,))
    assert_close(fisher(model, (x, y)), naive(model, x, empirical_obj(y), torch.square))


def test_sequence_outputs_sum_log_likelihood_over_positions():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Embedding(9, 6), nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 9)).double()
    ids = torch.randint(0, 9, (8, 5))
    y = torch.randint(0, 9, (8, 5))

    def obj(logits, k):
        return [(1.0, F.log_softmax(logits, -1)[0].gather(-1, y[k][:, None]).sum())]

    assert_close(fisher(model, (ids, y)), naive(model, ids, obj, torch.square))


def test_linear_fast_path_mlp_float32_close_to_naive():
    torch.manual_seed(5)
    model = mlp((20, 32, 16, 5))
    x, y = torch.randn(50, 20), torch.randint(0, 5, (50,))
    assert_close(fisher(model, (x, y)), naive(model, x, empirical_obj(y), torch.square), 1e-4)


def test_conv_same_padding_even_kernel_and_dilation():
    """'same' with an even kernel pads asymmetrically; dilation and stride 1 conv1d too."""
    torch.manual_seed(6)
    model = nn.Sequential(nn.Conv2d(2, 3, 4, padding="same", dilation=2), nn.ReLU(),
                          nn.Conv2d(3, 2, 3, padding=1, padding_mode="circular"), nn.Flatten(),
                          nn.Linear(2 * 5 * 5, 3)).double()
    x = torch.randn(7, 2, 5, 5, dtype=torch.float64)
    y = torch.randint(0, 3, (7,))
    assert_close(fisher(model, (x, y)), naive(model, x, empirical_obj(y), torch.square))
    assert_close(mas(model, x), naive(model, x, mas_obj, torch.abs))


@pytest.mark.parametrize("kind", ["linear", "embedding", "hf_conv1d"])
@pytest.mark.parametrize("stale", [True, False])
def test_accumulate_rules_equal_per_sample(kind, stale):
    """A rule's in-place `accumulate` adds (or, for stale buffers, writes) what `per_sample`
    returns; a stale buffer's old values, even NaN, leave no trace."""
    from myelin.importance._rules import find_rule

    torch.manual_seed(0)
    n, t = 3, 5
    if kind == "linear":
        module, x = nn.Linear(4, 6), torch.randn(n, t, 4)
        delta = torch.randn(n, t, 6)
    elif kind == "embedding":
        module, x = nn.Embedding(7, 4, padding_idx=0), torch.randint(0, 7, (n, t))
        x[0, :2] = 3                                   # repeated ids within a sample
        delta = torch.randn(n, t, 4)
    else:
        transformers = pytest.importorskip("transformers")
        from transformers.pytorch_utils import Conv1D
        assert transformers
        module, x = Conv1D(6, 4), torch.randn(n, t, 4)
        delta = torch.randn(n, t, 6)
    rule = find_rule(module)
    assert rule is not None and rule.accumulate is not None
    want = rule.per_sample(module, (x,), delta.unsqueeze(0))
    names = [k for k, _ in module.named_parameters()]
    start = {k: torch.full_like(want[k][0], float("nan") if stale else 1.5) for k in names}
    out = {k: v.clone() for k, v in start.items()}
    rule.accumulate(module, (x,), delta, out, frozenset(names) if stale else frozenset())
    for k in names:
        expected = want[k][0] if stale else start[k] + want[k][0]
        torch.testing.assert_close(out[k], expected)


def test_draw_labels_is_distributed_like_the_probabilities():
    """Inverse-CDF labels: frequencies match p; classes of probability 0 are never drawn."""
    p = torch.tensor([[0.0, 0.5, 0.0, 0.3, 0.2], [0.1, 0.0, 0.0, 0.0, 0.9]])
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([draw_labels(p, g) for _ in range(4000)])     # (4000, 2)
    for r in range(2):
        freq = torch.bincount(draws[:, r], minlength=5).double() / len(draws)
        assert torch.allclose(freq, p[r].double(), atol=0.03), (r, freq)
        assert (freq[p[r] == 0] == 0).all()
    again = draw_labels(p.expand(3, 7, 2, 5).reshape(3, 7, 2, 5), torch.Generator().manual_seed(5))
    assert again.shape == (3, 7, 2) and again.dtype == torch.long
    ref = inverse_cdf(p.expand(21, 2, 5).reshape(-1, 5), torch.Generator().manual_seed(5))
    assert torch.equal(again.reshape(-1), ref)
