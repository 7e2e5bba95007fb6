"""The vectorised engine: local training of every (client, learner) pair of a round at once.

The one-at-a-time path (``Client.step`` / ``Client.evaluate``) is the
reference; this engine computes the same thing as batched tensor work:

* parameters of all K = clients x learners pairs are stacked as a (K, P) tensor
  and trained with ``torch.func.functional_call`` + ``vmap(grad_and_value)``;
* every pair uses the batch orders the reference would draw
  (:func:`fedbench.fl.learner.epoch_orders` on the client's round generator);
  pairs with fewer batches simply drop out of later steps, and a short last
  batch is padded with zero-weight samples while its loss is still divided by
  the real batch size, so the arithmetic is the reference's (to rounding);
* a step's rows run as few row sets as pay: rows with short batches form a set
  of their own only when padding them into the full rows' set would cost more
  than a second set's fixed overhead (:data:`SET_COST`);
* a client with at most B samples has one batch per epoch, all of its samples,
  whatever order the reference draws: such clients train from one padded block
  of their samples built once per run, each client's M learners under a nested
  ``vmap`` that reads the inputs once for all of them
  (:meth:`VectorizedEngine._whole_batches`; the sums run in another order, so
  the gradients agree to rounding);
* the client type's E- and M-steps run once a round for all its clients
  (:meth:`Client.update_weights`, batched where the type batches them);
* SGD follows ``torch.optim.SGD`` (weight decay added to the gradient, momentum
  buffer ``b <- mu * b + g``, step ``p <- p - lr * b``);
* the E-step losses and the evaluation are computed once per distinct set of
  parameters over the pooled samples of the clients that received it (all of
  them under server averaging); clients that each hold their own parameters
  (decentralised training, a personal predictor) get their E-step losses and their scores many
  clients per pass;
* on a CPU the linear layers train in a row-major layout (:class:`RowMajorLinear`)
  and each step's inputs are gathered into one reused buffer (:meth:`VectorizedEngine._take`).

It applies when the model's buffers are floating-point (BatchNorm statistics: every
client's copy is a row like its parameters, updated in place by its batches; rows
are then batched only with rows of the same batch size, since a padded sample
would enter the batch statistics) and its dropout layers are keyed (:mod:`fedbench.fl.dropout`: each row's
masks drawn from its own key, as the one-at-a-time path draws them), and the client
type keeps the reference's ``step``, ``fit`` and ``sgd_config``: its local
objective may add a term (:meth:`Client.local_term`, run here under ``vmap``
over all rows), train in several phases (:class:`LossPhase`), replace the SGD
step by its own pure function of one client's stacked learners (:class:`StepPhase`
``step``, run under ``vmap`` over clients) and update its own state after
training (:meth:`Client.after_fit`); otherwise
:func:`fedbench.engine.vectorisable` (and, per round, :class:`ClientCheck`) send the run to the
one-at-a-time path and say why.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from fedbench.fl.data import FederatedData
from fedbench.engine.base import Engine
from fedbench.engine.sequential import SequentialEngine
from fedbench.engine.vectorized.check import ClientCheck
from fedbench.engine.vectorized.evaluate import Evaluate
from fedbench.engine.vectorized.layout import Layout, _state_buffers
from fedbench.engine.vectorized.schedule import Schedule
from fedbench.engine.vectorized.train import Train
from fedbench.fl.dropout import has_keyed
from fedbench.fl.learner import uses_batch_statistics
from fedbench.fl.tasks import Task


class VectorizedEngine(Layout, Schedule, Train, Evaluate, Engine):
    """Batched local training, E-step losses and evaluation for one run."""

    def __init__(self, model: nn.Module, task: Task, data: FederatedData, seed: int) -> None:
        self.model = model
        self.task = task
        self.data = data
        self.seed = seed
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        self.shapes = [p.shape for n, p in model.named_parameters() if p.requires_grad]
        self.sizes = [math.prod(s) for s in self.shapes]
        #: the per-client buffers (BatchNorm statistics), passed per row like the parameters
        buffers = _state_buffers(model)
        self.buffer_names = [n for n, _ in buffers]
        self.buffer_shapes = [b.shape for _, b in buffers]
        self.buffer_sizes = [math.prod(s) for s in self.buffer_shapes]
        #: whether a batch's statistics enter the model (BatchNorm in training): then rows are batched only
        #: with rows of the same batch size (no padding) and a lone last sample is skipped, as the reference does
        self.batch_stats = uses_batch_statistics(model)
        #: whether the model has keyed dropout layers (:mod:`fedbench.fl.dropout`): each row's batches then
        #: draw their masks from the row's key, as the one-at-a-time path does
        self.keyed_dropout = has_keyed(model)
        self.device = next(model.parameters()).device
        #: what a padded sample costs in a training step, in input elements (:data:`SET_COST`)
        self.sample_cost = max(1, data.train_x[0].numel() if len(data.train_x) else 1, sum(self.sizes))
        self.train_sizes = data.train_sizes().tolist()
        self.test_sizes = data.test_sizes().tolist()
        #: the reused buffer of :meth:`_take`
        self._scratch: torch.Tensor | None = None
        #: per input shape: (logits, twice the widest layer output) of one sample (:meth:`_per_sample`)
        self._sample_cost: dict[tuple, tuple[int, int]] = {}
        #: :meth:`_whole_block`'s blocks, by batch size
        self._blocks: dict[tuple, tuple] = {}
        #: why rounds were trained one client at a time (:class:`ClientCheck`), each with its first round
        self.declined: dict[str, int] = {}
        self.check = ClientCheck()
        #: the one-at-a-time path, for rounds whose clients cannot share one batched step
        self.one_at_a_time = SequentialEngine()
