"""Small generic models."""

from __future__ import annotations

import math

from torch import nn

from fedbench import ModelSpec, hookimpl


def linear(input_shape: tuple[int, ...], n_outputs: int, bias: bool = True) -> nn.Module:
    """A linear layer on the flattened input (logistic/softmax regression)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), n_outputs, bias=bias))


@hookimpl
def fedbench_models() -> list[ModelSpec]:
    return [ModelSpec(name="linear", doc="linear layer on the flattened input", params={"bias": True}, build=linear)]
