"""Shared by the pooled data sets: split one labelled pool over clients with a registered partitioner."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fedbench.data import FederatedData
from fedbench.errors import DataError
from fedbench.partition import federate, split_indices
from fedbench.registry import get_registry

#: parameters of every pooled data set: client count, partitioner and every built-in partitioner's own settings
POOLED_PARAMS: dict[str, Any] = {
    "n_clients": 10, "partitioner": "dirichlet", "alpha": 0.5, "min_size": 1, "n_groups": 3,
    "shards_per_client": 2, "sigma": 1.0, "test_fraction": 0.2, "seed": 0, "fraction": 1.0,
    "beta": 10.0, "samples_per_client": 0,
}


def federate_pool(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, params: dict[str, Any], coarse: torch.Tensor | None = None
) -> FederatedData:
    """Keep a random ``fraction`` of the pool (seeded), split it over ``n_clients`` with ``partitioner``;
    each client's samples 80/20 train/test. ``coarse``: each sample's coarse label, for hierarchical partitioners."""
    p = {**POOLED_PARAMS, **params}
    fraction = float(p["fraction"])
    if not 0 < fraction <= 1:
        raise DataError(f"fraction must be in (0, 1], got {fraction}")
    if fraction < 1:
        keep = np.sort(np.random.default_rng(int(p["seed"]) + 2).permutation(len(y))[: max(1, round(fraction * len(y)))])
        x, y = x[torch.from_numpy(keep)], y[torch.from_numpy(keep)]
        coarse = coarse[torch.from_numpy(keep)] if coarse is not None else None
    if coarse is not None:
        p["coarse_labels"] = coarse.numpy()
    parts = split_indices(get_registry(), str(p["partitioner"]), y.numpy(), int(p["n_clients"]), int(p["seed"]), p)
    return federate(x, y, parts, test_fraction=float(p["test_fraction"]), seed=int(p["seed"]), task="multiclass", num_classes=num_classes)
