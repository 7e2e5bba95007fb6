"""Dropout whose masks are a function of where they are drawn, so that both engines draw the same ones.

A model's ``nn.Dropout`` layers are replaced when a run builds it (:func:`keyed_dropout`) by
:class:`KeyedDropout`: the same layer (zero each value with probability ``p``, scale the others by
``1 / (1 - p)``), with its mask drawn from a counter-based generator keyed by (run seed, phase stream,
round, client, learner, batch, layer) instead of torch's global generator. One client trained alone and
every client trained at once under ``vmap`` then draw bit-identical masks, on every device: the masks are
integer arithmetic on int64 tensors (a SplitMix64 finaliser, the wrapping multiplication that torch's
integer tensors do), and a value's draw depends only on its key and its position in its sample
(padding a batch leaves the real samples' masks as they are).

Where training runs without a key (a method's own code training a model outside the engines' phases),
the layer falls back to ``torch.nn.functional.dropout``: torch's global generator, which the
one-at-a-time engine seeds per (seed, round, client); under ``vmap`` without a key that raises rather
than draw something else.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from fedbench.fl.seeding import STREAM_DROPOUT, derive_seed

_GOLDEN = 0x9E3779B97F4A7C15 - 2**64
_M1 = 0xBF58476D1CE4E5B9 - 2**64
_M2 = 0x94D049BB133111EB - 2**64
_LAYER = 0xD6E8FEB86659FD93 - 2**64
#: the key of the batch now being trained (an int64 tensor, one per row under vmap), or None
_current: list[torch.Tensor | None] = [None]


def _shr(z: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 values (torch's ``>>`` is arithmetic on signed integers)."""
    return (z >> k) & ((1 << (64 - k)) - 1)


def mix(z: torch.Tensor) -> torch.Tensor:
    """SplitMix64's finaliser on int64 tensors: a bijection whose outputs look independent for
    consecutive inputs."""
    z = (z ^ _shr(z, 30)) * _M1
    z = (z ^ _shr(z, 27)) * _M2
    return z ^ _shr(z, 31)


def row_key(seed: int, stream: int, round_: int, client_id: int, learner: int) -> int:
    """The key of one (client, learner) row's local training in a round and phase stream."""
    return derive_seed(STREAM_DROPOUT, seed, stream, round_, client_id, learner)


def row_keys(client: object, stream: int, round_: int, learners: int) -> list[int]:
    """:func:`row_key` of each of ``client``'s first ``learners`` learners (its ``seed`` and ``client_id``)."""
    return [row_key(client.seed, stream, round_, client.client_id, j) for j in range(learners)]


def batch_key(row: torch.Tensor, batch: int) -> torch.Tensor:
    """The key of a row's ``batch``-th trained batch (``row``: int64 tensor of row keys)."""
    return mix(row + torch.full_like(row, batch + 1) * _GOLDEN)  # (int64 tensors wrap; Python ints would not)


@contextlib.contextmanager
def keyed(key: torch.Tensor | None) -> Iterator[None]:
    """Dropout layers called inside draw their masks from ``key`` (None: from torch's generator)."""
    before, _current[0] = _current[0], key
    try:
        yield
    finally:
        _current[0] = before


def keep_mask(key: torch.Tensor, layer: int, shape: torch.Size, p: float, device: torch.device) -> torch.Tensor:
    """Which values of a ``shape`` (batch first) activation survive: True with probability ``1 - p``,
    value by value, from (key, layer, position); 24-bit uniforms compared with ``p``."""
    positions = torch.arange(shape.numel(), dtype=torch.int64, device=device).view(shape)
    base = mix(key ^ (torch.full_like(key, layer + 1) * _LAYER))
    uniform = _shr(mix(base + positions * _GOLDEN), 40).to(torch.float32) * 2.0**-24
    return uniform >= p


class KeyedDropout(nn.Module):
    """``nn.Dropout(p)`` with masks from the current key (:func:`keyed`); ``layer`` tells a model's dropout
    layers apart."""

    def __init__(self, p: float, layer: int) -> None:
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p, self.layer = p, layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        key = _current[0]
        if key is None:
            return nn.functional.dropout(x, self.p, True)
        keep = keep_mask(key, self.layer, x.shape, self.p, x.device)
        return x * keep.to(x.dtype) * (1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}, layer={self.layer}"


def keyed_dropout(model: nn.Module) -> nn.Module:
    """``model`` with each ``nn.Dropout`` (the exact class) replaced by a :class:`KeyedDropout` of the same
    ``p``, numbered in module order; other dropout kinds (``Dropout2d``, ``AlphaDropout``) are left as
    they are (the batched engine declines them)."""
    layer = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                setattr(parent, name, KeyedDropout(child.p, layer))
                layer += 1
    return model


def has_keyed(model: nn.Module) -> bool:
    """Whether ``model`` has :class:`KeyedDropout` layers (its training then needs a key per batch)."""
    return any(isinstance(m, KeyedDropout) for m in model.modules())


def unkeyed(model: nn.Module) -> list[str]:
    """The names of ``model``'s dropout layers that draw from torch's generator (not :class:`KeyedDropout`)."""
    return [type(m).__name__ for m in model.modules()
            if isinstance(m, nn.modules.dropout._DropoutNd) and not isinstance(m, KeyedDropout)]
