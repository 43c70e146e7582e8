"""Named datasets: where their files are looked for, how they are read, and opt-in download."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .._registry import Registry
from .idx import parse_idx, read_raw

__all__ = ["DATASETS", "ArrayDataset", "DataNotFoundError", "load", "search_paths"]

SPLITS = ("train", "test")
DEBIAN_ROOT = Path("/usr/share/datasets")      # Debian's dataset-* packages install here


class DataNotFoundError(FileNotFoundError):
    """A dataset's files are not on this machine (and were not downloaded)."""


class ArrayDataset(Dataset):
    """Images and integer labels held as tensors; batches come out as float32.

    Args:
        images: (N, *shape) uint8 (scaled by `scale` on the way out) or floating tensor.
        targets: (N,) integer labels.
        scale: Multiplier applied to images when batches are produced (1/255 for uint8 pixels).
        classes: Names of the classes, index = label.
        name: A short description (dataset, split, transformation).
    """

    def __init__(self, images: Tensor, targets: Tensor, *, scale: float = 1.0,
                 classes: Sequence[str] | None = None, name: str = ""):
        if len(images) != len(targets):
            raise ValueError(f"{len(images)} images but {len(targets)} labels.")
        if targets.is_floating_point():
            raise TypeError("targets must be integer class labels.")
        self.images, self.targets = images, targets.long()
        self.scale = float(scale)
        self.classes = list(classes) if classes is not None else [
            str(c) for c in range(int(targets.max()) + 1 if len(targets) else 0)]
        self.name = name

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.images[i].float() * self.scale, self.targets[i]

    def batch(self, index: Tensor | slice) -> tuple[Tensor, Tensor]:
        """(x float32 (B, *shape), y int64 (B,)) for an index tensor or slice."""
        x = self.images[index]
        return (x.float() * self.scale if self.scale != 1.0 or not x.is_floating_point()
                else x), self.targets[index]

    def tensors(self) -> tuple[Tensor, Tensor]:
        """The whole dataset as (x float32 (N, *shape), y int64 (N,))."""
        return self.batch(slice(None))

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one sample."""
        return tuple(self.images.shape[1:])

    def subset(self, index: Tensor | np.ndarray | Sequence[int], name: str | None = None
               ) -> ArrayDataset:
        """A new dataset holding the samples at `index` (a copy)."""
        index = torch.as_tensor(np.asarray(index), dtype=torch.long)
        return ArrayDataset(self.images[index], self.targets[index], scale=self.scale,
                            classes=self.classes, name=name or self.name)

    @classmethod
    def concat(cls, parts: Sequence[ArrayDataset], name: str = "") -> ArrayDataset:
        """One dataset holding every part's samples in order (same scale and sample shape)."""
        if not parts:
            raise ValueError("concat needs at least one dataset.")
        if len({p.scale for p in parts}) != 1 or len({p.shape for p in parts}) != 1:
            raise ValueError("concat needs datasets with the same scale and sample shape; got "
                             f"{[(p.scale, p.shape) for p in parts]}.")
        if len(parts) == 1:
            return parts[0]
        classes = max((p.classes for p in parts), key=len)
        return cls(torch.cat([p.images for p in parts]), torch.cat([p.targets for p in parts]),
                   scale=parts[0].scale, classes=classes, name=name)

    def with_images(self, images: Tensor, name: str) -> ArrayDataset:
        """Same labels, new images (e.g. permuted or rotated)."""
        return ArrayDataset(images, self.targets, scale=self.scale, classes=self.classes,
                            name=name)

    def with_targets(self, targets: Tensor, classes: Sequence[str], name: str) -> ArrayDataset:
        """Same images, new labels."""
        return ArrayDataset(self.images, targets, scale=self.scale, classes=classes, name=name)

    def __repr__(self) -> str:
        return f"ArrayDataset({self.name!r}, n={len(self)}, shape={self.shape})"


@dataclass(frozen=True)
class IdxSpec:
    """A dataset stored as four IDX files.

    MNIST and Fashion-MNIST use the same file names, so a file is taken for what its content
    is, not its name: `content` holds the sha256 and size of each published file, decompressed
    (the same for ``x.gz`` and ``x``). A file of a published size must have its checksum, and a
    file that is another dataset's is never read as this one's; files of other sizes (a custom
    or reduced copy) are read as they are.
    """

    folder: str                       # directory name under a data root / the Debian path
    files: dict[str, tuple[str, str]]  # split -> (images file, labels file), gzipped names
    md5: dict[str, str]                # file name -> md5 of the .gz
    urls: tuple[str, ...]              # mirrors; file names are appended
    classes: tuple[str, ...]
    transpose: bool = False            # EMNIST stores images transposed
    label_offset: int = 0              # EMNIST letters labels are 1..26
    torchvision: str = ""              # torchvision's folder name (<root>/<name>/raw/)
    content: dict[str, tuple[str, int]] = field(default_factory=dict)  # file name without
    # ".gz" -> (sha256, bytes) of the decompressed published file


def _mnist_files(prefix: str = "") -> dict[str, tuple[str, str]]:
    return {"train": (f"{prefix}train-images-idx3-ubyte.gz", f"{prefix}train-labels-idx1-ubyte.gz"),
            "test": (f"{prefix}t10k-images-idx3-ubyte.gz", f"{prefix}t10k-labels-idx1-ubyte.gz")}


def _emnist_files(kind: str) -> dict[str, tuple[str, str]]:
    return {"train": (f"emnist-{kind}-train-images-idx3-ubyte.gz",
                      f"emnist-{kind}-train-labels-idx1-ubyte.gz"),
            "test": (f"emnist-{kind}-test-images-idx3-ubyte.gz",
                     f"emnist-{kind}-test-labels-idx1-ubyte.gz")}


_LETTERS = tuple(chr(ord("A") + i) for i in range(26))
_BALANCED = tuple("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabdefghnqrt")

IDX_DATASETS: dict[str, IdxSpec] = {
    "mnist": IdxSpec(
        "mnist", _mnist_files(),
        {"train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
         "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
         "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
         "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"},
        ("https://ossci-datasets.s3.amazonaws.com/mnist/",
         "https://storage.googleapis.com/cvdf-datasets/mnist/"),
        tuple(str(i) for i in range(10)), torchvision="MNIST",
        # sha256 of the decompressed files whose .gz have the md5s above
        content={
            "train-images-idx3-ubyte": (
                "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db", 47040016),
            "train-labels-idx1-ubyte": (
                "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5", 60008),
            "t10k-images-idx3-ubyte": (
                "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7", 7840016),
            "t10k-labels-idx1-ubyte": (
                "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2", 10008)}),
    "fashion-mnist": IdxSpec(
        "fashion-mnist", _mnist_files(),
        {"train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
         "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
         "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
         "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"},
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
         "Bag", "Ankle boot"), torchvision="FashionMNIST",
        # sha256 of the decompressed files (the .gz above; Debian's dataset-fashion-mnist
        # re-gzips the same bytes)
        content={
            "train-images-idx3-ubyte": (
                "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888", 47040016),
            "train-labels-idx1-ubyte": (
                "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9", 60008),
            "t10k-images-idx3-ubyte": (
                "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b", 7840016),
            "t10k-labels-idx1-ubyte": (
                "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34", 10008)}),
    # EMNIST ships as one 536 MB zip; no per-file mirror is known, so no download: the loader
    # reads the IDX files once a user has unpacked them into <root>/emnist/.
    "emnist-letters": IdxSpec("emnist", _emnist_files("letters"), {}, (), _LETTERS,
                              transpose=True, label_offset=1, torchvision="EMNIST"),
    "emnist-balanced": IdxSpec("emnist", _emnist_files("balanced"), {}, (), _BALANCED,
                               transpose=True, torchvision="EMNIST"),
}


def search_paths(name: str, root: str | os.PathLike[str] | None = None) -> list[Path]:
    """Directories searched for dataset `name`, in order.

    Explicit `root`, ``$MYELIN_DATA``, Debian's ``/usr/share/datasets/<name>``, then the user
    cache (``$XDG_CACHE_HOME/myelin`` or ``~/.cache/myelin``). Within a root, the files may lie
    directly in it, in ``<root>/<name>/``, or in torchvision's ``<root>/<Name>/raw/``; a
    folder whose files are another dataset's (by their checksums) is passed over.
    """
    spec = IDX_DATASETS.get(name)
    folder = spec.folder if spec else name
    roots: list[Path] = []
    if root is not None:
        roots.append(Path(root))
    if os.environ.get("MYELIN_DATA"):
        roots.append(Path(os.environ["MYELIN_DATA"]))
    out: list[Path] = []
    for r in roots:
        out += [r, r / folder]
        if spec and spec.torchvision:
            out.append(r / spec.torchvision / "raw")
    out.append(DEBIAN_ROOT / folder)
    out.append(cache_dir() / folder)
    return out


def cache_dir() -> Path:
    """The download cache of myelin."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "myelin"


def _find(names: Sequence[str], dirs: Sequence[Path]) -> Iterator[list[Path]]:
    """The paths of `names` (gzipped or not) in each of `dirs` that holds them all, in order."""
    for d in dirs:
        found = []
        for n in names:
            for candidate in (d / n, d / n.removesuffix(".gz")):
                if candidate.is_file():
                    found.append(candidate)
                    break
        if len(found) == len(names):
            yield found


def _not_this(name: str, path: Path, raw: bytes) -> str | None:
    """Why the decompressed bytes `raw` of `path` are not dataset `name`'s file, or None."""
    if len(raw) not in {size for spec in IDX_DATASETS.values() for _, size in
                        spec.content.values()}:
        return None                             # no published file: a custom copy
    key = path.name.removesuffix(".gz")
    digest = hashlib.sha256(raw).hexdigest()
    published = IDX_DATASETS[name].content.get(key)
    if published and digest == published[0]:
        return None
    for other, spec in IDX_DATASETS.items():
        for file, (other_digest, _) in spec.content.items():
            if other != name and digest == other_digest:
                return f"{path} is {other}'s {file}, not {name}'s"
    if published and len(raw) == published[1]:
        return (f"{path} has the size of {name}'s {key} but not its content (sha256 "
                f"{digest[:16]}..., published {published[0][:16]}...): another dataset with "
                "the same file names, or a modified copy")
    return None


def _read_checked(name: str, paths: Sequence[Path], skipped: list[str]
                  ) -> tuple[np.ndarray, np.ndarray] | None:
    """(images, labels) from `paths`, or None (and why in `skipped`) if they are not `name`'s."""
    raw = {}
    for path in reversed(paths):                # the labels first: small, and enough to tell
        raw[path] = read_raw(path)
        problem = _not_this(name, path, raw[path])
        if problem:
            skipped.append(problem)
            return None
    return parse_idx(raw[paths[0]], paths[0]), parse_idx(raw[paths[1]], paths[1])


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _download(spec: IdxSpec, names: Sequence[str], target: Path, timeout: float) -> None:
    """Fetch `names` into `target` with checksums; a file appears only once it is verified."""
    if not spec.urls:
        raise DataNotFoundError("No download source is known for this dataset.")
    target.mkdir(parents=True, exist_ok=True)
    for n in names:
        if (target / n).is_file():
            continue
        errors = []
        for base in spec.urls:
            fd, tmp = tempfile.mkstemp(prefix=".part-", dir=target)
            os.close(fd)
            try:
                with urllib.request.urlopen(base + n, timeout=timeout) as r, \
                        open(tmp, "wb") as f:
                    while chunk := r.read(1 << 20):
                        f.write(chunk)
                digest = _md5(Path(tmp))
                if spec.md5.get(n) and digest != spec.md5[n]:
                    raise OSError(f"checksum mismatch (md5 {digest}, expected {spec.md5[n]})")
                os.replace(tmp, target / n)
                break
            except (TimeoutError, OSError, urllib.error.URLError) as exc:
                errors.append(f"{base + n}: {exc}")
            finally:
                with contextlib.suppress(OSError):
                    os.remove(tmp)
        else:
            raise DataNotFoundError("Download failed: " + "; ".join(errors))


def _load_idx(name: str, split: str, root: str | os.PathLike[str] | None, download: bool,
              timeout: float) -> ArrayDataset:
    spec = IDX_DATASETS[name]
    names = spec.files[split]
    dirs = search_paths(name, root)
    skipped: list[str] = []
    found = next(((paths, arrays) for paths in _find(names, dirs)
                  if (arrays := _read_checked(name, paths, skipped)) is not None), None)
    if found is None and download:
        try:
            _download(spec, names, cache_dir() / spec.folder, timeout)
        except DataNotFoundError as exc:
            raise DataNotFoundError(_missing_message(name, names, dirs, str(exc), skipped)
                                    ) from exc
        found = next(((paths, arrays) for paths in _find(names, [cache_dir() / spec.folder])
                      if (arrays := _read_checked(name, paths, skipped)) is not None), None)
    if found is None:
        hint = (f"fetch them into {cache_dir() / spec.folder} with python -c \"from myelin.data "
                f"import load; load('{name}', 'train', download=True); load('{name}', 'test', "
                "download=True)\" (the command line never downloads)"
                if spec.urls else "download the EMNIST archive from NIST and unpack the IDX files")
        raise DataNotFoundError(_missing_message(name, names, dirs, hint, skipped))
    paths, (images, labels) = found
    labels = labels.astype(np.int64)
    if len(images) != len(labels):
        raise ValueError(f"{paths[0]} holds {len(images)} images but {paths[1]} holds "
                         f"{len(labels)} labels.")
    if images.ndim != 3:
        raise ValueError(f"{paths[0]}: expected (N, H, W) images, got shape {images.shape}.")
    if spec.transpose:
        images = images.transpose(0, 2, 1)
    labels = labels - spec.label_offset
    if labels.min() < 0 or labels.max() >= len(spec.classes):
        raise ValueError(f"{paths[1]}: labels outside [0, {len(spec.classes)}).")
    x = torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1)       # (N, 1, H, W)
    return ArrayDataset(x, torch.from_numpy(labels), scale=1 / 255, classes=spec.classes,
                        name=f"{name}/{split}")


def _missing_message(name: str, names: Sequence[str], dirs: Sequence[Path], hint: str,
                     skipped: Sequence[str] = ()) -> str:
    looked = "\n  ".join(str(d) for d in dirs)
    passed = "".join(f"\n  {s}" for s in skipped)
    passed = f"Passed over (not {name}'s files):{passed}\n" if passed else ""
    return (f"Dataset {name!r}: files {list(names)} not found. Looked in:\n  {looked}\n"
            f"{passed}Put the files in one of these folders (or set $MYELIN_DATA, or pass "
            f"root=), or {hint}.")


def _load_digits(split: str) -> ArrayDataset:
    """scikit-learn's bundled 8x8 digits (1797 images, values 0..16), a fixed 80/20 split."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    order = np.random.RandomState(0).permutation(len(x))
    cut = int(0.8 * len(x))
    idx = order[:cut] if split == "train" else order[cut:]
    images = torch.from_numpy(x[idx].reshape(-1, 1, 8, 8).astype(np.uint8))
    return ArrayDataset(images, torch.from_numpy(y[idx].astype(np.int64)), scale=1 / 16,
                        classes=[str(i) for i in range(10)], name=f"digits/{split}")


DATASETS: Registry[Callable[..., ArrayDataset]] = Registry("dataset")
for _name in IDX_DATASETS:
    DATASETS.add(_name, lambda split, root, download, timeout, _n=_name:
                 _load_idx(_n, split, root, download, timeout),
                 f"{_name} (IDX files)")
DATASETS.add("digits", lambda split, root, download, timeout: _load_digits(split),
             "scikit-learn's bundled 8x8 digits, 1437 train / 360 test")


def load(name: str, split: str = "train", root: str | os.PathLike[str] | None = None, *,
         download: bool = False, timeout: float = 30.0) -> ArrayDataset:
    """Load a named dataset split as an `ArrayDataset` of (1, H, W) images in [0, 1].

    Args:
        name: "mnist", "fashion-mnist", "emnist-letters", "emnist-balanced" or "digits".
        split: "train" or "test".
        root: A directory to search first (see `search_paths` for the rest); it must exist.
        download: Fetch missing files into the user cache, verifying checksums (MNIST and
            Fashion-MNIST). Off by default: nothing touches the network unless asked.
        timeout: Seconds before a stalled download is abandoned.

    Raises:
        DataNotFoundError: `root` is not a directory, or the files are missing, or only
            another dataset's files of the same names were found (the message lists where it
            looked and what it passed over).
        ValueError: Unknown name or split, or corrupted/truncated files.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}. Got {split!r}.")
    if root is not None and not Path(root).is_dir():
        state = "is not a directory" if Path(root).exists() else "does not exist"
        raise DataNotFoundError(
            f"The data root (root={os.fspath(root)!r}) {state}. Pass the folder that holds the "
            f"{name} files (or their parent), or no root to search $MYELIN_DATA, "
            f"{DEBIAN_ROOT}/<name> and {cache_dir()}.")
    factory = DATASETS.get(name)
    return factory(split, root, download, timeout)
