"""Clustered FL (Sattler et al., IEEE TNNLS 2021), as run in the FedEM paper.

All clients of a cluster train from the cluster's model; the server averages
within each cluster (weighted by train size). After a warm-up, a cluster whose
clients' updates nearly cancel (norm of the mean update < ``eps1``) while some
update is still large (max update norm > ``eps2``) is split in two by an
optimal bipartition of the cosine similarities of its clients' updates:
complete-linkage agglomerative clustering down to two groups, as in Sattler's
reference code. Thresholds default to the FedEM paper's runs (0.4, 1.6) and the
minimum cluster size to split is 3, as in the authors' code.

The authors' code (github omarfoq/FedEM) is the default where it differs from
Sattler's paper: it splits from the first round (``warmup = 0``; Sattler's
reference code waits 20 rounds: ``warmup = 20``), and its "max update norm" is
``norm(updates, axis=1).max()`` over the (clients, learners, parameters) array,
i.e. the largest entry of the per-coordinate norm across learners, over every
client and coordinate (``max_norm = "authors"``; for one learner, the largest
absolute coordinate of any update), not the largest L2 norm of a client's update
(``max_norm = "l2"``, the paper's). Written from the paper; scikit-learn is not
needed. Full participation is required (the split compares every member's update).
"""

from __future__ import annotations

import torch

from fedbench.plugin.params import Param
from fedbench import Aggregator, AggregatorSpec, Client, ClientUpdate, MethodSpec, weighted_average, hookimpl


def cosine_similarities(updates: torch.Tensor) -> torch.Tensor:
    """Pairwise cosine similarity of the rows of ``updates`` (n x P)."""
    unit = updates / updates.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return unit @ unit.T


def complete_linkage_bipartition(distance: torch.Tensor) -> tuple[list[int], list[int]]:
    """Split points into two groups by complete-linkage agglomerative clustering on ``distance`` (n x n).

    Repeatedly merges the two groups whose farthest members are closest, until two
    groups remain. Returns both groups as sorted index lists, the one holding point 0 first.
    """
    n = distance.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 points to bipartition, got {n}")
    groups = [[i] for i in range(n)]
    d = distance.clone().double()
    d.fill_diagonal_(float("inf"))
    alive = list(range(n))
    while len(alive) > 2:
        sub = d[alive][:, alive]
        flat = int(torch.argmin(sub))
        a, b = alive[flat // len(alive)], alive[flat % len(alive)]
        a, b = min(a, b), max(a, b)
        # complete linkage (Lance-Williams): d(k, a u b) = max(d(k, a), d(k, b))
        merged = torch.maximum(d[a], d[b])
        d[a], d[:, a] = merged, merged
        d[a, a] = float("inf")
        groups[a] += groups[b]
        alive.remove(b)
    first, second = sorted(groups[alive[0]]), sorted(groups[alive[1]])
    return (first, second) if 0 in first else (second, first)


def max_update_norm(delta: torch.Tensor, how: str) -> float:
    """The split criterion's "max update norm" of ``delta`` (clients x learners x parameters):
    ``"l2"`` the largest L2 norm of a client's whole update; ``"authors"`` the authors' code's
    ``norm(delta, axis=1).max()``: the largest norm across learners of one coordinate."""
    if how == "l2":
        return float(delta.flatten(1).norm(dim=1).max())
    return float(delta.norm(dim=1).max())


class ClusteredAggregator(Aggregator):
    """One model per cluster of clients; clusters split when their clients' updates disagree.

    Buffers (BatchNorm running statistics) are averaged per cluster as well, weighted like the parameters, and
    handed to the cluster's members, as the authors' ``average_learners`` does with every float32 entry of the
    state dict (``utils/torch_utils.py:39-70``, ``aggregator.py:569-594``)."""

    PARAMS = {
        "eps1": Param(0.4, low=0.0), "eps2": Param(1.6, low=0.0), "warmup": Param(0, low=0), "min_size": Param(3, low=1),
        "max_norm": Param("authors", choices=("authors", "l2")),
    }

    shares_buffers = True

    def __init__(self, clients, init_params, train, *, seed, eps1, eps2, warmup, min_size, max_norm):  # noqa: ANN001
        super().__init__(clients, init_params, train, seed=seed)
        if train.participation < 1:
            raise ValueError("clustered FL needs full participation (participation = 1)")
        self.eps1, self.eps2, self.warmup, self.min_size, self.max_norm = eps1, eps2, warmup, min_size, max_norm
        self.clusters: list[list[int]] = [[c.client_id for c in clients]]
        self.models: list[list[torch.Tensor]] = [[p.clone() for p in init_params]]
        self._cluster_of = {c.client_id: 0 for c in clients}
        #: cluster index -> the averaged buffers of its members (once they have sent some)
        self.cluster_buffers: dict[int, list[torch.Tensor | None]] = {}

    def configure_fit(self, round_: int, client: Client) -> list[torch.Tensor]:
        return self.configure_evaluate(client)

    def configure_evaluate(self, client: Client) -> list[torch.Tensor]:
        return self.models[self._cluster_of[client.client_id]]

    def aggregate_fit(self, round_: int, updates: list[ClientUpdate]) -> None:
        by_id = {u.client_id: u for u in updates}
        new_clusters, new_models = [], []
        for k, members in enumerate(self.clusters):
            sent = torch.stack(self.models[k])
            per_learner = torch.stack([torch.stack(by_id[i].params) - sent for i in members])  # clients x M x P
            delta = per_learner.flatten(1)
            groups = [members]
            mean_norm = float(delta.mean(dim=0).norm())
            max_norm = max_update_norm(per_learner, self.max_norm)
            if round_ >= self.warmup and len(members) >= self.min_size and mean_norm < self.eps1 and max_norm > self.eps2:
                first, second = complete_linkage_bipartition(-cosine_similarities(delta))
                groups = [[members[i] for i in first], [members[i] for i in second]]
            for group in groups:
                new_clusters.append(group)
                new_models.append([
                    weighted_average([by_id[i].params[m] for i in group], [by_id[i].weight for i in group])
                    for m in range(len(self.models[k]))
                ])
        self.clusters, self.models = new_clusters, new_models
        self._cluster_of = {i: k for k, members in enumerate(self.clusters) for i in members}

    def buffers_for(self, client):  # noqa: ANN001, ANN201
        """Each client gets its own cluster's averaged buffers (None before its cluster has any)."""
        return self.cluster_buffers.get(self._cluster_of[client.client_id])

    def collect_buffers(self, updates) -> None:  # noqa: ANN001
        """Average the sent buffers within each cluster (the clusters after this round's splits)."""
        sent = {u.client_id: u for u in updates if u.buffers is not None}
        if not sent:
            return
        self.cluster_buffers = {}
        for k, members in enumerate(self.clusters):
            group = [sent[i] for i in members if i in sent]
            if group:
                self.cluster_buffers[k] = [
                    None if group[0].buffers[m] is None
                    else weighted_average([u.buffers[m] for u in group], [u.weight for u in group])
                    for m in range(len(group[0].buffers))
                ]


@hookimpl
def fedbench_aggregators() -> list[AggregatorSpec]:
    return [
        AggregatorSpec(
            name="clustered",
            doc="one model per cluster; split a cluster when updates cancel on average but not individually",
            cls=ClusteredAggregator,
        )
    ]


@hookimpl
def fedbench_methods() -> list[MethodSpec]:
    return [
        MethodSpec(
            name="clustered",
            doc="Clustered FL: recursive bipartition of clients by update similarity (Sattler et al. 2021)",
            client="plain",
            aggregator="clustered",
        )
    ]
