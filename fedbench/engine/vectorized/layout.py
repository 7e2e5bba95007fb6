"""How the vectorised engine lays a round out: every (client, learner) row's flat parameters and buffers,
the model called on them (``torch.func.functional_call``), and the linear layers' CPU layout."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

from fedbench.fl.client import Client
from fedbench.fl.learner import sample_cost
from fedbench.fl.recurrent import unrolled


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


def _state_buffers(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """The buffers a client keeps its own copy of (:meth:`fedbench.fl.learner.Learner.get_buffers`): the
    floating-point ones, e.g. BatchNorm's running statistics (not its integer batch counter)."""
    return [(n, b) for n, b in model.named_buffers() if b.is_floating_point()]



class Layout:
    """The rows' parameters and buffers (a mixin of :class:`fedbench.engine.vectorized.VectorizedEngine`)."""

    def _unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """(..., P) -> {name: (..., *shape)} views."""
        lead = flat.shape[:-1]
        return {n: c.reshape(*lead, *s) for n, c, s in zip(self.names, flat.split(self.sizes, dim=-1), self.shapes)}

    def _logits(self, flat: torch.Tensor, x: torch.Tensor, buffers: Sequence[torch.Tensor] = ()) -> torch.Tensor:
        """The model at parameters ``flat`` (and ``buffers``, from :meth:`_split_buffers`: a BatchNorm in
        training updates them in place) on ``x``."""
        tensors = self._unflatten(flat)
        tensors.update(zip(self.buffer_names, buffers))
        with unrolled():  # an LSTM as matrix products, which vmap batches (fedbench.fl.recurrent)
            return functional_call(self.model, tensors, (x,))

    def _per_sample(self, flat: torch.Tensor, x: torch.Tensor, buffers: Sequence[torch.Tensor]) -> tuple[int, int]:
        """One sample's logits and twice its widest layer output at ``flat`` (:func:`fedbench.fl.learner.sample_cost`,
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
