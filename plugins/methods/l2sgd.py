"""L2SGD (Hanzely and Richtarik 2020, loopless local gradient descent), as in the FedEM authors' set.

Every client keeps a personal model x_k. Each round a coin with probability
``communication_probability`` p (from the run's seed) decides:
  heads: communication - every personal model moves toward the clients'
         average x_bar (weighted by train size): x_k <- (1 - penalty) x_k + penalty x_bar;
  tails: local work - the sampled clients train their own x_k as Local does.
Personal models are evaluated. Bytes are counted on communication rounds only
(every model sent up and the average sent down). ``p = 0`` is Local;
``penalty = 1`` makes every communication round a full average.
Deviation: a local round is one round of the run's local training (epochs of
mini-batches), not the paper's single stochastic gradient step.
"""

from __future__ import annotations

import torch

from fedbench.plugin.params import Param
from fedbench import AggregatorSpec, MethodSpec, hookimpl, weighted_average
from fedbench.fl.aggregator import RoundStats
from fedbench.fl.seeding import generator
from fedbench_plugins.methods.local import NoCommunicationAggregator

#: stream of the per-round communication coin
STREAM_COIN = 103


class LooplessAggregator(NoCommunicationAggregator):
    """Personal models; random rounds of partial averaging instead of local training."""

    PARAMS = {"communication_probability": Param(0.2, low=0.0, high=1.0), "penalty": Param(0.5, low=0.0, high=1.0)}

    communicates = True

    def __init__(self, clients, init_params, train, *, seed, communication_probability, penalty):  # noqa: ANN001
        super().__init__(clients, init_params, train, seed=seed)
        self.p, self.penalty = communication_probability, penalty
        self._last_loss = 0.0

    def fit_round(self, round_: int) -> RoundStats:
        coin = float(torch.rand(1, generator=generator(self.seed, STREAM_COIN, round_), dtype=torch.float64))
        if coin >= self.p:
            stats = super().fit_round(round_)
            self._last_loss = stats.train_loss
            return RoundStats(stats.train_loss, 0)
        ids = [c.client_id for c in self.clients]
        weights = [float(c.n_train) for c in self.clients]
        n_learners = len(self.global_params)
        average = [weighted_average([self.personal[i][m] for i in ids], weights) for m in range(n_learners)]
        for i in ids:
            self.personal[i] = [(1 - self.penalty) * x + self.penalty * a for x, a in zip(self.personal[i], average)]
        self.global_params = average
        self.rounds_done = round_ + 1
        size = sum(a.numel() * a.element_size() for a in average)
        return RoundStats(self._last_loss, 2 * size * len(ids))


@hookimpl
def fedbench_aggregators() -> list[AggregatorSpec]:
    return [
        AggregatorSpec(
            name="loopless", doc="personal models; with probability p a round averages them partially instead of training",
            cls=LooplessAggregator,
        )
    ]


@hookimpl
def fedbench_methods() -> list[MethodSpec]:
    return [
        MethodSpec(
            name="l2sgd",
            doc="L2SGD: loopless local SGD with personal models and random partial averaging (Hanzely & Richtarik 2020)",
            client="plain",
            aggregator="loopless",
        )
    ]
