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


class Cifar10CNN(nn.Module):
    """The CNN of the FedEM paper's CIFAR experiments' baselines (McMahan et al. 2017 style):
    conv 3->32 k5, max-pool 2, conv 32->64 k5, max-pool 2, fc 1600->2048, fc 2048->classes."""

    def __init__(self, input_shape: tuple[int, ...], n_outputs: int) -> None:
        super().__init__()
        channels, height, width = input_shape
        self.features = nn.Sequential(
            nn.Conv2d(channels, 32, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 5), nn.ReLU(), nn.MaxPool2d(2),
        )
        flat = 64 * ((((height - 4) // 2) - 4) // 2) * ((((width - 4) // 2) - 4) // 2)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(flat, 2048), nn.ReLU(), nn.Linear(2048, n_outputs))

    def forward(self, x):  # noqa: ANN001, ANN201
        return self.head(self.features(x))


def cifar10cnn(input_shape: tuple[int, ...], n_outputs: int) -> nn.Module:
    if len(input_shape) != 3:
        raise ValueError(f"cifar10cnn expects (channels, height, width) inputs, got shape {input_shape}")
    return Cifar10CNN(input_shape, n_outputs)


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
        ModelSpec(name="cifar10cnn", doc="2 conv + 2 dense layers for 32x32 colour images (fc 1600->2048)", build=cifar10cnn),
    ]
