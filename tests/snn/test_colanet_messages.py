"""CoLaNET's bad-input messages (issue 22): integer pixels, chunk, seed."""

import numpy as np
import pytest

from myelin.snn import CoLaNET


def test_integer_pixels_are_read_as_0_to_255_or_refused_by_range():
    net = CoLaNET(n_inputs=4, n_classes=2, microcolumns=1)
    x = np.array([[0, 255, 7, 9], [1, 2, 3, 4]], dtype=np.int64)
    net.fit(x, np.array([0, 1]))                       # int64 0..255: accepted like uint8
    with pytest.raises(ValueError, match=r"Integer X must hold pixel values 0\.\.255"):
        net.fit(x * 2, np.array([0, 1]))


@pytest.mark.parametrize("chunk", [0, -1, 2.5, True])
def test_chunk_must_be_a_positive_int(chunk):
    net = CoLaNET(n_inputs=4, n_classes=2, microcolumns=1)
    with pytest.raises(ValueError, match="chunk must be a positive int"):
        net.fit(np.zeros((2, 4), np.uint8), np.array([0, 1]), chunk=chunk)


@pytest.mark.parametrize("seed", ["x", 1.5, True, -1])
def test_seed_must_be_a_non_negative_int(seed):
    with pytest.raises(TypeError, match="seed must be a non-negative int"):
        CoLaNET(n_inputs=4, n_classes=2, microcolumns=1, seed=seed)
