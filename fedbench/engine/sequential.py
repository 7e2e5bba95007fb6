"""The one-at-a-time backend: each client trains and is scored in turn, in the workspace learners.

It is the reference the batched backend is tested against, and the engine a run gets where that one
does not apply or does not pay (``fedbench show`` says which and why). A round of one client is the round
driver of :class:`fedbench.engine.base.Engine` over that client alone (:meth:`Client.step` runs it); this
module supplies its steps: autograd through the workspace learners (:meth:`LearnersEnsemble.fit_epochs`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from fedbench.fl import memory
from fedbench.fl.messages import ClientUpdate, EvalResult, EvaluateIns, FitIns, FitPhase, LossPhase, StepPhase
from fedbench.engine.base import AnyClient, Consume, Engine
from fedbench.fl.dropout import batch_key, keyed, row_keys
from fedbench.fl.learner import SGDConfig, batch_loss, eager_grad, epoch_orders
from fedbench.fl.seeding import generator


class SequentialEngine(Engine):
    """Clients one at a time (:meth:`fedbench.fl.client.Client.step`, :meth:`fedbench.fl.client.Client.evaluate`)."""

    def __init__(self) -> None:
        self.declined = {}

    def fit(self, clients: Sequence[AnyClient], instructions: Sequence[FitIns],
            consume: Consume | None = None) -> list[ClientUpdate]:
        updates = []
        self.deliver(clients, instructions)
        for k, (c, ins) in enumerate(zip(clients, instructions)):
            # (a type overriding step with the older signature still runs when no start loss is asked for)
            update = (c.step(ins.params, ins.round, ins.lr, ins.extras, report_start_loss=True) if ins.report_start_loss
                      else c.step(ins.params, ins.round, ins.lr, ins.extras))
            if consume is not None:
                # folded in as it arrives: the round holds one running sum, not every client's parameters
                # (~0.9 GB for 100 clients of a 2.3 M-parameter model)
                consume(k, update)
                update = dataclasses.replace(update, params=[])
            updates.append(update)
            del update
            # a large model's freed training memory goes back between clients (glibc would keep it: ~1 GB of peak
            # on EMNIST with 100 clients), at most once in RELEASE_INTERVAL_S (each costs the next client its page
            # faults: fedbench.fl.memory)
            memory.release_if_large(ins.params, memory.RELEASE_INTERVAL_S)
        return updates

    def evaluate(self, clients: Sequence[AnyClient],
                 instructions: Sequence[EvaluateIns | list[torch.Tensor]]) -> list[EvalResult]:
        out = []
        for c, ins in zip(clients, self.evaluate_instructions(clients, instructions)):
            if ins.adapt_lr is not None:
                c.adapt(ins.params, ins.adapt_lr)
            out.append(c.evaluate(ins.params))
        return out

    # ---- the steps of the round driver, one client at a time -----------------------------------------------------
    def weigh(self, clients: Sequence[AnyClient], params: Sequence[list[torch.Tensor]]) -> None:
        for c, ps in zip(clients, params):
            losses = None
            if c.needs_losses:
                c.load(ps)
                losses = c.ensemble.per_sample_losses(c.data.train_x, c.data.train_y)
            c.update_sample_weights(losses)
            c.update_learners_weights()

    def train_phase(self, clients: Sequence[AnyClient], phase: LossPhase, sgd: SGDConfig, instructions: Sequence[FitIns],
                    starts: Sequence[list[torch.Tensor]]) -> tuple[list[list[torch.Tensor]], list[float], list]:
        results, losses, buffers = [], [], []
        for c, ins, start in zip(clients, instructions, starts):
            c.load(start)
            fits = c.ensemble.fit_epochs(
                c.data.train_x,
                c.data.train_y,
                c.samples_weights,
                sgd,
                generator(c.seed, phase.stream, ins.round, c.client_id),
                momentum=c.momentum_slot(phase.momentum),
                terms=c.terms(phase.term, ins.params, ins.extras),
                trainable=phase.trainable,
                sample_terms=c.terms(phase.sample_term, ins.params, ins.extras, per_sample=True),
                dropout_keys=(row_keys(c, phase.stream, ins.round, len(start))
                              if c.ensemble.learners[0].keyed_dropout else None),
            )
            c.set_momentum_slot(phase.momentum, [fit.momentum for fit in fits])
            results.append(c.ensemble.get_params())
            losses.append(sum(fit.loss for fit in fits) / len(fits))
            buffers.append(c.ensemble.get_buffers() if phase.keep is None else None)
        return results, losses, buffers

    def joint_phase(self, clients: Sequence[AnyClient], phase: StepPhase, sgd: SGDConfig, instructions: Sequence[FitIns],
                    previous: Sequence[list[torch.Tensor]]) -> tuple[list[list[torch.Tensor]], list[float]]:
        """:meth:`Client.joint_step`'s function on each batch of one order per epoch, autograd for its gradient."""
        results, losses = [], []
        for c, ins, prev in zip(clients, instructions, previous):
            learner, step = c.ensemble.learners[0], FitPhase.bound(phase.step, c)
            theta = torch.stack(c.joint_start(phase, ins.params, prev))
            momentum = c.joint_momentum(phase, theta)
            orders = epoch_orders(generator(c.seed, phase.stream, ins.round, c.client_id), sgd.epochs, c.n_train)
            row = None  # the client's step: its dropout masks (if any) from one row key
            if learner.keyed_dropout:
                row = torch.tensor(row_keys(c, phase.stream, ins.round, 1)[0], device=c.data.train_y.device)
            learner.model.train()
            total, steps = 0.0, 0
            for perm in orders.to(c.data.train_y.device):
                for idx in perm.split(sgd.batch_size):
                    if sgd.drops(idx.numel(), perm.numel()):
                        continue
                    ones = torch.ones(idx.numel(), dtype=theta.dtype, device=theta.device)
                    loss = batch_loss(learner.call, learner.task, c.data.train_x[idx], c.data.train_y[idx], ones,
                                      float(idx.numel()))
                    with keyed(None if row is None else batch_key(row, steps)):
                        theta, momentum, value = step(theta, momentum, eager_grad(loss), sgd)
                    total, steps = total + float(value), steps + 1
            c.set_momentum_slot(phase.momentum, list(momentum) if sgd.momentum > 0 else [None] * len(theta))
            results.append(c.joint_done(phase, [t.detach() for t in theta]))
            losses.append(total / max(steps, 1))
        return results, losses

    def mean_losses(self, losses: list[list[float]], n_clients: int) -> list[float]:
        return [sum(phase[k] for phase in losses) / len(losses) if losses else 0.0 for k in range(n_clients)]


#: the driver :meth:`Client.step` and :meth:`Client.fit` run a client through (it keeps no state of a run)
ONE_AT_A_TIME = SequentialEngine()
