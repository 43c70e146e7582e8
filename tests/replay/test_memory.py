"""Replay memories: reservoir uniformity (inclusive bound), rings, budgets, storage."""

import numpy as np
import pytest
import torch
from scipy import stats

from myelin.replay import ReservoirMemory, RingMemory, budget


def _batch(start, n=10, width=3):
    i = torch.arange(start, start + n)
    return i[:, None].float().expand(n, width).clone(), i


def test_reservoir_is_uniform_over_the_stream():
    n_items, capacity, runs = 500, 50, 200
    counts = np.zeros(n_items)
    for r in range(runs):
        mem = ReservoirMemory(capacity, torch.Generator().manual_seed(r))
        for start in range(0, n_items, 10):
            mem.add(_batch(start), task=start * 5 // n_items)
        assert len(mem) == capacity
        _, y = mem.get(mem.slots())
        assert len(set(y.tolist())) == capacity          # no sample stored twice
        counts[y.numpy()] += 1
    expected = runs * capacity / n_items
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert stats.chi2.sf(chi2, n_items - 1) > 1e-3
    # early and late halves of the stream are kept equally often
    assert abs(counts[:250].mean() - counts[250:].mean()) < 0.1 * expected


def test_reservoir_bound_is_inclusive():
    # capacity 1, two items: the second must replace the first with probability 1/2
    # (randint(0, n) exclusive of n would always replace it).
    kept_second = 0
    gen = torch.Generator().manual_seed(0)
    for _ in range(2000):
        mem = ReservoirMemory(1, gen)
        mem.add(_batch(0, n=2), task=0)
        kept_second += int(mem.get(mem.slots())[1][0] == 1)
    assert stats.binomtest(kept_second, 2000, 0.5).pvalue > 1e-3


def test_ring_keeps_the_last_samples_of_each_task():
    mem = RingMemory(per_task=4, n_tasks=2)
    for start in (0, 10, 20):
        mem.add(_batch(start, n=3), task=0)
    mem.add(_batch(100, n=6), task=1)
    assert len(mem) == 8 <= mem.capacity
    assert sorted(mem.get(mem.task_slots(0))[1].tolist()) == [12, 20, 21, 22]
    assert sorted(mem.get(mem.task_slots(1))[1].tolist()) == [102, 103, 104, 105]
    batch, tasks = mem.sample(100, tasks=[1])
    assert tasks.tolist() == [1] * 4 and sorted(batch[1].tolist()) == [102, 103, 104, 105]
    assert mem.sample(5, tasks=[0], exclude=0) is None
    with pytest.raises(ValueError, match="outside"):
        mem.add(_batch(0), task=2)


def test_memory_stores_tensors_not_objects_and_counts_bytes():
    mem = ReservoirMemory(20)
    assert mem.nbytes() == 0
    mem.add(_batch(0, width=5), task=0)
    assert mem.bytes_per_sample() == 5 * 4 + 8             # float32 x + int64 label
    assert mem.nbytes() == 20 * mem.bytes_per_sample()
    with pytest.raises(ValueError, match="differs"):
        mem.add(_batch(0, width=4), task=0)
    d = ReservoirMemory(5)
    d.add({"x": torch.ones(3, 2), "labels": torch.zeros(3, dtype=torch.long)}, task=0)
    got, _ = d.sample(2)
    assert set(got) == {"x", "labels"} and got["x"].shape == (2, 2)
    with pytest.raises(ValueError, match="first"):
        d.add({"x": torch.ones(3, 2), "labels": torch.zeros(2, dtype=torch.long)}, task=0)


@pytest.mark.parametrize("bad", [0, -5, 2.5, True])
def test_bad_sizes_are_refused(bad):
    with pytest.raises(ValueError, match="positive"):
        ReservoirMemory(bad)
    with pytest.raises(ValueError, match="positive"):
        RingMemory(bad, 3)
    with pytest.raises(ValueError, match="positive"):
        budget(bad, None, 3)


def test_budget_units():
    assert budget(None, 50, 10) == (500, 50)
    assert budget(500, None, 10) == (500, 50)
    with pytest.raises(ValueError, match="exactly one"):
        budget(500, 50, 10)
    with pytest.raises(ValueError, match="exactly one"):
        budget(None, None, 10)
    with pytest.raises(ValueError, match="fewer samples than"):
        budget(5, None, 10)
