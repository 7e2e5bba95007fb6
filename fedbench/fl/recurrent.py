"""An LSTM the batched engine can run for every row at once.

``torch.func.vmap`` has no batching rule for ``nn.LSTM``'s fused kernel (``aten::lstm``), so a model with
an LSTM could only train one client at a time. When a run builds a model, each plain ``nn.LSTM``
(unidirectional, no projection, no dropout between layers) becomes a :class:`BatchableLSTM`
(:func:`batchable_lstms`; the class changes, the parameters and their names stay): outside the
batched engine it is ``nn.LSTM`` itself (the fused kernel, cuDNN on a GPU); inside it (:func:`unrolled`)
it runs the same recurrence as explicit matrix products, one time step after another, which ``vmap``
batches over the rows: gates ``x W_ih^T + b_ih + h W_hh^T + b_hh`` split into input, forget, cell and
output gates, ``c <- f c + i g``, ``h <- o tanh(c)``, layer after layer (torch's documented LSTM). The two
computations agree to float rounding (the fused kernel adds the same terms in its own order).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

_unrolled = [False]


@contextlib.contextmanager
def unrolled() -> Iterator[None]:
    """Batchable LSTMs called inside run their recurrence as matrix products (what ``vmap`` can batch)."""
    before, _unrolled[0] = _unrolled[0], True
    try:
        yield
    finally:
        _unrolled[0] = before


class BatchableLSTM(nn.LSTM):
    """``nn.LSTM``, with the recurrence written out step by step inside :func:`unrolled`."""

    def forward(self, input, hx=None):  # noqa: ANN001, ANN201, A002
        if not _unrolled[0]:
            return super().forward(input, hx)
        x = input if self.batch_first else input.transpose(0, 1)  # (B, T, E)
        batch = x.shape[0]
        if hx is None:
            zeros = x.new_zeros(self.num_layers, batch, self.hidden_size)
            hx = (zeros, zeros)
        last_h, last_c = [], []
        for k in range(self.num_layers):
            w_ih, w_hh = getattr(self, f"weight_ih_l{k}"), getattr(self, f"weight_hh_l{k}")
            b_ih, b_hh = (getattr(self, f"bias_ih_l{k}"), getattr(self, f"bias_hh_l{k}")) if self.bias else (None, None)
            xw = nn.functional.linear(x, w_ih, b_ih)  # every step's input term at once: (B, T, 4H)
            h, c = hx[0][k], hx[1][k]
            outs = []
            for t in range(x.shape[1]):
                gates = xw[:, t] + nn.functional.linear(h, w_hh, b_hh)
                i, f, g, o = gates.chunk(4, dim=-1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                outs.append(h)
            x = torch.stack(outs, dim=1)
            last_h.append(h)
            last_c.append(c)
        out = x if self.batch_first else x.transpose(0, 1)
        return out, (torch.stack(last_h), torch.stack(last_c))


def _supported(m: nn.LSTM) -> bool:
    return not m.bidirectional and m.proj_size == 0 and m.dropout == 0


def batchable_lstms(model: nn.Module) -> nn.Module:
    """``model`` with each plain ``nn.LSTM`` it can write out (unidirectional, no projection, no dropout
    between layers) turned into a :class:`BatchableLSTM`, in place: the same parameters, names and init."""
    for m in model.modules():
        if type(m) is nn.LSTM and _supported(m):
            m.__class__ = BatchableLSTM
    return model


def unbatchable(model: nn.Module) -> list[str]:
    """The recurrent layers of ``model`` that ``vmap`` cannot batch (every ``nn.RNNBase`` but a
    :class:`BatchableLSTM`)."""
    return [type(m).__name__ for m in model.modules() if isinstance(m, nn.RNNBase) and not isinstance(m, BatchableLSTM)]
