"""SCAFFOLD (Karimireddy et al., ICML 2020), option II control variates.

Server state: the model w and a control variate c; client i: a control variate
c_i (zero at first). In a round a sampled client trains from w with every
gradient corrected by c - c_i: the aggregator sends c - c_i with the model (the
round's ``FitIns.extras["correction"]``) and the scaffold client's local
objective adds ``<c - c_i, w>`` (its ``local_term``, so both backends run it),
doing K local steps at learning rate eta, and ends at y_i. Then c_i+ = c_i - c + (w - y_i) / (K eta); the server sets w to the
weighted average of the y_i (global step size 1) and
c <- c + (|S| / N) * mean_i (c_i+ - c_i). Every quantity in that update is
known to the server in a simulation, so the aggregator keeps the c_i for the
clients; the bytes counted are the protocol's (c down and c_i+ - c_i up, besides the models). SCAFFOLD is plain SGD: the preset sets momentum to 0.
With one client, c = c_i after every round and SCAFFOLD is local SGD.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from fedbench import AggregatorSpec, CentralizedAggregator, Client, ClientSpec, ClientUpdate, FitIns, MethodSpec, hookimpl
from fedbench.fl.learner import batches_per_epoch


class ScaffoldAggregator(CentralizedAggregator):
    """Centralised averaging plus SCAFFOLD's server and client control variates."""

    def __init__(self, clients, init_params, train, *, seed):  # noqa: ANN001
        super().__init__(clients, init_params, train, seed=seed)
        self.c = [torch.zeros_like(p) for p in init_params]
        self.c_i = {cl.client_id: [torch.zeros_like(p) for p in init_params] for cl in clients}

    def configure_fit(self, round_: int, client: Client) -> FitIns:
        correction = [c - ci for c, ci in zip(self.c, self.c_i[client.client_id])]
        return FitIns(self.global_params, extras={"correction": correction})

    def aggregate_fit(self, round_: int, updates: list[ClientUpdate]) -> None:
        sent, lr = self.global_params, self.train.learning_rate(round_)  # what every client trained from, and at
        n_total = len(self.clients)
        deltas = [torch.zeros_like(p) for p in self.c]
        for u in updates:
            steps = u.metadata["local_steps"]  # K, as the client counted its local steps (ScaffoldClient.report)
            old = self.c_i[u.client_id]
            new = [ci - c + (w - y) / (steps * lr) for ci, c, w, y in zip(old, self.c, sent, u.params)]
            self.c_i[u.client_id] = new
            deltas = [d + (n - o) for d, n, o in zip(deltas, new, old)]
        self.c = [c + d / n_total for c, d in zip(self.c, deltas)]  # (|S|/N) * mean = sum / N
        super().aggregate_fit(round_, updates)

    def round_bytes(self, sent: list[list[torch.Tensor]], updates: list[ClientUpdate]) -> int:
        """The model both ways, plus the control variates: c travels down with w and the client's
        c_i+ - c_i up with its model (the simulation computes c_i on the server, the protocol does not)."""
        return 2 * super().round_bytes(sent, updates)


class ScaffoldClient(Client):
    """A plain client whose local objective adds ``<c - c_i, w>``: every gradient is corrected by the
    ``correction`` c - c_i its aggregator sends."""

    def term_context(self, params: list[torch.Tensor], extras: Mapping[str, list[torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
        if "correction" not in extras:  # nothing sent (c = c_i = 0): plain SGD
            extras = {**extras, "correction": [torch.zeros_like(p) for p in params]}
        return super().term_context(params, extras)

    def local_term(self, theta: torch.Tensor, ctx: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return (ctx["correction"] * theta).sum()

    def report(self, ins: FitIns, update: ClientUpdate) -> Mapping[str, float]:
        """The number of local steps K this round, which the server's control-variate update divides by."""
        sgd = self.sgd_config(ins.lr)
        return {"local_steps": sgd.epochs * batches_per_epoch(self.n_train, sgd)}


@hookimpl
def fedbench_clients() -> list[ClientSpec]:
    return [ClientSpec(name="scaffold", doc="plain client whose gradients are corrected by SCAFFOLD's c - c_i", cls=ScaffoldClient)]


@hookimpl
def fedbench_aggregators() -> list[AggregatorSpec]:
    return [AggregatorSpec(name="scaffold", doc="averaging with SCAFFOLD control variates (option II)", cls=ScaffoldAggregator)]


@hookimpl
def fedbench_methods() -> list[MethodSpec]:
    return [
        MethodSpec(
            name="scaffold",
            doc="SCAFFOLD: control variates correct client drift (Karimireddy et al. 2020); no momentum",
            client="scaffold",
            aggregator="scaffold",
            params={"momentum": 0.0},
        )
    ]
