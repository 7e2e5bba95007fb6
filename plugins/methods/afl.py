"""AFL, agnostic federated learning (Mohri, Sivek and Suresh, ICML 2019): minimax over client mixtures.

The server keeps weights lambda on the simplex over clients, starting at the
clients' shares of the training samples (so the first round is FedAvg). Each
round the sampled clients train from w as in FedAvg and the server sets
w = sum_k lambda_k w_k / sum_k lambda_k over them; then the adversary ascends:
lambda_k += lr_lambda * F_k(w_old) for the sampled clients, with F_k the
client's mean train loss at the parameters it was sent, and lambda is
projected back onto the simplex (Euclidean projection, Duchi et al. 2008).
``lr_lambda = 0`` is FedAvg. That is ``variant = "local"``.

``variant = "authors"`` (the default) is the FedEM authors' AFL (github
omarfoq/FedEM, ``AgnosticAggregator``): each round every sampled client computes
the gradient of its loss at the global model on **one** minibatch (no local
training), the server averages the gradients weighted by lambda and takes one
SGD step with the run's optimiser settings (learning rate and its schedule,
momentum, weight decay), and lambda ascends on those one-batch losses before
the projection. On the synthetic benchmark the authors' code gives 69.05 %.

``lambda_pairing``: ``"own"`` (the default, AFL as published) ascends each client's lambda on its own loss.
``"authors"`` reproduces the authors' code (``aggregator.py:266`` and ``:659``): they add the losses, listed in
the order ``rng.sample`` drew the clients (with every client sampled, a fresh random permutation each round), to
the weights listed in client order, so client j's lambda receives the loss of the j-th client drawn: here a
fresh permutation per round from the run's seed. Their code needs every client sampled for that addition (a
k-vector added to an n-vector), and so does this option.
"""

from __future__ import annotations

import torch

from fedbench.plugin.params import Param
from fedbench import AggregatorSpec, CentralizedAggregator, Client, ClientUpdate, FitIns, MethodSpec, hookimpl, weighted_average
from fedbench.fl.aggregator import RoundStats, sample_clients
from fedbench.fl.learner import SGDConfig, sgd_update
from fedbench.fl.seeding import STREAM_SAMPLE, STREAM_TRAIN, generator, seed_global


def project_simplex(v: torch.Tensor) -> torch.Tensor:
    """The Euclidean projection of ``v`` onto {x >= 0, sum x = 1}."""
    u = v.sort(descending=True).values
    css = u.cumsum(0) - 1
    k = torch.arange(1, len(v) + 1, dtype=v.dtype, device=v.device)
    rho = int((u - css / k > 0).nonzero().max())
    return (v - css[rho] / (rho + 1)).clamp_min(0)


class AgnosticAggregator(CentralizedAggregator):
    """Averages with adversarial client weights lambda and ascends lambda on the clients' losses."""

    PARAMS = {
        "lr_lambda": Param(0.01, low=0.0), "variant": Param("authors", choices=("authors", "local")),
        "lambda_pairing": Param("own", choices=("own", "authors"),
                                doc="each lambda ascends on its own client's loss, or as the authors' code pairs them"),
    }

    def __init__(self, clients, init_params, train, *, seed, lr_lambda, variant, lambda_pairing):  # noqa: ANN001
        super().__init__(clients, init_params, train, seed=seed)
        if lambda_pairing == "authors" and train.participation < 1:
            raise ValueError("aggregator.lambda_pairing = authors needs participation = 1 (the authors' code adds the "
                             "sampled clients' losses to every client's weight, which only fits with all sampled)")
        self.lr_lambda, self.variant, self.lambda_pairing = lr_lambda, variant, lambda_pairing
        #: the server optimiser's momentum buffers (``variant = "authors"``)
        self.server_momentum: list[torch.Tensor] | None = None
        sizes = torch.tensor([float(c.n_train) for c in self.clients], dtype=torch.float64)
        self.lambdas = sizes / sizes.sum()
        self._index = {c.client_id: i for i, c in enumerate(self.clients)}

    def fit_round(self, round_: int) -> RoundStats:
        if self.variant != "authors":
            return super().fit_round(round_)
        chosen = sample_clients(len(self.clients), self.train.participation, generator(self.seed, STREAM_SAMPLE, round_))
        lr = self.train.learning_rate(round_)
        grads: list[list[torch.Tensor]] = [[] for _ in self.global_params]
        losses = []
        for i in chosen:
            c = self.clients[i]
            seed_global(self.seed, STREAM_TRAIN, round_, c.client_id)
            c.load(self.global_params)
            pick = torch.randperm(c.n_train, generator=generator(self.seed, STREAM_TRAIN, round_, c.client_id))
            pick = pick[: self.train.batch_size].to(c.data.train_y.device)
            x, y = c.data.train_x[pick], c.data.train_y[pick]
            loss = 0.0
            for m, learner in enumerate(c.ensemble.learners):
                value, g = learner.loss_and_grad(self.global_params[m], x, y)
                grads[m].append(g)
                loss += float(c.learners_weights[m]) * value
            losses.append(loss)
        weights = self.lambdas[chosen].tolist()
        if sum(weights) <= 0:
            weights = [1.0] * len(chosen)
        step = [weighted_average(g, weights) for g in grads]
        # the server's torch.optim.SGD step on the averaged gradient, as their code takes it
        sgd = SGDConfig(lr=lr, momentum=self.train.momentum, weight_decay=self.train.weight_decay)
        momentum = self.server_momentum or [torch.zeros_like(w) for w in self.global_params]
        stepped = [sgd_update(w, g, b, sgd) for w, g, b in zip(self.global_params, step, momentum)]
        self.global_params = [w for w, _ in stepped]
        self.server_momentum = [b for _, b in stepped] if sgd.momentum > 0 else None
        if self.lr_lambda > 0:
            self._ascend(round_, list(chosen), losses)
        self.rounds_done = round_ + 1
        sent = sum(2 * self.clients[i].exchanged_bytes(self.global_params) for i in chosen)
        mean_loss = float(weighted_average([torch.tensor(v, dtype=torch.float64) for v in losses],
                                           [float(self.clients[i].n_train) for i in chosen]))
        return RoundStats(mean_loss, int(sent))

    def configure_fit(self, round_: int, client: Client) -> FitIns:
        # each client's mean train loss at the sent model comes back with its update, for the lambda ascent
        return FitIns(self.global_params, report_start_loss=self.lr_lambda > 0)

    def aggregate_fit(self, round_: int, updates: list[ClientUpdate]) -> None:
        idx = [self._index[u.client_id] for u in updates]
        weights = self.lambdas[idx].tolist()
        if sum(weights) <= 0:  # the adversary put no weight on any sampled client: keep the model
            weights = [1.0] * len(updates)
        self.global_params = [
            weighted_average([u.params[m] for u in updates], weights) for m in range(len(self.global_params))
        ]
        if self.lr_lambda > 0:
            self._ascend(round_, idx, [u.start_loss for u in updates])

    def _ascend(self, round_: int, idx: list[int], losses: list[float]) -> None:
        """lambda += lr_lambda * loss (client ``idx[j]`` gets ``losses[j]``, or with ``lambda_pairing = "authors"``
        the loss at a fresh random position of the round), then the projection onto the simplex."""
        values = torch.tensor(losses, dtype=self.lambdas.dtype)
        if self.lambda_pairing == "authors":
            values = values[torch.randperm(len(values), generator=generator(self.seed, STREAM_SAMPLE, round_, len(self.clients)))]
        step = torch.zeros_like(self.lambdas)
        step[idx] = values
        self.lambdas = project_simplex(self.lambdas + self.lr_lambda * step)


@hookimpl
def fedbench_aggregators() -> list[AggregatorSpec]:
    return [
        AggregatorSpec(
            name="agnostic", doc="averages with adversarial client weights, ascended on client losses and projected",
            cls=AgnosticAggregator,
        )
    ]


@hookimpl
def fedbench_methods() -> list[MethodSpec]:
    return [
        MethodSpec(
            name="afl",
            doc="AFL: agnostic FL, minimax over mixtures of client distributions (Mohri et al. 2019)",
            client="plain",
            aggregator="agnostic",
        )
    ]
