"""Small generic models."""

from __future__ import annotations

import math

from torch import nn

from fedbench import ModelSpec, hookimpl


def linear(input_shape: tuple[int, ...], n_outputs: int, bias: bool = True) -> nn.Module:
    """A linear layer on the flattened input (logistic/softmax regression)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), n_outputs, bias=bias))


def mlp(input_shape: tuple[int, ...], n_outputs: int, hidden: int = 64, batch_norm: bool = False) -> nn.Module:
    """One hidden ReLU layer on the flattened input, optionally batch-normalised."""
    layers: list[nn.Module] = [nn.Flatten(), nn.Linear(math.prod(input_shape), hidden)]
    if batch_norm:
        layers.append(nn.BatchNorm1d(hidden))
    layers += [nn.ReLU(), nn.Linear(hidden, n_outputs)]
    return nn.Sequential(*layers)


@hookimpl
def fedbench_models() -> list[ModelSpec]:
    return [
        ModelSpec(name="linear", doc="linear layer on the flattened input", params={"bias": True}, build=linear),
        ModelSpec(
            name="mlp",
            doc="one hidden ReLU layer on the flattened input (optional BatchNorm)",
            params={"hidden": 64, "batch_norm": False},
            build=mlp,
        ),
    ]
