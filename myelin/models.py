"""Built-in models for experiments: an MLP and a small CNN."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ._registry import Registry

__all__ = ["ACTIVATIONS", "MODELS", "MultiHead", "mlp", "small_cnn", "truncated_normal_init_"]

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,       # slope 0.01, as torch.nn.functional.leaky_relu (2021 code)
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
}


def _check_sizes(name: str, sizes: object, meaning: str) -> list[int]:
    """`sizes` as a list of ints, or ValueError unless it is a sequence of positive ints."""
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Iterable):
        raise ValueError(f"{name} must be a sequence of positive ints ({meaning}), e.g. "
                         f"(300, 150). Got {sizes!r}.")
    items = list(sizes)
    if any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0 for v in items):
        raise ValueError(f"{name} must be positive ints ({meaning}). Got {items!r}.")
    return [int(v) for v in items]


def _activation(name: str) -> Callable[[], nn.Module]:
    if name not in ACTIVATIONS:
        raise ValueError(f"Unknown activation {name!r}. Available: {', '.join(ACTIVATIONS)}.")
    return ACTIVATIONS[name]


def mlp(input_shape: Sequence[int], n_classes: int, widths: Sequence[int] = (300, 150), *,
        activation: str = "relu") -> nn.Sequential:
    """Flatten, then Linear+activation per hidden width, then a Linear to `n_classes` logits.

    E.g. ``mlp((1, 28, 28), 10, (300, 150), activation="leaky_relu")`` is the seeds'
    784-300-150-10 network. Input (N, *input_shape) -> logits (N, n_classes).

    Args:
        input_shape: Shape of one input sample, e.g. (1, 28, 28).
        n_classes: Number of output logits.
        widths: Hidden layer widths, e.g. 300,150.
        activation: relu, leaky_relu, tanh, gelu or sigmoid.

    Raises:
        ValueError: A width is not a positive int, or the activation is unknown.
    """
    widths = _check_sizes("widths", widths, "hidden layer sizes")
    act = _activation(activation)
    layers: list[nn.Module] = [nn.Flatten()]
    n_in = math.prod(input_shape)
    for w in widths:
        layers += [nn.Linear(n_in, w), act()]
        n_in = w
    layers.append(nn.Linear(n_in, n_classes))
    return nn.Sequential(*layers)


def small_cnn(input_shape: Sequence[int], n_classes: int, channels: Sequence[int] = (16, 32), *,
              activation: str = "relu") -> nn.Sequential:
    """Conv(3x3)+activation+MaxPool(2) per entry of `channels`, then a Linear classifier.

    Input (N, C, H, W) -> logits (N, n_classes).

    Args:
        input_shape: Shape of one input sample (C, H, W).
        n_classes: Number of output logits.
        channels: Output channels of each convolution, e.g. 16,32.
        activation: relu, leaky_relu, tanh, gelu or sigmoid.

    Raises:
        ValueError: A channel count is not a positive int, or the activation is unknown.
    """
    channels = _check_sizes("channels", channels, "output channels of each convolution")
    act = _activation(activation)
    c, h, w = input_shape
    layers: list[nn.Module] = []
    for ch in channels:
        layers += [nn.Conv2d(c, ch, 3, padding=1), act(), nn.MaxPool2d(2)]
        c, h, w = ch, h // 2, w // 2
    layers += [nn.Flatten(), nn.Linear(c * h * w, n_classes)]
    return nn.Sequential(*layers)


class MultiHead(nn.Module):
    """A shared body with one linear head per task, for task-incremental learning.

    Head t produces the logits of task t's classes; the heads' outputs are placed in one
    (N, n_classes) tensor, so `myelin.fit`, which restricts each task-IL task to its own classes,
    trains and evaluates head t on task t only. Classes of several tasks (domain-style labels)
    get the sum of their heads' logits; use disjoint class sets for true multi-head models.

    Args:
        body: Maps x to features of shape (N, feature_dim).
        feature_dim: Size of the body's output.
        task_classes: The classes of each task, e.g. ``[t.classes for t in scenario]``.
        n_classes: Width of the combined output.
    """

    def __init__(self, body: nn.Module, feature_dim: int, task_classes: Sequence[Sequence[int]],
                 n_classes: int):
        super().__init__()
        if not task_classes or any(not c for c in task_classes):
            raise ValueError("task_classes must list at least one class per task.")
        bad = [c for cs in task_classes for c in cs if not 0 <= c < n_classes]
        if bad:
            raise ValueError(f"classes {bad} are outside 0..{n_classes - 1}.")
        self.body = body
        self.heads = nn.ModuleList(nn.Linear(feature_dim, len(c)) for c in task_classes)
        self.n_classes = n_classes
        for t, c in enumerate(task_classes):
            self.register_buffer(f"classes_{t}", torch.as_tensor(list(c), dtype=torch.long),
                                 persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """(N, *) -> logits (N, n_classes)."""
        features = self.body(x)
        out = features.new_zeros(features.shape[0], self.n_classes)
        for t, head in enumerate(self.heads):
            out = out.index_add(1, getattr(self, f"classes_{t}"), head(features))
        return out


MODELS: Registry[Callable[..., nn.Module]] = Registry("model")
MODELS.add("mlp", mlp, "fully connected network (widths, activation)")
MODELS.add("cnn", small_cnn, "small convolutional network (channels, activation)")


def truncated_normal_init_(model: nn.Module, gain: float = 2.0) -> nn.Module:
    """Re-initialise in place: weights ~ N(0, σ²) truncated at ±2σ, σ = gain/√fan_in; biases 0.

    The 2020 Kutalev & Lapina TensorFlow init (``truncated_normal(stddev=2/sqrt(fan_in))``) for
    every Linear and Conv layer. Returns `model`.
    """
    if not math.isfinite(gain) or gain <= 0:
        raise ValueError(f"gain must be a finite float > 0. Got {gain!r}.")
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                fan_in = m.weight[0].numel()
                std = gain / math.sqrt(fan_in)
                nn.init.trunc_normal_(m.weight, 0.0, std, -2 * std, 2 * std)
                if m.bias is not None:
                    m.bias.zero_()
    return model
