"""FEMNIST from LEAF's json files, naturally partitioned by writer (the FedEM paper's setting).

LEAF writes ``{"users": [...], "num_samples": [...], "user_data": {user: {"x": [...], "y": [...]}}}``
files; we read every ``*.json`` in ``ROOT/femnist/all_data/`` (or
``ROOT/femnist/data/all_data/``, LEAF's own layout), keep a random ``fraction``
of the writers (the paper keeps 15 %), and split each writer's samples 80/20
into train/test. Each sample is a 28x28 image given as 784 floats in [0, 1];
labels are 62 classes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from fedbench import DatasetSpec, hookimpl
from fedbench.data import FederatedData, default_data_root
from fedbench.errors import DataError

FOLDERS = ("femnist/all_data", "femnist/data/all_data")


def read_leaf(files: list[Path]) -> dict[str, tuple[list, list]]:
    """user -> (x list, y list) from LEAF json files, merged in file order."""
    users: dict[str, tuple[list, list]] = {}
    for f in files:
        try:
            doc = json.loads(f.read_text())
            for u in doc["users"]:
                d = doc["user_data"][u]
                x, y = users.setdefault(u, ([], []))
                x.extend(d["x"])
                y.extend(d["y"])
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise DataError(f"{f} is not a LEAF json file ({type(e).__name__}: {e}); re-run LEAF's preprocessing") from e
    return users


def load_femnist(data_root: Path | None, fraction: float = 0.15, test_fraction: float = 0.2, seed: int = 0) -> FederatedData:
    root = Path(data_root) if data_root is not None else default_data_root()
    folders = [root / f for f in FOLDERS]
    files = next((sorted(f.glob("*.json")) for f in folders if f.is_dir() and any(f.glob("*.json"))), [])
    if not files:
        raise DataError(
            f"femnist: no LEAF json files in {' or '.join(str(f) for f in folders)}; run LEAF's "
            "femnist preprocessing (./preprocess.sh) and copy data/all_data there, or pass --data-root"
        )
    if not 0 < fraction <= 1 or not 0 < test_fraction < 1:
        raise DataError(f"femnist: need 0 < fraction <= 1 and 0 < test_fraction < 1, got {fraction}, {test_fraction}")
    users = read_leaf(files)
    rng = np.random.default_rng(seed)
    names = sorted(users)
    keep = sorted(rng.choice(len(names), size=max(1, int(round(fraction * len(names)))), replace=False))
    train, test = [], []
    for i in keep:
        x, y = users[names[i]]
        if len(y) < 2:
            continue
        order = rng.permutation(len(y))
        n_test = max(1, int(round(len(y) * test_fraction)))
        xs = torch.tensor(np.asarray(x, dtype=np.float32)[order]).view(-1, 1, 28, 28)
        ys = torch.tensor(np.asarray(y, dtype=np.int64)[order])
        train.append((xs[: len(ys) - n_test], ys[: len(ys) - n_test]))
        test.append((xs[len(ys) - n_test :], ys[len(ys) - n_test :]))
    if not train:
        raise DataError("femnist: no writer with at least 2 samples was kept; raise fraction")
    return FederatedData.from_clients(train, test, task="multiclass", num_classes=62)


@hookimpl
def fedbench_datasets() -> list[DatasetSpec]:
    return [
        DatasetSpec(
            name="femnist",
            doc="FEMNIST (LEAF json) by writer, 15 % of writers, 80/20 per writer",
            params={"fraction": 0.15, "test_fraction": 0.2, "seed": 0},
            load=lambda data_root=None, **p: load_femnist(data_root, **p),
            default_model="mlp",
        )
    ]
