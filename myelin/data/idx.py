"""Reader for IDX files (MNIST, Fashion-MNIST, EMNIST), plain or gzipped."""

from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

__all__ = ["parse_idx", "read_idx", "read_raw"]

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file into an array of shape given by its header.

    Args:
        path: A ``*-idx?-ubyte`` file, optionally gzipped (detected from its first bytes).

    Returns:
        Array of the stored dtype (uint8 for images and labels) and shape (N, ...).

    Raises:
        FileNotFoundError: No such file.
        ValueError: Not an IDX file, or truncated/corrupted (size disagrees with the header).

    """
    return parse_idx(read_raw(path), path)


def read_raw(path: str | os.PathLike[str]) -> bytes:
    """The bytes of an IDX file, decompressed if it is gzipped (detected from its first bytes).

    The same for ``name.gz`` and its decompressed ``name``, so a checksum of these bytes
    identifies the content whatever the form (see `myelin.data.datasets`).

    Raises:
        FileNotFoundError: No such file.
        ValueError: A corrupted or truncated gzip stream.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        head = f.read(2)
    opener = gzip.open if head == b"\x1f\x8b" else open
    try:
        with opener(path, "rb") as f:
            return f.read()
    except (OSError, EOFError, zlib.error) as exc:  # bad gzip stream or truncated archive
        raise ValueError(f"{path!r} is a corrupted or truncated gzip file: {exc}") from exc


def parse_idx(raw: bytes, path: str | os.PathLike[str] = "<bytes>") -> np.ndarray:
    """The array held by the (decompressed) IDX bytes `raw`; `path` names them in errors.

    Raises:
        ValueError: Not an IDX file, or truncated/corrupted (size disagrees with the header).
    """
    path = os.fspath(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise ValueError(f"{path!r} is not an IDX file (bad magic number {raw[:4]!r}).")
    ndim = raw[3]
    if ndim == 0 or len(raw) < 4 + 4 * ndim:
        raise ValueError(f"{path!r}: IDX header is truncated or declares no dimensions.")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    body = memoryview(raw)[4 + 4 * ndim:]        # no copy of the (large) data
    if len(body) != expected:
        raise ValueError(f"{path!r}: header declares shape {shape} ({expected} bytes of data) but "
                         f"the file holds {len(body)} bytes; it is truncated or corrupted.")
    return np.frombuffer(body, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))
