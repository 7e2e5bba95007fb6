"""MNIST, Fashion-MNIST and EMNIST from the IDX files torchvision writes (or Debian's dataset-fashion-mnist ships).

Looked up under ``--data-root`` (default ``$FEDBENCH_DATA_ROOT`` or
``~/.cache/fedbench``) in torchvision's layout ``ROOT/MNIST/raw/`` and
``ROOT/FashionMNIST/raw/``, then ``ROOT/mnist/``, ``ROOT/fashion-mnist/`` and
``ROOT/``; for Fashion-MNIST also ``/usr/share/datasets/fashion-mnist/``
(``apt install dataset-fashion-mnist``). EMNIST (ByClass, 62 classes) is read
from torchvision's ``ROOT/EMNIST/raw/emnist-byclass-{train,test}-{images-idx3,labels-idx1}-ubyte``
(or the NIST zip's ``gzip/`` folder); its images are stored transposed, as
torchvision leaves them. Files may be gzipped. The official train and test
images are pooled and split over clients by any partitioner, each client's
samples 80/20 into train/test. EMNIST's defaults are the paper's: a random 10 %
of the pool, 100 clients, each class its own group spread by Dirichlet(0.4).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from fedbench import DatasetSpec, hookimpl
from fedbench.fl.data import DataShape, FederatedData, resolve_data_root
from fedbench.errors import DataError
from fedbench_plugins.datasets.pooled import POOLED_PARAMS, federate_images, kept_samples

#: the FedEM authors' normalisation of (F)EMNIST pixels in [0, 1]: (x - mean) / std
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
EMNIST_FILES = tuple(f"emnist-byclass-{s}-{k}-ubyte" for s in ("train", "test") for k in ("images-idx3", "labels-idx1"))
#: name -> (file names, folders relative to the data root, absolute folders, classes, torchvision class)
SOURCES = {
    "mnist": (MNIST_FILES, ("MNIST/raw", "mnist", "."), (), 10, "MNIST"),
    "fashion-mnist": (MNIST_FILES, ("FashionMNIST/raw", "fashion-mnist", "."), ("/usr/share/datasets/fashion-mnist",), 10, "FashionMNIST"),
    "emnist": (EMNIST_FILES, ("EMNIST/raw", "EMNIST/raw/gzip", "emnist", "."), (), 62, "EMNIST"),
}
HOW = {
    "mnist": "torchvision.datasets.MNIST(ROOT, download=True) on a machine with internet (or fedbench data download mnist)",
    "fashion-mnist": "apt install dataset-fashion-mnist, or torchvision.datasets.FashionMNIST(ROOT, download=True)",
    "emnist": "torchvision.datasets.EMNIST(ROOT, split='byclass', download=True) on a machine with internet "
    "(or fedbench data download emnist)",
}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally gzipped) as a numpy array: magic 0 0 0x08 ndim, big-endian int32 dims, uint8 data.
    An uncompressed file is memory-mapped (read-only): a loader that keeps a fraction reads only those pages."""
    if path.suffix == ".gz":
        raw = gzip.open(path, "rb").read()
    else:  # the header only (at most 255 dimensions); the data are mapped below
        with open(path, "rb") as fh:
            raw = fh.read(4 + 4 * 255)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file (bad magic {raw[:4]!r}); re-download it")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path}: the header is cut short; the file is truncated")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    offset = 4 + 4 * ndim
    size = (len(raw) if path.suffix == ".gz" else path.stat().st_size) - offset
    if size != int(np.prod(dims)):
        raise DataError(f"{path}: header says {dims} but holds {size} values; the file is truncated")
    if path.suffix == ".gz":
        return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)
    return np.memmap(path, dtype=np.uint8, mode="r", offset=offset, shape=dims)


def find_files(name: str, root: Path) -> list[Path]:
    """The four IDX files of ``name``, or a DataError listing where they were looked for."""
    files, relative, absolute, _, _ = SOURCES[name]
    folders = [root / r for r in relative] + [Path(a) for a in absolute]
    for folder in folders:
        found = []
        for f in files:
            hit = next((folder / (f + ext) for ext in ("", ".gz") if (folder / (f + ext)).is_file()), None)
            found.append(hit)
        if all(found):
            return found  # type: ignore[return-value]
    for folder in folders:  # a folder with some of the files: name only what it lacks
        lacking = [f for f in files if not any((folder / (f + ext)).is_file() for ext in ("", ".gz"))]
        if len(lacking) < len(files):
            raise DataError(
                f"{name}: {', '.join(lacking)} (optionally .gz) missing from {folder}, which holds the other "
                f"{len(files) - len(lacking)} IDX file(s); get {'it' if len(lacking) == 1 else 'them'} with {HOW[name]}"
            )
    raise DataError(
        f"{name}: IDX files {', '.join(files)} (optionally .gz) not found in any of "
        f"{', '.join(str(f) for f in folders)}; get them with {HOW[name]}, or pass --data-root"
    )


def load_idx(name: str, data_root: Path | None, params: dict) -> FederatedData:
    root = resolve_data_root(data_root)
    tr_x, tr_y, te_x, te_y = (read_idx(p) for p in find_files(name, root))
    if len(tr_x) != len(tr_y) or len(te_x) != len(te_y):
        raise DataError(f"{name}: {len(tr_x) + len(te_x)} images but {len(tr_y) + len(te_y)} labels; the files do not "
                        "belong together")
    normalize = params.pop("normalize", False)  # the FedEM authors' (F)EMNIST transform
    y = torch.from_numpy(np.concatenate([tr_y, te_y]).astype(np.int64))
    # only the kept images are read (from the memory-mapped files), as uint8; floats only after the split
    keep = kept_samples(len(y), params)
    if keep is None:
        x = np.concatenate([tr_x, te_x])
    else:
        n_train = len(tr_x)
        x = np.concatenate([tr_x[keep[keep < n_train]], te_x[keep[keep >= n_train] - n_train]])
    del tr_x, te_x
    x = torch.from_numpy(x).unsqueeze(1)
    return federate_images(x, y, SOURCES[name][3], params, mean=(MNIST_MEAN,) if normalize else None,
                           std=(MNIST_STD,) if normalize else None, kept=keep)


def check(name: str, data_root: Path | None) -> str | None:
    """None when ``name``'s files are present, else the one-line error saying where to put them."""
    try:
        find_files(name, resolve_data_root(data_root))
    except DataError as e:
        return str(e)
    return None


def download(name: str, data_root: Path | None) -> None:
    """Fetch ``name`` with torchvision's own downloader into the data root (needs internet)."""
    import torchvision.datasets as tvd

    root = resolve_data_root(data_root)
    cls = getattr(tvd, SOURCES[name][4])
    extra = {"split": "byclass"} if name == "emnist" else {}
    for train in (True, False):
        cls(str(root), train=train, download=True, **extra)


@hookimpl
def fedbench_datasets() -> list[DatasetSpec]:
    return [
        DatasetSpec(
            name=name,
            doc=doc,
            params={**POOLED_PARAMS, "n_clients": 100, **params},
            rules=POOLED_PARAMS,
            load=lambda data_root=None, _name=name, **p: load_idx(_name, data_root, p),
            shape=lambda _name=name, **p: DataShape((1, 28, 28), SOURCES[_name][3]),
            default_model=model,
            check=lambda data_root=None, _name=name: check(_name, data_root),
            download=lambda data_root=None, _name=name: download(_name, data_root),
        )
        for name, doc, params, model in (
            ("mnist", "MNIST from torchvision's IDX files under --data-root, split by any partitioner", {}, "mlp"),
            ("fashion-mnist", "Fashion-MNIST from IDX files (torchvision's or Debian's), split by any partitioner", {}, "mlp"),
            (
                "emnist",
                "EMNIST ByClass (62 classes) from torchvision's IDX files; paper split: 10 %, 100 clients, "
                "one group per class, Dirichlet(0.4)",
                {"fraction": 0.1, "partitioner": "label_groups", "n_groups": 62, "alpha": 0.4, "normalize": True},
                "femnist_cnn",
            ),
        )
    ]
