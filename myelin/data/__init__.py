"""Datasets: IDX readers, named datasets with search paths, and the in-memory dataset type."""

from .datasets import DATASETS, ArrayDataset, DataNotFoundError, load
from .idx import read_idx

__all__ = ["DATASETS", "ArrayDataset", "DataNotFoundError", "load", "read_idx"]
