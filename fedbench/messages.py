"""The records a server and its clients exchange, and the phases a client type trains in: data, no behaviour.

:class:`FitIns` (what a client trains from this round), :class:`ClientUpdate` (what it sends back),
:class:`EvalResult` (its scores) and :class:`FitPhase` (one local fit of a round, as a client type lists
them). The engines (:mod:`fedbench.engine`) and the client types (:mod:`fedbench.client`) both build on them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from fedbench.learner import SGDConfig
from fedbench.seeding import STREAM_TRAIN


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
    #: what the client tells the server besides (:meth:`Client.report`: e.g. its number of local steps), by name
    metadata: Mapping[str, float] = field(default_factory=dict)
    #: the client's mean train loss at the parameters it was sent, before training (F_k(w)), when its
    #: :class:`FitIns` asked for it (``report_start_loss``), else None
    start_loss: float | None = None


@dataclass(frozen=True)
class FitIns:
    """One round's instructions to one client: what an aggregator's ``configure_fit`` returns.

    ``params``: one flat tensor per learner to train from; ``extras``: what the method sends besides,
    by name, one tensor per learner (SCAFFOLD's ``correction``); ``round`` and ``lr`` are filled in by
    the round loop when the aggregator leaves them None. A client reads ``extras`` in its local
    objective (:meth:`Client.local_term`) - no aggregator writes into a client. ``report_start_loss``:
    the client sends back its mean train loss at ``params`` before training (:attr:`ClientUpdate.start_loss`,
    :meth:`Client.loss_at`), what q-FFL's and AFL's servers weigh clients by - no server calls client code.
    """

    params: list[torch.Tensor]
    extras: Mapping[str, list[torch.Tensor]] = field(default_factory=dict)
    round: int | None = None
    lr: float | None = None
    report_start_loss: bool = False


@dataclass(frozen=True)
class FitPhase:
    """One local fit of a round. :meth:`Client.fit_phases` lists a client type's phases; both backends
    run them in order, the vectorised one for every client of the round at once.

    ``start``: what the phase trains from: ``"received"`` (the round's parameters, after
    :meth:`Client.receive`), ``"previous"`` (the last sent-on phase's result; the received parameters
    before any) or the name of a model this client keeps (``Client.kept[name]``; the received
    parameters the first time). ``keep``: None - the result goes on, and the last such result is the
    update sent; a name - the result is kept as ``Client.kept[name]`` (a personal model) and not sent.
    ``term``: the name of the client method giving this phase's local term (the signature of
    :meth:`Client.local_term`), or None. ``sample_term``: the name of the client method giving a term per
    sample of each batch (the signature of :meth:`Client.sample_term`), or None. ``step``: the name of a
    client method that replaces the phase's
    SGD step by its own pure function (the signature of :meth:`Client.joint_step`), for a method whose
    learners train together on the same batches (APFL's mixed model, pFedMe's inner problem); such a
    phase draws one batch order per epoch, as a single learner does, and takes no ``term`` or
    ``trainable``. ``carry``: names of kept models (M tensors each) that a ``step`` phase trains
    beside the learners (stacked after them) and keeps afterwards; the received parameters the first
    time. ``trainable``: one flag per parameter tensor, False freezing
    it (no step, no weight decay, no momentum). ``epochs``: None for the run's ``local_epochs``.
    ``stream``: the random stream of the phase's batch orders. ``momentum``: ``"main"`` (the client's
    momentum, kept between rounds when ``train.keep_optimizer_state``), another name (a momentum of
    its own, kept likewise), or None (fresh every round; required with ``trainable``).
    """

    start: str = "received"
    keep: str | None = None
    term: str | None = "local_term"
    trainable: tuple[bool, ...] | None = None
    epochs: int | None = None
    stream: int = STREAM_TRAIN
    momentum: str | None = "main"
    step: str | None = None
    carry: tuple[str, ...] = ()
    sample_term: str | None = None

    def __post_init__(self) -> None:
        if self.trainable is not None and self.momentum is not None:
            raise ValueError("a phase with frozen tensors starts a fresh momentum: give it momentum=None")
        if self.step is not None and (self.term is not None or self.trainable is not None or self.sample_term is not None):
            raise ValueError("a phase with its own step adds no term and freezes nothing: give it term=None, "
                             "sample_term=None, trainable=None")
        if self.carry and self.step is None:
            raise ValueError("only a phase with its own step carries kept models: give it step=")

    def sgd(self, base: SGDConfig) -> SGDConfig:
        """The round's optimiser settings with this phase's epochs."""
        return base if self.epochs is None else dataclasses.replace(base, epochs=self.epochs)


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
