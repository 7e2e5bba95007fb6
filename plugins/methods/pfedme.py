"""pFedMe, two ways: as the FedEM authors ran it (method ``pfedme``, the default and the paper
suite's) and as the pFedMe paper's Algorithm 1 (method ``pfedme-moreau``).

``pfedme`` (the authors' ``personalized`` aggregator with their ``prox_sgd`` optimiser): every client
keeps a personal model theta_i and never overwrites it with the global one. A round trains theta_i
from where it was, by the run's SGD (the suite's learning rate and schedule, weight decay, no
momentum) on f_i(theta) + lam/2 ||theta - w||^2, w the global model of the round (the authors' ``--mu``
is ``lam``); the server sets w to the train-size weighted average of *every* client's personal model
(an unsampled client counts with the personal model it holds). Clients are evaluated with theta_i.
The proximal pull is the client's local term, so both backends run it (vectorised by default).

``pfedme-moreau`` (T. Dinh et al., NeurIPS 2020, Algorithm 1): each local step takes a batch and
  1. approximately solves the personal problem
     theta_hat = argmin_theta f(theta; batch) + lam/2 * ||theta - w_i||^2
     by ``k_steps`` gradient steps of size ``personal_lr`` from the client's current
     personal model (kept between rounds); ``personal_lr = 0`` (the default) uses the round's
     learning rate; a fixed ``personal_lr > 0`` is the pFedMe paper's setting;
  2. moves the local copy of the global model toward it: w_i <- w_i - lr * lam * (w_i - theta_hat).
The server sets w <- (1 - beta) * w + beta * (weighted average of the w_i). A client is
evaluated with its personal model theta_hat. The optimiser is plain SGD (no momentum, no
weight decay on the inner problem), as in the paper.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from fedbench.plugin.params import Param
from fedbench import (
    AggregatorSpec, CentralizedAggregator, Client, ClientSpec, ClientUpdate, FitIns, FitPhase, MethodSpec, StepPhase, hookimpl,
    weighted_average,
)
from fedbench.fl.learner import SGDConfig
from fedbench_plugins.methods.fedprox import proximal
from fedbench_plugins.methods.personal import PersonalModelClient
from fedbench_plugins.methods.local import NoCommunicationAggregator


class PersonalProxClient(Client):
    """The authors' pFedMe client: trains its own model with lam/2 ||theta - w||^2 toward the round's
    global model ``w`` (sent as the extra ``anchor``); the aggregator keeps the personal model."""

    PARAMS = {"lam": Param(1.0, low=0.0)}

    serves_new_clients = False

    def __init__(self, *args, lam: float, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.lam = lam

    def local_term(self, theta: torch.Tensor, ctx: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return proximal(theta, ctx["anchor"], self.lam)


class PersonalizedAggregator(NoCommunicationAggregator):
    """The authors' ``PersonalizedAggregator``: each client trains its personal model toward the global
    one, and the global model is the train-size weighted average of every client's personal model."""

    communicates = True

    def configure_fit(self, round_: int, client: Client) -> FitIns:
        return FitIns(self.personal[client.client_id], {"anchor": self.global_params})

    def aggregate_fit(self, round_: int, updates: list[ClientUpdate]) -> None:
        super().aggregate_fit(round_, updates)
        weights = [float(c.n_train) for c in self.clients]
        self.global_params = [
            weighted_average([self.personal[c.client_id][m] for c in self.clients], weights) for m in range(len(self.global_params))
        ]


def solve_personal(
    grad: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]], theta: torch.Tensor, anchor: torch.Tensor,
    lam: float, lr: float, steps: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``steps`` gradient steps on f(theta) + lam/2 ||theta - anchor||^2 from ``theta`` (``grad``: theta ->
    (grad f, f)); returns the result and f at the last point its gradient was taken."""
    for _ in range(steps):
        g, value = grad(theta)
        theta = theta - lr * (g + lam * (theta - anchor))
    return theta, value


def toward_personal(w: torch.Tensor, theta_hat: torch.Tensor, lr: float, lam: float) -> torch.Tensor:
    """The local update of the global model: w - lr * lam * (w - theta_hat)."""
    return w - lr * lam * (w - theta_hat)


class PFedMeClient(PersonalModelClient):
    """Keeps a personal model; sends back its local copy of the global model."""

    PARAMS = {"lam": Param(1.0, low=0.0, low_open=True), "k_steps": Param(5, low=1), "personal_lr": Param(0.0, low=0.0)}

    #: its predictor involves a personal model that only training produces
    serves_new_clients = False

    def __init__(self, *args, lam: float, k_steps: int, personal_lr: float, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.lam, self.k_steps, self.personal_lr = lam, k_steps, personal_lr

    def fit_phases(self) -> tuple[FitPhase, ...]:
        # the local copy of the global model (sent back) and the personal model (carried, kept)
        return (StepPhase(step=type(self).moreau_step, carry=("personal",)),)

    def moreau_step(self, theta: torch.Tensor, momentum: torch.Tensor, grad, sgd: SGDConfig):  # noqa: ANN001, ANN201
        """On one batch: ``k_steps`` steps on the personal problem from the personal model, then the local
        copy of the global model moves toward the result (no momentum, no weight decay, as in the paper)."""
        w = theta[0]
        personal, value = solve_personal(grad, theta[1], w, self.lam, self.personal_lr or sgd.lr, self.k_steps)
        return torch.stack([toward_personal(w, personal, sgd.lr, self.lam), personal]), momentum, value


class PFedMeAggregator(CentralizedAggregator):
    """w <- (1 - beta) * w + beta * (weighted average of the clients' local copies)."""

    PARAMS = {"beta": Param(1.0, low=0.0, low_open=True)}

    def __init__(self, clients, init_params, train, *, seed, beta):  # noqa: ANN001
        super().__init__(clients, init_params, train, seed=seed)
        self.beta = beta

    def aggregate_fit(self, round_: int, updates: list[ClientUpdate]) -> None:
        old = self.global_params
        super().aggregate_fit(round_, updates)
        self.global_params = [(1 - self.beta) * w + self.beta * avg for w, avg in zip(old, self.global_params)]


@hookimpl
def fedbench_clients() -> list[ClientSpec]:
    return [
        ClientSpec(
            name="personal-prox",
            doc="trains its own model with a proximal pull lam/2 ||theta - w||^2 toward the round's global model",
            cls=PersonalProxClient,
        ),
        ClientSpec(
            name="pfedme",
            doc="personal model solving a Moreau-envelope problem around the global model",
            cls=PFedMeClient,
        )
    ]


@hookimpl
def fedbench_aggregators() -> list[AggregatorSpec]:
    return [
        AggregatorSpec(name="pfedme", doc="averaging with pFedMe's beta step", cls=PFedMeAggregator),
        AggregatorSpec(
            name="personalized", doc="personal models kept by the server; the global model averages all of them",
            cls=PersonalizedAggregator,
        ),
    ]


@hookimpl
def fedbench_methods() -> list[MethodSpec]:
    return [
        MethodSpec(
            name="pfedme",
            doc="pFedMe as the FedEM authors ran it: personal models trained toward the average of all of them; no momentum",
            client="personal-prox", aggregator="personalized", params={"momentum": 0.0},
        ),
        MethodSpec(
            name="pfedme-moreau",
            doc="pFedMe's Algorithm 1: personal models via Moreau envelopes (Dinh et al. 2020); no momentum",
            client="pfedme", aggregator="pfedme", params={"momentum": 0.0},
        ),
    ]
