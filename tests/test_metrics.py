import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from myelin import metrics

A = [[0.9, 0.1, 0.1],
     [0.7, 0.95, 0.2],
     [0.6, 0.8, 0.97]]


def test_values_by_hand():
    assert metrics.average_accuracy(A) == pytest.approx((0.6 + 0.8 + 0.97) / 3)
    assert metrics.average_accuracy_curve(A) == pytest.approx([0.9, 0.825, (0.6 + 0.8 + 0.97) / 3])
    # max over earlier rows minus last row: task 1: 0.9 - 0.6, task 2: 0.95 - 0.8
    assert metrics.forgetting(A) == pytest.approx((0.3 + 0.15) / 2)
    assert metrics.backward_transfer(A) == pytest.approx(((0.6 - 0.9) + (0.8 - 0.95)) / 2)
    assert metrics.learning_accuracy(A) == pytest.approx((0.9 + 0.95 + 0.97) / 3)
    assert metrics.forward_transfer(A, [0.1, 0.1, 0.1]) == pytest.approx((0.0 + 0.1) / 2)
    assert metrics.two_task_forgetting(A) == pytest.approx(0.2)
    s = metrics.summary(A, [0.1, 0.1, 0.1])
    assert set(s) == {"average_accuracy", "learning_accuracy", "forgetting", "backward_transfer",
                      "two_task_forgetting", "forward_transfer"}


def test_bad_matrices():
    with pytest.raises(ValueError, match="square"):
        metrics.average_accuracy([[0.5, 0.5]])
    with pytest.raises(ValueError, match="at least 2 tasks"):
        metrics.forgetting([[0.5]])
    with pytest.raises(ValueError, match="NaN"):
        metrics.average_accuracy([[float("nan")]])
    with pytest.raises(ValueError, match="one accuracy per task"):
        metrics.forward_transfer(A, [0.1])


matrices = st.integers(2, 6).flatmap(
    lambda t: arrays(np.float64, (t, t), elements=st.floats(0, 1)))


@settings(max_examples=60, deadline=None)
@given(matrices)
def test_invariants(a):
    assert 0 <= metrics.average_accuracy(a) <= 1
    assert metrics.forgetting(a) >= -metrics.backward_transfer(a) - 1e-12
    assert -1 <= metrics.backward_transfer(a) <= 1


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 6), st.floats(0, 1))
def test_constant_matrix_has_no_forgetting(t, v):
    a = np.full((t, t), v)
    assert metrics.forgetting(a) == pytest.approx(0) and metrics.backward_transfer(a) == 0


@settings(max_examples=60, deadline=None)
@given(matrices, st.floats(0, 1))
def test_raising_the_last_row_never_raises_forgetting(a, bump):
    b = a.copy()
    b[-1] = np.minimum(1.0, b[-1] + bump)
    assert metrics.forgetting(b) <= metrics.forgetting(a) + 1e-12


def test_ci95():
    from scipy.stats import t

    mean, half = metrics.ci95([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(t.ppf(0.975, 2) * 1.0 / np.sqrt(3))
    assert metrics.ci95([0.5, 0.7]) == pytest.approx((0.6, 12.7062047 * 0.1414213562 / np.sqrt(2)))
    mean, half = metrics.ci95([0.8])                  # one run: the spread is undefined
    assert mean == 0.8 and np.isnan(half)
    assert metrics.ci95(np.array([0.3, 0.3, 0.3])) == (0.3, 0.0)
    assert metrics.ci95(v for v in (1, 3)) == pytest.approx((2.0, 12.7062047))
    with pytest.raises(ValueError, match="non-empty"):
        metrics.ci95([])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3), min_size=2, max_size=30))
def test_ci95_contains_the_mean_and_shrinks_with_agreement(values):
    mean, half = metrics.ci95(values)
    assert half >= 0 and mean == pytest.approx(np.mean(values), abs=1e-9)
    assert metrics.ci95(values * 2)[1] <= half + 1e-9          # more runs, same spread
