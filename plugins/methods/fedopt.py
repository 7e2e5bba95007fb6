"""Server optimisers on the averaged update (Reddi et al., ICLR 2021, Algorithm 2; Hsu et al. 2019).

The clients train as in FedAvg. The server treats delta = average - w as a
pseudo-gradient step and applies

* ``sgd`` (FedAvgM): m <- beta1 * m + delta; w <- w + server_lr * m
  (beta1 = 0 and server_lr = 1 give FedAvg exactly);
* ``adam`` (FedAdam): m <- beta1 m + (1 - beta1) delta; v <- beta2 v + (1 - beta2) delta^2;
  w <- w + server_lr * m / (sqrt(v) + tau);
* ``yogi`` (FedYogi): as adam with v <- v - (1 - beta2) delta^2 sign(v - delta^2).

As in the paper, v starts at tau^2 and there is no bias correction.
"""

from __future__ import annotations

import torch

from fedbench.plugin.params import Param
from fedbench import AggregatorSpec, CentralizedAggregator, MethodSpec, hookimpl

OPTIMIZERS = ("sgd", "adam", "yogi")


def server_step(
    kind: str,
    w: torch.Tensor,
    delta: torch.Tensor,
    m: torch.Tensor,
    v: torch.Tensor,
    *,
    server_lr: float,
    beta1: float,
    beta2: float,
    tau: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One server update; returns the new (w, m, v)."""
    if kind == "sgd":
        m = beta1 * m + delta
        return w + server_lr * m, m, v
    m = beta1 * m + (1 - beta1) * delta
    d2 = delta * delta
    if kind == "adam":
        v = beta2 * v + (1 - beta2) * d2
    else:
        v = v - (1 - beta2) * d2 * torch.sign(v - d2)
    return w + server_lr * m / (v.sqrt() + tau), m, v


class ServerOptAggregator(CentralizedAggregator):
    """Centralised averaging followed by a server optimiser step on the pseudo-gradient."""

    PARAMS = {
        "optimizer": Param("sgd", choices=OPTIMIZERS), "server_lr": Param(1.0, low=0.0, low_open=True),
        "beta1": Param(0.9, low=0.0, high=1.0, high_open=True), "beta2": Param(0.99, low=0.0, high=1.0, high_open=True),
        "tau": Param(1e-3, low=0.0, low_open=True),
    }

    def __init__(  # noqa: PLR0913
        self, clients, init_params, train, *, seed, optimizer, server_lr, beta1, beta2, tau  # noqa: ANN001
    ) -> None:
        super().__init__(clients, init_params, train, seed=seed)
        self.kind, self.hyper = optimizer, {"server_lr": server_lr, "beta1": beta1, "beta2": beta2, "tau": tau}
        self.m = [torch.zeros_like(p) for p in init_params]
        self.v = [torch.full_like(p, tau * tau) for p in init_params]

    def aggregate_fit(self, round_, updates) -> None:  # noqa: ANN001
        old = self.global_params
        super().aggregate_fit(round_, updates)  # global_params is now the weighted average
        new = []
        for j, (w, avg) in enumerate(zip(old, self.global_params)):
            w_new, self.m[j], self.v[j] = server_step(self.kind, w, avg - w, self.m[j], self.v[j], **self.hyper)
            new.append(w_new)
        self.global_params = new


@hookimpl
def fedbench_aggregators() -> list[AggregatorSpec]:
    return [
        AggregatorSpec(
            name="server_opt",
            doc="centralised averaging followed by a server optimiser (sgd with momentum, adam, yogi)",
            cls=ServerOptAggregator,
        )
    ]


@hookimpl
def fedbench_methods() -> list[MethodSpec]:
    return [
        MethodSpec(
            name="fedavgm",
            doc="FedAvgM: FedAvg with server momentum (Hsu et al. 2019)",
            client="plain", aggregator="server_opt", aggregator_params={"optimizer": "sgd", "beta1": 0.9},
        ),
        MethodSpec(
            name="fedadam",
            doc="FedAdam: Adam on the averaged update at the server (Reddi et al. 2021)",
            client="plain", aggregator="server_opt",
            aggregator_params={"optimizer": "adam", "server_lr": 0.01, "beta1": 0.9, "beta2": 0.99, "tau": 1e-3},
        ),
        MethodSpec(
            name="fedyogi",
            doc="FedYogi: Yogi on the averaged update at the server (Reddi et al. 2021)",
            client="plain", aggregator="server_opt",
            aggregator_params={"optimizer": "yogi", "server_lr": 0.01, "beta1": 0.9, "beta2": 0.99, "tau": 1e-3},
        ),
    ]
