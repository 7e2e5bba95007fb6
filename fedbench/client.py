"""Client: owns its data and personal state; trains the learners it is sent.

A client does not own model copies. The run has one set of workspace learners
(a :class:`LearnersEnsemble`) that each client loads the parameters it is sent
into, trains, and reads back; what the client keeps between rounds is only
what its method needs (mixture weights, momentum buffers) and its copy of the
models' floating-point buffers (BatchNorm running statistics): loaded with the
parameters (:meth:`Client.load`), updated by its training, and sent back with
its update. An aggregator that shares buffers (the centralised ones, as the
FedEM authors' code averages every float entry of the state dict) replaces a
client's copy with the average before the client trains or is evaluated; a
client with ``keeps_buffers`` (FedBN) keeps its own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

from fedbench.config import TrainConfig
from fedbench.data import ClientData
from fedbench.learner import FitResult, LearnersEnsemble, SGDConfig
from fedbench.seeding import STREAM_TRAIN, generator, STREAM_GLOBAL, seed_global


@dataclass(frozen=True)
class ClientUpdate:
    """What a client sends back after local training."""

    client_id: int
    params: list[torch.Tensor]
    #: aggregation weight: the number of local training samples
    weight: float
    #: mean training batch loss over the local fit (for divergence checks)
    train_loss: float
    #: each learner's buffers after training, for an aggregator that shares them (None: not shared)
    buffers: list[torch.Tensor | None] | None = None


@dataclass(frozen=True)
class FitIns:
    """One round's instructions to one client: what an aggregator's ``configure_fit`` returns.

    ``params``: one flat tensor per learner to train from; ``extras``: what the method sends besides,
    by name, one tensor per learner (SCAFFOLD's ``correction``); ``round`` and ``lr`` are filled in by
    the round loop when the aggregator leaves them None. A client reads ``extras`` in its local
    objective (:meth:`Client.local_term`) - no aggregator writes into a client.
    """

    params: list[torch.Tensor]
    extras: Mapping[str, list[torch.Tensor]] = field(default_factory=dict)
    round: int | None = None
    lr: float | None = None


@dataclass(frozen=True)
class EvalResult:
    """One client's scores of its own (personalised) predictor."""

    client_id: int
    n_train: int
    n_test: int
    train_loss: float
    train_acc: float
    test_loss: float
    test_acc: float


class Client:
    """The plain client: uniform sample weights, pi = 1/M.

    Subclasses change what happens before training by overriding
    :meth:`update_sample_weights` and :meth:`update_learners_weights`, as in
    the FedEM design.
    """

    def __init__(
        self,
        client_id: int,
        data: ClientData,
        ensemble: LearnersEnsemble,
        train: TrainConfig,
        *,
        seed: int,
    ) -> None:
        self.client_id = client_id
        self.data = data
        self.ensemble = ensemble
        self.train = train
        self.seed = seed
        m = len(ensemble)
        self.learners_weights = torch.full((m,), 1.0 / m, device=data.train_y.device)
        self.samples_weights = torch.full((m, data.n_train), 1.0 / m, device=data.train_y.device)
        self.momentum: list[torch.Tensor | None] = [None] * m
        #: this client's copy of each learner's buffers (None for models without buffers)
        self.buffers: list[torch.Tensor | None] = ensemble.get_buffers()

    def load(self, params: list[torch.Tensor]) -> None:
        """Put ``params`` and this client's own buffers into the workspace learners."""
        self.ensemble.set_params(params)
        self.ensemble.set_buffers(self.buffers)

    @property
    def n_train(self) -> int:
        return self.data.n_train

    #: whether :meth:`update_sample_weights` needs the per-sample losses of the received learners
    needs_losses: bool = False

    def update_sample_weights(self, losses: torch.Tensor | None) -> None:
        """Set ``samples_weights`` (M x n) before training; the plain client keeps them uniform.

        ``losses`` (M x n) are the received learners' losses on the client's
        train samples when :attr:`needs_losses` is set, else None.
        """

    def update_learners_weights(self) -> None:
        """Set ``learners_weights`` (M) before training; the plain client keeps them uniform."""

    #: True: this client's buffers (BatchNorm statistics) never leave it, even to an aggregator that shares them
    keeps_buffers: bool = False

    #: whether a client that never trained can be scored with what the aggregator serves new clients
    #: (False for clients whose predictor is a personal model only training would produce)
    serves_new_clients: bool = True

    def adapt(self, params: list[torch.Tensor], lr: float) -> None:
        """Adapt this never-trained client to the trained ``params`` before it is evaluated
        (unseen clients, the paper's Table 3); ``lr`` is the learning rate of the last training
        round. The plain client uses the parameters as they are."""

    # -- the local objective: the data loss plus one optional term, run by both backends ----------------------

    def local_term(self, theta: torch.Tensor, ctx: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
        """An extra term of the local objective of one learner, added to every batch loss; None: none.

        A pure torch function of ``theta`` (that learner's flat parameters) and ``ctx`` (that learner's
        tensors from :meth:`term_context`), using no other per-client attribute: the one-at-a-time
        backend calls it per client and learner, the vectorised one under ``torch.func.vmap`` over every
        (client, learner) pair of a round, with the first client's hyper-parameters (a run's clients
        share them). FedProx: ``mu / 2 * ||theta - ctx["received"]||^2``; SCAFFOLD:
        ``<ctx["correction"], theta>``.
        """
        return None

    def term_context(self, params: list[torch.Tensor], extras: Mapping[str, list[torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
        """Per learner, what :meth:`local_term` reads: ``received`` (the parameters sent) and each of the
        round's ``extras``. Override to add this client's own state (FedDyn's gradient memory)."""
        return [{"received": p, **{k: v[m] for k, v in extras.items()}} for m, p in enumerate(params)]

    def after_fit(self, ins: FitIns, update: ClientUpdate) -> None:
        """Update this client's own state after a round's local training (``ins``: the round's instructions,
        with its number and learning rate; ``update``: what training produced). Both backends call it."""

    def receive(self, params: list[torch.Tensor]) -> list[torch.Tensor]:
        """What this client trains from, given the parameters it was sent: those parameters here; a client
        that keeps some entries to itself (FedBN) puts its own values back. Both backends call it first."""
        return params

    @classmethod
    def has_local_term(cls) -> bool:
        return cls.local_term is not Client.local_term

    def step(self, params: list[torch.Tensor], round_: int, lr: float,
             extras: Mapping[str, list[torch.Tensor]] | None = None) -> ClientUpdate:
        """Take ``params`` (:meth:`receive`), update the sample and learner weights for them, train from
        them (:meth:`fit`) and run :meth:`after_fit`."""
        seed_global(self.seed, STREAM_GLOBAL, round_, self.client_id)  # dropout draws: fixed per (seed, round, client)
        params = self.receive(params)
        losses = None
        if self.needs_losses:
            self.load(params)
            losses = self.ensemble.per_sample_losses(self.data.train_x, self.data.train_y)
        self.update_sample_weights(losses)
        self.update_learners_weights()
        ins = FitIns(params, extras or {}, round_, lr)
        update = self.fit(params, lr, generator(self.seed, STREAM_TRAIN, round_, self.client_id), ins.extras)
        self.after_fit(ins, update)
        return update

    def terms(self, params: list[torch.Tensor], extras: Mapping[str, list[torch.Tensor]] | None
              ) -> list[Callable[[torch.Tensor], torch.Tensor]] | None:
        """Per learner, :meth:`local_term` bound to that learner's context, or None without a term."""
        if not self.has_local_term():
            return None
        return [lambda theta, ctx=ctx: self.local_term(theta, ctx) for ctx in self.term_context(params, extras or {})]

    def fit(self, params: list[torch.Tensor], lr: float, gen: torch.Generator,
            extras: Mapping[str, list[torch.Tensor]] | None = None) -> ClientUpdate:
        """One round of local training from ``params`` with this client's weights, local term and kept
        momentum, batch orders drawn from ``gen``."""
        self.load(params)
        fits: list[FitResult] = self.ensemble.fit_epochs(
            self.data.train_x,
            self.data.train_y,
            self.samples_weights,
            self.sgd_config(lr),
            gen,
            momentum=self.momentum if self.train.keep_optimizer_state else None,
            terms=self.terms(params, extras),
        )
        if self.train.keep_optimizer_state:
            self.momentum = [fit.momentum for fit in fits]
        self.buffers = self.ensemble.get_buffers()
        loss = sum(fit.loss for fit in fits) / len(fits)
        shared = None if self.keeps_buffers or all(b is None for b in self.buffers) else self.buffers
        return ClientUpdate(self.client_id, self.ensemble.get_params(), float(self.n_train), loss, shared)

    def sgd_config(self, lr: float) -> SGDConfig:
        """The local optimiser settings for a round with learning rate ``lr``."""
        return SGDConfig(
            lr=lr,
            momentum=self.train.momentum,
            weight_decay=self.train.weight_decay,
            batch_size=self.train.batch_size,
            epochs=self.train.local_epochs,
        )

    def exchanged_bytes(self, params: list[torch.Tensor]) -> int:
        """Bytes of ``params`` that travel between this client and the server (all of them here;
        a client that keeps some entries to itself counts only the others)."""
        return int(sum(p.numel() * p.element_size() for p in params))

    @torch.no_grad()
    def loss_at(self, params: list[torch.Tensor]) -> float:
        """Mean train loss at ``params``, each learner's per-sample loss weighted by ``learners_weights``
        (what q-FFL and AFL need from a client before it trains)."""
        self.load(params)
        losses = self.ensemble.per_sample_losses(self.data.train_x, self.data.train_y)
        return float((self.learners_weights.unsqueeze(1) * losses).sum(0).mean())

    @torch.no_grad()
    def evaluate(self, params: list[torch.Tensor]) -> EvalResult:
        """Score this client's predictor sum_m pi_m p_m at ``params`` on its own train and test sets."""
        self.load(params)
        return self.score()

    @torch.no_grad()
    def score(self) -> EvalResult:
        """Score the workspace learners as they are (parameters and buffers), with this client's weights."""
        d = self.data
        tr_loss, tr_acc = self._mean_score(d.train_x, d.train_y)
        te_loss, te_acc = self._mean_score(d.test_x, d.test_y)
        return EvalResult(self.client_id, d.n_train, d.n_test, tr_loss, tr_acc, te_loss, te_acc)

    def _mean_score(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        """Mean loss and accuracy of the predictor on (x, y), a chunk at a time (bounded memory)."""
        task = self.ensemble.task
        if not len(y):
            loss, correct = task.score(self.ensemble.predict_proba(x, self.learners_weights), y)
            return float(loss.mean()), float(correct.mean())
        size = self.ensemble.learners[0].chunk_size(x)
        sums = torch.zeros(2, dtype=torch.float64)
        for xc, yc in zip(x.split(size), y.split(size)):
            loss, correct = task.score(self.ensemble.predict_proba(xc, self.learners_weights), yc)
            sums += torch.stack([loss.double().sum(), correct.double().sum()]).cpu()
        return float(sums[0] / len(y)), float(sums[1] / len(y))
