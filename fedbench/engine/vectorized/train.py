"""One round of local training for every (client, learner) row at once: the phases a client type lists,
each a loop of SGD steps over the rows' scheduled batches, or a client's own step under ``vmap``."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence

import numpy as np
import torch
from torch.func import grad_and_value, vmap

from fedbench.fl.client import Client, ClientUpdate, FitIns, FitPhase, LossPhase, StepPhase
from fedbench.fl.dropout import batch_key, keyed, row_keys
from fedbench.engine.base import Consume
from fedbench.engine.vectorized.layout import RowMajorLinear
from fedbench.fl.learner import Batch, SGDConfig, batch_loss, captured, representation_module, representer, sgd_update


class Train:
    """Local training (a mixin of :class:`fedbench.engine.vectorized.VectorizedEngine`)."""

    def fit(self, clients: Sequence[Client], instructions: Sequence[FitIns],
            consume: Consume | None = None) -> list[ClientUpdate]:
        """What ``[c.step(i.params, i.round, i.lr, i.extras) for c, i in zip(clients, instructions)]`` returns,
        batched (:meth:`fedbench.engine.base.Engine.fit`)."""
        if not clients:
            return []
        why = self.check.why_not(clients, instructions)
        if why is not None:  # the batched step would run the first client's term for all: decline, one at a time
            self.declined.setdefault(why, instructions[0].round)
            return self.one_at_a_time.fit(clients, instructions, consume)
        updates = self._fit_batched(clients, instructions)
        if consume is None:
            return updates
        for k, update in enumerate(updates):
            consume(k, update)
        return [dataclasses.replace(u, params=[]) for u in updates]

    def _fit_batched(self, clients: Sequence[Client], instructions: Sequence[FitIns]) -> list[ClientUpdate]:
        """:meth:`fit` for clients that share one batched step (:class:`fedbench.engine.vectorized.check.ClientCheck`):
        the round driver (:class:`fedbench.engine.base.Engine`) over all of them at once."""
        self.deliver(clients, instructions)
        start = self.start_losses(clients, instructions)
        instructions = self.prepare(clients, instructions)
        return self.finish(clients, instructions, self.train_phases(clients, instructions), start)

    def weigh(self, clients: Sequence[Client], params: Sequence[list[torch.Tensor]]) -> None:
        """The E-step losses of every client that needs them in batched passes, then each client type's
        :meth:`Client.update_weights` once for all its clients (batched where the type batches them)."""
        needing = [i for i, c in enumerate(clients) if c.needs_losses]
        losses = dict(zip(needing, self._train_losses([clients[i] for i in needing], [params[i] for i in needing])))
        by_type: dict[type, list[int]] = {}
        for i, c in enumerate(clients):
            by_type.setdefault(type(c), []).append(i)
        for cls, members in by_type.items():
            cls.update_weights([clients[i] for i in members], [losses.get(i) for i in members])

    def train_phase(self, clients: Sequence[Client], phase: LossPhase, sgd: SGDConfig, instructions: Sequence[FitIns],
                    starts: Sequence[list[torch.Tensor]]) -> tuple[list[list[torch.Tensor]], torch.Tensor, list | None]:
        """Every (client, learner) row's SGD steps of the phase at once (:meth:`_sgd`); the loss per client (C,)."""
        m = len(instructions[0].params)
        # everyone starts from the same list (server averaging): one copy repeated. Only a shortcut: rows
        # stacked from equal copies hold the same values, so how an aggregator built its lists never matters
        if all(ps is starts[0] for ps in starts):
            flat = torch.stack(starts[0]).repeat(len(clients), 1)
        else:
            flat = torch.stack([p for ps in starts for p in ps])  # (K, P), row = client-major, learner-minor
        slots = [c.momentum_slot(phase.momentum) or [None] * m for c in clients]
        buf = torch.stack([b if b is not None else torch.zeros_like(flat[0]) for bs in slots for b in bs])
        weights = [c.samples_weights for c in clients]
        # a per-sample term sees each row's own batch, and a dropout mask falls on the samples in the order of
        # the row's batch: the one-block path for one-batch clients shares a client's stored block between its
        # learners, so such phases take the per-step path
        whole = self._whole_fits(sgd.batch_size) and phase.sample_term is None and not self.keyed_dropout
        steps = self._schedule(clients, m, sgd.epochs, sgd.batch_size, instructions[0].round, phase.stream,
                               whole=whole, drop_last=sgd.drop_last)
        term, sample_term, ctx = None, None, None
        if phase.term is not None or phase.sample_term is not None:  # pure functions, vmapped over the rows
            term = FitPhase.bound(phase.term, clients[0])
            sample_term = FitPhase.bound(phase.sample_term, clients[0])
            rows = [row for c, ins in zip(clients, instructions) for row in c.term_context(ins.params, ins.extras)]
            ctx = {k: torch.stack([torch.as_tensor(row[k]) for row in rows]) for k in rows[0]}
        mask = None
        if phase.trainable is not None and not all(phase.trainable):  # (all trainable: no mask to apply)
            mask = torch.cat([torch.full((size,), bool(t)) for size, t in zip(self.sizes, phase.trainable)]).to(flat)
        bufs = self._buffers_of(clients)
        keys = self._dropout_keys(clients, m, phase.stream, instructions[0].round)
        new_flat, new_buf, loss_sum, n_steps = self._sgd(flat, buf, weights, steps, sgd, term, ctx, mask, bufs,
                                                         sample_term, keys)
        per_client_buf = new_buf.view(len(clients), m, -1)
        for ci, c in enumerate(clients):
            c.set_momentum_slot(phase.momentum, list(per_client_buf[ci]) if sgd.momentum > 0 else [None] * m)
        buffers = None
        if bufs is not None and phase.keep is None:  # a kept model's buffers are not the client's copy
            buffers = [list(rows.clone()) for rows in bufs.view(len(clients), m, -1)]
        results = [list(r) for r in new_flat.view(len(clients), m, -1)]
        return results, (loss_sum / n_steps.clamp_min(1)).view(len(clients), m).mean(dim=1), buffers

    def _dropout_keys(self, clients: Sequence[Client], m: int, stream: int, round_: int) -> torch.Tensor | None:
        """Each (client, learner) row's dropout key (:func:`fedbench.fl.dropout.row_key`), None for a model
        without keyed dropout layers."""
        if not self.keyed_dropout:
            return None
        return torch.tensor([k for c in clients for k in row_keys(c, stream, round_, m)], dtype=torch.int64,
                            device=self.device)

    def mean_losses(self, losses: list[torch.Tensor], n_clients: int) -> list[float]:
        return (torch.stack(losses).mean(dim=0) if losses else torch.zeros(n_clients)).tolist()

    def joint_phase(self, clients: Sequence[Client], phase: StepPhase, sgd: SGDConfig, instructions: Sequence[FitIns],
                    previous: Sequence[list[torch.Tensor]]) -> tuple[list[list[torch.Tensor]], torch.Tensor]:
        return self._fit_joint(clients, phase, sgd, instructions[0].round, [ins.params for ins in instructions], previous)

    def _fit_joint(self, clients: Sequence[Client], phase: StepPhase, sgd: SGDConfig, round_: int,
                   received: Sequence[list[torch.Tensor]], previous: Sequence[list[torch.Tensor]]
                   ) -> tuple[list[list[torch.Tensor]], torch.Tensor]:
        """A phase with its own step (:meth:`Client.joint_step`) for every client at once: the client's
        step function under ``vmap`` over clients, each on the batches of its one order per epoch."""
        stacks = torch.stack([torch.stack(c.joint_start(phase, r, p)) for c, r, p in zip(clients, received, previous)])
        n_rows = stacks.shape[1]
        bufs = torch.stack([c.joint_momentum(phase, rows) for c, rows in zip(clients, stacks)])
        steps = self._schedule(clients, 1, sgd.epochs, sgd.batch_size, round_, phase.stream,
                               drop_last=sgd.drop_last).to(stacks.device)
        step, task, call = FitPhase.bound(phase.step, clients[0]), self.task, self._logits
        keys = self._dropout_keys(clients, 1, phase.stream, round_)

        def one(theta, buf, x, y, w, denom, key=None):  # noqa: ANN001, ANN202
            with keyed(key):
                return step(theta, buf, grad_and_value(batch_loss(call, task, x, y, w, denom)), sgd)

        every = vmap(one)
        loss_sum = torch.zeros(len(clients), device=stacks.device)
        n_steps = np.zeros(len(clients), dtype=np.int64)
        self.model.train()
        for s in range(steps.counts.shape[1]):
            for rows in self._row_sets(steps.counts[:, s], steps.gidx.shape[2]):
                active, valid, x, y, _, denom = self._gather(steps, s, rows, stacks.dtype)
                theta, buf, value = every(stacks[active], bufs[active], x, y, valid.to(stacks.dtype), denom,
                                          *(() if keys is None else (batch_key(keys[active], s),)))
                stacks.index_copy_(0, active, theta.detach())
                bufs.index_copy_(0, active, buf.detach())
                loss_sum.index_add_(0, active, value.detach())
                n_steps[rows] += 1
        results = []
        for c, rows, buf in zip(clients, stacks, bufs):
            c.set_momentum_slot(phase.momentum, list(buf) if sgd.momentum > 0 else [None] * n_rows)
            results.append(c.joint_done(phase, list(rows)))
        return results, loss_sum / torch.from_numpy(n_steps).to(loss_sum).clamp_min(1)

    def _whole_grad(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor,
                    denom: torch.Tensor, layout) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: ANN001
        """Every row's gradient and batch loss for clients whose M learners share their batch: ``theta``
        (C * M, P), ``x`` (C, W, ...) and ``y`` one batch per client, ``w`` (C, M, W) sample weights,
        ``denom`` (C,) the real batch sizes. Under ``vmap`` over clients, then over the client's learners
        with the inputs shared (one matrix product per client for a linear layer, not M)."""
        c, m = x.shape[0], theta.shape[0] // max(1, x.shape[0])
        call = self._logits
        forward = vmap(vmap(lambda flat, inputs: call(flat, inputs), in_dims=(0, None)))
        labels = y.unsqueeze(1).expand(c, m, *y.shape[1:])
        grad, per_row = self._rows_grad(theta.view(c, m, -1), lambda t: forward(t, x), labels, w,
                                        denom.to(w.dtype).unsqueeze(1), layout)
        return grad.view(c * m, -1), per_row.view(-1)

    def _rows_grad(self, theta: torch.Tensor, forward, y: torch.Tensor, w: torch.Tensor, denom: torch.Tensor,
                   layout) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: ANN001
        """Every row's gradient and batch loss, for both step paths: ``forward(theta)`` gives the logits of
        rows ``theta`` (..., P) on their batches (..., W, ...), scored against labels ``y`` (..., W, ...),
        weighted by ``w`` (..., W) and summed over each batch, divided by ``denom`` (...): the real batch
        sizes. Rows are independent, so the gradient of the sum of the rows' batch losses with respect to
        the stacked parameters is every row's own gradient. A ``forward`` that returns ``(logits, extra)``
        adds ``extra`` (..., W) to the samples' losses before weighting (a per-sample term)."""
        lead = w.dim()
        theta = theta.detach().requires_grad_(True)
        with torch.enable_grad():
            with layout():
                logits = forward(theta)
            logits, extra = logits if isinstance(logits, tuple) else (logits, None)
            losses = self.task.loss(logits.reshape(-1, *logits.shape[lead:]), y.reshape(-1, *y.shape[lead:])).view(w.shape)
            if extra is not None:
                losses = losses + extra
            per_row = (losses * w).sum(dim=-1) / denom
            (grad,) = torch.autograd.grad(per_row.sum(), theta)
        return grad, per_row.detach()

    def _sgd(self, flat, buf, weights, steps, sgd, term, ctx, mask=None, bufs=None, sample_term=None,  # noqa: ANN001, ANN202
             keys=None):
        """Run every row's scheduled batches; returns new params, momentum buffers, loss sums and step counts.
        ``mask`` (P,): the coordinates that train (the others take no step, decay or momentum). ``bufs`` (K, B):
        every row's model buffers (BatchNorm statistics), updated in place by its batches. ``sample_term``
        (:meth:`Client.sample_term`): a per-sample term, run with each row's logits under ``vmap``. ``keys`` (K,):
        the rows' dropout keys (:func:`fedbench.fl.dropout.row_key`; batch ``s`` draws from ``batch_key(key, s)``)."""
        device = flat.device
        k = flat.shape[0]
        steps = steps.to(device)
        pooled = self._pooled_weights(weights, steps)
        plain_call = self._logits
        self.model.train()

        def model_call(t, x, state, key=None):  # noqa: ANN001, ANN202
            """One row's logits; its keyed dropout layers draw from ``key``."""
            with keyed(key):
                return plain_call(t, x, state)

        forward = vmap(model_call)

        # measured faster for the linear layers of models without BatchNorm, slower with it
        layout = RowMajorLinear if device.type == "cpu" and not self.batch_stats else contextlib.nullcontext

        if sample_term is not None:
            body = representation_module(self.model)

            def with_term(t, x, state, y, row_ctx, key=None):  # noqa: ANN001, ANN202
                """One row's logits and its per-sample term on its batch (the model's representation captured
                from the same forward)."""
                with keyed(key):
                    with captured(body) as seen:
                        logits = plain_call(t, x, state)
                    batch = Batch(x, y, seen[-1] if seen else None, representer(plain_call, body, x))
                    return logits, sample_term(t, row_ctx, batch)

            forward_term = vmap(with_term)

        def grad_fn(theta, x, y, w, denom, state, active, s):  # noqa: ANN001, ANN202
            key = () if keys is None else (batch_key(keys[active], s),)
            if sample_term is not None:
                row_ctx = {k: v[active] for k, v in ctx.items()}
                return self._rows_grad(theta, lambda t: forward_term(t, x, state, y, row_ctx, *key), y, w, denom, layout)
            return self._rows_grad(theta, lambda t: forward(t, x, state, *key), y, w, denom, layout)
        term_grad = vmap(grad_and_value(term)) if term is not None else None  # per row: d term / d theta, term
        loss_sum = torch.zeros(k, device=device)
        n_steps = np.zeros(k, dtype=np.int64)

        def apply(active, rows, theta, g, loss):  # noqa: ANN001, ANN202
            """The SGD step of ``active`` rows (``rows``: the same, in numpy) from ``theta`` with gradient ``g``."""
            if term is not None:  # the client type's local term, as the reference loop adds it to the loss
                term_g, term_v = term_grad(theta, {k: v[active] for k, v in ctx.items()})
                g = g + term_g
                loss = loss + term_v
            theta, rows_buf = sgd_update(theta, g, buf[active] if sgd.momentum > 0 else buf, sgd, mask)
            if sgd.momentum > 0:
                buf.index_copy_(0, active, rows_buf)
            flat.index_copy_(0, active, theta)
            loss_sum.index_add_(0, active, loss)
            n_steps[rows] += 1

        counts = steps.counts
        whole = self._whole_batches(steps, pooled)
        if whole is not None:  # these rows train below, from their clients' blocks
            counts = counts.copy()
            counts[whole[0]] = 0
        for s in range(counts.shape[1]):
            if whole is not None and steps.counts[whole[0][0], s]:  # (they all have a batch at an epoch's first step)
                for active, rows, x, y, w, denom in whole[1]:
                    theta = flat[active]
                    g, loss = self._whole_grad(theta, x, y, w, denom, layout)
                    apply(active, rows, theta, g, loss)
            for rows in self._row_sets(counts[:, s], steps.gidx.shape[2]):
                active, _, x, y, w, denom = self._gather(steps, s, rows, flat.dtype, pooled)
                theta = flat[active]
                state = self._split_buffers(None if bufs is None else bufs[active])
                g, loss = grad_fn(theta, x, y, w, denom, state, active, s)
                if bufs is not None:  # the batches' statistics, as the model left them
                    bufs.index_copy_(0, active, self._join_buffers(state))
                apply(active, rows, theta, g, loss)
        n_steps = torch.from_numpy(n_steps).to(device=device, dtype=loss_sum.dtype)
        return flat, buf, loss_sum, n_steps
