"""scikit-learn's bundled 8x8 digits (1797 real images, 10 classes): no download needed.

Pooled, then split over clients by any registered partitioner
(``partitioner`` and that partitioner's own parameters), each client's samples
80/20 into train/test. Pixels scaled to [0, 1], flattened to 64 features.
Needs scikit-learn: ``pip install 'fedbench-suite[digits]'``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from fedbench import DatasetSpec, hookimpl
from fedbench.fl.data import DataShape, FederatedData
from fedbench.errors import DataError
from fedbench_plugins.datasets.pooled import POOLED_PARAMS, federate_pool


def load_pooled() -> tuple[torch.Tensor, torch.Tensor]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise DataError("the digits data set needs scikit-learn: pip install 'fedbench-suite[digits]'") from e
    x, y = load_digits(return_X_y=True)
    return torch.as_tensor(x / 16.0, dtype=torch.float32), torch.as_tensor(y, dtype=torch.long)


def check(data_root: Path | None = None) -> str | None:
    """None when scikit-learn (which ships the images) imports, else one line saying how to install it."""
    try:
        import sklearn  # noqa: F401
    except ImportError:
        return "digits: needs scikit-learn, which ships its images: pip install 'fedbench-suite[digits]' (or scikit-learn)"
    return None


def load(data_root: Path | None = None, **params: object) -> FederatedData:
    x, y = load_pooled()
    return federate_pool(x, y, 10, params)


@hookimpl
def fedbench_datasets() -> list[DatasetSpec]:
    return [
        DatasetSpec(
            name="digits",
            doc="scikit-learn's bundled 8x8 digits, split by any partitioner (default Dirichlet 0.5 over 10 clients)",
            params=POOLED_PARAMS,
            rules=POOLED_PARAMS,
            load=load,
            shape=lambda **p: DataShape((64,), 10),
            check=check,
            default_model="linear",
        )
    ]
