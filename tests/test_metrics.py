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


# Every column's maximum over the earlier rows is off the diagonal (task 1 peaks after task 2,
# task 2 after task 3), the last row beats its earlier rows on task 3, and the row maxima differ
# from the column maxima: FM, −BWT, a max along the wrong axis and a max that includes the last
# row all differ here.
B = [[0.50, 0.20, 0.10, 0.10],
     [0.80, 0.60, 0.15, 0.10],
     [0.70, 0.90, 0.70, 0.20],
     [0.40, 0.50, 0.95, 0.90]]


def test_values_by_hand_with_column_maxima_off_the_diagonal():
    # FM: max over rows 1..3 of columns 1..3 (0.8, 0.9, 0.7) minus the last row (0.4, 0.5, 0.95)
    assert metrics.forgetting(B) == pytest.approx((0.4 + 0.4 - 0.25) / 3)
    # BWT: last row minus the diagonal (0.5, 0.6, 0.7), columns 1..3
    assert metrics.backward_transfer(B) == pytest.approx((-0.1 - 0.1 + 0.25) / 3)
    assert metrics.average_accuracy(B) == pytest.approx((0.4 + 0.5 + 0.95 + 0.9) / 4)
    assert metrics.average_accuracy_curve(B) == pytest.approx(
        [0.5, (0.8 + 0.6) / 2, (0.7 + 0.9 + 0.7) / 3, (0.4 + 0.5 + 0.95 + 0.9) / 4])
    assert metrics.learning_accuracy(B) == pytest.approx((0.5 + 0.6 + 0.7 + 0.9) / 4)
    # FWT: a[j-1, j] - b_j for j = 2..4: 0.2 - 0.1, 0.15 - 0.05, 0.2 - 0.15
    assert metrics.forward_transfer(B, [0.0, 0.1, 0.05, 0.15]) == pytest.approx(0.25 / 3)
    assert metrics.two_task_forgetting(B) == pytest.approx(0.5 - 0.8)


def test_forgetting_takes_the_maximum_over_every_earlier_row():
    """Chaudhry et al. 2018, eq. 3 (and the docstring): max over l < T, rows before task j too."""
    a = [[0.5, 0.9, 0.1],         # task 2 scores 0.9 before it is trained (a domain-IL head)
         [0.4, 0.6, 0.1],
         [0.3, 0.5, 0.8]]
    assert metrics.forgetting(a) == pytest.approx(((0.5 - 0.3) + (0.9 - 0.5)) / 2)


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


@settings(max_examples=60, deadline=None)
@given(matrices, st.data())
def test_the_last_row_enters_fm_and_bwt_only_as_minus_a_T_j(a, data):
    """Raising a[T, j] (j < T) by d lowers FM and raises BWT by exactly d / (T - 1): the last
    row is never part of the maximum, and the other entries of row T do not count."""
    t = len(a)
    j = data.draw(st.integers(0, t - 2))
    d = data.draw(st.floats(0.01, 2.0))
    b = a.copy()
    b[-1, j] += d
    b[-1, -1] = data.draw(st.floats(0, 1))            # the last task's own entry: no effect
    assert metrics.forgetting(b) == pytest.approx(metrics.forgetting(a) - d / (t - 1), abs=1e-9)
    assert metrics.backward_transfer(b) == pytest.approx(
        metrics.backward_transfer(a) + d / (t - 1), abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(matrices, st.data())
def test_fm_is_the_column_maximum_over_earlier_rows(a, data):
    """Raising an earlier row's entry a[l, j] (l < T, j < T) to above its column's maximum over
    the earlier rows raises FM by exactly the excess / (T - 1); shuffling the earlier rows or
    changing the last column leaves FM unchanged. BWT sees the raise only on the diagonal."""
    t = len(a)
    j = data.draw(st.integers(0, t - 2))
    l_ = data.draw(st.integers(0, t - 2))
    excess = data.draw(st.floats(0.01, 1.0))
    b = a.copy()
    top = a[:-1, j].max()
    b[l_, j] = top + excess
    assert metrics.forgetting(b) == pytest.approx(metrics.forgetting(a) + excess / (t - 1),
                                                  abs=1e-9)
    bwt_change = (top + excess - a[l_, j]) / (t - 1) if l_ == j else 0.0
    assert metrics.backward_transfer(b) == pytest.approx(
        metrics.backward_transfer(a) - bwt_change, abs=1e-9)
    order = data.draw(st.permutations(range(t - 1)))
    c = a.copy()
    c[:-1] = a[list(order)]
    c[:, -1] = data.draw(arrays(np.float64, (t,), elements=st.floats(0, 1)))
    assert metrics.forgetting(c) == pytest.approx(metrics.forgetting(a), abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(matrices)
def test_fm_equals_minus_bwt_when_each_task_peaks_right_after_it_is_learned(a):
    """With every column's maximum over the earlier rows on the diagonal, FM = −BWT; lifting one
    later entry above the diagonal then makes FM > −BWT."""
    t = len(a)
    b = a.copy()
    for j in range(t - 1):
        b[j, j] = b[:-1, j].max()
    assert metrics.forgetting(b) == pytest.approx(-metrics.backward_transfer(b), abs=1e-12)
    if t > 2:
        b[1, 0] = b[0, 0] + 0.5
        assert metrics.forgetting(b) > -metrics.backward_transfer(b) + 0.5 / (t - 1) - 1e-9


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
