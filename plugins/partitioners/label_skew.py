"""Partitioners: how one pooled data set is split over clients.

Every function takes the integer labels, the number of clients and a numpy
Generator, returns one index array per client, always terminates (at most
``MAX_TRIES`` redraws, never an open-ended resampling loop) and raises a
DataError naming the settings and a fix when a split is infeasible.
"""

from __future__ import annotations

import numpy as np

from fedbench.plugin.params import Param
from fedbench import PartitionerSpec, hookimpl
from fedbench.errors import DataError

MAX_TRIES = 10


def _need(n_samples: int, n_clients: int, what: str) -> None:
    if n_samples < n_clients:
        raise DataError(f"{what}: {n_samples} samples cannot give each of {n_clients} clients one; use fewer clients")


def iid(labels: np.ndarray, n_clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A uniformly random split into near-equal parts."""
    _need(len(labels), n_clients, "iid")
    return [np.sort(p) for p in np.array_split(rng.permutation(len(labels)), n_clients)]


def _split_by_proportions(idx: np.ndarray, proportions: np.ndarray) -> list[np.ndarray]:
    cuts = (np.cumsum(proportions)[:-1] * len(idx)).astype(int)
    return np.split(idx, cuts)


def _dirichlet_over_groups(
    groups: list[np.ndarray], n_clients: int, rng: np.random.Generator, alpha: float, min_size: int, what: str
) -> list[np.ndarray]:
    if alpha <= 0:
        raise DataError(f"{what}: alpha must be > 0, got {alpha}")
    _need(sum(len(g) for g in groups), n_clients * max(min_size, 1), what)
    smallest = 0
    for _ in range(MAX_TRIES):
        parts: list[list[np.ndarray]] = [[] for _ in range(n_clients)]
        for g in groups:
            for client, chunk in enumerate(_split_by_proportions(rng.permutation(g), rng.dirichlet(alpha * np.ones(n_clients)))):
                parts[client].append(chunk)
        out = [np.sort(np.concatenate(p)) if p else np.array([], dtype=int) for p in parts]
        smallest = min(len(p) for p in out)
        if smallest >= min_size:
            return out
    raise DataError(
        f"{what}: after {MAX_TRIES} draws some client still had {smallest} < min_size={min_size} samples "
        f"(alpha={alpha}, {n_clients} clients); raise alpha, use fewer clients, or set min_size=0"
    )


def dirichlet(labels: np.ndarray, n_clients: int, rng: np.random.Generator, alpha: float = 0.5, min_size: int = 1) -> list[np.ndarray]:
    """Label skew: each class spread over clients by proportions ~ Dirichlet(alpha)."""
    groups = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    return _dirichlet_over_groups(groups, n_clients, rng, alpha, min_size, "dirichlet")


def label_groups(
    labels: np.ndarray, n_clients: int, rng: np.random.Generator, n_groups: int = 3, alpha: float = 0.4, min_size: int = 1
) -> list[np.ndarray]:
    """The FedEM paper's scheme: the classes, shuffled, form ``n_groups`` groups; each group's
    samples are spread over the clients by proportions ~ Dirichlet(alpha)."""
    classes = rng.permutation(np.unique(labels))
    if not 1 <= n_groups <= len(classes):
        raise DataError(f"label_groups: n_groups must be in [1, {len(classes)}], got {n_groups}")
    groups = [np.flatnonzero(np.isin(labels, part)) for part in np.array_split(classes, n_groups)]
    return _dirichlet_over_groups(groups, n_clients, rng, alpha, min_size, "label_groups")


def shards(labels: np.ndarray, n_clients: int, rng: np.random.Generator, shards_per_client: int = 2) -> list[np.ndarray]:
    """Pathological non-iid (McMahan et al. 2017): sort by label, cut into shards, deal
    ``shards_per_client`` random shards to each client (so about that many labels each)."""
    n_shards = n_clients * shards_per_client
    if shards_per_client < 1:
        raise DataError(f"shards: shards_per_client must be >= 1, got {shards_per_client}")
    _need(len(labels), n_shards, f"shards ({shards_per_client} per client)")
    order = rng.permutation(len(labels))
    order = order[np.argsort(labels[order], kind="stable")]
    pieces = np.array_split(order, n_shards)
    deal = rng.permutation(n_shards)
    return [np.sort(np.concatenate([pieces[s] for s in deal[i * shards_per_client : (i + 1) * shards_per_client]])) for i in range(n_clients)]


def quantity(labels: np.ndarray, n_clients: int, rng: np.random.Generator, sigma: float = 1.0) -> list[np.ndarray]:
    """Quantity skew: client sizes proportional to LogNormal(0, sigma) draws (at least one sample each), iid labels."""
    _need(len(labels), n_clients, "quantity")
    weights = rng.lognormal(0.0, sigma, n_clients)
    sizes = np.maximum(1, np.floor(weights / weights.sum() * (len(labels) - n_clients)).astype(int) + 1)
    sizes[-1] = len(labels) - sizes[:-1].sum()
    if sizes[-1] < 1:  # rounding took everything: give the last client one sample from the largest
        big = int(np.argmax(sizes[:-1]))
        sizes[big] -= 1 - sizes[-1]
        sizes[-1] = 1
    return [np.sort(p) for p in np.split(rng.permutation(len(labels)), np.cumsum(sizes)[:-1])]


def _draw(rng: np.random.Generator, weights: np.ndarray, available: np.ndarray) -> int:
    """An index among the ``available`` ones, drawn with probability proportional to ``weights``
    (uniformly when the available weights all underflowed to zero)."""
    w = np.where(available, weights, 0.0)
    if w.sum() <= 0:
        w = available.astype(float)
    cum = np.cumsum(w)
    i = int(np.searchsorted(cum, rng.random() * cum[-1], side="right"))  # lands on an entry of positive weight
    return i if i < len(w) else int(np.flatnonzero(w > 0)[-1])


def pachinko(
    labels: np.ndarray,
    n_clients: int,
    rng: np.random.Generator,
    alpha: float = 0.4,
    beta: float = 10.0,
    samples_per_client: int = 0,
    coarse_labels: tuple | np.ndarray | None = None,
) -> list[np.ndarray]:
    """Two-level label skew (Pachinko allocation, Reddi et al. 2021, used by the FedEM paper for CIFAR-100).

    Each client in turn draws weights over the coarse labels ~ Dirichlet(alpha)
    and, per coarse label, weights over its fine labels ~ Dirichlet(beta); then
    draws ``samples_per_client`` samples (default: an equal share of all),
    each by picking a coarse label, then a fine label, then an unused sample
    of that fine label. A fine label whose samples are used up is removed
    (weights renormalised), and so is a coarse label with no fine label left.
    Every draw consumes a sample, so the split always terminates.
    ``coarse_labels`` (per sample) is supplied by a data set with a label hierarchy.
    """
    if coarse_labels is None or len(coarse_labels) != len(labels):
        raise DataError("pachinko needs each sample's coarse label: use it with a data set that has a label hierarchy (cifar100)")
    if alpha <= 0 or beta <= 0:
        raise DataError(f"pachinko: alpha and beta must be > 0, got {alpha}, {beta}")
    coarse_labels = np.asarray(coarse_labels)
    per = int(samples_per_client) or len(labels) // n_clients
    if per < 1 or per * n_clients > len(labels):
        raise DataError(
            f"pachinko: {n_clients} clients x {per} samples needs {per * n_clients} samples but the pool has "
            f"{len(labels)}; lower samples_per_client or n_clients"
        )
    fine = np.unique(labels)
    coarse = np.unique(coarse_labels)
    children = []
    for c in coarse:
        kids = np.unique(labels[coarse_labels == c])
        children.append(np.searchsorted(fine, kids))
    if sum(len(k) for k in children) != len(fine):
        raise DataError("pachinko: a fine label appears under two coarse labels; the label hierarchy is inconsistent")
    pools = [list(rng.permutation(np.flatnonzero(labels == f))) for f in fine]
    fine_left = np.array([len(p) > 0 for p in pools])
    parts = []
    for _ in range(n_clients):
        p_coarse = rng.dirichlet(alpha * np.ones(len(coarse)))
        p_fine = [rng.dirichlet(beta * np.ones(len(kids))) for kids in children]
        taken = []
        for _ in range(per):
            coarse_open = np.array([fine_left[kids].any() for kids in children])
            c = _draw(rng, p_coarse, coarse_open)
            kids = children[c]
            f = kids[_draw(rng, p_fine[c], fine_left[kids])]
            taken.append(pools[f].pop())
            fine_left[f] = len(pools[f]) > 0
        parts.append(np.sort(np.asarray(taken, dtype=int)))
    return parts


def ALPHA(default: float) -> Param:
    return Param(default, low=0.0, low_open=True)


MIN_SIZE = Param(1, low=0)


@hookimpl
def fedbench_partitioners() -> list[PartitionerSpec]:
    return [
        PartitionerSpec(name="iid", doc="uniformly random, near-equal parts", partition=iid),
        PartitionerSpec(name="dirichlet", doc="label skew: each class spread by Dirichlet(alpha)", params={"alpha": ALPHA(0.5), "min_size": MIN_SIZE}, partition=dirichlet),
        PartitionerSpec(
            name="label_groups", doc="FedEM paper: class groups, each spread by Dirichlet(alpha)",
            params={"n_groups": Param(3, low=1), "alpha": ALPHA(0.4), "min_size": MIN_SIZE}, partition=label_groups,
        ),
        PartitionerSpec(name="shards", doc="pathological: k label-sorted shards per client", params={"shards_per_client": Param(2, low=1)}, partition=shards),
        PartitionerSpec(name="quantity", doc="quantity skew: LogNormal(0, sigma) client sizes", params={"sigma": Param(1.0, low=0.0)}, partition=quantity),
        PartitionerSpec(
            name="pachinko", doc="two-level label skew over coarse then fine labels (needs a label hierarchy, e.g. cifar100)",
            params={"alpha": ALPHA(0.4), "beta": ALPHA(10.0), "samples_per_client": Param(0, low=0), "coarse_labels": None}, partition=pachinko,
        ),
    ]
