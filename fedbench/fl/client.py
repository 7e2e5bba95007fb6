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
client decides what it takes (:meth:`Client.receive_buffers`) and what it sends
(:meth:`Client.sent_buffers`): FedBN's client keeps its own and sends none.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, MutableMapping, Sequence

import torch

from fedbench.fl.config import TrainConfig
from fedbench.fl.messages import ClientUpdate, EvalResult, FitIns, FitPhase, LossPhase, StepPhase  # (also importable from here)
from fedbench.plugin.contract import guard
from fedbench.fl.data import ClientData
from fedbench.plugin.params import declare
from fedbench.fl.learner import Batch, LearnersEnsemble, SGDConfig, sgd_update
from fedbench.fl.seeding import STREAM_GLOBAL, seed_global


class Client:
    """The plain client: uniform sample weights, pi = 1/M.

    Subclasses change what happens before training by overriding
    :meth:`update_sample_weights` and :meth:`update_learners_weights`, as in
    the FedEM design. A subclass declares its own keyword parameters once, in ``PARAMS`` (name -> default
    or :class:`fedbench.plugin.params.Param`): every construction fills and checks them
    (:func:`fedbench.plugin.params.declare`), and its spec offers them.
    """

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        declare(cls)

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
        #: models this client keeps between rounds, by phase name (:class:`FitPhase` ``keep``), and the momentum
        #: buffers it keeps by slot name (``"main"``: its learners'); elsewhere with :meth:`keep_state_in`
        self.kept: MutableMapping[str, list[torch.Tensor]] = {}
        self.kept_momentum: MutableMapping[str, list[torch.Tensor | None]] = {}
        #: this client's copy of each learner's buffers (None for models without buffers)
        self.buffers: list[torch.Tensor | None] = ensemble.get_buffers()

    @property
    def momentum(self) -> list[torch.Tensor | None]:
        """The momentum buffers of this client's learners (None: fresh)."""
        return self.kept_momentum.get("main") or [None] * len(self.ensemble)

    def keep_state_in(self, slots: Callable[[str, dict], MutableMapping]) -> None:
        """Keep the models and momentum buffers this client holds between rounds in the mappings
        ``slots("kept", current)`` and ``slots("momentum", current)`` make (the run's builder hands files,
        :class:`fedbench.runs.client_state.DiskSlots`): the same tensors, read back when it trains again."""
        self.kept = slots("kept", dict(self.kept))
        self.kept_momentum = slots("momentum", dict(self.kept_momentum))

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

    @classmethod
    def update_weights(cls, clients: Sequence[Client], losses: Sequence[torch.Tensor | None]) -> None:
        """:meth:`update_sample_weights` then :meth:`update_learners_weights` for many clients of this
        type (``losses[i]`` for ``clients[i]``), as the vectorised backend calls them once a round. This
        default runs them client by client; a type may override it with one batched computation that
        sets the same weights to rounding (the built-in mixture client's is tested against this default)."""
        for client, client_losses in zip(clients, losses):
            client.update_sample_weights(client_losses)
            client.update_learners_weights()

    def receive_buffers(self, buffers: list[torch.Tensor | None]) -> None:
        """Take the averaged buffers (BatchNorm statistics) an aggregator that shares them hands out, before
        this client trains or is evaluated. The plain client takes them; one that keeps its own ignores them."""
        self.buffers = list(buffers)

    def sent_buffers(self) -> list[torch.Tensor | None] | None:
        """The buffers this client sends with its update after training (None: none, e.g. a model without
        buffers, or a client that keeps its own)."""
        return None if all(b is None for b in self.buffers) else self.buffers

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
        (client, learner) pair of a round, bound to the round's first client. It checks that first
        (:class:`fedbench.engine.ClientCheck`): where clients' terms differ (a ``self.mu`` set per client)
        the round trains one client at a time and the run's engine line says why. Per-client values a
        term needs batched belong in :meth:`term_context`. FedProx: ``mu / 2 * ||theta - ctx["received"]||^2``;
        SCAFFOLD: ``<ctx["correction"], theta>``.
        """
        return None

    #: whether :meth:`sample_term` reads the model's representation (:attr:`fedbench.fl.learner.Batch.features`,
    #: ``represent``): a run whose model declares none (:func:`fedbench.fl.learner.representation_module`) is
    #: then refused before it starts
    needs_representation: bool = False

    def sample_term(self, theta: torch.Tensor, ctx: Mapping[str, torch.Tensor], batch: Batch) -> torch.Tensor:
        """A term of the local objective per sample of a batch (W values), added to each sample's loss before
        the sample weights and the division by the batch size: the batch loss becomes
        ``sum_i w_i (loss_i + term_i) / B``. Not called unless overridden.

        A pure torch function of ``theta`` (the learner's flat parameters), ``ctx`` (as for
        :meth:`local_term`) and ``batch`` (:class:`fedbench.fl.learner.Batch`: the inputs, labels, the model's
        representation at ``theta`` and at any other parameters), using no other per-client attribute: the
        one-at-a-time backend calls it per client, learner and batch, the vectorised one under
        ``torch.func.vmap`` over the rows of a step, with the same check as for :meth:`local_term`. It must
        be finite for any input (a padded sample weighs 0, and 0 x NaN is NaN). MOON's model-contrastive loss
        is one (docs/plugins.md)."""
        raise NotImplementedError

    def term_context(self, params: list[torch.Tensor], extras: Mapping[str, list[torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
        """Per learner, what :meth:`local_term` reads: ``received`` (the parameters sent) and each of the
        round's ``extras``. Override to add this client's own state (FedDyn's gradient memory)."""
        return [{"received": p, **{k: v[m] for k, v in extras.items()}} for m, p in enumerate(params)]

    def joint_step(
        self, theta: torch.Tensor, momentum: torch.Tensor,
        grad: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]], sgd: SGDConfig,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The signature of a phase's own step (:class:`StepPhase` ``step``), shown with plain SGD on every row.

        A pure torch function of one client's stacked parameters ``theta`` (S, P) (the M learners, then
        each carried model's M), their momentum buffers (S, P) (zeros when fresh), ``grad`` (``point ->
        (gradient, loss)`` of the batch's mean loss at any flat parameters ``point``) and ``sgd`` (the
        round's settings; :func:`fedbench.fl.learner.sgd_update` is torch's SGD step). It returns the new
        parameters, buffers and the batch loss to report. Using no per-client attribute, it runs per
        client on the one-at-a-time backend (``grad`` by autograd) and under ``torch.func.vmap`` over the
        round's clients on the vectorised one (``grad`` by ``torch.func.grad_and_value``).
        """
        rows, bufs, values = [], [], []
        for t, b in zip(theta, momentum):
            g, value = grad(t)
            t, b = sgd_update(t, g, b, sgd)
            rows, bufs, values = rows + [t], bufs + [b], values + [value]
        return torch.stack(rows), torch.stack(bufs), torch.stack(values).mean()

    def report(self, ins: FitIns, update: ClientUpdate) -> Mapping[str, float]:
        """What this client sends the server besides its parameters after a round's training, by name (finite
        numbers): the aggregator reads it as ``update.metadata``. Default: nothing. Both backends call it, after
        training and before :meth:`after_fit`."""
        return {}

    def reported(self, ins: FitIns, update: ClientUpdate) -> ClientUpdate:
        """``update`` with :meth:`report`'s metadata, checked: names are strings, values finite numbers."""
        raw = self.report(ins, update)
        if not raw:
            return update
        out = {}
        for name, value in dict(raw).items():
            number = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
            if not isinstance(name, str) or number is None or number != number or number in (float("inf"), float("-inf")):
                raise TypeError(f"{type(self).__name__}.report() must return finite numbers by name, got {name!r}: {value!r}")
            out[name] = number
        return dataclasses.replace(update, metadata=out)

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

    @classmethod
    def has_sample_term(cls) -> bool:
        return cls.sample_term is not Client.sample_term

    def fit_phases(self) -> tuple[FitPhase, ...]:
        """This client type's local fits of a round, in order (a property of the type and its settings,
        the same for every round). The plain client: one fit from the received parameters with its
        local term and kept momentum."""
        mine = type(self)
        return (LossPhase(term=mine.local_term if self.has_local_term() else None,
                         sample_term=mine.sample_term if self.has_sample_term() else None),)

    def step(self, params: list[torch.Tensor], round_: int, lr: float,
             extras: Mapping[str, list[torch.Tensor]] | None = None, report_start_loss: bool = False) -> ClientUpdate:
        """One round of this client alone: take ``params`` (:meth:`receive`), update the sample and learner
        weights for them, train from them (:meth:`fit`), :meth:`report` and :meth:`after_fit` - the round
        driver of :class:`fedbench.engine.base.Engine`, one-at-a-time backend."""
        from fedbench.engine.sequential import ONE_AT_A_TIME  # the engines build on this module

        sent = FitIns(params, extras or {}, round_, lr, report_start_loss=report_start_loss)
        start = ONE_AT_A_TIME.start_losses([self], [sent])
        seed_global(self.seed, STREAM_GLOBAL, round_, self.client_id)  # dropout draws: fixed per (seed, round, client)
        (ins,) = ONE_AT_A_TIME.prepare([self], [sent])
        return ONE_AT_A_TIME.finish([self], [ins], [self.fit(ins)], start)[0]

    def terms(self, name: Callable[..., torch.Tensor] | str | None, params: list[torch.Tensor],
              extras: Mapping[str, list[torch.Tensor]] | None, per_sample: bool = False) -> list[Callable[..., torch.Tensor]] | None:
        """Per learner, the phase's term (its function, or its method's name) bound to this client and that
        learner's context, or None (``per_sample``: a :meth:`sample_term`, which takes the batch too)."""
        if name is None:
            return None
        method = FitPhase.bound(name, self)
        contexts = self.term_context(params, extras or {})
        if per_sample:
            return [lambda theta, batch, ctx=ctx: method(theta, ctx, batch) for ctx in contexts]
        return [lambda theta, ctx=ctx: method(theta, ctx) for ctx in contexts]

    def fit(self, ins: FitIns, phases: Sequence[FitPhase] | None = None) -> ClientUpdate:
        """One round of local training (:meth:`fit_phases`, or ``phases``) from ``ins.params`` with this
        client's weights, local terms and kept momentum, each phase's batch orders drawn from its stream
        (the round driver's phases, one-at-a-time backend)."""
        from fedbench.engine.sequential import ONE_AT_A_TIME  # the engines build on this module

        return ONE_AT_A_TIME.train_phases([self], [ins], phases)[0]

    def joint_start(self, phase: StepPhase, received: list[torch.Tensor], previous: list[torch.Tensor]) -> list[torch.Tensor]:
        """What a ``step`` phase trains: its learners' start, then each carried model (S = M * (1 + carried))."""
        start = list(self.phase_start(phase, received, previous))
        return start + [t for name in phase.carry for t in self.kept.get(name, received)]

    def joint_momentum(self, phase: StepPhase, theta: torch.Tensor) -> torch.Tensor:
        """The momentum buffers a ``step`` phase starts from, one row per row of ``theta`` (zeros: fresh)."""
        slot = list(self.momentum_slot(phase.momentum) or [])
        slot += [None] * (len(theta) - len(slot))
        return torch.stack([b if b is not None else torch.zeros_like(t) for b, t in zip(slot, theta)])

    def joint_done(self, phase: StepPhase, rows: list[torch.Tensor]) -> list[torch.Tensor]:
        """Keep a ``step`` phase's carried models; return its learners' parameters (the first M rows)."""
        m = len(self.ensemble)
        for i, name in enumerate(phase.carry, start=1):
            self.kept[name] = rows[i * m:(i + 1) * m]
        return rows[:m]

    def phase_start(self, phase: FitPhase, received: list[torch.Tensor], previous: list[torch.Tensor]) -> list[torch.Tensor]:
        """What ``phase`` trains from (see :class:`FitPhase` ``start``); ``previous`` is the last sent-on
        result, the received parameters before any."""
        if phase.start == "received":
            return received
        if phase.start == "previous":
            return previous
        return self.kept.get(phase.start, received)

    def momentum_slot(self, name: str | None) -> list[torch.Tensor | None] | None:
        """The kept momentum a phase starts from (None: fresh)."""
        if name is None or not self.train.keep_optimizer_state:
            return None
        return self.kept_momentum.get(name)

    def set_kept(self, name: str, params: list[torch.Tensor]) -> None:
        """Keep a phase's result as the personal model ``name`` (:class:`FitPhase` ``keep``)."""
        self.kept[name] = list(params)

    def set_trained_buffers(self, buffers: list[torch.Tensor | None]) -> None:
        """Take the buffers (BatchNorm statistics) this client's training left as its own copy."""
        self.buffers = list(buffers)

    def set_momentum_slot(self, name: str | None, buffers: list[torch.Tensor | None]) -> None:
        if name is None or not self.train.keep_optimizer_state:
            return
        self.kept_momentum[name] = buffers

    def sgd_config(self, lr: float) -> SGDConfig:
        """The local optimiser settings for a round with learning rate ``lr``."""
        return SGDConfig(
            lr=lr,
            momentum=self.train.momentum,
            weight_decay=self.train.weight_decay,
            batch_size=self.train.batch_size,
            epochs=self.train.local_epochs,
            drop_last=self.data.drop_last,
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

    def predictor(self, params: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        """What this client predicts with when it is scored at ``params`` (what its evaluation instructions
        carry): one flat parameter tensor per learner and the learners' mixture weights (M), the predictor
        being sum_m pi_m p_m. Here ``params`` and :attr:`learners_weights`; a method whose predictor is
        something else says so here, a pure function of ``params`` and the client's state (APFL's mixed
        model; a kept personal model), and both backends score it - the batched one many clients at once."""
        return params, self.learners_weights

    @torch.no_grad()
    def evaluate(self, params: list[torch.Tensor]) -> EvalResult:
        """Score this client's predictor (:meth:`predictor`) at ``params`` on its own train and test sets."""
        params, weights = self.predictor(params)
        self.load(params)
        return self.score(weights)

    @torch.no_grad()
    def score(self, weights: torch.Tensor | None = None) -> EvalResult:
        """Score the workspace learners as they are (parameters and buffers), mixed by ``weights`` (this
        client's :attr:`learners_weights` when None)."""
        d, weights = self.data, self.learners_weights if weights is None else weights
        tr_loss, tr_acc = self._mean_score(d.train_x, d.train_y, weights)
        te_loss, te_acc = self._mean_score(d.test_x, d.test_y, weights)
        return EvalResult(self.client_id, d.n_train, d.n_test, tr_loss, tr_acc, te_loss, te_acc)

    def _mean_score(self, x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor) -> tuple[float, float]:
        """Mean loss and accuracy of the predictor on (x, y), a chunk at a time (bounded memory)."""
        task = self.ensemble.task
        if not len(y):
            loss, correct = task.score(self.ensemble.predict_proba(x, weights), y)
            return float(loss.mean()), float(correct.mean())
        size = self.ensemble.learners[0].chunk_size(x)
        sums = torch.zeros(2, dtype=torch.float64)
        for xc, yc in zip(x.split(size), y.split(size)):
            loss, correct = task.score(self.ensemble.predict_proba(xc, weights), yc)
            sums += torch.stack([loss.double().sum(), correct.double().sum()]).cpu()
        return float(sums[0] / len(y)), float(sums[1] / len(y))


# names a previous plugin API honoured (fedbench.plugin.contract.REMOVED): setting one on a client fails with its replacement
guard(Client)
