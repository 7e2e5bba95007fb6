"""Explicit random generators derived from (seed, round, client, ...).

Every random draw of a run comes from a generator made here, so results do not
depend on execution order, on the executor, or on torch's global RNG.
"""

from __future__ import annotations

import torch


_MASK = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    """One step of the SplitMix64 finaliser (Steele et al. 2014): a cheap, well-mixed 64-bit hash."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def _chain(h: int, keys: tuple[int, ...] | list[int]) -> int:
    """``h`` hash-chained with each key in turn."""
    for k in keys:
        h = _splitmix64(h ^ (int(k) & _MASK))
    return h


def derive_seed(*keys: int) -> int:
    """A 63-bit seed that depends on every key and on their order (hash-chained SplitMix64)."""
    return _chain(_splitmix64(len(keys)), keys) >> 1


def generator(*keys: int) -> torch.Generator:
    """A CPU torch generator seeded from the keys."""
    return torch.Generator().manual_seed(derive_seed(*keys))


def generators(prefix: tuple[int, ...], last: list[int]) -> list[torch.Generator]:
    """``[generator(*prefix, k) for k in last]``, hashing the shared prefix once (a round's per-client
    generators: ``prefix`` = (seed, stream, round), ``last`` = the client ids)."""
    h = _chain(_splitmix64(len(prefix) + 1), prefix)
    return [torch.Generator().manual_seed(_chain(h, (k,)) >> 1) for k in last]


def seed_global(*keys: int) -> None:
    """Seed torch's global generators from the keys: layers that draw from them (dropout in
    MobileNetV2's classifier) then give the same numbers in every process, whatever ran before.

    The CPU generator, and CUDA's once CUDA is in use. Not ``torch.manual_seed``: in a process that has
    not started CUDA (every CPU run) a CUDA build of torch keeps each call, with a formatted stack
    trace, to replay at CUDA's start; called per client and round, that took 0.57 ms a call (about 40 %
    of an AFL round on the synthetic benchmark, 0.17 s of every one-at-a-time round of 300 clients).
    """
    seed = derive_seed(*keys)
    torch.random.default_generator.manual_seed(seed)
    if torch.cuda.is_initialized():
        torch.cuda.manual_seed_all(seed)


#: stream tags, so that different uses of the same (seed, round) never share a stream
STREAM_INIT, STREAM_SAMPLE, STREAM_TRAIN, STREAM_UNSEEN, STREAM_GLOBAL = 1, 2, 3, 4, 5
#: dropout masks (:mod:`fedbench.fl.dropout`), keyed by (seed, phase stream, round, client, learner)
STREAM_DROPOUT = 6
