"""Whether the vectorised engine may run a model and a round's clients, and whether it pays on a device."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fedbench.fl.client import Client, FitIns, FitPhase, LossPhase, StepPhase
from fedbench.fl.dropout import unkeyed
from fedbench.fl.recurrent import unbatchable
from fedbench.engine.vectorized.layout import _state_buffers
from fedbench.fl.learner import Batch

#: module types that run faster one client at a time on a CPU (measured by benchmarks/speed_synthetic.py)
CPU_SEQUENTIAL_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.RNNBase)


#: on a CPU, models above this many trainable parameters train faster one client at a time: the
#: per-client matrix products are then large enough for BLAS, and batching them only adds copies
#: (FedEM on Fashion-MNIST, 2 threads: 25k parameters 1.3x faster vectorised, 51k even, 102k 1.4x
#: slower; python benchmarks/engine_crossover.py, results/engine_crossover.md)
CPU_SEQUENTIAL_PARAMS = 50_000


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


def vectorisable(model: nn.Module, clients: Sequence[Client]) -> str | None:
    """None if the vectorised engine can run this model and these clients, else the reason."""
    kept = {id(b) for _, b in _state_buffers(model)}
    other = [n for n, b in model.named_buffers() if id(b) not in kept and not n.endswith("num_batches_tracked")]
    if other:
        return f"model {type(model).__name__} has non-floating-point buffers ({', '.join(other)})"
    recurrent = unbatchable(model)
    if recurrent:
        return (f"model {type(model).__name__} has recurrent layers vmap cannot batch ({', '.join(sorted(set(recurrent)))}: "
                "only unidirectional nn.LSTM without projection or inter-layer dropout is written out, fedbench.fl.recurrent)")
    drawn = unkeyed(model)
    if drawn:
        return (f"model {type(model).__name__} draws dropout masks from torch's generator ({', '.join(sorted(set(drawn)))}: "
                "only nn.Dropout layers are keyed per client, learner and batch, fedbench.fl.dropout)")
    for cls in {type(c) for c in clients}:
        for name in ("step", "fit", "sgd_config"):  # training; a client's own evaluate runs per client
            if getattr(cls, name) is not getattr(Client, name):
                return f"client type {cls.__name__} overrides {name}()"
    if kept and clients and any(isinstance(phase, StepPhase) for phase in clients[0].fit_phases()):
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
        probed = [p for p in phases if any(f is not None for f in p.functions().values())]
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
            if isinstance(phase, LossPhase) and phase.term is not None:
                args = (self._probe(ins.params[0]), ref.term_context(ins.params, ins.extras)[0])
                probes.append((phase.term, "local term", args))
            if isinstance(phase, LossPhase) and phase.sample_term is not None:
                args = (self._probe(ins.params[0]), ref.term_context(ins.params, ins.extras)[0], self._batch(ref, ins.params[0]))
                probes.append((phase.sample_term, "per-sample term", args))
            if isinstance(phase, StepPhase):
                rows = torch.stack([self._probe(p) for p in ref.joint_start(phase, ins.params, ins.params)])
                probes.append((phase.step, "own step", (rows, torch.zeros_like(rows), _probe_grad, phase.sgd(ref.sgd_config(lr)))))
            for name, what, args in probes:
                want = FitPhase.bound(name, ref)(*args)
                for c, _ in todo:
                    if not _same(FitPhase.bound(name, c)(*args), want):
                        return (f"client {c.client_id}'s {what} ({FitPhase.label(name)}) computes something else than client "
                                f"{ref.client_id}'s on the same inputs: it reads a per-client value")
        self.equal.update((c.client_id, t) for c, t in todo)
        return None
