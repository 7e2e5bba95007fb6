"""AFL, agnostic federated learning (Mohri, Sivek and Suresh, ICML 2019): minimax over client mixtures.

The server keeps weights lambda on the simplex over clients, starting at the
clients' shares of the training samples (so the first round is FedAvg). Each
round the sampled clients train from w as in FedAvg and the server sets
w = sum_k lambda_k w_k / sum_k lambda_k over them; then the adversary ascends:
lambda_k += lr_lambda * F_k(w_old) for the sampled clients, with F_k the
client's mean train loss at the parameters it was sent, and lambda is
projected back onto the simplex (Euclidean projection, Duchi et al. 2008).
``lr_lambda = 0`` is FedAvg.
"""

from __future__ import annotations

import torch

from fedbench.params import Param
from fedbench import AggregatorSpec, CentralizedAggregator, Client, ClientUpdate, MethodSpec, hookimpl, weighted_average


def project_simplex(v: torch.Tensor) -> torch.Tensor:
    """The Euclidean projection of ``v`` onto {x >= 0, sum x = 1}."""
    u = v.sort(descending=True).values
    css = u.cumsum(0) - 1
    k = torch.arange(1, len(v) + 1, dtype=v.dtype, device=v.device)
    rho = int((u - css / k > 0).nonzero().max())
    return (v - css[rho] / (rho + 1)).clamp_min(0)


class AgnosticAggregator(CentralizedAggregator):
    """Averages with adversarial client weights lambda and ascends lambda on the clients' losses."""

    def __init__(self, clients, init_params, train, *, seed, lr_lambda=0.01):  # noqa: ANN001
        super().__init__(clients, init_params, train, seed=seed)
        if lr_lambda < 0:
            raise ValueError(f"lr_lambda must be >= 0, got {lr_lambda}")
        self.lr_lambda = lr_lambda
        sizes = torch.tensor([float(c.n_train) for c in self.clients], dtype=torch.float64)
        self.lambdas = sizes / sizes.sum()
        self._index = {c.client_id: i for i, c in enumerate(self.clients)}
        self._losses: dict[int, float] = {}

    def configure_fit(self, round_: int, client: Client) -> list[torch.Tensor]:
        if self.lr_lambda > 0:
            self._losses[client.client_id] = client.loss_at(self.global_params)
        return self.global_params

    def aggregate_fit(self, round_: int, updates: list[ClientUpdate]) -> None:
        idx = [self._index[u.client_id] for u in updates]
        weights = self.lambdas[idx].tolist()
        if sum(weights) <= 0:  # the adversary put no weight on any sampled client: keep the model
            weights = [1.0] * len(updates)
        self.global_params = [
            weighted_average([u.params[m] for u in updates], weights) for m in range(len(self.global_params))
        ]
        if self.lr_lambda > 0:
            step = torch.zeros_like(self.lambdas)
            step[idx] = torch.tensor([self._losses[u.client_id] for u in updates], dtype=step.dtype)
            self.lambdas = project_simplex(self.lambdas + self.lr_lambda * step)


@hookimpl
def fedbench_aggregators() -> list[AggregatorSpec]:
    return [
        AggregatorSpec(
            name="agnostic", doc="averages with adversarial client weights, ascended on client losses and projected",
            params={"lr_lambda": Param(0.01, low=0.0)}, cls=AgnosticAggregator,
        )
    ]


@hookimpl
def fedbench_methods() -> list[MethodSpec]:
    return [
        MethodSpec(
            name="afl",
            doc="AFL: agnostic FL, minimax over mixtures of client distributions (Mohri et al. 2019)",
            client="plain",
            aggregator="agnostic",
        )
    ]
