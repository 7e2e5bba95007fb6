"""scikit-learn's bundled 8x8 digits (1797 real images, 10 classes): no download needed.

Pooled, then split over clients by any registered partitioner
(``partitioner`` and that partitioner's own parameters), each client's samples
80/20 into train/test. Pixels scaled to [0, 1], flattened to 64 features.
Needs scikit-learn: ``pip install 'fedbench-suite[digits]'``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fedbench import DatasetSpec, hookimpl
from fedbench.data import FederatedData
from fedbench.errors import DataError
from fedbench.partition import federate, split_indices
from fedbench.registry import get_registry

PARAMS = {
    "n_clients": 10, "partitioner": "dirichlet", "alpha": 0.5, "min_size": 1, "n_groups": 3,
    "shards_per_client": 2, "sigma": 1.0, "test_fraction": 0.2, "seed": 0,
}


def load_pooled() -> tuple[torch.Tensor, torch.Tensor]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise DataError("the digits data set needs scikit-learn: pip install 'fedbench-suite[digits]'") from e
    x, y = load_digits(return_X_y=True)
    return torch.as_tensor(x / 16.0, dtype=torch.float32), torch.as_tensor(y, dtype=torch.long)


def load(data_root: Path | None = None, **params: object) -> FederatedData:
    x, y = load_pooled()
    p = {**PARAMS, **params}
    parts = split_indices(get_registry(), str(p["partitioner"]), y.numpy(), int(p["n_clients"]), int(p["seed"]), p)
    return federate(x, y, parts, test_fraction=float(p["test_fraction"]), seed=int(p["seed"]), task="multiclass", num_classes=10)


@hookimpl
def fedbench_datasets() -> list[DatasetSpec]:
    return [
        DatasetSpec(
            name="digits",
            doc="scikit-learn's bundled 8x8 digits, split by any partitioner (default Dirichlet 0.5 over 10 clients)",
            params=PARAMS,
            load=load,
            default_model="linear",
        )
    ]
