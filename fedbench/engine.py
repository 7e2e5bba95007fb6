"""The vectorised engine: local training of every (client, learner) pair of a round at once.

The one-at-a-time path (``Client.step`` / ``Client.evaluate``) is the
reference; this engine computes the same thing as batched tensor work:

* parameters of all K = clients x learners pairs are stacked as a (K, P) tensor
  and trained with ``torch.func.functional_call`` + ``vmap(grad_and_value)``;
* every pair uses the batch orders the reference would draw
  (:func:`fedbench.learner.epoch_orders` on the client's round generator);
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
  (decentralised training) get their E-step losses many clients per pass and are evaluated
  per client (a client's learners then share one matrix product);
* on a CPU the linear layers train in a row-major layout (:class:`RowMajorLinear`)
  and each step's inputs are gathered into one reused buffer (:meth:`VectorizedEngine._take`).

It applies when the model's buffers are floating-point (BatchNorm statistics: every
client's copy is a row like its parameters, updated in place by its batches; rows
are then batched only with rows of the same batch size, since a padded sample
would enter the batch statistics) and it draws no dropout masks, and the client
type keeps the reference's ``step``, ``fit`` and ``sgd_config``: its local
objective may add a term (:meth:`Client.local_term`, run here under ``vmap``
over all rows), train in several phases (:class:`FitPhase`), replace the SGD
step by its own pure function of one client's stacked learners (``FitPhase``
``step``, run under ``vmap`` over clients) and update its own state after
training (:meth:`Client.after_fit`); otherwise
:func:`choose_engine` falls back to the one-at-a-time path and says why.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode
from torch.func import functional_call, grad_and_value, vmap

from fedbench import datacache
from fedbench.client import Client, ClientUpdate, EvalResult, FitIns, FitPhase
from fedbench.data import FederatedData, segment_sum
from fedbench.learner import (
    Batch, SGDConfig, batch_loss, captured, order_keys, representation_module, representer, sample_cost,
    sgd_update, uses_batch_statistics,
)
from fedbench.seeding import STREAM_TRAIN, generators
from fedbench.tasks import Task

#: input elements per chunk in no-grad passes (bounds activation memory for big inputs)
EVAL_BUDGET = 1 << 21
#: elements of layer outputs live at once in a no-grad pass: twice the widest layer output per sample (a layer's
#: input and output), times the samples (and learners) of the pass. A small conv net on 28x28 inputs holds ~50,000 per sample, so an
#: input-only bound (2,674 samples of 784 inputs per chunk) let one pass hold 0.5 GB of activations per learner
EVAL_ACTIVATIONS = 1 << 25
#: input elements gathered at most at once in a training step (bounds memory for big inputs)
ROW_BUDGET = 1 << 24
#: a row set's fixed cost in a training step, in padded input elements of a small model (a model's padded
#: sample costs max(its input elements, its parameters)): rows with short batches join the full ones when
#: padding them costs less (1.15-1.25x a round, measured by python benchmarks/row_sets.py)
SET_COST = 1 << 22
#: module types that run faster one client at a time on a CPU (measured by benchmarks/speed_synthetic.py)
CPU_SEQUENTIAL_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.RNNBase)


#: on a CPU, models above this many trainable parameters train faster one client at a time: the
#: per-client matrix products are then large enough for BLAS, and batching them only adds copies
#: (FedEM on Fashion-MNIST, 2 threads: 25k parameters 1.3x faster vectorised, 51k even, 102k 1.4x
#: slower; python benchmarks/engine_crossover.py, results/engine_crossover.md)
CPU_SEQUENTIAL_PARAMS = 50_000


class RowMajorLinear(TorchFunctionMode):
    """Within it, ``F.linear(x, w, b)`` on a batch of inputs is computed as ``(w @ x^T)^T + b``: the same
    product, whose gradient for ``w`` autograd then forms as ``grad^T @ x`` over ``x`` as stored. Under
    ``vmap`` the plain form leaves autograd ``x^T @ grad``, a product over the transposed inputs that a CPU
    BLAS runs slowly when the layer has few outputs: forward and backward together 1.5-2.1x faster with
    1 to 10 outputs (the synthetic benchmark's linear model has 1), the same with 32 or 200
    (``python benchmarks/linear_layout.py``). The engine trains under it on a CPU, for models without
    BatchNorm (an MLP with BatchNorm ran slower). The sums are grouped differently: the gradients agree
    to rounding (about 1e-5 of values near 100), not bit for bit."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        if func is F.linear and args[0].dim() >= 2:
            x, w = args[0], args[1]
            b = args[2] if len(args) > 2 else kwargs.get("bias")
            out = torch.matmul(w, x.mT).mT.contiguous()
            return out if b is None else out + b
        return func(*args, **kwargs)


def prefers_sequential(model: nn.Module, device: torch.device) -> str | None:
    """Why the one-at-a-time path is expected to be faster for this model here, or None.

    On a CPU, batching many small convolutions or recurrent layers through vmap
    is slower than running them one client at a time (CIFAR10CNN: about 4x
    slower per round in benchmarks/speed_synthetic.py), and so is batching
    large dense layers (:data:`CPU_SEQUENTIAL_PARAMS`); on a GPU it pays.
    """
    if device.type == "cpu":
        slow = sorted({type(mod).__name__ for mod in model.modules() if isinstance(mod, CPU_SEQUENTIAL_MODULES)})
        if slow:
            return f"{', '.join(slow)} layers run faster one client at a time on a CPU"
        n = sum(p.numel() for p in model.parameters() if p.requires_grad)
        if n > CPU_SEQUENTIAL_PARAMS:
            return f"{n:,} parameters (> {CPU_SEQUENTIAL_PARAMS:,}) train faster one client at a time on a CPU"
    return None


def _state_buffers(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """The buffers a client keeps its own copy of (:meth:`fedbench.learner.Learner.get_buffers`): the
    floating-point ones, e.g. BatchNorm's running statistics (not its integer batch counter)."""
    return [(n, b) for n, b in model.named_buffers() if b.is_floating_point()]


def vectorisable(model: nn.Module, clients: Sequence[Client]) -> str | None:
    """None if the vectorised engine can run this model and these clients, else the reason."""
    kept = {id(b) for _, b in _state_buffers(model)}
    other = [n for n, b in model.named_buffers() if id(b) not in kept and not n.endswith("num_batches_tracked")]
    if other:
        return f"model {type(model).__name__} has non-floating-point buffers ({', '.join(other)})"
    if any(isinstance(m, nn.modules.dropout._DropoutNd) for m in model.modules()):
        return f"model {type(model).__name__} draws dropout masks, which the reference draws per client and batch"
    for cls in {type(c) for c in clients}:
        for name in ("step", "fit", "sgd_config"):  # training; a client's own evaluate runs per client
            if getattr(cls, name) is not getattr(Client, name):
                return f"client type {cls.__name__} overrides {name}()"
    if kept and clients and any(phase.step is not None for phase in clients[0].fit_phases()):
        return f"client type {type(clients[0]).__name__} trains with its own step, not yet vectorised with buffers (BatchNorm)"
    return None


def _same(a: object, b: object) -> bool:
    """Whether two values a client method returned are the same: tensors bit for bit, anything else by ``==``."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and bool(torch.equal(a, b))
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _probe_grad(point: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed gradient function for probing a client's own step: the gradient and value of ``||p||^2 / 2 + sum(p)``."""
    return point + 1.0, 0.5 * point.pow(2).sum() + point.sum()


_SCALARS = (int, float, bool, str, type(None))


def _state_token(client: Client) -> tuple:
    """What a term may read from a client, cheaply: its scalar attributes' values and its tensor attributes'
    identities (state replaced between rounds; a tensor changed in place is not seen)."""
    return tuple((k, v if type(v) in _SCALARS else id(v)) for k, v in vars(client).items()
                 if type(v) in _SCALARS or isinstance(v, torch.Tensor))


class ClientCheck:
    """Whether the round's clients can share one batched step (:meth:`why_not`).

    The vectorised step runs the *first* client's optimiser settings, phases, local term and own step for
    every client of the round; that is the one-at-a-time result only if every client's are the same. This
    checks it, not assumes it: the clients' types, :meth:`Client.sgd_config` and :meth:`Client.fit_phases`
    must be equal, and every client's local term (and ``step``) must give, bit for bit, what a reference
    client's gives on the same inputs (the reference's context at the received parameters plus a fixed
    offset): a term reading a per-client attribute (``self.mu`` set per client) differs there. Per-client
    state a term reads through its context (:meth:`Client.term_context`) is batched per row, as it should
    be. A client found equal is probed again only when its attributes change (:func:`_state_token`).
    """

    def __init__(self) -> None:
        self.reference: Client | None = None
        self.reference_token: tuple = ()
        #: client id -> its state token when its term and step were last found equal to the reference's
        self.equal: dict[int, tuple] = {}
        self._offset: torch.Tensor | None = None

    def _probe(self, like: torch.Tensor) -> torch.Tensor:
        if self._offset is None or self._offset.shape != like.shape:
            gen = torch.Generator().manual_seed(20211206)
            self._offset = (0.1 + torch.rand(like.shape, generator=gen, dtype=torch.float64)).to(like)
        return like + self._offset.to(like.device)

    def _batch(self, client: Client, like: torch.Tensor) -> Batch:
        """A fixed probe :class:`Batch` for per-sample terms: two of ``client``'s train samples, fixed
        features, and a representation at other parameters that depends on them (the same for every client)."""
        data = client.data
        x, y = data.train_x[:2], data.train_y[:2]
        gen = torch.Generator().manual_seed(20211207)
        features = (0.1 + torch.rand(len(y), 3, generator=gen, dtype=torch.float64)).to(like)
        return Batch(x, y, features, lambda point: features * (1.0 + point.double().mean().to(like)))

    def why_not(self, clients: Sequence[Client], instructions: Sequence[FitIns]) -> str | None:
        """None if every client of the round computes what the first one would, else why not."""
        first, lr = clients[0], instructions[0].lr
        cls = type(first)
        for c in clients[1:]:
            if type(c) is not cls:
                return f"client {c.client_id} is a {type(c).__name__}, client {first.client_id} a {cls.__name__}"
        # the base class's settings and phases read only the run's (shared) training settings and the type
        if cls.sgd_config is not Client.sgd_config or any(c.train is not first.train for c in clients):
            cfg = first.sgd_config(lr)
            for c in clients[1:]:
                if c.sgd_config(lr) != cfg:
                    return f"client {c.client_id}'s SGD settings differ from client {first.client_id}'s ({c.sgd_config(lr)} vs {cfg})"
        phases = first.fit_phases()
        if cls.fit_phases is not Client.fit_phases:
            for c in clients[1:]:
                if c.fit_phases() != phases:
                    return f"client {c.client_id}'s fit phases differ from client {first.client_id}'s"
        probed = [p for p in phases if p.term is not None or p.step is not None or p.sample_term is not None]
        if not probed:
            return None
        if self.reference is None or type(self.reference) is not cls or _state_token(self.reference) != self.reference_token:
            self.reference, self.reference_token, self.equal = first, _state_token(first), {}
        ref, ins = self.reference, instructions[0]
        tokens = [(c, _state_token(c)) for c in clients]
        todo = [(c, t) for c, t in tokens if self.equal.get(c.client_id) != t and c is not ref]
        if not todo:
            return None
        for phase in probed:
            probes = []  # (method name, what it is, its probe arguments)
            if phase.term is not None:
                args = (self._probe(ins.params[0]), ref.term_context(ins.params, ins.extras)[0])
                probes.append((phase.term, "local term", args))
            if phase.sample_term is not None:
                args = (self._probe(ins.params[0]), ref.term_context(ins.params, ins.extras)[0], self._batch(ref, ins.params[0]))
                probes.append((phase.sample_term, "per-sample term", args))
            if phase.step is not None:
                rows = torch.stack([self._probe(p) for p in ref.joint_start(phase, ins.params, ins.params)])
                probes.append((phase.step, "own step", (rows, torch.zeros_like(rows), _probe_grad, phase.sgd(ref.sgd_config(lr)))))
            for name, what, args in probes:
                want = getattr(ref, name)(*args)
                for c, _ in todo:
                    if not _same(getattr(c, name)(*args), want):
                        return (f"client {c.client_id}'s {what} ({name}) computes something else than client "
                                f"{ref.client_id}'s on the same inputs: it reads a per-client value")
        self.equal.update((c.client_id, t) for c, t in todo)
        return None


def _buckets(count: np.ndarray | torch.Tensor, batch: int, samples_per_chunk: int, merge_padding: int = 0) -> list[np.ndarray]:
    """Row indices with a non-empty batch, grouped by batch size into (0, B/2] and (B/2, B], each group
    cut into as few chunks of at most ``samples_per_chunk`` padded samples as it needs, of even sizes.

    A group is a row set: one gather and one vmapped step, whose fixed cost (dispatch, vmap, autograd)
    does not depend on its size. The short group therefore joins the long one when that pads its rows
    by at most ``merge_padding`` samples in all: the padding costs less than the second row set.
    (In numpy: these are a few dozen tiny operations per step, each several times cheaper than torch's.)"""
    count = np.asarray(count)
    rows = np.flatnonzero(count > 0)
    if not len(rows):
        return []
    c = count[rows]
    short = c <= batch // 2
    n_short = int(short.sum())
    groups = [(rows, batch // 2 if n_short == len(rows) else batch)]
    if 0 < n_short < len(rows):
        added = n_short * (int(c.max()) - int(c[short].max()))
        if added > merge_padding:
            groups = [(rows[short], batch // 2), (rows[~short], batch)]
    out = []
    for g, width in groups:
        out.extend(np.array_split(g, math.ceil(len(g) / max(1, samples_per_chunk // max(width, 1)))))
    return out


@dataclasses.dataclass
class _Steps:
    """A phase's batches, as its step loop reads them: ``gidx`` (K, S, B), the global index of the sample in
    every row's every step's every batch slot, a row's valid samples first (slots after them hold the
    row's first sample, with weight 0; slots of a step the row idles in are never read); ``counts`` (K,
    S), a numpy array, the valid samples there (the row sets are cut from it on the host, without a
    device round trip per step); ``first`` (K,), every row's first sample."""

    gidx: torch.Tensor
    counts: np.ndarray
    first: torch.Tensor
    #: positions (in the round's clients) of the clients whose batch is always their whole data (n <= B), and
    #: their ids; the step loop may train them from :meth:`VectorizedEngine._whole_block` instead
    whole: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    whole_ids: tuple[int, ...] = ()
    #: rows per client (its learners)
    m: int = 1

    def to(self, device: torch.device) -> _Steps:
        return dataclasses.replace(self, gidx=self.gidx.to(device), first=self.first.to(device))


def _mix(weights: torch.Tensor, proba: torch.Tensor, dim: int) -> torch.Tensor:
    """The mixture ``sum_m pi_m p_m``: ``weights`` (its learner axis at ``dim``) broadcast over ``proba``'s
    trailing axes, summed over ``dim``."""
    return (weights.reshape(*weights.shape, *([1] * (proba.dim() - weights.dim()))) * proba).sum(dim=dim)


def _eval_results(clients: Sequence[Client], scores: dict[str, torch.Tensor]) -> list[EvalResult]:
    """Per client, its :class:`EvalResult` from ``scores[split]`` (2, C): mean loss and accuracy."""
    return [EvalResult(c.client_id, c.n_train, c.data.n_test, float(scores["train"][0, k]), float(scores["train"][1, k]),
                       float(scores["test"][0, k]), float(scores["test"][1, k])) for k, c in enumerate(clients)]


class VectorizedEngine:
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

    def note(self) -> str:
        """What :attr:`declined` adds to the run's engine line ("" when every round ran batched)."""
        return "".join(f"; from round {r}, rounds whose clients differ ran one client at a time ({why})"
                       for why, r in self.declined.items())

    # ---- parameters ---------------------------------------------------------
    def _unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """(..., P) -> {name: (..., *shape)} views."""
        lead = flat.shape[:-1]
        return {n: c.reshape(*lead, *s) for n, c, s in zip(self.names, flat.split(self.sizes, dim=-1), self.shapes)}

    def _logits(self, flat: torch.Tensor, x: torch.Tensor, buffers: Sequence[torch.Tensor] = ()) -> torch.Tensor:
        """The model at parameters ``flat`` (and ``buffers``, from :meth:`_split_buffers`: a BatchNorm in
        training updates them in place) on ``x``."""
        tensors = self._unflatten(flat)
        tensors.update(zip(self.buffer_names, buffers))
        return functional_call(self.model, tensors, (x,))

    def _per_sample(self, flat: torch.Tensor, x: torch.Tensor, buffers: Sequence[torch.Tensor]) -> tuple[int, int]:
        """One sample's logits and twice its widest layer output at ``flat`` (:func:`fedbench.learner.sample_cost`,
        one probe per input shape)."""
        if not len(x):
            return 1, 1
        shape = tuple(x.shape[1:])
        if shape not in self._sample_cost:
            self._sample_cost[shape] = sample_cost(self.model, lambda: self._logits(flat, x[:1], [b.clone() for b in buffers]))
        return self._sample_cost[shape]

    def _split_buffers(self, flat: torch.Tensor | None) -> list[torch.Tensor]:
        """(K, B) -> one contiguous (K, *shape) tensor per buffer (an in-place update under ``vmap`` reaches
        a contiguous tensor, not a strided view of a wider one); no buffers ([]) for None."""
        if flat is None:
            return []
        return [c.reshape(flat.shape[0], *s).contiguous() for c, s in
                zip(flat.split(self.buffer_sizes, dim=-1), self.buffer_shapes)]

    def _join_buffers(self, parts: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.cat([p.reshape(p.shape[0], -1) for p in parts], dim=1)

    def _buffers_of(self, clients: Sequence[Client]) -> torch.Tensor | None:
        """Every client's buffers, one row per (client, learner), or None for a buffer-free model."""
        if not self.buffer_names:
            return None
        return torch.stack([b for c in clients for b in c.buffers])

    # ---- one round of training ------------------------------------------------
    def step_clients(self, clients: Sequence[Client], instructions: Sequence[FitIns]) -> list[ClientUpdate]:
        """What ``[c.step(i.params, i.round, i.lr, i.extras) for c, i in zip(clients, instructions)]`` returns, batched."""
        if not clients:
            return []
        why = self.check.why_not(clients, instructions)
        if why is not None:  # the batched step would run the first client's term for all: decline, one at a time
            self.declined.setdefault(why, instructions[0].round)
            return [c.step(ins.params, ins.round, ins.lr, ins.extras) for c, ins in zip(clients, instructions)]
        received = [c.receive(ins.params) for c, ins in zip(clients, instructions)]
        instructions = [ins if p is ins.params else dataclasses.replace(ins, params=p) for ins, p in zip(instructions, received)]
        params = [ins.params for ins in instructions]
        round_, lr = instructions[0].round, instructions[0].lr
        needing = [i for i, c in enumerate(clients) if c.needs_losses]
        losses = dict(zip(needing, self._train_losses([clients[i] for i in needing], [params[i] for i in needing])))
        by_type: dict[type, list[int]] = {}
        for i, c in enumerate(clients):
            by_type.setdefault(type(c), []).append(i)
        for cls, members in by_type.items():  # a client type's E- and M-steps, batched where it batches them
            cls.update_weights([clients[i] for i in members], [losses.get(i) for i in members])
        base = clients[0].sgd_config(lr)
        m = len(params[0])
        current = params
        losses: list[torch.Tensor] = []
        trained_buffers = False
        for phase in clients[0].fit_phases():
            if phase.step is not None:
                results, mean = self._fit_joint(clients, phase, phase.sgd(base), round_, params, current)
                if phase.keep is not None:
                    for c, r in zip(clients, results):
                        c.kept[phase.keep] = r
                    continue
                current = results
                losses.append(mean)
                continue
            starts = [c.phase_start(phase, ps, cur) for c, ps, cur in zip(clients, params, current)]
            if all(ps is starts[0] for ps in starts):  # everyone starts from the same parameters (server averaging)
                flat = torch.stack(starts[0]).repeat(len(clients), 1)
            else:
                flat = torch.stack([p for ps in starts for p in ps])  # (K, P), row = client-major, learner-minor
            slots = [c.momentum_slot(phase.momentum) or [None] * m for c in clients]
            buf = torch.stack([b if b is not None else torch.zeros_like(flat[0]) for bs in slots for b in bs])
            sgd = phase.sgd(base)
            weights = [c.samples_weights for c in clients]
            # a per-sample term sees each row's own batch: the one-block path for one-batch clients shares
            # a client's batch between its learners, so such phases take the per-step path
            whole = self._whole_fits(sgd.batch_size) and phase.sample_term is None
            steps = self._schedule(clients, m, sgd.epochs, sgd.batch_size, round_, phase.stream,
                                   whole=whole, drop_last=sgd.drop_last)
            term, sample_term, ctx = None, None, None
            if phase.term is not None or phase.sample_term is not None:  # pure functions, vmapped over the rows
                term = getattr(clients[0], phase.term) if phase.term is not None else None
                sample_term = getattr(clients[0], phase.sample_term) if phase.sample_term is not None else None
                rows = [row for c, ins in zip(clients, instructions) for row in c.term_context(ins.params, ins.extras)]
                ctx = {k: torch.stack([torch.as_tensor(row[k]) for row in rows]) for k in rows[0]}
            mask = None
            if phase.trainable is not None and not all(phase.trainable):  # (all trainable: no mask to apply)
                mask = torch.cat([torch.full((size,), bool(t)) for size, t in zip(self.sizes, phase.trainable)]).to(flat)
            bufs = self._buffers_of(clients)
            new_flat, new_buf, loss_sum, n_steps = self._sgd(flat, buf, weights, steps, sgd, term, ctx, mask, bufs,
                                                             sample_term)
            results = list(new_flat.view(len(clients), m, -1))
            per_client_buf = new_buf.view(len(clients), m, -1)
            for ci, c in enumerate(clients):
                c.set_momentum_slot(phase.momentum, list(per_client_buf[ci]) if sgd.momentum > 0 else [None] * m)
            if phase.keep is not None:  # its buffers go with it, as in the reference
                for c, r in zip(clients, results):
                    c.kept[phase.keep] = list(r)
                continue
            if bufs is not None:
                for c, rows in zip(clients, bufs.view(len(clients), m, -1)):
                    c.buffers = list(rows.clone())
                trained_buffers = True
            current = [list(r) for r in results]
            losses.append((loss_sum / n_steps.clamp_min(1)).view(len(clients), m).mean(dim=1))
        mean_loss = (torch.stack(losses).mean(dim=0) if losses else torch.zeros(len(clients))).tolist()
        updates = []
        for ci, c in enumerate(clients):
            updates.append(c.reported(instructions[ci], ClientUpdate(c.client_id, current[ci], float(c.n_train), mean_loss[ci],
                                                                     c.sent_buffers() if trained_buffers else None)))
            c.after_fit(instructions[ci], updates[-1])
        return updates

    def _fit_joint(self, clients: Sequence[Client], phase: FitPhase, sgd: SGDConfig, round_: int,
                   received: Sequence[list[torch.Tensor]], previous: Sequence[list[torch.Tensor]]
                   ) -> tuple[list[list[torch.Tensor]], torch.Tensor]:
        """A phase with its own step (:meth:`Client.joint_step`) for every client at once: the client's
        step function under ``vmap`` over clients, each on the batches of its one order per epoch."""
        stacks = torch.stack([torch.stack(c.joint_start(phase, r, p)) for c, r, p in zip(clients, received, previous)])
        n_rows = stacks.shape[1]
        bufs = torch.stack([c.joint_momentum(phase, rows) for c, rows in zip(clients, stacks)])
        steps = self._schedule(clients, 1, sgd.epochs, sgd.batch_size, round_, phase.stream,
                               drop_last=sgd.drop_last).to(stacks.device)
        step, task, call = getattr(clients[0], phase.step), self.task, self._logits

        def one(theta, buf, x, y, w, denom):  # noqa: ANN001, ANN202
            return step(theta, buf, grad_and_value(batch_loss(call, task, x, y, w, denom)), sgd)

        every = vmap(one)
        loss_sum = torch.zeros(len(clients), device=stacks.device)
        n_steps = np.zeros(len(clients), dtype=np.int64)
        self.model.train()
        for s in range(steps.counts.shape[1]):
            for rows in self._row_sets(steps.counts[:, s], steps.gidx.shape[2]):
                active, valid, x, y, _, denom = self._gather(steps, s, rows, stacks.dtype)
                theta, buf, value = every(stacks[active], bufs[active], x, y, valid.to(stacks.dtype), denom)
                stacks.index_copy_(0, active, theta.detach())
                bufs.index_copy_(0, active, buf.detach())
                loss_sum.index_add_(0, active, value.detach())
                n_steps[rows] += 1
        results = []
        for c, rows, buf in zip(clients, stacks, bufs):
            c.set_momentum_slot(phase.momentum, list(buf) if sgd.momentum > 0 else [None] * n_rows)
            results.append(c.joint_done(phase, list(rows)))
        return results, loss_sum / torch.from_numpy(n_steps).to(loss_sum).clamp_min(1)

    def _schedule(
        self, clients: Sequence[Client], m: int, epochs: int, batch: int, round_: int, stream: int = STREAM_TRAIN,
        whole: bool = False, drop_last: bool = False,
    ) -> _Steps:
        """Every row's batches of the phase (:class:`_Steps`): rows client-major, learner-minor; steps
        epoch-major, ``epochs * nb_max`` of them.

        Each client's keys come from its own round generator exactly as in
        :func:`fedbench.learner.epoch_orders`. Clients with the same number of
        batches are sorted together, their keys padded with +inf to that many
        full batches, so one stable arg-sort per group gives every row its
        reference order first. Epoch e of every row occupies steps
        ``[e * nb_max, (e + 1) * nb_max)``; a client with fewer batches idles
        in the remaining slots.

        ``whole``: the clients with one batch (at most ``batch`` samples) are listed in ``whole`` instead, for
        the step loop to train from :meth:`_whole_block`; their orders are not drawn (a batch of all of a
        client's samples is the same batch in any order) and their slots are left unset.
        """
        sizes = [c.n_train for c in clients]
        nbs = [math.ceil(n / batch) for n in sizes]
        nb_max = max(max(nbs), 1)
        first = self.data.train_offsets[[c.client_id for c in clients]]
        # the slots of steps a row idles in are never read: left as allocated
        sched = torch.empty((len(clients), m, epochs, nb_max * batch), dtype=torch.long)
        groups: dict[int, list[int]] = {}
        for ci, nb in enumerate(nbs):
            if nb:
                groups.setdefault(nb, []).append(ci)
        gens = generators((self.seed, stream, round_), [c.client_id for c in clients])
        for nb, members in groups.items():
            if whole and nb == 1:
                continue
            keys = torch.full((len(members), m * epochs, nb * batch), math.inf, dtype=torch.float64)
            for row, ci in enumerate(members):
                order_keys(gens[ci], m * epochs, sizes[ci], out=keys[row, :, : sizes[ci]])
            # the keys are in [0, 1) or +inf, whose bit patterns order as int64 as the floats do: the same
            # order as sorting the floats, about 1.4x faster
            order = keys.view(torch.int64).argsort(dim=2, stable=True)
            # the +inf padding sorts last: the positions from a row's size on hold it; they become the
            # client's first sample (a padded slot, weight 0), the others its samples' global indices
            size = torch.tensor([sizes[ci] for ci in members]).view(-1, 1, 1)
            padding = torch.arange(nb * batch).view(1, 1, -1) >= size
            order.masked_fill_(padding, 0).add_(first[members].view(-1, 1, 1))
            sched[members, :, :, : nb * batch] = order.view(len(members), m, epochs, nb * batch)
        # real samples of every row's batch at every step: min(B, n - j * B) at batch j of each epoch
        n = np.asarray(sizes, dtype=np.int64)
        per_epoch = np.clip(n[:, None] - np.arange(nb_max)[None, :] * batch, 0, batch)  # (C, nb_max)
        if drop_last:
            per_epoch[(per_epoch < batch) & (n[:, None] > batch)] = 0
        counts = np.repeat(np.tile(per_epoch, (1, epochs)), m, axis=0)
        whole = np.flatnonzero((n > 0) & (n <= batch)) if whole else np.zeros(0, dtype=np.int64)
        return _Steps(sched.view(len(clients) * m, epochs * nb_max, batch), counts, first.repeat_interleave(m),
                      whole, tuple(clients[ci].client_id for ci in whole.tolist()), m)

    def _row_sets(self, count: np.ndarray, batch: int) -> list[np.ndarray]:
        """The rows with a batch in a step (``count``: every row's samples in it), in :func:`_buckets` (rows
        with short batches in a set of their own where that pays; chunks bounded by :data:`ROW_BUDGET` inputs).

        With batch statistics (BatchNorm) a padded sample would enter them: rows go together only with rows
        of the same batch size, and a batch of one sample is skipped (BatchNorm cannot train on it), as
        :meth:`fedbench.learner.Learner.fit_epochs` skips it."""
        per_chunk = ROW_BUDGET // max(1, self.data.train_x[0].numel())
        if not self.batch_stats:
            return _buckets(count, batch, per_chunk, SET_COST // self.sample_cost)
        count = np.where(count == 1, 0, count)
        out = []
        for size in np.unique(count).tolist():
            if size:
                rows = np.flatnonzero(count == size)
                out.extend(np.array_split(rows, math.ceil(len(rows) / max(1, per_chunk // size))))
        return out

    def _pooled_weights(self, weights: Sequence[torch.Tensor], steps: _Steps) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Sample weights as :meth:`_gather` reads them: ``weights`` (one (M, n) tensor per client, its M
        rows a block of rows) as one flat tensor, and per row the shift from a sample's global index to
        its weight's position there; or, when every sample has the same weight, that weight and None."""
        m = len(steps.first) // max(1, len(weights))
        sizes = torch.tensor([w.shape[1] for w in weights], dtype=torch.long)
        starts = torch.cumsum(sizes, 0) - sizes  # each client's first column in the pooled weights
        device = steps.gidx.device
        pooled = torch.cat(list(weights), dim=1).to(device)  # (M, N)
        if pooled.numel() and bool((pooled == pooled[0, 0]).all()):  # one weight for every sample (the plain client)
            return pooled[0, 0], None
        at = torch.arange(m).repeat(len(weights)) * pooled.shape[1] + starts.repeat_interleave(m)
        return pooled.view(-1), at.to(device) - steps.first

    def _whole_block(self, ids: Sequence[int], batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The train samples of clients ``ids`` (each with at most ``batch``), one padded row per client: inputs
        (C, W, ...), labels (C, W, ...), global sample indices (C, W; padding repeats the client's last
        sample) and sizes (C,), W the largest size. Built once per engine for every client of the data with
        at most ``batch`` samples, and indexed for a subset of them."""
        key = ("whole", batch)
        if key not in self._blocks:
            every = self._whole_clients(batch)
            sizes = torch.tensor([self.train_sizes[i] for i in every], dtype=torch.long)
            width = int(sizes.max()) if len(every) else 0
            starts = self.data.train_offsets[every] if every else torch.zeros(0, dtype=torch.long)
            gidx = starts.unsqueeze(1) + torch.minimum(torch.arange(width).unsqueeze(0), sizes.unsqueeze(1) - 1)
            x_all, y_all = self.data.train_x, self.data.train_y
            flat = gidx.view(-1).to(x_all.device)
            x = x_all.index_select(0, flat).view(len(every), width, *x_all.shape[1:])
            y = y_all.index_select(0, flat).view(len(every), width, *y_all.shape[1:])
            self._blocks[key] = ({cid: k for k, cid in enumerate(every)}, x, y, gidx.to(x_all.device), sizes.to(x_all.device))
        position, x, y, gidx, sizes = self._blocks[key]
        if len(ids) == len(position) and all(position[cid] == k for k, cid in enumerate(ids)):
            return x, y, gidx, sizes  # every such client, in order: no copy
        at = torch.tensor([position[cid] for cid in ids], dtype=torch.long, device=x.device)
        return x[at], y[at], gidx[at], sizes[at]

    def _take(self, x_all: torch.Tensor, gidx: torch.Tensor) -> torch.Tensor:
        """``x_all.index_select(0, gidx)``, written into a buffer this engine keeps and reuses: a fresh
        tensor of this size per step would be fresh pages from the operating system every time (in glibc,
        allocations over 32 MB are mapped anew and unmapped when freed), and faulting them in took about
        as long as the copy. The result is valid until the next call."""
        need = gidx.numel() * x_all[0].numel()
        buf = self._scratch
        if buf is None or buf.numel() < need or buf.dtype != x_all.dtype or buf.device != x_all.device:
            buf = self._scratch = torch.empty(need, dtype=x_all.dtype, device=x_all.device)
        return torch.index_select(x_all, 0, gidx, out=buf[:need].view(gidx.numel(), *x_all.shape[1:]))

    def _gather(self, steps: _Steps, s: int, rows: np.ndarray, dtype: torch.dtype,
                weights: tuple[torch.Tensor, torch.Tensor | None] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Step ``s``'s batches of ``rows``, padded only to the widest of them: the rows (a tensor), the
        valid mask, inputs, labels, sample weights (0 for padding; None without ``weights``, from
        :meth:`_pooled_weights`) and the real batch sizes (``dtype``)."""
        device = steps.gidx.device
        count = steps.counts[rows, s]
        width = int(count.max())
        active = torch.from_numpy(rows).to(device)
        n = torch.from_numpy(count).to(device)
        gidx = steps.gidx[active, s, :width]
        valid = torch.arange(width, device=device) < n.unsqueeze(1)
        w = None
        if weights is not None:
            pooled, shift = weights
            w = (pooled if shift is None else pooled[gidx + shift[active].unsqueeze(1)]) * valid
        x_all, y_all = self.data.train_x, self.data.train_y
        flat = gidx.view(-1)
        x = self._take(x_all, flat).view(*gidx.shape, *x_all.shape[1:])
        y = y_all.index_select(0, flat).view(*gidx.shape, *y_all.shape[1:])
        return active, valid, x, y, w, n.to(dtype)

    def _whole_clients(self, batch: int) -> list[int]:
        """The ids of the data's clients whose train data fit in one batch (1 to ``batch`` samples)."""
        return [i for i, n in enumerate(self.train_sizes) if 0 < n <= batch]

    def _whole_fits(self, batch: int) -> bool:
        """Whether clients with at most ``batch`` samples train from :meth:`_whole_block`: for a model
        without buffers (no batch statistics: a padded sample would enter them), when the block of every
        such client of the data stays within :data:`ROW_BUDGET` inputs."""
        if self.buffer_names or self.batch_stats:
            return False
        feat = max(1, self.data.train_x[0].numel())
        return len(self._whole_clients(batch)) * batch * feat <= ROW_BUDGET

    def _whole_batches(self, steps: _Steps, pooled: tuple[torch.Tensor, torch.Tensor | None]):  # noqa: ANN202
        """For the clients whose batch is always their whole data (:attr:`_Steps.whole`): their rows (numpy)
        and, per chunk of clients, (rows, rows in numpy, inputs (C, W, ...), labels, weights (C, M, W), sizes)
        from :meth:`_whole_block`; None when there are none (or the schedule did not list them:
        :meth:`_whole_fits`).

        Such a batch holds the same samples whatever the order the reference draws, only summed in
        another order (the gradients agree to rounding), and every learner of the client sees the same
        batch: its inputs are read once for all of them (:meth:`_whole_grad`), with no gather per step
        (``benchmarks/whole_batches.py`` measures it)."""
        if not len(steps.whole):
            return None
        batch = steps.gidx.shape[2]
        feat = max(1, self.data.train_x[0].numel())
        m = steps.m
        rows_np = (steps.whole[:, None] * m + np.arange(m)[None, :]).reshape(-1)
        x, y, gidx, sizes = self._whole_block(steps.whole_ids, batch)
        device, width = steps.gidx.device, x.shape[1]
        valid = torch.arange(width, device=device).unsqueeze(0) < sizes.unsqueeze(1)  # (C, W)
        weights, shift = pooled
        rows = torch.from_numpy(rows_np).to(device)
        if shift is None:
            w = (weights * valid).unsqueeze(1).expand(len(sizes), m, width)
        else:
            w = weights[gidx.unsqueeze(1) + shift[rows].view(-1, m, 1)] * valid.unsqueeze(1)
        per_chunk = max(1, ROW_BUDGET // (width * feat))
        chunks = []
        for part in np.array_split(np.arange(len(sizes)), math.ceil(len(sizes) / per_chunk)):
            at = torch.from_numpy(part).to(device)
            r = rows_np.reshape(-1, m)[part].reshape(-1)
            chunks.append((torch.from_numpy(r).to(device), r, x[at] if len(part) < len(sizes) else x,
                           y[at] if len(part) < len(sizes) else y, w[at], sizes[at]))
        return rows_np, chunks

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

    def _sgd(self, flat, buf, weights, steps, sgd, term, ctx, mask=None, bufs=None, sample_term=None):  # noqa: ANN001, ANN202
        """Run every row's scheduled batches; returns new params, momentum buffers, loss sums and step counts.
        ``mask`` (P,): the coordinates that train (the others take no step, decay or momentum). ``bufs`` (K, B):
        every row's model buffers (BatchNorm statistics), updated in place by its batches. ``sample_term``
        (:meth:`Client.sample_term`): a per-sample term, run with each row's logits under ``vmap``."""
        device = flat.device
        k = flat.shape[0]
        steps = steps.to(device)
        pooled = self._pooled_weights(weights, steps)
        model_call = self._logits
        self.model.train()
        forward = vmap(model_call)

        # measured faster for the linear layers of models without BatchNorm, slower with it
        layout = RowMajorLinear if device.type == "cpu" and not self.batch_stats else contextlib.nullcontext

        if sample_term is not None:
            body = representation_module(self.model)

            def with_term(t, x, state, y, row_ctx):  # noqa: ANN001, ANN202
                """One row's logits and its per-sample term on its batch (the model's representation captured
                from the same forward)."""
                with captured(body) as seen:
                    logits = model_call(t, x, state)
                batch = Batch(x, y, seen[-1] if seen else None, representer(model_call, body, x))
                return logits, sample_term(t, row_ctx, batch)

            forward_term = vmap(with_term)

        def grad_fn(theta, x, y, w, denom, state, active):  # noqa: ANN001, ANN202
            if sample_term is not None:
                row_ctx = {k: v[active] for k, v in ctx.items()}
                return self._rows_grad(theta, lambda t: forward_term(t, x, state, y, row_ctx), y, w, denom, layout)
            return self._rows_grad(theta, lambda t: forward(t, x, state), y, w, denom, layout)
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
                g, loss = grad_fn(theta, x, y, w, denom, state, active)
                if bufs is not None:  # the batches' statistics, as the model left them
                    bufs.index_copy_(0, active, self._join_buffers(state))
                apply(active, rows, theta, g, loss)
        n_steps = torch.from_numpy(n_steps).to(device=device, dtype=loss_sum.dtype)
        return flat, buf, loss_sum, n_steps

    # ---- no-grad passes -------------------------------------------------------
    def _groups(self, clients: Sequence[Client], params: Sequence[list[torch.Tensor]]) -> list[list[int]]:
        """Indices of clients grouped by the identity of the parameter list they received (and of their
        buffers, for a model with buffers)."""
        groups: dict[tuple, list[int]] = {}
        for i, ps in enumerate(params):
            key = (id(ps), *(id(b) for b in clients[i].buffers)) if self.buffer_names else (id(ps),)
            groups.setdefault(key, []).append(i)
        return list(groups.values())

    @torch.no_grad()
    def _learner_outputs(self, params: list[torch.Tensor], x: torch.Tensor, fn, client: Client) -> torch.Tensor:  # noqa: ANN001
        """fn(logits) of every learner on x: (M, n, ...), all learners in one vmapped pass per chunk (with
        ``client``'s buffers, for a model with buffers)."""
        self.model.eval()
        stacked = torch.stack(list(params))
        state = self._split_buffers(self._buffers_of([client]))
        every = vmap(lambda flat, chunk, b: fn(self._logits(flat, chunk, b)), in_dims=(0, None, 0))
        logits, acts = self._per_sample(stacked[0], x, [b[0] for b in state])
        size = max(1, min(EVAL_BUDGET // max(1, x[0].numel() if len(x) else 1, logits),
                          EVAL_ACTIVATIONS // max(1, acts * len(stacked))))  # the learners' passes run side by side
        parts = [every(stacked, chunk, state) for chunk in (x.split(size) if len(x) else [x])]
        return torch.cat(parts, dim=1)

    def _own_outputs(self, clients: Sequence[Client], params: Sequence[list[torch.Tensor]], split: str, fn):  # noqa: ANN001, ANN202
        """For clients that each hold their own parameters: fn(logits) of every learner of every client on
        its own samples of ``split``, many clients per vmapped pass instead of a pass per client.

        Yields ``(rows, valid, y, out)`` per pass: ``rows`` (A,) indexes ``clients``, ``out`` is
        (A, M, W, ...) on W sample positions of each of them, ``valid`` (A, W) marks the real ones (a
        client with fewer samples is padded by repeating its last one), ``y`` (A, W, ...) their labels.
        Clients go by size, as many per pass as keep the padded inputs within ``8 * EVAL_BUDGET``
        elements."""
        self.model.eval()
        x_all, y_all = getattr(self.data, f"{split}_x"), getattr(self.data, f"{split}_y")
        offs = getattr(self.data, f"{split}_offsets")
        ids = torch.tensor([c.client_id for c in clients], dtype=torch.long)
        starts, sizes = offs[ids], offs[ids + 1] - offs[ids]
        stacked = torch.stack([torch.stack(list(ps)) for ps in params])  # (C, M, P)
        state = [b.view(*stacked.shape[:2], *b.shape[1:]) for b in self._split_buffers(self._buffers_of(clients))]
        # over clients, one learner at a time: a vmap over learners too would copy every client's inputs per learner
        every = vmap(lambda flat, chunk, b: fn(self._logits(flat, chunk, b)))
        feat = max(1, x_all[0].numel())
        _, acts = self._per_sample(stacked[0, 0], x_all, [b[0, 0] for b in state])
        budget = max(1, min(EVAL_BUDGET * 8 // feat, EVAL_ACTIVATIONS // max(1, acts)))  # padded samples per pass
        blocks: list[list[int]] = []
        for i in sizes.argsort(stable=True).tolist():  # ascending: a block's last client is its widest
            if blocks and (len(blocks[-1]) + 1) * int(sizes[i]) <= budget:
                blocks[-1].append(i)
            else:
                blocks.append([i])
        for block in blocks:
            rows = torch.tensor(block, dtype=torch.long)
            n_max = int(sizes[rows].max())
            if n_max == 0:
                continue
            width = max(1, min(n_max, budget // len(block)))
            for pos in range(0, n_max, width):
                active = rows[sizes[rows] > pos]
                local = pos + torch.arange(min(width, n_max - pos))
                valid = local.unsqueeze(0) < sizes[active].unsqueeze(1)
                gidx = starts[active].unsqueeze(1) + torch.minimum(local.unsqueeze(0), sizes[active].unsqueeze(1) - 1)
                gidx = gidx.view(-1).to(x_all.device)
                x = self._take(x_all, gidx).view(len(active), len(local), *x_all.shape[1:])
                y = y_all.index_select(0, gidx).view(len(active), len(local), *y_all.shape[1:])
                out = [every(stacked[active, j], x, [b[active, j] for b in state]) for j in range(stacked.shape[1])]
                yield active, valid.to(x.device), y, torch.stack(out, dim=1)

    def _pool(self, clients: Sequence[Client], split: str) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        x_all, y_all = getattr(self.data, f"{split}_x"), getattr(self.data, f"{split}_y")
        offs = getattr(self.data, f"{split}_offsets")
        ids = [c.client_id for c in clients]
        every = self.train_sizes if split == "train" else self.test_sizes
        sizes = [every[i] for i in ids]
        if ids == list(range(self.data.n_clients)):
            return x_all, y_all, sizes
        idx = torch.cat([torch.arange(int(offs[i]), int(offs[i + 1])) for i in ids]).to(x_all.device)
        return x_all[idx], y_all[idx], sizes

    def _train_losses(self, clients: Sequence[Client], params: Sequence[list[torch.Tensor]]) -> list[torch.Tensor]:
        out: list[torch.Tensor | None] = [None] * len(clients)
        task = self.task
        groups = self._groups(clients, params)
        alone = [g[0] for g in groups if len(g) == 1]
        if len(alone) > 1:  # clients with parameters of their own (decentralised training): many per pass
            parts: dict[int, list[torch.Tensor]] = {i: [] for i in alone}
            for rows, valid, y, logits in self._own_outputs([clients[i] for i in alone], [params[i] for i in alone],
                                                            "train", lambda z: z):
                a, m, w = logits.shape[:3]
                ys = y.unsqueeze(1).expand(a, m, *y.shape[1:])
                losses = task.loss(logits.reshape(a * m * w, *logits.shape[3:]), ys.reshape(a * m * w, *y.shape[2:])).view(a, m, w)
                for k, r in enumerate(rows.tolist()):
                    parts[alone[r]].append(losses[k][:, valid[k]])
            for i in alone:
                out[i] = torch.cat(parts[i], dim=1) if parts[i] else torch.zeros(len(params[i]), 0, device=params[i][0].device)
            groups = [g for g in groups if len(g) > 1]
        for group in groups:
            members = [clients[i] for i in group]
            x, y, sizes = self._pool(members, "train")
            logits = self._learner_outputs(params[group[0]], x, lambda z: z, members[0])
            losses = torch.stack([task.loss(logits[j], y) for j in range(logits.shape[0])])
            for i, part in zip(group, losses.split(sizes, dim=1)):
                out[i] = part
        return out  # type: ignore[return-value]

    @torch.no_grad()
    def _evaluate_own(self, clients: Sequence[Client], params: Sequence[list[torch.Tensor]]) -> list[EvalResult]:
        """:meth:`evaluate_clients` for clients that each hold their own parameters, many clients per
        vmapped pass (:meth:`_own_outputs`) instead of a pass per client: each client's mixture
        ``sum_m pi_m p_m`` on its padded samples, scored, the padding masked out, summed per client in
        float64 as :meth:`Client.score` sums."""
        pi = torch.stack([c.learners_weights for c in clients])  # (C, M)
        scores = {}
        for split in ("train", "test"):
            sums = torch.zeros(2, len(clients), dtype=torch.float64)
            for rows, valid, y, proba in self._own_outputs(clients, params, split, self.task.proba):
                mix = _mix(pi[rows].to(proba.device), proba, 1)  # (A, W, ...)
                a, width = mix.shape[:2]
                loss, correct = self.task.score(mix.reshape(a * width, *mix.shape[2:]), y.reshape(a * width, *y.shape[2:]))
                part = torch.stack([loss.double().view(a, width), correct.double().view(a, width)]) * valid
                sums.index_add_(1, rows, part.sum(dim=2).cpu())
            sizes = self.train_sizes if split == "train" else self.test_sizes
            n = torch.tensor([sizes[c.client_id] for c in clients], dtype=torch.float64).clamp_min(1)
            scores[split] = sums / n
        return _eval_results(clients, scores)

    @torch.no_grad()
    def evaluate_clients(self, clients: Sequence[Client], params: Sequence[list[torch.Tensor]]) -> list[EvalResult]:
        """What ``[c.evaluate(p) for c, p in zip(clients, params)]`` returns, batched (per client for a
        client type with its own ``evaluate`` or ``score``, e.g. FedAvg+'s fine-tuned copy)."""
        if any(type(c).evaluate is not Client.evaluate or type(c).score is not Client.score for c in clients):
            with torch.enable_grad():  # an evaluation may train (a fine-tuned copy)
                return [c.evaluate(p) for c, p in zip(clients, params)]
        results: list[EvalResult | None] = [None] * len(clients)
        groups = self._groups(clients, params)
        alone = [g[0] for g in groups if len(g) == 1]
        if len(alone) > 1:  # clients with parameters of their own (local or decentralised training): many per pass
            for i, result in zip(alone, self._evaluate_own([clients[i] for i in alone], [params[i] for i in alone])):
                results[i] = result
            groups = [g for g in groups if len(g) > 1]
        for group in groups:
            members = [clients[i] for i in group]
            pi = torch.stack([c.learners_weights for c in members])  # (C, M)
            scores = {}
            for split in ("train", "test"):
                x, y, sizes = self._pool(members, split)
                own = x is getattr(self.data, f"{split}_x")  # the data set's tensor, not a gathered copy
                owner = torch.repeat_interleave(torch.arange(len(members), device=x.device), torch.tensor(sizes, device=x.device))
                pi_dev = pi.to(x.device)
                sums = torch.zeros(2, len(members), dtype=torch.float64, device=x.device)
                step = max(1, EVAL_BUDGET * 8 // max(1, x[0].numel() if len(x) else 1))
                for start in range(0, len(y), step):  # chunks bound the temporaries' memory
                    part = slice(start, start + step)
                    proba = self._learner_outputs(params[group[0]], x[part], self.task.proba, members[0])  # (M, n, ...)
                    mix = _mix(pi_dev[owner[part]].T, proba, 0)  # weights (M, n)
                    loss, correct = self.task.score(mix, y[part])
                    if x.device.type == "cpu":
                        sums[0].index_add_(0, owner[part], loss.double())
                        sums[1].index_add_(0, owner[part], correct.double())
                    else:  # CUDA's index_add_ adds in a varying order: per-client runs (owner is sorted) instead
                        in_part = torch.bincount(owner[part], minlength=len(members))
                        sums += segment_sum(torch.stack([loss.double(), correct.double()], dim=1), in_part).T
                    if own:  # a memory-mapped cache entry's pages go back to the page cache
                        datacache.release(x[part])
                n = torch.tensor(sizes, dtype=torch.float64, device=x.device).clamp_min(1)
                scores[split] = (sums / n).cpu()
            for i, result in zip(group, _eval_results(members, scores)):
                results[i] = result
        return results  # type: ignore[return-value]
