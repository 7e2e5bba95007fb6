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

from collections.abc import Sequence

import torch

from fedbench import Client, ClientSpec, MethodSpec, hookimpl
from fedbench.fl.data import segment_sum
from fedbench.plugin.params import Param


def e_step(log_pi: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
    """Posterior q (M x n) of each component for each sample: softmax_m(log pi_m - loss_mi)."""
    return e_step_columns(log_pi.unsqueeze(1), losses)


def e_step_columns(log_pi: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
    """:func:`e_step` with a prior per sample: ``log_pi`` (M x n) holds each sample's log pi."""
    return torch.softmax(log_pi - losses, dim=0)


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

    PARAMS = {"adapt_steps": Param(1, low=1), "adapt_from": Param("last", choices=("last", "uniform"))}

    needs_losses = True

    def __init__(self, *args, adapt_steps: int, adapt_from: str, **kwargs) -> None:  # noqa: ANN002, ANN003
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

    @classmethod
    def update_weights(cls, clients: Sequence[Client], losses: Sequence[torch.Tensor | None]) -> None:
        """Every client's E-step in one softmax over their pooled samples (each sample's column with its
        client's log pi) and every M-step in one sum over them, instead of a few small tensor calls per
        client: the arithmetic of :meth:`update_sample_weights` and :meth:`update_learners_weights`, to
        rounding (the pooled softmax's vector lanes and the M-step's sums fall differently). A subclass
        that overrides either step gets its steps client by client."""
        own = cls.update_sample_weights is MixtureClient.update_sample_weights
        if not own or cls.update_learners_weights is not MixtureClient.update_learners_weights or not clients:
            super().update_weights(clients, losses)
            return
        sizes = [int(loss.shape[1]) for loss in losses]  # type: ignore[union-attr]  # needs_losses
        pooled = torch.cat(list(losses), dim=1)  # type: ignore[arg-type]  # (M, N)
        device = pooled.device
        log_pi = torch.log(torch.stack([c.learners_weights for c in clients]))  # (C, M)
        owner = torch.repeat_interleave(torch.arange(len(clients), device=device), torch.tensor(sizes, device=device))
        q = e_step_columns(log_pi.T.index_select(1, owner), pooled)
        counts = torch.tensor(sizes, dtype=q.dtype, device=device).unsqueeze(1)
        pi = segment_sum(q.T, sizes) / counts  # the M-step: each client's mean of q (deterministic on a GPU too)
        for client, part, weights in zip(clients, q.split(sizes, dim=1), pi):
            client.samples_weights, client.learners_weights = part, weights


@hookimpl
def fedbench_clients() -> list[ClientSpec]:
    return [
        ClientSpec(
            name="mixture", doc="FedEM client: E-step/M-step on its mixture weights, weighted training",
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
