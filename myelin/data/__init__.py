"""Datasets: readers for the standard files, and (later) named datasets and search paths."""

from .idx import read_idx

__all__ = ["read_idx"]
