"""myelin: stop neural networks from forgetting.

Exact weight importances (Fisher, MAS, SI, SIG) and the consolidation methods that use them.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from . import consolidation, importance
from .consolidation import EWC, L2, WVA, Consolidator
from .importance import Importance

try:
    __version__ = version("myelin")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+local"

__all__ = [
    "EWC",
    "L2",
    "WVA",
    "Consolidator",
    "Importance",
    "__version__",
    "consolidation",
    "importance",
]
