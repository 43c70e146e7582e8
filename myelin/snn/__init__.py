"""Spiking networks that learn without backpropagation: CoLaNET (SPEC §2)."""

from .colanet import (
    DEFAULTS,
    PRESETS,
    CoLaNET,
    as_pixels,
    encode,
    resource_for_weight,
    weight_of_resource,
)
from .continual import CoLaNETLearner, fit_scenario

__all__ = ["DEFAULTS", "PRESETS", "CoLaNET", "CoLaNETLearner", "as_pixels", "encode",
           "fit_scenario", "resource_for_weight", "weight_of_resource"]
