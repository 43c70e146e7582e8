"""Safetensors files with a JSON metadata entry: atomic writes, checked reads (no pickle)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

__all__ = ["read_state", "write_state"]

_CHECKSUM_KEY = "myelin.sha256"


def _checksum(tensors: Mapping[str, Tensor], meta_text: str) -> str:
    """sha256 of the meta JSON and of every tensor's name, dtype, shape and bytes."""
    h = hashlib.sha256(meta_text.encode())
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"\0{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def write_state(path: str | os.PathLike[str], tensors: Mapping[str, Tensor], key: str,
                meta: Any) -> None:
    """Write `tensors` and `meta` (as JSON under metadata `key`); the file appears only whole."""
    from safetensors.torch import save_file

    path = os.fspath(path)
    data = {n: v.detach().cpu().contiguous() for n, v in tensors.items()}
    fd, tmp = tempfile.mkstemp(prefix=".myelin-", suffix=".tmp",
                               dir=os.path.dirname(os.path.abspath(path)))
    os.close(fd)
    try:
        meta_text = json.dumps(meta)
        save_file(data, tmp, metadata={key: meta_text,
                                       _CHECKSUM_KEY: _checksum(data, meta_text)})
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def read_state(path: str | os.PathLike[str], key: str, what: str,
               device: str | torch.device = "cpu") -> tuple[dict[str, Tensor], Any]:
    """Read a file written by `write_state`: (tensors, meta). Clear errors for anything else."""
    from safetensors import safe_open

    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No {what} file at {path!r}.")
    try:
        with safe_open(path, framework="pt", device=str(device)) as f:
            metadata = f.metadata() or {}
            meta_text = metadata.get(key)
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except Exception as exc:  # safetensors raises its own error types
        raise ValueError(f"{path!r} is not a readable safetensors file: {exc}") from exc
    if meta_text is None:
        raise ValueError(f"{path!r} is a safetensors file but holds no myelin {what}.")
    stored = metadata.get(_CHECKSUM_KEY)     # files written before checksums have none
    if stored is not None and stored != _checksum(tensors, meta_text):
        raise ValueError(f"{path!r} is corrupted: its {what} does not match the checksum "
                         "written with it.")
    try:
        return tensors, json.loads(meta_text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path!r}: the {what}'s metadata is not valid JSON ({exc}).") from exc
