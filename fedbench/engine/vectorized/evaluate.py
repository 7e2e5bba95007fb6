"""The vectorised engine's no-grad passes: the E-step's per-sample losses and every client's evaluation,
once per distinct set of parameters over the pooled samples of the clients that received it."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.func import vmap

from fedbench.runs import datacache
from fedbench.fl.client import Client, EvalResult
from fedbench.fl.messages import EvaluateIns
from fedbench.fl.data import segment_sum
from fedbench.fl.learner import EVAL_BUDGET  # input elements per chunk in no-grad passes

#: elements of layer outputs live at once in a no-grad pass: twice the widest layer output per sample (a layer's
#: input and output), times the samples (and learners) of the pass. A small conv net on 28x28 inputs holds ~50,000 per sample, so an
#: input-only bound (2,674 samples of 784 inputs per chunk) let one pass hold 0.5 GB of activations per learner
EVAL_ACTIVATIONS = 1 << 25


def _mix(weights: torch.Tensor, proba: torch.Tensor, dim: int) -> torch.Tensor:
    """The mixture ``sum_m pi_m p_m``: ``weights`` (its learner axis at ``dim``) broadcast over ``proba``'s
    trailing axes, summed over ``dim``."""
    return (weights.reshape(*weights.shape, *([1] * (proba.dim() - weights.dim()))) * proba).sum(dim=dim)


def _eval_results(clients: Sequence[Client], scores: dict[str, torch.Tensor]) -> list[EvalResult]:
    """Per client, its :class:`EvalResult` from ``scores[split]`` (2, C): mean loss and accuracy."""
    return [EvalResult(c.client_id, c.n_train, c.data.n_test, float(scores["train"][0, k]), float(scores["train"][1, k]),
                       float(scores["test"][0, k]), float(scores["test"][1, k])) for k, c in enumerate(clients)]



class Evaluate:
    """E-step losses and evaluation (a mixin of :class:`fedbench.engine.vectorized.VectorizedEngine`)."""

    def _groups(self, clients: Sequence[Client], params: Sequence[list[torch.Tensor]]) -> list[list[int]]:
        """Indices of clients grouped by the values of the parameters they are scored with (and of their
        buffers, for a model with buffers): a group is scored in one pass of its shared model. The values
        decide, not how an aggregator built its lists: the same list object is the shortcut (no comparison),
        equal copies join the same group."""
        def state(i: int) -> list[torch.Tensor]:
            return [*params[i], *(b for b in clients[i].buffers if b is not None)] if self.buffer_names else list(params[i])

        by_object: dict[tuple, list[int]] = {}
        for i, ps in enumerate(params):
            key = (id(ps), *(id(b) for b in clients[i].buffers)) if self.buffer_names else (id(ps),)
            by_object.setdefault(key, []).append(i)
        # equal values have equal shapes and equal sums: only states with the same (shapes, sums) are compared
        # element by element, so clients that each hold their own parameters cost one pass each, not a pass per pair
        groups: list[list[int]] = []
        candidates: dict[tuple, list[tuple[list[torch.Tensor], list[int]]]] = {}
        for members in by_object.values():
            mine = state(members[0])
            key = (tuple(t.shape for t in mine), tuple(torch.stack([t.sum(dtype=torch.float64) for t in mine]).tolist()) if mine else ())
            for theirs, group in candidates.setdefault(key, []):
                if all(torch.equal(a, b) for a, b in zip(mine, theirs)):
                    group.extend(members)
                    break
            else:
                groups.append(list(members))
                candidates[key].append((mine, groups[-1]))
        return [sorted(g) for g in groups]

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
    def _evaluate_own(self, clients: Sequence[Client], params: Sequence[list[torch.Tensor]],
                      pi: torch.Tensor) -> list[EvalResult]:
        """:meth:`evaluate` for clients that each hold their own parameters, many clients per
        vmapped pass (:meth:`_own_outputs`) instead of a pass per client: each client's mixture
        ``sum_m pi_m p_m`` (``pi`` (C, M)) on its padded samples, scored, the padding masked out, summed per
        client in float64 as :meth:`Client.score` sums."""
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
    def evaluate(self, clients: Sequence[Client],
                 instructions: Sequence[EvaluateIns | list[torch.Tensor]]) -> list[EvalResult]:
        """What ``[c.evaluate(p) for c, p in zip(clients, params)]`` returns, batched (per client for a
        client type with its own ``evaluate`` or ``score``, e.g. FedAvg+'s fine-tuned copy, and for clients
        that first adapt: unseen clients, scored one at a time as the reference scores them)."""
        instructions = self.evaluate_instructions(clients, instructions)
        if any(ins.adapt_lr is not None for ins in instructions):
            with torch.enable_grad():  # adapting may train
                return self.one_at_a_time.evaluate(clients, instructions)
        if any(type(c).evaluate is not Client.evaluate or type(c).score is not Client.score for c in clients):
            with torch.enable_grad():  # an evaluation may train (a fine-tuned copy)
                return [c.evaluate(ins.params) for c, ins in zip(clients, instructions)]
        predictors = [c.predictor(ins.params) for c, ins in zip(clients, instructions)]  # (parameters, weights)
        params = [p for p, _ in predictors]
        weights = torch.stack([w for _, w in predictors])  # (C, M)
        results: list[EvalResult | None] = [None] * len(clients)
        groups = self._groups(clients, params)
        alone = [g[0] for g in groups if len(g) == 1]
        if len(alone) > 1:  # clients with parameters of their own (local or decentralised training): many per pass
            for i, result in zip(alone, self._evaluate_own([clients[i] for i in alone], [params[i] for i in alone],
                                                           weights[alone])):
                results[i] = result
            groups = [g for g in groups if len(g) > 1]
        for group in groups:
            members = [clients[i] for i in group]
            pi = weights[group]  # (C, M)
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
