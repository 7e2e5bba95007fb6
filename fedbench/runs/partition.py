"""From one pooled data set to a federation: split by a partitioner, then train/test per client.

Generic: the partitioner is looked up by name in the registry; nothing here
names a data set.
"""

from __future__ import annotations

import math

from typing import Any

import numpy as np
import pandas as pd
import torch

from fedbench.fl.data import FederatedData
from fedbench.errors import DataError
from fedbench.plugin.registry import Registry


def split_indices(
    registry: Registry, name: str, labels: np.ndarray, n_clients: int, seed: int, options: dict[str, Any]
) -> list[np.ndarray]:
    """Client index arrays from the partitioner ``name``, given only the options it declares."""
    spec = registry.get("partitioner", name)
    params = {k: options[k] for k in spec.params if k in options}
    if n_clients < 1:
        raise DataError(f"n_clients must be >= 1, got {n_clients}")
    parts = spec.partition(labels, n_clients, np.random.default_rng(seed), **params)
    used = np.concatenate(parts) if parts else np.array([], dtype=int)
    if len(np.unique(used)) != len(used):
        raise DataError(f"partitioner {name!r} assigned a sample to two clients; fix the partitioner")
    return parts


def federate(
    x: torch.Tensor,
    y: torch.Tensor,
    parts: list[np.ndarray],
    *,
    test_fraction: float,
    seed: int,
    task: str,
    num_classes: int,
) -> FederatedData:
    """Each client's samples shuffled and split into train and the last ``test_fraction`` as test: the first
    ``floor((1 - test_fraction) * n)`` are train, as ``sklearn.model_selection.train_test_split(train_size=0.8)``
    cuts them in the FedEM authors' data scripts (so a client of 7 has 5 train and 2 test samples)."""
    if not 0 < test_fraction < 1:
        raise DataError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed + 1)
    train, test = [], []
    for idx in parts:
        idx = rng.permutation(idx)
        n_test = len(idx) - math.floor((1 - test_fraction) * len(idx))
        tr, te = torch.as_tensor(idx[: len(idx) - n_test]), torch.as_tensor(idx[len(idx) - n_test :])
        train.append((x[tr], y[tr]))
        test.append((x[te], y[te]))
    empty = [i for i, (_, yt) in enumerate(train) if len(yt) == 0]
    if empty:
        raise DataError(
            f"{len(empty)} of {len(parts)} clients (e.g. client {empty[0]}) got no training sample; use fewer clients "
            "(dataset.n_clients) or a partitioner setting that gives each client more samples"
        )
    if sum(len(yt) for _, yt in test) == 0:
        raise DataError(
            f"no client got a test sample ({len(parts)} clients, test_fraction={test_fraction}); use fewer clients "
            "(dataset.n_clients) or a larger test_fraction"
        )
    return FederatedData.from_clients(train, test, task=task, num_classes=num_classes)


def describe(data: FederatedData) -> pd.DataFrame:
    """One row per client of a built federation: train/test sizes and the label histogram of all its samples."""
    k = max(int(data.num_classes), 2)
    rows = []
    for i in range(data.n_clients):
        c = data.client(i)
        labels = torch.cat([c.train_y, c.test_y]).long().numpy()
        hist = np.bincount(labels, minlength=k)
        rows.append({"client": i, "n_train": c.n_train, "n_test": c.n_test, **{f"label_{j}": int(h) for j, h in enumerate(hist)}})
    return pd.DataFrame(rows)


def plot_label_heatmap(table: pd.DataFrame, path: str, title: str) -> None:
    """A clients x labels heat map of the label histogram (matplotlib, optional extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise DataError("--plot needs matplotlib: pip install 'fedbench-suite[plot]'") from e
    counts = table[[c for c in table.columns if c.startswith("label_")]].to_numpy()
    fig, ax = plt.subplots(figsize=(6, max(3, min(12, 0.05 * len(counts) + 2))))
    im = ax.imshow(counts, aspect="auto", interpolation="nearest", cmap="viridis")
    ax.set_xlabel("label")
    ax.set_ylabel("client")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="samples")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
