"""A dataset's files are taken for what they hold, not their names (issue 22, item 2)."""

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from myelin.data import datasets
from myelin.data.datasets import DataNotFoundError, load

from .test_data import MNIST_NAMES, SHARED_MNIST, fake_dataset, write_idx

needs_mnist = pytest.mark.skipif(not (SHARED_MNIST / "t10k-labels-idx1-ubyte.gz").exists(),
                                 reason="shared MNIST not beside the repository")
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No $MYELIN_DATA, an empty Debian path and cache: only the root given is searched."""
    monkeypatch.delenv("MYELIN_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(datasets, "DEBIAN_ROOT", tmp_path / "debian")
    return tmp_path


@needs_mnist
def test_mnist_files_are_not_read_as_fashion_mnist(isolated):
    with pytest.raises(DataNotFoundError) as err:
        load("fashion-mnist", "test", root=SHARED_MNIST)
    msg = str(err.value)
    assert f"{SHARED_MNIST / 't10k-labels-idx1-ubyte.gz'} is mnist's t10k-labels-idx1-ubyte, " \
        "not fashion-mnist's" in msg
    assert str(SHARED_MNIST) in msg


@needs_mnist
@pytest.mark.skipif(not (DEBIAN_FASHION / "t10k-labels-idx1-ubyte.gz").exists(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_a_shared_root_passes_over_the_other_datasets_files(monkeypatch):
    monkeypatch.delenv("MYELIN_DATA", raising=False)
    mnist = load("mnist", "test", root=SHARED_MNIST)
    fashion = load("fashion-mnist", "test", root=SHARED_MNIST)   # found in Debian's folder
    assert not torch.equal(mnist.images, fashion.images)
    assert abs(float(fashion.images.float().mean()) / 255 - 0.2868) < 1e-3   # known statistics
    assert abs(float(mnist.images.float().mean()) / 255 - 0.1325) < 1e-3


@needs_mnist
def test_gzipped_and_decompressed_files_are_both_recognised(isolated):
    root = isolated / "raw"
    root.mkdir()
    for name in MNIST_NAMES["test"]:
        with gzip.open(SHARED_MNIST / name) as src, open(root / name[:-3], "wb") as dst:
            shutil.copyfileobj(src, dst)
    assert torch.equal(load("mnist", "test", root=root).targets,
                       load("mnist", "test", root=SHARED_MNIST).targets)
    with pytest.raises(DataNotFoundError, match=r"raw/t10k-labels-idx1-ubyte is mnist's"):
        load("fashion-mnist", "test", root=root)


def test_a_file_of_the_published_size_must_have_its_checksum(isolated):
    root = isolated / "other"
    root.mkdir()
    write_idx(root / "t10k-images-idx3-ubyte.gz", np.zeros((10000, 28, 28), np.uint8))
    write_idx(root / "t10k-labels-idx1-ubyte.gz", np.arange(10000) % 10)
    with pytest.raises(DataNotFoundError) as err:
        load("mnist", "test", root=root)
    assert "t10k-labels-idx1-ubyte.gz has the size of mnist's t10k-labels-idx1-ubyte but not " \
        "its content" in str(err.value)
    assert str(root) in str(err.value)


def test_a_root_that_does_not_exist_is_an_error_not_a_fallback(isolated, monkeypatch):
    env = isolated / "env"
    env.mkdir()
    fake_dataset(env, MNIST_NAMES)
    monkeypatch.setenv("MYELIN_DATA", str(env))
    assert len(load("mnist", "test")) == 10                     # no root: $MYELIN_DATA
    for root, state in ((isolated / "typo", "does not exist"),
                        (env / "t10k-labels-idx1-ubyte.gz", "is not a directory")):
        with pytest.raises(DataNotFoundError) as err:
            load("mnist", "test", root=root)
        assert f"root={str(root)!r}) {state}" in str(err.value)


def test_the_missing_files_hint_names_no_cli_flag(isolated):
    (isolated / "empty").mkdir()
    with pytest.raises(DataNotFoundError) as err:
        load("mnist", "test", root=isolated / "empty")
    msg = str(err.value)
    assert "--download" not in msg
    assert "load('mnist', 'test', download=True)" in msg and "never downloads" in msg
