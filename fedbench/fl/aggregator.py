"""Aggregator: owns the global learners and the per-round exchange with clients.

The round loop itself lives in :mod:`fedbench.runs.runner`; an aggregator fills in
the paired steps ``configure_fit``/``aggregate_fit`` and
``configure_evaluate``. The arithmetic is in pure functions.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from fedbench.fl.client import Client, ClientUpdate, EvalResult, FitIns
from fedbench.fl.messages import EvaluateIns
from fedbench.fl import memory
from fedbench.fl.config import TrainConfig
from fedbench.engine import Engine, SequentialEngine
from fedbench.plugin.contract import removed_aggregator_method
from fedbench.errors import PluginError
from fedbench.plugin.params import Param, declare
from fedbench.fl.seeding import STREAM_SAMPLE, generator


def weighted_average(tensors: Sequence[torch.Tensor] | torch.Tensor, weights: Sequence[float]) -> torch.Tensor:
    """sum_i w_i * t_i / sum_i w_i (``tensors``: a sequence of tensors, or one tensor whose first
    dimension indexes them).

    Summed as the FedEM authors' ``average_learners`` does, and the same way for both forms: the weights
    normalised first, then ``acc += (w_i / W) * t_i`` in order, from zero, in the tensors' dtype. A running
    sum holds one extra tensor where stacking a round's updates held a second copy of all of them."""
    if len(tensors) != len(weights) or not len(tensors):
        raise ValueError(f"need as many weights as tensors (>0), got {len(weights)} and {len(tensors)}")
    average = RunningAverage(weights, tensors[0])
    for i in range(len(tensors)):
        average.add(i, tensors[i])
    return average.result()


class RunningAverage:
    """The arithmetic of :func:`weighted_average` (``old`` None: the weights normalised first, then ``acc +=
    w_i * t_i`` from zero) and :func:`held_average` (``acc += w_i / total * (t_i - old)``, then ``old + acc``),
    one term at a time in the tensors' dtype: what an aggregator folding updates in as they arrive computes,
    bit for bit the same as on the whole list."""

    def __init__(self, weights: Sequence[float], like: torch.Tensor, *, old: torch.Tensor | None = None,
                 total: float | None = None) -> None:
        w = torch.as_tensor(list(weights), dtype=like.dtype, device=like.device)
        if old is None:
            if float(w.sum()) <= 0:
                raise ValueError(f"weights must sum to a positive number, got {list(weights)}")
            w = w / w.sum()
        else:
            w = w / total
        self.w, self.old, self.acc = w, old, torch.zeros_like(like)

    def add(self, i: int, t: torch.Tensor) -> None:
        self.acc += self.w[i] * (t if self.old is None else t - self.old)

    def result(self) -> torch.Tensor:
        return self.acc if self.old is None else self.old + self.acc


def sample_clients(n_clients: int, participation: float, gen: torch.Generator) -> list[int]:
    """Sorted ids of round(participation * n) clients (at least one), drawn without replacement."""
    if participation >= 1.0:
        return list(range(n_clients))
    k = max(1, round(participation * n_clients))
    return sorted(torch.randperm(n_clients, generator=gen)[:k].tolist())


@dataclass(frozen=True)
class RoundStats:
    """What one round reports: the sampled clients' mean train loss and the bytes exchanged."""

    train_loss: float
    bytes_sent: int


class Aggregator(abc.ABC):
    """Base aggregator: samples clients, sends parameters, collects updates.

    Subclasses implement :meth:`configure_fit`, :meth:`aggregate_fit` and
    :meth:`configure_evaluate`; extra constructor keywords are the
    aggregator's own parameters, declared once in ``PARAMS`` (name -> default or
    :class:`fedbench.plugin.params.Param`): every construction fills and checks them
    (:func:`fedbench.plugin.params.declare`), and its spec offers them.
    """

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        removed = removed_aggregator_method(cls)  # an override the plugin API no longer calls would be ignored
        if removed:
            raise PluginError(removed)
        declare(cls)

    #: whether parameters travel between clients and a server (False: every client trains alone)
    communicates: bool = True
    #: whether :meth:`configure_new_client` gives something a client that never trained can use
    serves_new_clients: bool = False
    #: whether the clients' buffers (BatchNorm statistics) are averaged like the parameters and the
    #: average handed to every client trained or evaluated (:meth:`Client.receive_buffers`)
    shares_buffers: bool = False

    def __init__(
        self,
        clients: Sequence[Client],
        init_params: list[torch.Tensor],
        train: TrainConfig,
        *,
        seed: int,
    ) -> None:
        self.clients = list(clients)
        self.global_params = [p.clone() for p in init_params]
        self.train = train
        self.seed = seed
        #: the backend that trains and scores the clients (:class:`fedbench.engine.Engine`): one at a time unless
        #: the run picks the batched one
        self.engine: Engine = SequentialEngine()
        #: training rounds run so far
        self.rounds_done = 0
        #: the averaged buffers of each learner once clients have sent some (``shares_buffers``)
        self.global_buffers: list[torch.Tensor | None] | None = None

    # ---- the round ---------------------------------------------------------
    def fit_round(self, round_: int) -> RoundStats:
        """One round: sample, train the sampled clients, aggregate."""
        chosen = sample_clients(len(self.clients), self.train.participation, generator(self.seed, STREAM_SAMPLE, round_))
        lr = self.train.learning_rate(round_)
        clients = [self.clients[i] for i in chosen]
        instructions = [self.instructions(round_, lr, c) for c in clients]
        params = [ins.params for ins in instructions]
        folded = [0] if self.folds(clients) else None  # bytes exchanged, counted as the updates are folded in
        consume = None
        if folded is not None:
            # each update folded into the average as the engine hands it over (the one-at-a-time engine then keeps
            # no client's parameters after its step); the numbers are aggregate_fit's
            self.fold_start(clients)
            consume = functools.partial(self._fold_one, clients, params, folded)
        updates = self.engine.fit(clients, instructions, consume)
        if folded is not None:
            self.fold_end()
        else:
            self.aggregate_fit(round_, updates)
        self.collect_buffers(updates)
        self.rounds_done = round_ + 1
        loss = float(weighted_average(
            torch.tensor([u.train_loss for u in updates], dtype=torch.float64), [u.weight for u in updates]
        ))
        stats = RoundStats(loss, self.round_bytes(params, updates) if folded is None else int(folded[0]))
        del updates, params, instructions, consume  # the round's updates are spent: their memory goes back with the rest
        self._release()
        return stats

    def _fold_one(self, clients: Sequence[Client], sent: list[list[torch.Tensor]], total: list[int], k: int,
                  update: ClientUpdate) -> None:
        """Fold ``update`` (from ``clients[k]``, sent ``sent[k]``) in and add the bytes it exchanged to ``total[0]``."""
        self.fold(k, update)
        if self.communicates:
            total[0] += clients[k].exchanged_bytes(sent[k]) + clients[k].exchanged_bytes(update.params)

    def folds(self, clients: Sequence[Client]) -> bool:
        """Whether this round's updates can be folded in one by one (:meth:`fold_start`, :meth:`fold`,
        :meth:`fold_end`) with exactly :meth:`aggregate_fit`'s result; the base class never does."""
        return False

    def fold_start(self, clients: Sequence[Client]) -> None:
        raise NotImplementedError

    def fold(self, k: int, update: ClientUpdate) -> None:
        raise NotImplementedError

    def fold_end(self) -> None:
        raise NotImplementedError

    def _release(self) -> None:
        """Hand freed heap back to the OS when the model is large (:func:`fedbench.fl.memory.release_if_large`)."""
        memory.release_if_large(self.global_params)

    def round_bytes(self, sent: list[list[torch.Tensor]], updates: list[ClientUpdate]) -> int:
        """Bytes of parameters sent to the sampled clients plus those sent back (0 without communication);
        entries a client keeps to itself (:meth:`Client.exchanged_bytes`) do not travel."""
        if not self.communicates:
            return 0
        by_id = {c.client_id: c for c in self.clients}
        return int(sum(by_id[u.client_id].exchanged_bytes(ps) + by_id[u.client_id].exchanged_bytes(u.params) for ps, u in zip(sent, updates)))

    def buffers_for(self, client: Client) -> list[torch.Tensor | None] | None:
        """The averaged buffers ``client`` takes before it trains or is scored, sent in its instructions
        (:attr:`FitIns.buffers`, :attr:`EvaluateIns.buffers`): the average when this aggregator shares them
        and has one, else None (nothing sent)."""
        return self.global_buffers if self.shares_buffers else None

    def collect_buffers(self, updates: Sequence[ClientUpdate]) -> None:
        """Average the buffers sent with ``updates``, weighted like the parameters (when shared)."""
        sent = [u for u in updates if u.buffers is not None]
        if not self.shares_buffers or not sent:
            return
        weights = [u.weight for u in sent]
        self.global_buffers = [
            None if sent[0].buffers[m] is None else weighted_average([u.buffers[m] for u in sent], weights)
            for m in range(len(sent[0].buffers))
        ]

    def evaluate(self) -> list[EvalResult]:
        """Every client's scores of its own predictor."""
        scores = self.engine.evaluate(self.clients, [EvaluateIns(self.configure_evaluate(c), buffers=self.buffers_for(c))
                                                     for c in self.clients])
        self._release()
        return scores

    def evaluate_new(self, clients: Sequence[Client]) -> list[EvalResult] | None:
        """Scores of clients that never trained, each after :meth:`Client.adapt` to
        :meth:`configure_new_client`; None when this aggregator or client type serves no new clients."""
        if not clients or not self.serves_new_clients or not all(c.serves_new_clients for c in clients):
            return None
        lr = self.train.learning_rate(self.rounds_done - 1) if self.rounds_done else self.train.lr
        # (each client's parameters asked for before any adapts: configure_new_client reads the server's state only)
        return self.engine.evaluate(clients, [EvaluateIns(self.configure_new_client(c), adapt_lr=lr, buffers=self.buffers_for(c))
                                              for c in clients])

    def configure_new_client(self, client: Client) -> list[torch.Tensor]:
        """The parameters a client that never trained receives (the global ones by default)."""
        return self.global_params

    def instructions(self, round_: int, lr: float, client: Client) -> FitIns:
        """:meth:`configure_fit`'s answer as a :class:`FitIns` with this round's number and learning rate, and the
        buffers :meth:`buffers_for` sends the client."""
        ins = self.configure_fit(round_, client)
        buffers = self.buffers_for(client)
        if not isinstance(ins, FitIns):  # the same list object for every client keeps the engine's shared-model path
            return FitIns(ins if isinstance(ins, list) else list(ins), round=round_, lr=lr, buffers=buffers)
        if ins.round is not None and ins.lr is not None and (ins.buffers is not None or buffers is None):
            return ins
        return dataclasses.replace(ins, round=round_ if ins.round is None else ins.round, lr=lr if ins.lr is None else ins.lr,
                                   buffers=buffers if ins.buffers is None else ins.buffers)

    # ---- what subclasses fill in -------------------------------------------
    @abc.abstractmethod
    def configure_fit(self, round_: int, client: Client) -> FitIns | list[torch.Tensor]:
        """What ``client`` trains from this round: a :class:`FitIns` (parameters, one flat tensor per
        learner, and what else the method sends), or just the parameters."""

    @abc.abstractmethod
    def aggregate_fit(self, round_: int, updates: list[ClientUpdate]) -> None:
        """Fold the round's client updates into the aggregator's state."""

    @abc.abstractmethod
    def configure_evaluate(self, client: Client) -> list[torch.Tensor]:
        """The parameters ``client``'s predictor is evaluated with."""


def held_average(old: torch.Tensor, sampled: Sequence[torch.Tensor], weights: Sequence[float], total: float) -> torch.Tensor:
    """The average over *all* clients when the unsampled ones hold the old model ``old``:
    ``old + sum_S w_i / total * (theta_i - old)`` (``total``: the weights of every client)."""
    average = RunningAverage(weights, old, old=old, total=total)
    for i, theta in enumerate(sampled):  # a running sum, as in :func:`weighted_average` (no stacked copy)
        average.add(i, theta)
    return average.result()


class CentralizedAggregator(Aggregator):
    """Server averaging: each learner's global parameters become the average of the clients'
    parameters weighted by their train sizes (FedAvg when M = 1).

    Under partial participation (``participation < 1``), ``unsampled = "hold"`` (the default, the FedEM
    authors' protocol) averages over every client, the unsampled ones holding the old global model:
    ``w + sum_S n_i / n (theta_i - w)`` with ``n`` the train size of all clients, a damped update;
    ``unsampled = "drop"`` averages over the sampled clients only (``sum_S n_i theta_i / sum_S n_i``).
    With every client sampled both are the plain weighted average."""

    serves_new_clients = True
    shares_buffers = True
    PARAMS = {"unsampled": Param("hold", choices=("hold", "drop"))}

    def __init__(self, clients, init_params, train, *, seed, unsampled: str) -> None:  # noqa: ANN001
        super().__init__(clients, init_params, train, seed=seed)
        #: "hold" or "drop": see the class doc
        self.unsampled = unsampled

    def configure_fit(self, round_: int, client: Client) -> list[torch.Tensor]:
        return self.global_params

    def folds(self, clients: Sequence[Client]) -> bool:
        """Folding gives :meth:`aggregate_fit`'s numbers when neither it nor the byte count is overridden and
        every client's update weighs its train size (its class keeps ``Client``'s ``step`` and ``fit``): the
        weights are then known before the first update, as the normalise-first sum needs."""
        mine = type(self)
        return (mine.aggregate_fit is CentralizedAggregator.aggregate_fit and mine.round_bytes is Aggregator.round_bytes
                and all(type(c).step is Client.step and type(c).fit is Client.fit for c in clients))

    def fold_start(self, clients: Sequence[Client]) -> None:
        self._weights = [float(c.n_train) for c in clients]
        if self.unsampled == "hold" and len(clients) < len(self.clients):  # aggregate_fit's two cases
            total = float(sum(c.n_train for c in self.clients))
            self._sums = [RunningAverage(self._weights, p, old=p, total=total) for p in self.global_params]
        else:
            self._sums = [RunningAverage(self._weights, p) for p in self.global_params]

    def fold(self, k: int, update: ClientUpdate) -> None:
        if update.weight != self._weights[k]:  # (cannot happen for the clients folds() accepts)
            raise RuntimeError(f"client {update.client_id}'s update weighs {update.weight}, not its train size")
        for average, theta in zip(self._sums, update.params):
            average.add(k, theta)

    def fold_end(self) -> None:
        self.global_params = [average.result() for average in self._sums]
        del self._sums, self._weights

    def aggregate_fit(self, round_: int, updates: list[ClientUpdate]) -> None:
        weights = [u.weight for u in updates]
        if self.unsampled == "hold" and len(updates) < len(self.clients):
            total = float(sum(c.n_train for c in self.clients))
            self.global_params = [
                held_average(self.global_params[m], [u.params[m] for u in updates], weights, total)
                for m in range(len(self.global_params))
            ]
            return
        self.global_params = [
            weighted_average([u.params[m] for u in updates], weights) for m in range(len(self.global_params))
        ]

    def configure_evaluate(self, client: Client) -> list[torch.Tensor]:
        return self.global_params
