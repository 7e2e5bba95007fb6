"""FedAvgM (Hsu et al., 2019) as a third-party fedbench plugin.

The server treats the weighted average of the clients' parameters as a
pseudo-gradient step: with d = w - avg, it keeps v <- beta * v + d and sets
w <- w - server_lr * v. With beta = 0 and server_lr = 1 this is FedAvg exactly.
Nothing in fedbench is changed: this module registers an aggregator and a
method through fedbench's hooks, found via this package's entry point.
"""

from __future__ import annotations

import torch

from fedbench import AggregatorSpec, CentralizedAggregator, MethodSpec, hookimpl


class MomentumAggregator(CentralizedAggregator):
    """Centralised averaging followed by a server SGD-with-momentum step."""

    def __init__(self, clients, init_params, train, *, seed, server_momentum=0.9, server_lr=1.0):  # noqa: ANN001
        super().__init__(clients, init_params, train, seed=seed)
        if not 0 <= server_momentum < 1 or server_lr <= 0:
            raise ValueError(f"need 0 <= server_momentum < 1 and server_lr > 0, got {server_momentum}, {server_lr}")
        self.server_momentum = server_momentum
        self.server_lr = server_lr
        self.velocity = [torch.zeros_like(p) for p in init_params]

    def aggregate_fit(self, round_, updates):  # noqa: ANN001
        old = self.global_params
        super().aggregate_fit(round_, updates)  # self.global_params is now the plain average
        new = []
        for m, (w, avg) in enumerate(zip(old, self.global_params)):
            self.velocity[m] = self.server_momentum * self.velocity[m] + (w - avg)
            new.append(w - self.server_lr * self.velocity[m])
        self.global_params = new


@hookimpl
def fedbench_aggregators():  # noqa: ANN201
    return [
        AggregatorSpec(
            name="server_momentum",
            doc="centralised averaging followed by a server momentum step",
            params={"server_momentum": 0.9, "server_lr": 1.0},
            cls=MomentumAggregator,
        )
    ]


@hookimpl
def fedbench_methods():  # noqa: ANN201
    return [
        MethodSpec(
            name="fedavgm",
            doc="FedAvgM: FedAvg with server momentum (Hsu et al. 2019)",
            client="plain",
            aggregator="server_momentum",
            n_learners=1,
        )
    ]
