import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from myelin.data import datasets, read_idx
from myelin.data.datasets import DataNotFoundError, load, search_paths

SHARED_MNIST = Path(__file__).resolve().parents[3] / "shared" / "data" / "mnist"


def write_idx(path: Path, array: np.ndarray, gz: bool = True, truncate: int = 0) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + b"".join(
        struct.pack(">I", d) for d in array.shape)
    body = header + array.astype(np.uint8).tobytes()
    if truncate:
        body = body[:-truncate]
    (gzip.open if gz else open)(path, "wb").write(body)


def fake_dataset(root: Path, names: dict, transpose=False, labels_from=0, n=(20, 10)):
    """Write random images/labels under `names` = {split: (images file, labels file)}."""
    rng = np.random.RandomState(0)
    out = {}
    for (split, (img_name, lbl_name)), count in zip(names.items(), n):
        images = rng.randint(0, 256, (count, 28, 28)).astype(np.uint8)
        labels = (np.arange(count) % 10 + labels_from).astype(np.uint8)
        write_idx(root / img_name, images.transpose(0, 2, 1) if transpose else images)
        write_idx(root / lbl_name, labels)
        out[split] = (images, labels)
    return out


MNIST_NAMES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
               "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def test_read_idx_plain_gz_and_errors(tmp_path):
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.gz", a)
    write_idx(tmp_path / "a", a, gz=False)
    assert np.array_equal(read_idx(tmp_path / "a.gz"), a)
    assert np.array_equal(read_idx(tmp_path / "a"), a)
    write_idx(tmp_path / "short.gz", a, truncate=5)
    with pytest.raises(ValueError, match="truncated or corrupted"):
        read_idx(tmp_path / "short.gz")
    (tmp_path / "junk").write_bytes(b"hello world")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "junk")
    good = gzip.compress(b"\x00\x00\x08\x01" + struct.pack(">I", 3) + b"abc")
    (tmp_path / "cut.gz").write_bytes(good[:-6])
    with pytest.raises(ValueError, match="corrupted or truncated gzip"):
        read_idx(tmp_path / "cut.gz")


def test_load_from_root_plain_and_torchvision_layouts(tmp_path):
    data = fake_dataset(tmp_path, MNIST_NAMES)
    ds = load("mnist", "train", root=tmp_path)
    assert ds.images.shape == (20, 1, 28, 28) and ds.images.dtype == torch.uint8
    x, y = ds.batch(slice(0, 4))
    assert x.dtype == torch.float32 and float(x.max()) <= 1.0
    assert np.array_equal(y.numpy(), data["train"][1][:4])
    tv = tmp_path / "tv" / "MNIST" / "raw"
    tv.mkdir(parents=True)
    fake_dataset(tv, MNIST_NAMES)
    assert len(load("mnist", "test", root=tmp_path / "tv")) == 10


def test_emnist_orientation_and_label_offset(tmp_path):
    d = tmp_path / "emnist"
    d.mkdir()
    names = {sp: (f"emnist-letters-{sp}-images-idx3-ubyte.gz",
                  f"emnist-letters-{sp}-labels-idx1-ubyte.gz") for sp in ("train", "test")}
    data = fake_dataset(d, names, transpose=True, labels_from=1)
    ds = load("emnist-letters", "train", root=tmp_path)
    assert torch.equal(ds.images[:, 0], torch.from_numpy(data["train"][0]))   # transposed back
    assert int(ds.targets.min()) == 0 and ds.classes[0] == "A"


def test_missing_files_give_a_clear_message_and_no_download_by_default(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("MYELIN_DATA", raising=False)
    monkeypatch.setattr(datasets, "DEBIAN_ROOT", tmp_path / "debian")
    (tmp_path / "nowhere").mkdir()                  # a root that exists but is empty
    with pytest.raises(DataNotFoundError) as err:
        load("fashion-mnist", "train", root=tmp_path / "nowhere")
    msg = str(err.value)
    assert "nowhere" in msg and "download=True" in msg
    with pytest.raises(DataNotFoundError, match="unpack the IDX files"):
        load("emnist-balanced", "test", root=tmp_path)


def test_download_failure_is_fast_clear_and_leaves_no_partial_file(tmp_path, monkeypatch):
    import urllib.request

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("MYELIN_DATA", raising=False)     # a user's data folder would be found

    def refuse(url, timeout):
        raise OSError("network unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    (tmp_path / "none").mkdir()
    with pytest.raises(DataNotFoundError, match=r"Download failed.*network unreachable"):
        load("mnist", "train", root=tmp_path / "none", download=True)
    leftovers = list((tmp_path / "cache").rglob("*"))
    assert all(p.is_dir() for p in leftovers), leftovers


def test_search_order(tmp_path, monkeypatch):
    monkeypatch.setenv("MYELIN_DATA", str(tmp_path / "env"))
    paths = search_paths("fashion-mnist", root=tmp_path / "explicit")
    assert paths[0] == tmp_path / "explicit"
    assert paths.index(tmp_path / "env") < paths.index(Path("/usr/share/datasets/fashion-mnist"))
    assert str(paths[-1]).endswith(os.path.join("myelin", "fashion-mnist"))


def test_digits_split_is_deterministic():
    a, b = load("digits", "train"), load("digits", "train")
    t = load("digits", "test")
    assert len(a) + len(t) == 1797 and torch.equal(a.targets, b.targets)
    assert a.shape == (1, 8, 8) and float(a.batch(slice(None))[0].max()) == 1.0


@pytest.mark.skipif(not SHARED_MNIST.exists(), reason="shared MNIST not beside the repository")
def test_real_mnist():
    ds = load("mnist", "test", root=SHARED_MNIST)
    assert len(ds) == 10000 and ds.targets[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    counts = torch.bincount(ds.targets).tolist()
    assert counts == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_unknown_name_and_split():
    with pytest.raises(ValueError, match="Did you mean 'mnist'"):
        load("mnsit")
    with pytest.raises(ValueError, match="split"):
        load("digits", "validation")
