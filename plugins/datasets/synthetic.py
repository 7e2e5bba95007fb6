"""The synthetic mixture benchmark of FedEM (Marfoq et al., NeurIPS 2021, Sec. 5).

Every client's data come from a mixture of M logistic-regression tasks with
client-specific mixture weights. ``synthetic`` reproduces the authors'
generator draw for draw (numpy's legacy global RandomState, seeded once), so
that our data equal theirs for the same seed, including a quirk of their code:
when labelling, the start index is never advanced, so component k overwrites
labels ``y[0:c_k]`` and the labels after ``max_k c_k`` stay 0.
``synthetic-corrected`` labels each sample by its own component instead.

Draw order (all from the global state, seeded once with ``seed``):
  1. n_t = min(floor(LogNormal(4, 2)) + 50, 1000) for all T clients at once;
  2. pi_t ~ Dirichlet(alpha * 1_M), one call per client t = 0..T-1;
  3. theta ~ Uniform(-1, 1), shape (M, d);
  4. per client: the train set (n_t samples), then the test set (n_test
     samples): counts ~ Multinomial(n, pi_t); X ~ U(-1, 1)^(n x d); for each
     component k: eps ~ N(0, noise) of size c_k and labels; then one
     permutation of (X, y) (what ``sklearn.utils.shuffle`` draws).

Data are generated in memory and converted to float32 client by client; the
spec is marked ``cache=True``, so fedbench keeps the result in its content-addressed
data cache (:mod:`fedbench.runs.datacache`) and later runs load it instead of drawing it again.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fedbench.plugin.params import Param
from fedbench import DataShape, DatasetSpec, FederatedData, hookimpl
from fedbench.fl.memory import check_fits
from fedbench.errors import DataError

PAPER = {
    "n_clients": Param(300, low=1), "n_components": Param(3, low=1), "dim": Param(150, low=1), "noise": Param(0.1, low=0.0),
    "n_test": Param(5000, low=1), "alpha": Param(0.4, low=0.0, low_open=True), "seed": 12345,
}


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _client_samples(
    n: int, pi: np.ndarray, theta: np.ndarray, noise: float, corrected: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One client's (X, y) drawn from the global numpy state, in the authors' order, and the
    permutation that shuffles them (the data set is ``X[perm], y[perm]``)."""
    m, d = theta.shape
    counts = np.random.multinomial(n, pi)
    x = np.random.uniform(-1.0, 1.0, size=(n, d))
    y = np.zeros(n)
    start = 0
    for k in range(m):
        eps = np.random.normal(loc=0.0, scale=noise, size=counts[k])
        stop = start + counts[k]
        y[start:stop] = np.round(_sigmoid(x[start:stop] @ theta[k] + eps))
        if corrected:
            start = stop
    perm = np.random.permutation(n)
    return x, y, perm


def generate(
    n_clients: int = 300,
    n_components: int = 3,
    dim: int = 150,
    noise: float = 0.1,
    n_test: int = 5000,
    alpha: float = 0.4,
    seed: int = 12345,
    corrected: bool = False,
) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[tuple[np.ndarray, np.ndarray]]]:
    """The per-client (X, y) train and test arrays (float64, as the authors draw them)."""
    sizes, clients = iter_clients(n_clients, n_components, dim, noise, n_test, alpha, seed, corrected)
    train, test = [], []
    for x, y, perm, split in clients:
        (train if split == "train" else test).append((x[perm], y[perm]))
    return train, test


def iter_clients(n_clients, n_components, dim, noise, n_test, alpha, seed, corrected):  # noqa: ANN001, ANN201
    """Seed the global state, draw the sizes; return them and a generator of
    (X, y, perm, split) in draw order (X and y unshuffled)."""
    _check(n_clients, n_components, dim, noise, n_test, alpha)
    np.random.seed(seed)
    n_train = np.minimum(np.floor(np.random.lognormal(4, 2, n_clients)).astype(np.int64) + 50, 1000)
    pis = [np.random.dirichlet(alpha * np.ones(n_components)) for _ in range(n_clients)]
    theta = np.random.uniform(-1.0, 1.0, size=(n_components, dim))

    def clients():  # noqa: ANN202
        for t in range(n_clients):
            yield *_client_samples(int(n_train[t]), pis[t], theta, noise, corrected), "train"
            yield *_client_samples(n_test, pis[t], theta, noise, corrected), "test"

    return n_train, clients()


def _check(n_clients: int, n_components: int, dim: int, noise: float, n_test: int, alpha: float) -> None:
    for name, value in (("n_clients", n_clients), ("n_components", n_components), ("dim", dim), ("n_test", n_test)):
        if value < 1:
            raise DataError(f"synthetic: {name} must be >= 1, got {value}")
    if not (alpha > 0 and 0 <= noise < float("inf")):
        raise DataError(f"synthetic: need alpha > 0 and a finite noise >= 0, got alpha={alpha}, noise={noise}")
    # every client has at least 50 train and n_test test samples of dim float32 features (lower bound)
    check_fits(f"synthetic with n_clients={n_clients}, n_test={n_test}, dim={dim}",
               4.0 * n_clients * (50 + n_test) * (dim + 1), "lower n_clients, n_test or dim")


def load(data_root: Path | None = None, *, corrected: bool = False, **params: object) -> FederatedData:
    """Generate the federation in memory, written client by client into preallocated float32 tensors."""
    sizes, clients = iter_clients(corrected=corrected, **params)  # type: ignore[arg-type]
    n_test, dim = int(params["n_test"]), int(params["dim"])  # type: ignore[arg-type]
    train_off = torch.zeros(len(sizes) + 1, dtype=torch.long)
    train_off[1:] = torch.cumsum(torch.as_tensor(sizes), 0)
    test_off = torch.arange(len(sizes) + 1, dtype=torch.long) * n_test
    out = {
        "train": (torch.empty(int(train_off[-1]), dim), torch.empty(int(train_off[-1])), train_off),
        "test": (torch.empty(int(test_off[-1]), dim), torch.empty(int(test_off[-1])), test_off),
    }
    counters = {"train": 0, "test": 0}
    for x, y, perm, split in clients:
        xs, ys, off = out[split]
        t = counters[split]
        a, b = int(off[t]), int(off[t + 1])
        # convert to float32 first, then shuffle straight into place: half the memory traffic
        index = torch.from_numpy(perm)
        torch.index_select(torch.from_numpy(x.astype(np.float32)), 0, index, out=xs[a:b])
        torch.index_select(torch.from_numpy(y.astype(np.float32)), 0, index, out=ys[a:b])
        counters[split] = t + 1
    (trx, try_, tro), (tex, tey, teo) = out["train"], out["test"]
    return FederatedData(trx, try_, tro, tex, tey, teo, task="binary", num_classes=2)


@hookimpl
def fedbench_datasets() -> list[DatasetSpec]:
    return [
        DatasetSpec(
            name="synthetic",
            doc="FedEM paper's synthetic mixture of logistic regressions (authors' generator, label quirk kept)",
            params=PAPER,
            load=load,
            shape=lambda **p: DataShape((int(p["dim"]),), 1, task="binary"),
            default_model="linear",
            cache=True,
        ),
        DatasetSpec(
            name="synthetic-corrected",
            doc="the same generator, each sample labelled by its own mixture component",
            params=PAPER,
            load=lambda data_root=None, **p: load(data_root, corrected=True, **p),
            shape=lambda **p: DataShape((int(p["dim"]),), 1, task="binary"),
            default_model="linear",
            cache=True,
        ),
    ]
