"""myelin: stop neural networks from forgetting.

Exact weight importances (Fisher, MAS, SI, SIG), the consolidation methods that use them (EWC,
WVA, L2), diagnostics of importances (`analysis`: Fisher overlap, perturbation test), and the
continual-learning harness (scenarios, metrics, `fit`).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from . import analysis, consolidation, data, importance, losses, methods, metrics, models, scenarios
from .consolidation import EWC, L2, WVA, Consolidator
from .importance import Importance
from .methods import Method, make_method
from .runner import Learner, Result, run
from .train import fit

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
    "Learner",
    "Method",
    "Result",
    "__version__",
    "analysis",
    "consolidation",
    "data",
    "fit",
    "importance",
    "losses",
    "make_method",
    "methods",
    "metrics",
    "models",
    "run",
    "scenarios",
    "snn",
]


def __getattr__(name: str) -> object:
    """`myelin.snn` loads on first use (it brings numba, which the rest does not need)."""
    if name == "snn":
        import importlib
        return importlib.import_module(".snn", __name__)
    raise AttributeError(f"module 'myelin' has no attribute {name!r}")
