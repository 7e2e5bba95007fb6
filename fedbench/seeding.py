"""Explicit random generators derived from (seed, round, client, ...).

Every random draw of a run comes from a generator made here, so results do not
depend on execution order, on the executor, or on torch's global RNG.
"""

from __future__ import annotations

import numpy as np
import torch


def derive_seed(*keys: int) -> int:
    """A 63-bit seed that depends on every key (order matters)."""
    state = np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in keys] + [len(keys)]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 ^ int(state[1])


def generator(*keys: int) -> torch.Generator:
    """A CPU torch generator seeded from the keys."""
    return torch.Generator().manual_seed(derive_seed(*keys))


#: stream tags, so that different uses of the same (seed, round) never share a stream
STREAM_INIT, STREAM_SAMPLE, STREAM_TRAIN = 1, 2, 3
