"""Built-in models for experiments: an MLP and a small CNN."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from torch import nn

from ._registry import Registry

__all__ = ["ACTIVATIONS", "MODELS", "mlp", "small_cnn"]

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,       # slope 0.01, as torch.nn.functional.leaky_relu (2021 code)
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
}


def _activation(name: str) -> Callable[[], nn.Module]:
    if name not in ACTIVATIONS:
        raise ValueError(f"Unknown activation {name!r}. Available: {', '.join(ACTIVATIONS)}.")
    return ACTIVATIONS[name]


def mlp(input_shape: Sequence[int], n_classes: int, widths: Sequence[int] = (300, 150), *,
        activation: str = "relu") -> nn.Sequential:
    """Flatten, then Linear+activation per hidden width, then a Linear to `n_classes` logits.

    E.g. ``mlp((1, 28, 28), 10, (300, 150), activation="leaky_relu")`` is the seeds'
    784-300-150-10 network. Input (N, *input_shape) -> logits (N, n_classes).
    """
    act = _activation(activation)
    layers: list[nn.Module] = [nn.Flatten()]
    n_in = math.prod(input_shape)
    for w in widths:
        layers += [nn.Linear(n_in, int(w)), act()]
        n_in = int(w)
    layers.append(nn.Linear(n_in, n_classes))
    return nn.Sequential(*layers)


def small_cnn(input_shape: Sequence[int], n_classes: int, channels: Sequence[int] = (16, 32), *,
              activation: str = "relu") -> nn.Sequential:
    """Conv(3x3)+activation+MaxPool(2) per entry of `channels`, then a Linear classifier.

    Input (N, C, H, W) -> logits (N, n_classes).
    """
    act = _activation(activation)
    c, h, w = input_shape
    layers: list[nn.Module] = []
    for ch in channels:
        layers += [nn.Conv2d(c, ch, 3, padding=1), act(), nn.MaxPool2d(2)]
        c, h, w = ch, h // 2, w // 2
    layers += [nn.Flatten(), nn.Linear(c * h * w, n_classes)]
    return nn.Sequential(*layers)


MODELS: Registry[Callable[..., nn.Module]] = Registry("model")
MODELS.add("mlp", mlp, "fully connected network (widths, activation)")
MODELS.add("cnn", small_cnn, "small convolutional network (channels, activation)")
