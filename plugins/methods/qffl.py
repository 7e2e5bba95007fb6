"""q-FFL (Li, Sanjabi, Beirami and Smith, ICLR 2020), the q-FedAvg update (Algorithm 2).

Clients train as in FedAvg from w. With F_k the client's train loss at w, the
local result w_k and L = 1 / lr (the Lipschitz estimate the paper uses):
  dw_k = L (w - w_k),  delta_k = F_k^q dw_k,  h_k = q F_k^(q-1) ||dw_k||^2 + L F_k^q,
  w <- w - sum_k delta_k / sum_k h_k.
Larger q weighs clients with larger losses more (fairness); q = 0 is the
unweighted average of the clients' models.
"""

from __future__ import annotations

import torch

from fedbench.plugin.params import Param
from fedbench import AggregatorSpec, CentralizedAggregator, Client, ClientUpdate, FitIns, MethodSpec, hookimpl


def qffl_step(w: torch.Tensor, local: list[torch.Tensor], losses: list[float], q: float, lipschitz: float) -> torch.Tensor:
    """The q-FedAvg server update from the clients' local results and their losses at w."""
    num = torch.zeros_like(w)
    den = 0.0
    for w_k, f_k in zip(local, losses):
        dw = lipschitz * (w - w_k)
        f_q = f_k**q
        num += f_q * dw
        den += q * f_k ** (q - 1) * float(dw.pow(2).sum()) + lipschitz * f_q if q > 0 else lipschitz
    return w - num / den


class QFFLAggregator(CentralizedAggregator):
    """Centralised training with the q-FedAvg server update."""

    PARAMS = {"q": Param(1.0, low=0.0)}

    def __init__(self, clients, init_params, train, *, seed, q):  # noqa: ANN001
        super().__init__(clients, init_params, train, seed=seed)
        self.q = q

    def configure_fit(self, round_: int, client: Client) -> FitIns:
        # F_k(w), the client's mean train loss at the parameters it is sent, comes back with its update
        return FitIns(self.global_params, report_start_loss=True)

    def aggregate_fit(self, round_: int, updates: list[ClientUpdate]) -> None:
        losses = [u.start_loss + 1e-10 for u in updates]
        lipschitz = 1.0 / self.train.learning_rate(round_)
        self.global_params = [
            qffl_step(w, [u.params[m] for u in updates], losses, self.q, lipschitz)
            for m, w in enumerate(self.global_params)
        ]


@hookimpl
def fedbench_aggregators() -> list[AggregatorSpec]:
    return [AggregatorSpec(name="qffl", doc="q-FedAvg server update: clients with larger losses weigh more", cls=QFFLAggregator)]


@hookimpl
def fedbench_methods() -> list[MethodSpec]:
    return [
        MethodSpec(
            name="qffl",
            doc="q-FFL: fair resource allocation, q-FedAvg update (Li et al. 2020)",
            client="plain", aggregator="qffl",
        )
    ]
