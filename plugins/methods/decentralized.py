"""Fully decentralised FedAvg and FedEM (the FedEM paper's D-FedEM, Sec. 3.3 and App. C).

There is no server. Each client keeps its own copy of the learners, trains it
locally (plain or FedEM client), then replaces it by a weighted average of its
neighbours' copies: w_i <- sum_j W_ij w_j, with W the mixing matrix of a
communication graph.

Graph (``graph``): ``binomial`` (the default, the FedEM authors'): every pair of
clients is linked with probability ``p`` (0.5), drawn as networkx's
``binomial_graph(n, p, seed)`` draws it (Python's ``random.Random(seed)``, one draw
per pair in lexicographic order), with the run's seed; ``erdos_renyi`` draws edges
from the run's torch stream and adds a ring through all clients so that the graph
is connected; ``complete`` links everyone.

Mixing matrix (``mixing``): ``fmmc`` (the default, the authors'): the fastest-mixing
symmetric doubly stochastic matrix on the graph's edges with a zero diagonal, i.e.
the W minimising ||W - 11^T/n||_2 subject to W = W^T, W1 = 1, W >= 0 and W_ij = 0
off the edges and on the diagonal. The authors solve this semidefinite program with
cvxpy; fedbench needs no solver: it minimises a smoothed spectral norm (log-sum-exp
of the eigenvalues, sharpened in stages) by projected gradient descent, projecting
onto the constraints exactly (a semismooth Newton method on the dual). Checked
against cvxpy's solution of the authors' program on their graphs (n = 10, 50, 100:
spectral norms within 0.8 %, ``tests/test_baselines.py`` keeps the values). The
authors' post-hoc rescaling of their solver's output is not needed (ours is feasible
to 1e-12). ``metropolis`` gives W_ij = 1 / (1 + max(deg_i, deg_j)) on edges and
W_ii = 1 - sum_j W_ij (no solver, a slower mixing); ``uniform`` gives W_ij = 1 / n
(the complete graph only).
"""

from __future__ import annotations

import random

import torch

from fedbench.errors import ConfigError
from fedbench.plugin.params import Param
from fedbench import Aggregator, AggregatorSpec, Client, ClientUpdate, MethodSpec, hookimpl
from fedbench.fl.seeding import generator

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


def binomial_graph(n: int, p: float, seed: int) -> torch.Tensor:
    """Symmetric 0/1 adjacency drawn as networkx's ``binomial_graph(n, p, seed)`` draws it: Python's
    ``random.Random(seed)``, one draw per pair (i < j) in lexicographic order, an edge when below ``p``."""
    rng = random.Random(seed)
    adj = torch.zeros(n, n, dtype=torch.float64)
    if p >= 1:
        return torch.ones(n, n, dtype=torch.float64) - torch.eye(n, dtype=torch.float64)
    if p <= 0:
        return adj
    for i in range(n):
        for j in range(i + 1, n):
            if rng.random() < p:
                adj[i, j] = adj[j, i] = 1.0
    return adj


class _EdgeProjection:
    """Euclidean projection of edge weights onto {w >= 0, every node's weights sum to 1}: a semismooth
    Newton method on the dual (one multiplier per node), warm-started from the previous projection."""

    def __init__(self, ei: torch.Tensor, ej: torch.Tensor, n: int) -> None:
        self.ei, self.ej, self.n = ei, ej, n
        self.lam = torch.zeros(n, dtype=torch.float64)

    def __call__(self, z: torch.Tensor, iters: int = 200) -> torch.Tensor:
        ei, ej, n, lam = self.ei, self.ej, self.n, self.lam.clone()
        for _ in range(iters):
            v = z - lam[ei] - lam[ej]
            w = v.clamp_min(0)
            r = torch.zeros(n, dtype=z.dtype).index_add_(0, ei, w).index_add_(0, ej, w) - 1
            if float(r.abs().max()) < 1e-12:
                self.lam = lam
                return w
            active = (v > 0).to(z.dtype)
            jac = torch.zeros(n, n, dtype=z.dtype)
            jac[ei, ej] = active
            jac[ej, ei] = active
            jac += torch.diag(jac.sum(1) + 1e-12)
            lam = lam + torch.linalg.solve(jac, r)
        raise ConfigError(
            "no symmetric doubly stochastic mixing matrix with a zero diagonal exists on this graph (fmmc); "
            "use aggregator.mixing=metropolis or a denser graph (aggregator.p)"
        )


def fmmc_weights(adj: torch.Tensor, sharpness: tuple[float, ...] = (10.0, 100.0, 1e3, 1e4), steps: int = 40) -> torch.Tensor:
    """The fastest-mixing symmetric doubly stochastic matrix with a zero diagonal supported on the edges of
    ``adj`` (approximately: see the module doc), float64."""
    n = adj.shape[0]
    if n == 1:
        raise ConfigError("fmmc mixing needs at least two clients; use aggregator.mixing=metropolis")
    iu = torch.triu_indices(n, n, 1)
    on = adj[iu[0], iu[1]] > 0
    ei, ej = iu[0][on], iu[1][on]
    if bool((adj.sum(1) == 0).any()):
        raise ConfigError("fmmc mixing: a client has no neighbour; use aggregator.mixing=metropolis or a denser graph")
    project = _EdgeProjection(ei, ej, n)
    centre = torch.full((n, n), 1.0 / n, dtype=torch.float64)

    def matrix(w: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(n, n, dtype=torch.float64)
        out[ei, ej] = w
        out[ej, ei] = w
        return out

    def smoothed(w: torch.Tensor, t: float) -> tuple[float, torch.Tensor, float]:
        """(1/t) log sum_i (e^{t l_i} + e^{-t l_i}) over the eigenvalues l of W - 11^T/n, its gradient
        with respect to the edge weights, and the spectral norm itself."""
        vals, vecs = torch.linalg.eigh(matrix(w) - centre)
        a = torch.cat([t * vals, -t * vals])
        p = torch.softmax(a, 0)
        grad = (vecs * (p[:n] - p[n:])) @ vecs.T
        return float(torch.logsumexp(a, 0)) / t, 2 * grad[ei, ej], float(vals.abs().max())

    w = project(torch.full((len(ei),), 1.0 / float(adj.sum(1).mean()), dtype=torch.float64))
    best, best_w = float("inf"), w
    for t in sharpness:
        step = 1.0
        f, g, norm = smoothed(w, t)
        for _ in range(steps):
            while True:  # backtracking on the sufficient decrease of a projected step
                cand = project(w - step * g)
                f_c, g_c, norm_c = smoothed(cand, t)
                if f_c <= f - 1e-4 / step * float((cand - w).pow(2).sum()) or step < 1e-10:
                    break
                step *= 0.5
            w, f, g, norm = cand, f_c, g_c, norm_c
            if norm < best:
                best, best_w = norm, w
            step *= 2
    return matrix(best_w)


def metropolis_weights(adj: torch.Tensor) -> torch.Tensor:
    """Metropolis-Hastings mixing matrix of a symmetric adjacency matrix."""
    deg = adj.sum(dim=1)
    w = adj / (1.0 + torch.maximum(deg.unsqueeze(0), deg.unsqueeze(1)))
    w += torch.diag(1.0 - w.sum(dim=1))
    return w


class DecentralizedAggregator(Aggregator):
    """Gossip averaging over a fixed graph; every client evaluates its own copy."""

    PARAMS = {
        "graph": Param("binomial", choices=("binomial", "erdos_renyi", "complete")), "p": Param(0.5, low=0.0, high=1.0),
        "mixing": Param("fmmc", choices=("fmmc", "metropolis", "uniform")),
    }

    def __init__(self, clients, init_params, train, *, seed, graph, p, mixing):  # noqa: ANN001
        super().__init__(clients, init_params, train, seed=seed)
        n = len(clients)
        if graph == "complete":
            adj = torch.ones(n, n, dtype=torch.float64) - torch.eye(n, dtype=torch.float64)
        elif graph == "binomial":
            adj = binomial_graph(n, p, seed)
        elif graph == "erdos_renyi":
            adj = erdos_renyi_ring(n, p, generator(seed, STREAM_GRAPH))
        else:
            raise ValueError(f"graph must be binomial, erdos_renyi or complete, got {graph!r}")
        if mixing == "fmmc":
            self.mixing = fmmc_weights(adj)
        elif mixing == "metropolis":
            self.mixing = metropolis_weights(adj)
        elif mixing == "uniform":
            if graph != "complete":
                raise ValueError("uniform mixing needs the complete graph (graph = complete)")
            self.mixing = torch.full((n, n), 1.0 / n, dtype=torch.float64)
        else:
            raise ValueError(f"mixing must be fmmc, metropolis or uniform, got {mixing!r}")
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
            mixed = (self.mixing.to(stacked) @ stacked).unbind()  # its dtype and device (a GPU run)
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
