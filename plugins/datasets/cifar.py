"""CIFAR-10 and CIFAR-100 from the python pickle batches torchvision writes.

Looked up under ``--data-root`` in ``ROOT/cifar-10-batches-py/`` (``data_batch_1``..``5``,
``test_batch``) and ``ROOT/cifar-100-python/`` (``train``, ``test``; fine labels).
Train and test are pooled and split over clients by any partitioner, each
client's samples 80/20 into train/test. Defaults follow the FedEM paper:
CIFAR-10 over 80 clients by ``label_groups`` (3 groups, Dirichlet 0.4);
CIFAR-100 over 100 clients x 600 samples by ``pachinko`` (coarse labels
~ Dirichlet(0.4), fine labels within a coarse one ~ Dirichlet(10); the
batches' ``coarse_labels`` give the hierarchy). As in the FedEM authors' code
(``datasets.py``, CIFAR-10 and CIFAR-100 alike), images are scaled to [0, 1]
and normalised per channel with mean (0.4914, 0.4822, 0.4465) and std
(0.2023, 0.1994, 0.2010) (``normalize=false``: raw [0, 1] pixels), no
augmentation; and local training drops each client's incomplete last batch
(``drop_last``, their loaders' rule for MobileNetV2's BatchNorm).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from fedbench import DatasetSpec, hookimpl
from fedbench.fl.data import DataShape, FederatedData, resolve_data_root
from fedbench.errors import DataError
from fedbench.plugin.params import Param
from fedbench_plugins.datasets.pooled import POOLED_PARAMS, federate_images

#: the FedEM authors' CIFAR transform, ``Normalize(MEAN, STD)`` after scaling to [0, 1] (both data sets)
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2023, 0.1994, 0.2010)
#: protocol settings of both CIFAR data sets (the authors' defaults)
PROTOCOL_PARAMS = {
    "normalize": Param(True, choices=(True, False), doc="the authors' per-channel normalisation (false: raw [0, 1])"),
    "drop_last": Param(True, choices=(True, False), doc="local training drops each client's incomplete last batch"),
}

LAYOUT = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], b"labels", 10),
    "cifar100": ("cifar-100-python", ["train", "test"], b"fine_labels", 100),
}


def check(name: str, root: Path | None) -> str | None:
    """None when the batches are present, else the one-line error saying where to put them."""
    folder, files, _, _ = LAYOUT[name]
    base = resolve_data_root(root) / folder
    missing = [f for f in files if not (base / f).is_file()]
    if missing:
        return (
            f"{name}: missing {', '.join(missing)} in {base}; get them with torchvision.datasets."
            f"{'CIFAR10' if name == 'cifar10' else 'CIFAR100'}(ROOT, download=True) on a machine with internet, "
            "then pass --data-root ROOT"
        )
    return None


def read_batches(name: str, root: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Images (N, 3, 32, 32) as uint8, labels, and (CIFAR-100) coarse labels."""
    folder, files, label_key, _ = LAYOUT[name]
    base = root / folder
    problem = check(name, root)
    if problem:
        raise DataError(problem)
    xs, ys, coarse = [], [], []
    for f in files:
        with open(base / f, "rb") as fh:
            batch = pickle.load(fh, encoding="bytes")
        try:
            data, labels = np.asarray(batch[b"data"], dtype=np.uint8), np.asarray(batch[label_key], dtype=np.int64)
        except KeyError as e:
            raise DataError(f"{base / f} has no {e.args[0]!r} entry; it is not a {name} python batch") from e
        if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
            raise DataError(f"{base / f}: expected N x 3072 images and N labels, got {data.shape} and {len(labels)}")
        xs.append(data)
        ys.append(labels)
        if b"coarse_labels" in batch:
            coarse.append(np.asarray(batch[b"coarse_labels"], dtype=np.int64))
    x = torch.from_numpy(np.concatenate(xs).reshape(-1, 3, 32, 32))
    c = torch.from_numpy(np.concatenate(coarse)) if len(coarse) == len(files) else None
    return x, torch.from_numpy(np.concatenate(ys)), c


def load(name: str, data_root: Path | None, params: dict) -> FederatedData:
    root = resolve_data_root(data_root)
    params = dict(params)
    normalize, drop_last = (bool(params.pop(k, PROTOCOL_PARAMS[k].default)) for k in ("normalize", "drop_last"))
    x, y, coarse = read_batches(name, root)
    return federate_images(x, y, LAYOUT[name][3], params, coarse=coarse, mean=MEAN if normalize else None,
                           std=STD if normalize else None, drop_last=drop_last)


def download(name: str, data_root: Path | None) -> None:
    """Fetch the batches with torchvision's own downloader (needs internet)."""
    import torchvision.datasets as tvd

    root = resolve_data_root(data_root)
    getattr(tvd, "CIFAR10" if name == "cifar10" else "CIFAR100")(str(root), download=True)


#: name -> (doc of the default split, its parameters)
SPLITS = {
    "cifar10": (
        "80 clients by label groups (3) + Dirichlet(0.4)",
        {"n_clients": 80, "partitioner": "label_groups", "n_groups": 3, "alpha": 0.4},
    ),
    "cifar100": (
        "100 clients x 600 by pachinko (coarse Dirichlet 0.4, fine Dirichlet 10)",
        {"n_clients": 100, "partitioner": "pachinko", "alpha": 0.4, "beta": 10.0, "samples_per_client": 600},
    ),
}


@hookimpl
def fedbench_datasets() -> list[DatasetSpec]:
    return [
        DatasetSpec(
            name=name,
            doc=f"{name.upper()} python batches under --data-root; {doc}",
            params={**POOLED_PARAMS, **PROTOCOL_PARAMS, **split},
            rules={**POOLED_PARAMS, **PROTOCOL_PARAMS},
            load=lambda data_root=None, _name=name, **p: load(_name, data_root, p),
            shape=lambda _name=name, **p: DataShape((3, 32, 32), LAYOUT[_name][3]),
            default_model="cifar10cnn",
            check=lambda data_root=None, _name=name: check(_name, data_root),
            download=lambda data_root=None, _name=name: download(_name, data_root),
        )
        for name, (doc, split) in SPLITS.items()
    ]
