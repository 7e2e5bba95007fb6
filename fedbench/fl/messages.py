"""The records a server and its clients exchange, and the phases a client type trains in: data, no behaviour.

:class:`FitIns` (what a client trains from this round), :class:`ClientUpdate` (what it sends back),
:class:`EvalResult` (its scores) and the phases a client type lists (:class:`LossPhase` and :class:`StepPhase`,
both :class:`FitPhase`: one local fit of a round each). The engines (:mod:`fedbench.engine`) and the client types (:mod:`fedbench.fl.client`) both build on them.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from fedbench.fl.learner import SGDConfig
from fedbench.fl.seeding import STREAM_TRAIN


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
    #: the averaged buffers (BatchNorm statistics) the client takes before anything else (:meth:`Client.receive_buffers`),
    #: one per learner; None: none sent (filled in by the aggregator's :meth:`buffers_for`)
    buffers: list[torch.Tensor | None] | None = None


class _PhaseKind(type):
    """Makes ``FitPhase(...)`` build the phase its arguments describe (:class:`LossPhase`, or
    :class:`StepPhase` when ``step`` is given), so a phase written in the one-record form of plugin API 3
    is one of the two records."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        if cls is not FitPhase:
            return super().__call__(*args, **kwargs)
        if kwargs.get("step") is None:
            if kwargs.get("carry"):
                raise ValueError("only a phase with its own step carries kept models: give it step=")
            kwargs.pop("step", None), kwargs.pop("carry", None)
            return LossPhase(*args, **kwargs)
        given = [k for k in ("term", "sample_term", "trainable") if kwargs.pop(k, None) is not None]
        if given:
            raise ValueError(f"a phase with its own step adds no term and freezes nothing (got {', '.join(given)}): "
                             "give it term=None, sample_term=None, trainable=None, or write a StepPhase")
        return StepPhase(*args, **kwargs)


@dataclass(frozen=True)
class FitPhase(metaclass=_PhaseKind):
    """One local fit of a round. :meth:`Client.fit_phases` lists a client type's phases; both backends
    run them in order, the vectorised one for every client of the round at once. A phase is one of two
    records: a :class:`LossPhase` (SGD steps on the loss, plus the client's local terms) or a
    :class:`StepPhase` (the client type's own pure step replaces SGD). ``FitPhase(...)`` builds the one its
    arguments describe (a ``step`` makes a StepPhase), the form of plugin API 3.

    What every phase says: ``start``, what it trains from: ``"received"`` (the round's parameters, after
    :meth:`Client.receive`), ``"previous"`` (the last sent-on phase's result; the received parameters
    before any) or the name of a model this client keeps (``Client.kept[name]``; the received
    parameters the first time). ``keep``: None - the result goes on, and the last such result is the
    update sent; a name - the result is kept as ``Client.kept[name]`` (a personal model) and not sent.
    ``epochs``: None for the run's ``local_epochs``. ``stream``: the random stream of the phase's batch
    orders. ``momentum``: ``"main"`` (the client's momentum, kept between rounds when
    ``train.keep_optimizer_state``), another name (a momentum of its own, kept likewise), or None (fresh
    every round).

    A function field (a term, a step) is the client type's function, called with the client first, as a
    method (e.g. ``DittoClient.pull``); a method's name is still accepted (``term="pull"``, the form of
    plugin API 2, looked up on the client, so a subclass's override is found), but a function is the form
    to prefer: it is what runs, named once, and a typo fails where the phase is written. The names of
    kept models cannot be ``"received"`` or ``"previous"`` (what ``start`` means by them).
    """

    start: str = "received"
    keep: str | None = None
    epochs: int | None = field(default=None, kw_only=True)
    stream: int = field(default=STREAM_TRAIN, kw_only=True)
    momentum: str | None = field(default="main", kw_only=True)

    def __post_init__(self) -> None:
        for name in (self.keep, *self.kept_names()):
            if name in ("received", "previous"):
                raise ValueError(f"a kept model cannot be named {name!r}: a phase's start={name!r} means something "
                                 "else; name it after what it is (e.g. 'personal')")
        for field_name, value in self.functions().items():
            if value is not None and not isinstance(value, str) and not callable(value):
                raise ValueError(f"a phase's {field_name} is the client type's function (or its name), got {value!r}")

    def kept_names(self) -> tuple[str, ...]:
        """Names of kept models this phase trains besides its start (a StepPhase's ``carry``)."""
        return ()

    def functions(self) -> dict[str, Callable[..., Any] | str | None]:
        """The phase's function fields by name (terms, or its step)."""
        return {}

    def sgd(self, base: SGDConfig) -> SGDConfig:
        """The round's optimiser settings with this phase's epochs."""
        return base if self.epochs is None else dataclasses.replace(base, epochs=self.epochs)

    @staticmethod
    def bound(what: Callable[..., Any] | str | None, client: Any) -> Callable[..., Any] | None:
        """A term or step as a function of ``client``: looked up by name on it, or the given function with
        the client bound as its first argument; None for None."""
        if what is None:
            return None
        if isinstance(what, str):
            return getattr(client, what)
        return functools.partial(what, client)

    @staticmethod
    def label(what: Callable[..., Any] | str) -> str:
        """A term's or step's name, for messages."""
        return what if isinstance(what, str) else getattr(what, "__qualname__", repr(what))


@dataclass(frozen=True, kw_only=True)
class LossPhase(FitPhase):
    """SGD steps on each learner's weighted batch loss plus this phase's terms, every learner of every
    client on batches of its own.

    ``term``: the function giving the phase's local term (the signature of :meth:`Client.local_term`), or
    None. ``sample_term``: the function giving a term per sample of each batch (the signature of
    :meth:`Client.sample_term`), or None. ``trainable``: one flag per parameter tensor, False freezing it
    (no step, no weight decay, no momentum; such a phase starts a fresh momentum: ``momentum=None``)."""

    term: Callable[..., Any] | str | None = "local_term"
    sample_term: Callable[..., Any] | str | None = None
    trainable: tuple[bool, ...] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.trainable is not None and self.momentum is not None:
            raise ValueError("a phase with frozen tensors starts a fresh momentum: give it momentum=None")

    def functions(self) -> dict[str, Callable[..., Any] | str | None]:
        return {"term": self.term, "sample_term": self.sample_term}


@dataclass(frozen=True, kw_only=True)
class StepPhase(FitPhase):
    """The client type's own pure step instead of SGD, for a method whose learners train together on the
    same batches (APFL's mixed model, pFedMe's inner problem): one batch order per epoch, as a single
    learner draws it.

    ``step``: the function (the signature of :meth:`Client.joint_step`). ``carry``: names of kept models
    (M tensors each) the step trains beside the learners (stacked after them) and keeps afterwards; the
    received parameters the first time."""

    step: Callable[..., Any] | str
    carry: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.step is None:
            raise ValueError("a StepPhase needs its step (the client type's function)")
        super().__post_init__()

    def kept_names(self) -> tuple[str, ...]:
        return tuple(self.carry)

    def functions(self) -> dict[str, Callable[..., Any] | str | None]:
        return {"step": self.step}


@dataclass(frozen=True)
class EvaluateIns:
    """What one client is scored with: an aggregator's ``configure_evaluate`` (or, for a client that never
    trained, ``configure_new_client``) as the engine receives it.

    ``params``: one flat tensor per learner, the client's predictor; ``adapt_lr``: for a client that never
    trained (unseen clients), the learning rate of the last training round, with which it first adapts to
    ``params`` (:meth:`Client.adapt`); None for a client scored as it is.
    """

    params: list[torch.Tensor]
    adapt_lr: float | None = None
    #: the averaged buffers the client takes before it is scored (as :attr:`FitIns.buffers`); None: none sent
    buffers: list[torch.Tensor | None] | None = None


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
