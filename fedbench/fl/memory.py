"""The process's memory: the machine's size, a check before a data set is made, and handing freed heap back.

glibc keeps the blocks a round frees (every client's update, momentum copies) and serves later allocations
from a heap that only grows: on EMNIST with 100 clients the resident size grew ~0.6 GB a round past what the
run holds. :func:`release` gives them back (``malloc_trim``) where the C library has it, and does nothing
elsewhere.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import time

from fedbench.errors import DataError


def memory_bytes() -> int | None:
    """This machine's physical memory in bytes (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits(what: str, needs: float, fix: str) -> None:
    """One line before any work when ``needs`` bytes (a lower bound of what a data set will hold) exceed this
    machine's memory: a loader calls it with its settings' size before it allocates or draws anything."""
    total = memory_bytes()
    if total is not None and needs > total:
        raise DataError(f"{what} needs at least {needs / 2**30:,.1f} GiB in memory, more than this machine's "
                        f"{total / 2**30:,.1f} GiB; {fix}")


@functools.lru_cache(maxsize=1)
def _trim():  # noqa: ANN202 - glibc's malloc_trim, or None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


def release() -> None:
    """Hand the heap's free blocks back to the OS (glibc's ``malloc_trim(0)``; elsewhere nothing). No numbers
    change: only memory no object holds is returned."""
    trim = _trim()
    if trim is not None:
        trim(0)


#: :func:`release_if_large` hands memory back after work on models of at least this many bytes; for a small one
#: the pages it would have to fault in again cost more (5-12 % of a synthetic round) than they save
RELEASE_EACH_BYTES = 1 << 20


#: the one-at-a-time engine hands memory back after a client at most once in this many seconds: a trim gives back
#: pages the next client faults in again, ~70 ms a client of EMNIST's CNN on a 2-core CPU (a round of 100
#: clients 28.4 s with a trim after each, 21.3 s without: results/paper-speed.md); every round and evaluation
#: still ends with one
RELEASE_INTERVAL_S = 2.0
_released_at = [float("-inf")]


def release_if_large(params: list, interval: float = 0.0) -> bool:
    """:func:`release` when ``params`` (a model's tensors) hold at least :data:`RELEASE_EACH_BYTES` and the last
    release of this process was at least ``interval`` seconds ago; whether it released."""
    if sum(p.numel() * p.element_size() for p in params) < RELEASE_EACH_BYTES:
        return False
    if time.monotonic() - _released_at[0] < interval:
        return False
    release()
    _released_at[0] = time.monotonic()
    return True
