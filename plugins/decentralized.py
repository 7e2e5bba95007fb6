"""Fully decentralised FedAvg and FedEM (the FedEM paper's D-FedEM, Sec. 3.3 and App. C).

There is no server. Each client keeps its own copy of the learners, trains it
locally (plain or FedEM client), then replaces it by a weighted average of its
neighbours' copies: w_i <- sum_j W_ij w_j, with W the mixing matrix of a
communication graph.

Graph (``graph``): ``erdos_renyi`` draws every edge with probability ``p``
(default 0.5) from the run's seed, adding a ring through all clients so that
the graph is connected; ``complete`` links everyone. Mixing matrix
(``mixing``): ``metropolis`` (default) gives W_ij = 1 / (1 + max(deg_i, deg_j))
on edges and W_ii = 1 - sum_j W_ij, a symmetric doubly stochastic matrix;
``uniform`` gives W_ij = 1 / n for all i, j (meant for the complete graph).
Deviation: the authors compute the fastest-mixing matrix with a convex solver;
Metropolis weights need none and are also symmetric and doubly stochastic.
"""

from __future__ import annotations

import torch

from fedbench.params import Param
from fedbench import Aggregator, AggregatorSpec, Client, ClientUpdate, MethodSpec, hookimpl
from fedbench.seeding import generator

STREAM_GRAPH = 201


def erdos_renyi_ring(n: int, p: float, gen: torch.Generator) -> torch.Tensor:
    """Symmetric 0/1 adjacency (no self loops): random edges with probability p plus a ring."""
    upper = torch.triu((torch.rand(n, n, generator=gen) < p).to(torch.float64), diagonal=1)
    adj = upper + upper.T
    if n > 1:
        idx = torch.arange(n)
        adj[idx, (idx + 1) % n] = 1.0
        adj[(idx + 1) % n, idx] = 1.0
    adj.fill_diagonal_(0.0)
    return adj


def metropolis_weights(adj: torch.Tensor) -> torch.Tensor:
    """Metropolis-Hastings mixing matrix of a symmetric adjacency matrix."""
    deg = adj.sum(dim=1)
    w = adj / (1.0 + torch.maximum(deg.unsqueeze(0), deg.unsqueeze(1)))
    w += torch.diag(1.0 - w.sum(dim=1))
    return w


class DecentralizedAggregator(Aggregator):
    """Gossip averaging over a fixed graph; every client evaluates its own copy."""

    def __init__(self, clients, init_params, train, *, seed, graph="erdos_renyi", p=0.5, mixing="metropolis"):  # noqa: ANN001
        super().__init__(clients, init_params, train, seed=seed)
        n = len(clients)
        if graph == "complete":
            adj = torch.ones(n, n, dtype=torch.float64) - torch.eye(n, dtype=torch.float64)
        elif graph == "erdos_renyi":
            if not 0 <= p <= 1:
                raise ValueError(f"edge probability p must be in [0, 1], got {p}")
            adj = erdos_renyi_ring(n, p, generator(seed, STREAM_GRAPH))
        else:
            raise ValueError(f"graph must be erdos_renyi or complete, got {graph!r}")
        if mixing == "metropolis":
            self.mixing = metropolis_weights(adj)
        elif mixing == "uniform":
            if graph != "complete":
                raise ValueError("uniform mixing needs the complete graph (graph = complete)")
            self.mixing = torch.full((n, n), 1.0 / n, dtype=torch.float64)
        else:
            raise ValueError(f"mixing must be metropolis or uniform, got {mixing!r}")
        self.personal = {c.client_id: [p.clone() for p in init_params] for c in clients}

    def round_bytes(self, sent: list[list[torch.Tensor]], updates: list[ClientUpdate]) -> int:
        """Every client sends its parameters to each of its neighbours once per round."""
        per_client = sum(p.numel() * p.element_size() for p in updates[0].params) if updates else 0
        links = int((self.mixing > 0).sum() - (self.mixing.diagonal() > 0).sum())
        return links * per_client

    def configure_fit(self, round_: int, client: Client) -> list[torch.Tensor]:
        return self.personal[client.client_id]

    def configure_evaluate(self, client: Client) -> list[torch.Tensor]:
        return self.personal[client.client_id]

    def aggregate_fit(self, round_: int, updates: list[ClientUpdate]) -> None:
        for u in updates:
            self.personal[u.client_id] = u.params
        ids = [c.client_id for c in self.clients]
        for m in range(len(self.global_params)):
            stacked = torch.stack([self.personal[i][m] for i in ids])
            mixed = (self.mixing.to(stacked.dtype) @ stacked).unbind()
            for i, row in zip(ids, mixed):
                self.personal[i][m] = row
        self.global_params = [
            torch.stack([self.personal[i][m] for i in ids]).mean(dim=0) for m in range(len(self.global_params))
        ]


@hookimpl
def fedbench_aggregators() -> list[AggregatorSpec]:
    return [
        AggregatorSpec(
            name="decentralized",
            doc="no server: clients average with their neighbours on a communication graph",
            params={
                "graph": Param("erdos_renyi", choices=("erdos_renyi", "complete")), "p": Param(0.5, low=0.0, high=1.0),
                "mixing": Param("metropolis", choices=("metropolis", "uniform")),
            },
            cls=DecentralizedAggregator,
        )
    ]


@hookimpl
def fedbench_methods() -> list[MethodSpec]:
    return [
        MethodSpec(
            name="d-fedavg",
            doc="decentralised FedAvg: local SGD then gossip averaging on a random graph",
            client="plain", aggregator="decentralized",
        ),
        MethodSpec(
            name="d-fedem",
            doc="decentralised FedEM: FedEM clients, gossip averaging of each component (Marfoq et al. 2021)",
            client="mixture", aggregator="decentralized", n_learners=3,
        ),
    ]
