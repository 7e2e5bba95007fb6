"""What every backend implements, and the one round driver both run.

An aggregator always calls its engine (:attr:`fedbench.fl.aggregator.Aggregator.engine`): the one-at-a-time
:class:`fedbench.engine.sequential.SequentialEngine` unless the run picked the batched
:class:`fedbench.engine.vectorized.VectorizedEngine`. The aggregator never asks which one it holds.

A round of local training is written once, here (:meth:`Engine.prepare`, :meth:`Engine.train_phases`,
:meth:`Engine.finish`): take the parameters (:meth:`Client.receive`), set the sample and learner weights,
run the client type's phases (:meth:`Client.fit_phases`) in order - where each starts, which result is kept
and which is sent on, the phases' mean loss, the buffers trained - then the update, its metadata
(:meth:`Client.report`) and :meth:`Client.after_fit`. A backend supplies only how a step of work is
computed for a group of clients: the weights (:meth:`Engine.weigh`), a phase of SGD steps
(:meth:`Engine.train_phase`), a phase with the client's own step (:meth:`Engine.joint_phase`) and the
mean of the phases' losses (:meth:`Engine.mean_losses`). The one-at-a-time backend drives one client at a
time through the same code, the batched one every client of the round at once.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch

from fedbench.fl.messages import ClientUpdate, EvalResult, EvaluateIns, FitIns, FitPhase, LossPhase, StepPhase
from fedbench.fl.learner import SGDConfig

#: a :class:`fedbench.fl.client.Client` (not imported here: the client module runs the one-at-a-time driver)
AnyClient = Any

#: what :meth:`Engine.fit` hands each update to as it arrives (its position among the round's clients, the update)
Consume = Callable[[int, ClientUpdate], None]


class Engine(abc.ABC):
    """A backend: trains a round's clients (:meth:`fit`) and scores clients (:meth:`evaluate`)."""

    #: why rounds ran otherwise than this engine's way, each with its first round (:meth:`note`)
    declined: dict[str, int]

    @abc.abstractmethod
    def fit(self, clients: Sequence[AnyClient], instructions: Sequence[FitIns],
            consume: Consume | None = None) -> list[ClientUpdate]:
        """Every client's update after the round's local training from its instructions (``instructions[k]``
        for ``clients[k]``): what ``clients[k].step(...)`` returns, one at a time. With ``consume``, each
        update is handed to it as it arrives (the aggregator folds it into the average) and the returned
        updates carry no parameters (their loss, weight, buffers and metadata stay)."""

    @abc.abstractmethod
    def evaluate(self, clients: Sequence[AnyClient],
                 instructions: Sequence[EvaluateIns | list[torch.Tensor]]) -> list[EvalResult]:
        """Every client's scores of its own predictor from its instructions (:class:`EvaluateIns`, or just the
        parameters): what ``clients[k].evaluate(params)`` returns, after ``clients[k].adapt(params, lr)`` where
        ``adapt_lr`` is set (a client that never trained)."""

    def note(self) -> str:
        """What :attr:`declined` adds to the run's engine line ("" when every round ran this engine's way)."""
        return "".join(f"; from round {r}, rounds whose clients differ ran one client at a time ({why})"
                       for why, r in self.declined.items())

    @staticmethod
    def deliver(clients: Sequence[AnyClient], instructions: Sequence[FitIns | EvaluateIns]) -> None:
        """Hand each client the buffers its instructions carry (:meth:`Client.receive_buffers`), first thing."""
        for c, ins in zip(clients, instructions):
            if ins.buffers is not None:
                c.receive_buffers(ins.buffers)

    def evaluate_instructions(self, clients: Sequence[AnyClient],
                              instructions: Sequence[EvaluateIns | list[torch.Tensor]]) -> list[EvaluateIns]:
        """Each instruction as an :class:`EvaluateIns` (a bare parameter list: scored as it is), its buffers
        delivered (:meth:`deliver`)."""
        out = [ins if isinstance(ins, EvaluateIns) else EvaluateIns(ins) for ins in instructions]
        self.deliver(clients, out)
        return out

    # ---- the round, written once ------------------------------------------------------------------------------
    def start_losses(self, clients: Sequence[AnyClient], instructions: Sequence[FitIns]) -> list[float | None]:
        """Each client's mean train loss at the parameters it was sent, where its instructions ask for it
        (``report_start_loss``; before :meth:`prepare`: the server's model, the client's weights as they were)."""
        return [c.loss_at(ins.params) if ins.report_start_loss else None for c, ins in zip(clients, instructions)]

    def prepare(self, clients: Sequence[AnyClient], instructions: Sequence[FitIns]) -> list[FitIns]:
        """The instructions with the parameters each client trains from (:meth:`Client.receive`), after the
        sample and learner weights are set for them (:meth:`weigh`)."""
        received = [c.receive(ins.params) for c, ins in zip(clients, instructions)]
        out = [ins if p is ins.params else dataclasses.replace(ins, params=p) for ins, p in zip(instructions, received)]
        self.weigh(clients, [ins.params for ins in out])
        return out

    def train_phases(self, clients: Sequence[AnyClient], instructions: Sequence[FitIns],
                     phases: Sequence[FitPhase] | None = None) -> list[ClientUpdate]:
        """One round of local training of ``clients`` (of one type, with equal settings) from their prepared
        instructions: the type's phases (or ``phases``) in order; the updates, before :meth:`finish`."""
        params = [ins.params for ins in instructions]
        base = clients[0].sgd_config(instructions[0].lr)
        current, losses, trained_buffers = params, [], False
        for phase in phases if phases is not None else clients[0].fit_phases():
            sgd = phase.sgd(base)
            buffers = None
            if isinstance(phase, StepPhase):
                results, loss = self.joint_phase(clients, phase, sgd, instructions, current)
            else:
                starts = [c.phase_start(phase, ps, cur) for c, ps, cur in zip(clients, params, current)]
                results, loss, buffers = self.train_phase(clients, phase, sgd, instructions, starts)
            if phase.keep is not None:  # a personal model (its buffers stay with the client's copy as they were)
                for c, r in zip(clients, results):
                    c.set_kept(phase.keep, r)
                continue
            if buffers is not None:
                for c, b in zip(clients, buffers):
                    c.set_trained_buffers(b)
                trained_buffers = True
            current = results
            losses.append(loss)
        mean = self.mean_losses(losses, len(clients))
        return [ClientUpdate(c.client_id, current[k], float(c.n_train), mean[k], c.sent_buffers() if trained_buffers else None)
                for k, c in enumerate(clients)]

    def finish(self, clients: Sequence[AnyClient], instructions: Sequence[FitIns], updates: Sequence[ClientUpdate],
               start_losses: Sequence[float | None] | None = None) -> list[ClientUpdate]:
        """Each update with its start loss (:meth:`start_losses`) and its client's :meth:`Client.report`, then
        :meth:`Client.after_fit`."""
        out = []
        for k, (c, ins, update) in enumerate(zip(clients, instructions, updates)):
            if start_losses is not None and start_losses[k] is not None:
                update = dataclasses.replace(update, start_loss=start_losses[k])
            out.append(c.reported(ins, update))
            c.after_fit(ins, out[-1])
        return out

    # ---- what a backend computes -------------------------------------------------------------------------------
    @abc.abstractmethod
    def weigh(self, clients: Sequence[AnyClient], params: Sequence[list[torch.Tensor]]) -> None:
        """Set every client's sample and learner weights for the received ``params`` (the E- and M-steps:
        :meth:`Client.update_sample_weights` with the per-sample losses where :attr:`Client.needs_losses`,
        then :meth:`Client.update_learners_weights`)."""

    @abc.abstractmethod
    def train_phase(self, clients: Sequence[AnyClient], phase: LossPhase, sgd: SGDConfig, instructions: Sequence[FitIns],
                    starts: Sequence[list[torch.Tensor]]) -> tuple[list[list[torch.Tensor]], Any, list | None]:
        """A phase of SGD steps on every client's batches from ``starts``, with its local terms and momentum
        slot: per client its learners' parameters, the phase's loss (the backend's own form, for
        :meth:`mean_losses`) and per client its learners' buffers after training (None for a model without)."""

    @abc.abstractmethod
    def joint_phase(self, clients: Sequence[AnyClient], phase: StepPhase, sgd: SGDConfig, instructions: Sequence[FitIns],
                    previous: Sequence[list[torch.Tensor]]) -> tuple[list[list[torch.Tensor]], Any]:
        """A phase with the client type's own step (:class:`StepPhase`): per client its learners'
        parameters, and the phase's loss."""

    @abc.abstractmethod
    def mean_losses(self, losses: list[Any], n_clients: int) -> list[float]:
        """Per client, the mean of its sent-on phases' losses (0.0 without any)."""
