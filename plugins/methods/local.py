"""Local training: every client trains its own model and never communicates."""

from __future__ import annotations

import torch

from fedbench import Aggregator, AggregatorSpec, Client, ClientUpdate, MethodSpec, hookimpl


class NoCommunicationAggregator(Aggregator):
    """Keeps one personal set of parameters per client; nothing is averaged.

    Every client starts from the same initial parameters.
    """

    communicates = False

    def __init__(self, clients, init_params, train, *, seed):  # noqa: ANN001 - same as Aggregator
        super().__init__(clients, init_params, train, seed=seed)
        self.personal: dict[int, list[torch.Tensor]] = {c.client_id: [p.clone() for p in init_params] for c in clients}

    def configure_fit(self, round_: int, client: Client) -> list[torch.Tensor]:
        return self.personal[client.client_id]

    def aggregate_fit(self, round_: int, updates: list[ClientUpdate]) -> None:
        for u in updates:
            self.personal[u.client_id] = u.params

    def configure_evaluate(self, client: Client) -> list[torch.Tensor]:
        return self.personal[client.client_id]


@hookimpl
def fedbench_aggregators() -> list[AggregatorSpec]:
    return [AggregatorSpec(name="no_communication", doc="each client keeps and trains its own model", cls=NoCommunicationAggregator)]


@hookimpl
def fedbench_methods() -> list[MethodSpec]:
    return [
        MethodSpec(
            name="local",
            doc="Local: each client trains alone on its own data, no communication",
            client="plain",
            aggregator="no_communication",
            n_learners=1,
        )
    ]
