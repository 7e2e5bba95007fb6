"""APFL (Deng et al., 2020): adaptive personalised FL with a fixed mixing weight alpha.

Each client keeps a personal model v; the server keeps the shared model w. In
every local step, on the same batch, w takes an SGD step on its own loss and v
takes one on the loss of the mixed model alpha * v + (1 - alpha) * w (its
gradient is alpha times the gradient at the mixed parameters). The server
averages w only. A client predicts with alpha * v + (1 - alpha) * w.
alpha = 0 is FedAvg and alpha = 1 is Local, batch for batch: both models follow
the batch order FedAvg and Local draw. The step is the client's own pure function
(:class:`fedbench.StepPhase`), so both backends run it. Deviation: alpha is fixed (the paper
can also adapt it by gradient steps).
"""

from __future__ import annotations

import torch

from fedbench.plugin.params import Param
from fedbench import CentralizedAggregator, AggregatorSpec, Client, ClientSpec, ClientUpdate, FitPhase, MethodSpec, StepPhase, hookimpl
from fedbench.fl.learner import SGDConfig, sgd_update


def mixed(alpha: float, v: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The personalised parameters alpha * v + (1 - alpha) * w."""
    return alpha * v + (1 - alpha) * w


class APFLClient(Client):
    """Trains the shared model (learner 0) and its personal model (learner 1) on the same batches."""

    PARAMS = {"alpha": Param(0.5, low=0.0, high=1.0)}

    #: its predictor involves a personal model that only training produces
    serves_new_clients = False

    def __init__(self, *args, alpha: float, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        if len(self.ensemble) != 2:
            raise ValueError(f"APFL needs n_learners = 2 (shared and personal), got {len(self.ensemble)}")
        self.alpha = alpha

    def fit_phases(self) -> tuple[FitPhase, ...]:
        # one order per epoch, as FedAvg's (and Local's) single learner draws it, shared by w and v
        return (StepPhase(step=type(self).apfl_step),)

    def apfl_step(self, theta: torch.Tensor, momentum: torch.Tensor, grad, sgd: SGDConfig):  # noqa: ANN001, ANN201
        """On one batch: w steps on its own loss, v on the loss of the mixed model (gradient alpha times
        the gradient at the mixed parameters); both from their values before the batch."""
        (w, v), (bw, bv) = theta, momentum
        gw, value = grad(w)
        gm, _ = grad(mixed(self.alpha, v, w))
        w_new, bw = sgd_update(w, gw, bw, sgd)
        v_new, bv = sgd_update(v, self.alpha * gm, bv, sgd)
        return torch.stack([w_new, v_new]), torch.stack([bw, bv]), value

    def predictor(self, params: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The mixed model alone (learner 0's slot; the personal model beside it takes weight 0)."""
        personal = mixed(self.alpha, params[1], params[0])
        return [personal, params[1]], torch.tensor([1.0, 0.0], device=personal.device)


class APFLAggregator(CentralizedAggregator):
    """Averages the shared model (learner 0); keeps every client's personal model (learner 1)."""

    def __init__(self, clients, init_params, train, *, seed):  # noqa: ANN001
        super().__init__(clients, init_params, train, seed=seed)
        self.personal = {c.client_id: init_params[0].clone() for c in clients}  # v starts where w starts

    def configure_fit(self, round_: int, client: Client) -> list[torch.Tensor]:
        return self.configure_evaluate(client)

    def configure_evaluate(self, client: Client) -> list[torch.Tensor]:
        return [self.global_params[0], self.personal[client.client_id]]

    def round_bytes(self, sent: list[list[torch.Tensor]], updates: list[ClientUpdate]) -> int:
        """Only the shared model travels."""
        return sum(2 * p[0].numel() * p[0].element_size() for p in sent)

    def aggregate_fit(self, round_: int, updates: list[ClientUpdate]) -> None:
        for u in updates:
            self.personal[u.client_id] = u.params[1]
        total = sum(u.weight for u in updates)
        self.global_params = [sum(u.weight / total * u.params[0] for u in updates), self.global_params[1]]


@hookimpl
def fedbench_clients() -> list[ClientSpec]:
    return [ClientSpec(name="apfl", doc="shared and personal model trained on the same batches, mixed by alpha", cls=APFLClient)]


@hookimpl
def fedbench_aggregators() -> list[AggregatorSpec]:
    return [AggregatorSpec(name="apfl", doc="averages the shared model, keeps each client's personal model", cls=APFLAggregator)]


@hookimpl
def fedbench_methods() -> list[MethodSpec]:
    return [
        MethodSpec(
            name="apfl",
            doc="APFL: personalised model alpha * v + (1 - alpha) * w (Deng et al. 2020)",
            client="apfl", aggregator="apfl", n_learners=2,
        )
    ]
