"""Which samples every row trains on at every step of a phase: the reference's batch orders drawn per
client, grouped into as few row sets per step as pay, gathered into reused buffers."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import torch

from fedbench.fl.client import Client
from fedbench.fl.learner import order_keys
from fedbench.fl.seeding import STREAM_TRAIN, generators

#: input elements gathered at most at once in a training step (bounds memory for big inputs)
ROW_BUDGET = 1 << 24
#: a row set's fixed cost in a training step, in padded input elements of a small model (a model's padded
#: sample costs max(its input elements, its parameters)): rows with short batches join the full ones when
#: padding them costs less (1.15-1.25x a round, measured by python benchmarks/row_sets.py)
SET_COST = 1 << 22


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



class Schedule:
    """Batch orders, row sets and gathers (a mixin of :class:`fedbench.engine.vectorized.VectorizedEngine`)."""

    def _schedule(
        self, clients: Sequence[Client], m: int, epochs: int, batch: int, round_: int, stream: int = STREAM_TRAIN,
        whole: bool = False, drop_last: bool = False,
    ) -> _Steps:
        """Every row's batches of the phase (:class:`_Steps`): rows client-major, learner-minor; steps
        epoch-major, ``epochs * nb_max`` of them.

        Each client's keys come from its own round generator exactly as in
        :func:`fedbench.fl.learner.epoch_orders`. Clients with the same number of
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
        :meth:`fedbench.fl.learner.Learner.fit_epochs` skips it."""
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
