"""Learner (one model, its loss and its training loop) and LearnersEnsemble (M of them).

This is the only training loop in fedbench: methods change what is trained
(sample weights, parameters sent in, a proximal term) through arguments, not by
writing their own loop. Parameters travel as one flat tensor per learner.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from fedbench.fl.dropout import batch_key, has_keyed, keyed
from fedbench.fl.tasks import Task

#: input elements per chunk in no-grad passes over a whole data set (bounds activation memory)
EVAL_BUDGET = 1 << 21
#: and twice the widest layer output per chunk (what a no-grad pass holds at once: a layer's input and output;
#: a CNN's are tens of times its input: 2**21 input elements of EMNIST were 1.5 GB of activations in one pass)
ACTIVATION_BUDGET = 1 << 22


@dataclass(frozen=True)
class SGDConfig:
    """Hyper-parameters of one local SGD call (torch.optim.SGD semantics)."""

    lr: float
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 128
    epochs: int = 1
    #: leave out each epoch's incomplete last batch when there is more than one batch (the data set's
    #: protocol, :attr:`fedbench.fl.data.FederatedData.drop_last`)
    drop_last: bool = False

    def drops(self, batch: int, n: int) -> bool:
        """Whether a batch of ``batch`` samples of an epoch over ``n`` is left out under ``drop_last``."""
        return self.drop_last and batch < self.batch_size < n


def batches_per_epoch(n: int, sgd: SGDConfig) -> int:
    """The SGD steps one epoch of ``n`` samples takes under ``sgd`` (the short last batch dropped when
    :meth:`SGDConfig.drops` says so; BatchNorm's lone-sample rule aside)."""
    short = n % sgd.batch_size  # the last batch's size when it is short, else 0
    return n // sgd.batch_size if short and sgd.drops(short, n) else math.ceil(n / sgd.batch_size)


@dataclass(frozen=True)
class FitResult:
    """What a fit returns: mean training loss over its batches and the momentum buffer."""

    loss: float
    momentum: torch.Tensor | None


def sgd_update(p: torch.Tensor, g: torch.Tensor, buf: torch.Tensor, sgd: SGDConfig,
               mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One local SGD step, out of place: the one definition every training path uses (the one-at-a-time
    learner per parameter tensor, the vectorised engine on stacked rows, a method's own step under ``vmap``,
    a server optimiser). ``torch.optim.SGD``'s arithmetic op for op (its single-tensor path, bit for bit:
    tested): weight decay added to the gradient (``g + wd * p`` as one ``add``), momentum ``b <- mu * b + g``
    (``buf`` starts at zeros, which makes the first step torch's ``b = g``), then ``p <- p - lr * b``. ``mask``
    (0/1, like ``p``) zeroes the step, decay and momentum of frozen coordinates. Returns the new parameters
    and buffer (``buf`` unchanged without momentum)."""
    if sgd.weight_decay:
        g = torch.add(g, p, alpha=sgd.weight_decay)
    if mask is not None:
        g = g * mask
    if sgd.momentum > 0:
        buf = torch.add(buf * sgd.momentum, g)
        g = buf
    return torch.add(p, g, alpha=-sgd.lr), buf


def batch_loss(
    call: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], task: Task, x: torch.Tensor, y: torch.Tensor,
    weights: torch.Tensor, denom: torch.Tensor | float,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The loss of one batch as a pure function of flat parameters: ``sum_i w_i loss_i(theta) / denom``
    (``call(theta, x)``: the model's logits at ``theta``). ``weights`` zero a padded sample out."""

    def loss(theta: torch.Tensor) -> torch.Tensor:
        return (task.loss(call(theta, x), y) * weights).sum() / denom

    return loss


@dataclass(frozen=True)
class Batch:
    """What a per-sample term (:meth:`fedbench.fl.client.Client.sample_term`) sees of one training batch of W
    samples: the inputs ``x`` and labels ``y``; ``features`` (W, D), the model's representation of the batch at
    the parameters being trained (differentiable; None for a model that declares none, see
    :func:`representation_module`); and ``represent(point)``, the representation of the same batch at other
    flat parameters ``point`` (e.g. the received model's), computed without gradient."""

    x: torch.Tensor
    y: torch.Tensor
    features: torch.Tensor | None
    represent: Callable[[torch.Tensor], torch.Tensor]


def representation_module(model: nn.Module) -> nn.Module | None:
    """The submodule whose output is ``model``'s representation of a sample, or None.

    A model declares it with an attribute ``representation``: the submodule's name as ``named_modules()``
    gives it (``"features"``, ``"body.3"``); its output, flattened per sample, is what a representation-based
    local objective compares (:class:`Batch` ``features``). A name that is no submodule is a ``ValueError``."""
    name = getattr(model, "representation", None)
    if name is None:
        return None
    modules = dict(model.named_modules())
    if not isinstance(name, str) or name not in modules:
        raise ValueError(f"model {type(model).__name__} declares representation = {name!r}, which is not one of its "
                         f"submodules ({', '.join(n for n in modules if n)})")
    return modules[name]


@contextlib.contextmanager
def captured(module: nn.Module | None) -> Iterator[list[torch.Tensor]]:
    """Within it, each output of ``module`` (None: nothing) is appended, flattened per sample, to the list it
    yields; under ``torch.func.vmap`` the outputs are the vmapped function's own (per row)."""
    seen: list[torch.Tensor] = []
    if module is None:
        yield seen
        return
    handle = module.register_forward_hook(lambda _m, _i, out: seen.append(out.flatten(1)))
    try:
        yield seen
    finally:
        handle.remove()


def representer(call: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], module: nn.Module | None,
                x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """``point -> the representation of x at flat parameters point`` (no gradient), for :class:`Batch`."""

    def represent(point: torch.Tensor) -> torch.Tensor:
        if module is None:
            raise ValueError("this model declares no representation (a `representation` attribute naming a submodule)")
        with torch.no_grad(), captured(module) as seen:
            call(point.detach(), x)
        return seen[-1]

    return represent


def eager_grad(loss: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """``point -> (d loss / d point, loss)`` by plain autograd: what ``torch.func.grad_and_value(loss)``
    computes, at about half its cost per call outside ``vmap`` (the one-at-a-time backend's choice)."""

    def fn(point: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        point = point.detach().requires_grad_(True)
        with torch.enable_grad():
            value = loss(point)
            (g,) = torch.autograd.grad(value, point)
        return g, value.detach()

    return fn


def epoch_orders(gen: torch.Generator, count: int, n: int) -> torch.Tensor:
    """``count`` random orders of ``range(n)`` (one per row), drawn in one call.

    Both engines draw a client's batch orders with this function from the
    client's round generator, learner-major then epoch, so they see the same
    batches.
    """
    return order_keys(gen, count, n).argsort(dim=1, stable=True)


def order_keys(gen: torch.Generator, count: int, n: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """The random keys whose stable arg-sort is :func:`epoch_orders` (float64, shape (count, n)), uniform
    in [0, 1) (what ``torch.rand`` draws). ``out``: a float64 (count, n) view to draw them into (the
    vectorised engine draws every client's keys into its rows of one padded tensor)."""
    keys = torch.empty(count, n, dtype=torch.float64) if out is None else out
    return keys.uniform_(generator=gen)


class Learner:
    """One model with its task loss; fits with optional per-sample weights."""

    def __init__(self, model: nn.Module, task: Task) -> None:
        self.model = model
        self.task = task
        self._params = [p for p in model.parameters() if p.requires_grad]
        self._names = [n for n, p in model.named_parameters() if p.requires_grad]
        #: logits and all layers' outputs per sample, by input shape (:meth:`chunk_size`)
        self._per_sample: dict[tuple[int, ...], tuple[int, int]] = {}
        self.n_params = int(sum(p.numel() for p in self._params))
        #: floating-point buffers (BatchNorm running statistics): state, not trained by gradients
        self._buffers = [b for b in model.buffers() if b.is_floating_point()]
        #: the model has keyed dropout layers (:mod:`fedbench.fl.dropout`): a fit then keys its batches' masks
        self.keyed_dropout = has_keyed(model)

    def loss_and_grad(self, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> tuple[float, torch.Tensor]:
        """Mean loss of the model at parameters ``flat`` on (x, y), and its gradient (flat).

        Evaluated functionally (``torch.func.functional_call``): the module's own
        parameters are not touched. For methods whose local update is not plain
        SGD on the module (APFL, pFedMe).
        """
        self.model.train()
        theta = flat.detach().requires_grad_(True)
        loss = self.task.loss(self.call(theta, x), y).mean()
        (grad,) = torch.autograd.grad(loss, theta)
        return float(loss.detach()), grad

    def call(self, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The model's logits on ``x`` at parameters ``flat``, functionally (the module is not touched)."""
        return functional_call(self.model, dict(zip(self._names, _split_like(flat, self._params))), (x,))

    def get_params(self) -> torch.Tensor:
        """A detached copy of the trainable parameters as one flat tensor."""
        return flatten(self._params).detach()

    def get_buffers(self) -> torch.Tensor | None:
        """A copy of the floating-point buffers as one flat tensor, or None for a model without any."""
        return flatten(self._buffers) if self._buffers else None

    def set_buffers(self, flat: torch.Tensor | None) -> None:
        """Copy ``flat`` (from :meth:`get_buffers`) into the buffers; None leaves them as they are."""
        if flat is not None:
            with torch.no_grad():
                for b, chunk in zip(self._buffers, _split_like(flat, self._buffers)):
                    b.copy_(chunk)

    def set_params(self, flat: torch.Tensor) -> None:
        """Copy ``flat`` into the parameters (never aliases it: training must not mutate the caller's tensor)."""
        with torch.no_grad():
            for p, chunk in zip(self._params, _split_like(flat, self._params)):
                p.copy_(chunk)

    @torch.no_grad()
    def chunk_size(self, x: torch.Tensor) -> int:
        """Samples per no-grad chunk: neither a chunk's inputs nor its logits exceed :data:`EVAL_BUDGET`
        elements (a model that predicts every position of a window has 80 x 100 logits per sample), nor twice
        its widest layer output :data:`ACTIVATION_BUDGET` (measured once per input shape, on one sample, by
        forward hooks)."""
        if not len(x):
            return 1
        shape = tuple(x.shape[1:])
        if shape not in self._per_sample:  # one probe per input shape: the output sizes depend on nothing else
            self._per_sample[shape] = sample_cost(self.model, lambda: self.model(x[:1]))
        logits, activations = self._per_sample[shape]
        return max(1, min(EVAL_BUDGET // max(x[0].numel(), logits), ACTIVATION_BUDGET // max(1, activations)))

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        if not len(x):
            return self.model(x)
        return torch.cat([self.model(chunk) for chunk in x.split(self.chunk_size(x))])

    @torch.no_grad()
    def per_sample_losses(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        if not len(x):
            return self.task.loss(self.model(x), y)
        size = self.chunk_size(x)
        return torch.cat([self.task.loss(self.model(xc), yc) for xc, yc in zip(x.split(size), y.split(size))])

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        return self.task.proba(self.logits(x))

    def fit_epochs(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        weights: torch.Tensor | None,
        sgd: SGDConfig,
        orders: torch.Tensor,
        momentum: torch.Tensor | None = None,
        term: Callable[[torch.Tensor], torch.Tensor] | None = None,
        trainable: Sequence[bool] | None = None,
        sample_term: Callable[[torch.Tensor, Batch], torch.Tensor] | None = None,
        dropout_key: int | None = None,
    ) -> FitResult:
        """Run one epoch of mini-batch SGD per row of ``orders`` (sample orders, shape (epochs, n)).

        Batches are consecutive slices of ``batch_size`` indices of each order. The batch loss is ``sum_i w_i * loss_i / batch_size`` (``w = 1`` when
        ``weights`` is None), plus ``term(theta)`` (theta: the flat parameters) when a client's local
        objective has one (:meth:`fedbench.fl.client.Client.local_term`), and ``sample_term(theta, batch)``
        (one value per sample of the :class:`Batch`, added to that sample's loss before weighting:
        :meth:`fedbench.fl.client.Client.sample_term`) when it has one of those. ``momentum``
        is the buffer left by an earlier fit (flat), or None to start afresh.
        ``trainable`` (one flag per parameter tensor) freezes the tensors flagged False:
        they take no step, no weight decay and no momentum; such a fit starts and
        returns no momentum buffer. ``dropout_key`` (:func:`fedbench.fl.dropout.row_key`): the model's keyed
        dropout layers draw batch ``b``'s masks from ``batch_key(dropout_key, b)``, as the batched engine does.
        """
        if trainable is not None and len(trainable) != len(self._params):
            raise ValueError(f"trainable needs one flag per parameter tensor ({len(self._params)}), got {len(trainable)}")
        stepped = self._params if trainable is None else [p for p, t in zip(self._params, trainable) if t]
        if not stepped:
            return FitResult(0.0, None)
        if momentum is not None and sgd.momentum > 0 and trainable is None:
            bufs = [b.clone() for b in _split_like(momentum, self._params)]
        else:  # zeros: the first step's buffer is then the gradient, as torch's
            bufs = [torch.zeros_like(p) if sgd.momentum > 0 else None for p in stepped]
        self.model.train()
        # BatchNorm cannot train on one sample: a one-sample batch (the lone last sample of a client of
        # k * batch_size + 1, or a client of one sample) takes no step. A data set whose protocol drops
        # incomplete last batches (sgd.drop_last, set by the data set's loader) leaves
        # out any short last batch of a client with more than one batch (SGDConfig.drops).
        batch_norm = uses_batch_statistics(self.model)
        body = representation_module(self.model) if sample_term is not None else None
        row = None
        if dropout_key is not None and self.keyed_dropout:
            row = torch.tensor(dropout_key, dtype=torch.int64, device=y.device)
        total, batches = 0.0, 0
        for perm in orders.to(y.device):
            for idx in perm.split(sgd.batch_size):
                if sgd.drops(idx.numel(), perm.numel()):
                    continue
                if batch_norm and idx.numel() == 1:
                    continue
                for p in self._params:
                    p.grad = None
                with keyed(None if row is None else batch_key(row, batches)):
                    with captured(body) as seen:
                        logits = self.model(x[idx])
                    losses = self.task.loss(logits, y[idx])
                    theta = flatten(self._params) if term is not None or sample_term is not None else None
                    if sample_term is not None:
                        batch = Batch(x[idx], y[idx], seen[-1] if seen else None, representer(self.call, body, x[idx]))
                        losses = losses + sample_term(theta, batch)
                if weights is not None:
                    losses = losses * weights[idx]
                loss = losses.sum() / idx.numel()
                if term is not None:
                    loss = loss + term(theta)
                loss.backward()
                with torch.no_grad():
                    for i, p in enumerate(stepped):
                        new, bufs[i] = sgd_update(p, p.grad, bufs[i], sgd)
                        p.copy_(new)
                total += float(loss.detach())
                batches += 1
        for p in self._params:
            p.grad = None
        buf = None
        if trainable is None and sgd.momentum > 0 and batches:
            buf = flatten(bufs)
        return FitResult(total / max(batches, 1), buf)


@torch.no_grad()
def sample_cost(model: nn.Module, forward: Callable[[], torch.Tensor]) -> tuple[int, int]:
    """``(logits, twice the widest layer output)`` of the one sample ``forward()`` passes through ``model``, in
    eval mode, measured by forward hooks on its leaf modules (a layer's input and output live at once): what
    bounds a no-grad chunk's memory besides its inputs. ``model``'s training mode is left as it was."""
    widest = [0]

    def count(_module, _inputs, output) -> None:  # noqa: ANN001
        outs = output if isinstance(output, (tuple, list)) else (output,)
        widest[0] = max(widest[0], 2 * sum(t.numel() for t in outs if isinstance(t, torch.Tensor)))

    was = model.training
    hooks = [m.register_forward_hook(count) for m in model.modules() if not list(m.children())]
    try:
        model.eval()
        logits = forward().numel()
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    return logits, widest[0]


def uses_batch_statistics(model: nn.Module) -> bool:
    """Whether a batch's own statistics enter the model in training (BatchNorm): then a batch must hold
    only real samples, and a one-sample batch cannot train."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def flatten(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """The tensors as one new flat tensor, each in its logical (row-major) order whatever its memory layout (a
    channels-last convolution weight included), as :func:`_split_like` splits it back."""
    return torch.cat([t.reshape(-1) for t in tensors])


def _split_like(flat: torch.Tensor, params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [chunk.view_as(p) for chunk, p in zip(flat.split([p.numel() for p in params]), params)]


class LearnersEnsemble:
    """M learners whose prediction is sum_m pi_m * p_m(y|x)."""

    def __init__(self, learners: Sequence[Learner]) -> None:
        if not learners:
            raise ValueError("an ensemble needs at least one learner")
        self.learners = list(learners)
        self.task = self.learners[0].task

    def __len__(self) -> int:
        return len(self.learners)

    def get_params(self) -> list[torch.Tensor]:
        return [learner.get_params() for learner in self.learners]

    def set_params(self, params: Sequence[torch.Tensor]) -> None:
        if len(params) != len(self.learners):
            raise ValueError(f"expected {len(self.learners)} parameter vectors, got {len(params)}")
        for learner, flat in zip(self.learners, params):
            learner.set_params(flat)

    def get_buffers(self) -> list[torch.Tensor | None]:
        return [learner.get_buffers() for learner in self.learners]

    def set_buffers(self, buffers: Sequence[torch.Tensor | None]) -> None:
        for learner, flat in zip(self.learners, buffers):
            learner.set_buffers(flat)

    def per_sample_losses(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Losses of every learner on every sample, shape (M, n)."""
        return torch.stack([learner.per_sample_losses(x, y) for learner in self.learners])

    def predict_proba(self, x: torch.Tensor, pi: torch.Tensor) -> torch.Tensor:
        """The mixture's probabilities sum_m pi_m * p_m(.|x)."""
        out = pi[0] * self.learners[0].predict_proba(x)
        for weight, learner in zip(pi[1:], self.learners[1:]):
            out = out + weight * learner.predict_proba(x)
        return out

    def fit_epochs(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        weights: torch.Tensor,
        sgd: SGDConfig,
        generator: torch.Generator,
        momentum: Sequence[torch.Tensor | None] | None = None,
        terms: Sequence[Callable[[torch.Tensor], torch.Tensor]] | None = None,
        trainable: Sequence[bool] | None = None,
        sample_terms: Sequence[Callable[[torch.Tensor, Batch], torch.Tensor]] | None = None,
        dropout_keys: Sequence[int] | None = None,
    ) -> list[FitResult]:
        """Fit learner m with row m of ``weights`` (shape (M, n)), one after another.

        The batch orders of all learners and epochs are drawn at once from
        ``generator`` (:func:`epoch_orders`), so a run is reproducible for a seed.
        ``trainable``: as in :meth:`Learner.fit_epochs`, for every learner; ``dropout_keys``: one per learner.
        """
        momentum = momentum or [None] * len(self)
        dropout_keys = dropout_keys or [None] * len(self)
        terms = terms or [None] * len(self)
        sample_terms = sample_terms or [None] * len(self)
        orders = epoch_orders(generator, len(self) * sgd.epochs, int(y.shape[0])).view(len(self), sgd.epochs, -1)
        return [
            learner.fit_epochs(x, y, weights[m], sgd, orders[m], momentum[m], terms[m], trainable, sample_terms[m],
                               dropout_keys[m])
            for m, learner in enumerate(self.learners)
        ]
