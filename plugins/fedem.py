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


def e_step(log_pi: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
    """Posterior q (M x n) of each component for each sample: softmax_m(log pi_m - loss_mi)."""
    return torch.softmax(log_pi.unsqueeze(1) - losses, dim=0)


def m_step(q: torch.Tensor) -> torch.Tensor:
    """Mixture weights pi (M) maximising the expected log-likelihood: the mean of q over samples."""
    return q.mean(dim=1)


class MixtureClient(Client):
    """A client that fits a mixture of the learners it is sent (FedEM)."""

    needs_losses = True

    def update_sample_weights(self, losses: torch.Tensor | None) -> None:
        assert losses is not None  # guaranteed by needs_losses
        self.samples_weights = e_step(torch.log(self.learners_weights), losses)

    def update_learners_weights(self) -> None:
        self.learners_weights = m_step(self.samples_weights)


@hookimpl
def fedbench_clients() -> list[ClientSpec]:
    return [ClientSpec(name="mixture", doc="FedEM client: E-step/M-step on its mixture weights, weighted training", cls=MixtureClient)]


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
