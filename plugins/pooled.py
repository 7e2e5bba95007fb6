"""Shared by the pooled data sets: split one labelled pool over clients with a registered partitioner."""

from __future__ import annotations

from typing import Any

import torch

from fedbench.data import FederatedData
from fedbench.partition import federate, split_indices
from fedbench.registry import get_registry

#: parameters of every pooled data set: client count, partitioner and every built-in partitioner's own settings
POOLED_PARAMS: dict[str, Any] = {
    "n_clients": 10, "partitioner": "dirichlet", "alpha": 0.5, "min_size": 1, "n_groups": 3,
    "shards_per_client": 2, "sigma": 1.0, "test_fraction": 0.2, "seed": 0,
}


def federate_pool(x: torch.Tensor, y: torch.Tensor, num_classes: int, params: dict[str, Any]) -> FederatedData:
    """Split the pool (x, y) over ``n_clients`` with ``partitioner``; each client's samples 80/20 train/test."""
    p = {**POOLED_PARAMS, **params}
    parts = split_indices(get_registry(), str(p["partitioner"]), y.numpy(), int(p["n_clients"]), int(p["seed"]), p)
    return federate(x, y, parts, test_fraction=float(p["test_fraction"]), seed=int(p["seed"]), task="multiclass", num_classes=num_classes)
