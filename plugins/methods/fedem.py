"""FedEM (Marfoq et al., NeurIPS 2021, Alg. 1): federated EM over a mixture of M models.

Each client keeps only its mixture weights pi (M floats). Before local training
it runs the E-step, q(m|i) proportional to pi_m * exp(-loss_m(x_i, y_i)) over
its training samples, and the M-step, pi = mean_i q(m|i); then it trains
learner m with sample weights q(m|.). The server averages each learner's
parameters over clients weighted by train size (the ``centralized``
aggregator). A client predicts with sum_m pi_m * p_m(y|x).

As in the authors' code, the E-step uses the losses of the parameters received
this round, the sample-weighted batch loss is ``sum_i q_i * loss_i / batch``,
and the E/M-steps run once per round before the local epochs.
"""

from __future__ import annotations

import torch

from fedbench import Client, ClientSpec, MethodSpec, hookimpl
from fedbench.params import Param


def e_step(log_pi: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
    """Posterior q (M x n) of each component for each sample: softmax_m(log pi_m - loss_mi)."""
    return torch.softmax(log_pi.unsqueeze(1) - losses, dim=0)


def m_step(q: torch.Tensor) -> torch.Tensor:
    """Mixture weights pi (M) maximising the expected log-likelihood: the mean of q over samples."""
    return q.mean(dim=1)


def fit_mixture_weights(losses: torch.Tensor, steps: int | None = None, pi: torch.Tensor | None = None) -> torch.Tensor:
    """Maximum-likelihood mixture weights for fixed components: ``steps`` EM iterations from ``pi``
    (default uniform) on per-sample losses (M x n) = -log p_m(y_i|x_i)."""
    if pi is None:
        pi = torch.full((losses.shape[0],), 1.0 / losses.shape[0], dtype=losses.dtype, device=losses.device)
    for _ in range(ADAPT_STEPS if steps is None else steps):
        pi = m_step(e_step(torch.log(pi), losses))
    return pi


#: EM iterations of :func:`fit_mixture_weights` when none are given (a fit to convergence)
ADAPT_STEPS = 100


class MixtureClient(Client):
    """A client that fits a mixture of the learners it is sent (FedEM).

    A client that never trained (an unseen client) adapts by fitting only its
    mixture weights pi to the received learners, the learners fixed (the paper,
    Section 5). The authors' code is the default: at each evaluation it runs
    ``adapt_steps = 1`` EM step warm-started from the pi it had at the previous
    evaluation (``adapt_from = "last"``); ``adapt_from = "uniform"`` with many
    steps (e.g. 100) fits pi afresh to convergence at every evaluation.
    """

    needs_losses = True

    def __init__(self, *args, adapt_steps: int = 1, adapt_from: str = "last", **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.adapt_steps, self.adapt_from = adapt_steps, adapt_from

    @torch.no_grad()
    def adapt(self, params: list[torch.Tensor], lr: float) -> None:
        self.load(params)
        losses = self.ensemble.per_sample_losses(self.data.train_x, self.data.train_y)
        start = self.learners_weights if self.adapt_from == "last" else None
        self.learners_weights = fit_mixture_weights(losses, self.adapt_steps, start)

    def update_sample_weights(self, losses: torch.Tensor | None) -> None:
        assert losses is not None  # guaranteed by needs_losses
        self.samples_weights = e_step(torch.log(self.learners_weights), losses)

    def update_learners_weights(self) -> None:
        self.learners_weights = m_step(self.samples_weights)


@hookimpl
def fedbench_clients() -> list[ClientSpec]:
    return [
        ClientSpec(
            name="mixture", doc="FedEM client: E-step/M-step on its mixture weights, weighted training",
            params={"adapt_steps": Param(1, low=1), "adapt_from": Param("last", choices=("last", "uniform"))},
            cls=MixtureClient,
        )
    ]


@hookimpl
def fedbench_methods() -> list[MethodSpec]:
    return [
        MethodSpec(
            name="fedem",
            doc="FedEM: federated EM over a mixture of M=3 shared models (Marfoq et al. 2021)",
            client="mixture",
            aggregator="centralized",
            n_learners=3,
        )
    ]
