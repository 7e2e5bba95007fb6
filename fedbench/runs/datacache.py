"""A content-addressed disk cache for generated data sets.

A data set whose spec says ``cache=True`` is a pure function of its parameters and its code (the
synthetic benchmark draws ~2-3 s of numpy random numbers on every run). Its tensors are kept in
``FEDBENCH_DATA_CACHE`` (default ``~/.cache/fedbench/data``; ``off`` disables the cache) under a
name that hashes the data set's name, its parameters, the fingerprint of the code that generates
it (the core and its plugin's modules, :mod:`fedbench.runs.fingerprint`) and the torch and numpy
versions: editing the generator, or any parameter, makes a new entry, never a stale hit.

Entries are written to a temporary file and renamed into place, never written in place (a run maps
them: a file truncated under a reader's memory map kills it with SIGBUS), so a killed writer or two
processes writing the same entry at once never leave a partial file. Every tensor's SHA-256 is stored with
it and checked at every load (0.7 s for the paper's synthetic federation here): an entry that cannot be read,
or whose bytes changed since they were written (disk damage, a flipped bit), is regenerated and rewritten,
with a warning, never used. A failed write (a full or read-only disk) warns and goes on with the data in memory. Entries are loaded memory-mapped (a fresh entry
too, once written), and :func:`release` lets a reader hand the pages it has read back to the page
cache: the evaluation streams the 0.9 GB test set of the paper's synthetic federation chunk by chunk
without holding it all resident.

The folder is bounded: after writing an entry, the least recently used others are deleted until
the entries take at most ``FEDBENCH_DATA_CACHE_GB`` gigabytes (default 4; the paper's synthetic
federation is one 0.96 GB entry). Every code change makes new keys, so without a bound a
developer's cache would grow by an entry per edit.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from fedbench.fl.data import FederatedData

#: the FederatedData fields stored as tensors, and the ones stored as metadata
TENSORS = ("train_x", "train_y", "train_offsets", "test_x", "test_y", "test_offsets", "class_weights", "input_table")
FORMAT = 3  # 2: a SHA-256 per tensor (meta['digest']), checked at every load; 3: input_table
#: default bound of the folder, in gigabytes (``FEDBENCH_DATA_CACHE_GB``)
DEFAULT_GB = 4.0
#: a temporary file older than this (seconds) was left by a killed writer and is deleted
STALE_TMP_S = 3600


def cache_dir() -> Path | None:
    """Where entries live, or None when ``FEDBENCH_DATA_CACHE=off``."""
    value = os.environ.get("FEDBENCH_DATA_CACHE", "")
    if value.strip().lower() in {"off", "0", "no", "false"}:
        return None
    return Path(value).expanduser() if value else Path.home() / ".cache" / "fedbench" / "data"


def entry_key(name: str, params: tuple, code: str) -> str:
    """The content address of a data set: a hash of everything its tensors depend on."""
    import numpy

    blob = json.dumps([FORMAT, name, [list(p) for p in params], code, torch.__version__, numpy.__version__],
                      default=repr, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def checksum(tensor: torch.Tensor | None) -> str:
    """The SHA-256 of a tensor's dtype, shape and bytes (about 1.4 GB/s here, where the CPU has SHA
    instructions: 0.7 s for the paper's synthetic federation, against 2-3 s to generate it)."""
    if tensor is None:
        return ""
    h = hashlib.sha256(f"{tensor.dtype} {tuple(tensor.shape)}".encode())
    if tensor.numel():
        h.update(memoryview(tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()


def _digest(tensors: dict[str, Any]) -> dict[str, str]:
    digest = {}
    for k in TENSORS:
        t = tensors.get(k)
        digest[k] = checksum(t)
        if isinstance(t, torch.Tensor):
            release(t)  # (a mapped entry's pages, read once here, need not stay resident)
    return digest


def _save(path: Path, data: FederatedData) -> None:
    payload: dict[str, Any] = {k: getattr(data, k) for k in TENSORS}
    payload["meta"] = {"task": data.task, "num_classes": data.num_classes, "drop_last": data.drop_last, "format": FORMAT,
                       "digest": _digest(payload)}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load(path: Path, verify: bool = True) -> FederatedData:
    payload = torch.load(path, mmap=True, weights_only=True)
    meta = payload.pop("meta")
    if meta.get("format") != FORMAT:
        raise ValueError(f"format {meta.get('format')}, expected {FORMAT}")
    if verify:
        want = meta.get("digest")
        if want is None:
            raise ValueError("no content checksum (written by an older fedbench)")
        got = _digest(payload)
        bad = [k for k in TENSORS if want.get(k) != got[k]]
        if bad:
            raise ValueError(f"its content does not match its checksum ({', '.join(bad)} changed since it was written)")
    return FederatedData(**{k: payload[k] for k in TENSORS}, task=meta["task"], num_classes=meta["num_classes"],
                         drop_last=bool(meta.get("drop_last", False)))


def cached(name: str, params: tuple, code: Callable[[], str], generate: Callable[[], FederatedData]) -> FederatedData:
    """``generate()``, or the entry it wrote before for the same name, parameters and ``code()`` fingerprint."""
    root = cache_dir()
    if root is None:
        return generate()
    path = root / f"{name}-{entry_key(name, params, code())}.pt"
    if path.exists():
        try:
            data = _load(path)
        except Exception as e:  # noqa: BLE001 - a damaged entry is regenerated, not fatal
            warnings.warn(f"data cache entry {path} could not be read ({type(e).__name__}: {e}); regenerating it", stacklevel=2)
        else:
            try:
                os.utime(path)  # recently used: the last to be evicted
            except OSError:  # a read-only cache is still read
                pass
            return data
    data = generate()
    try:
        _save(path, data)
        evict(root, keep=path)
        data = _load(path, verify=False)  # the same tensors, now file-backed: their pages can be released (release)
    except (OSError, RuntimeError) as e:  # a read-only or full disk costs the next run the generation, nothing else
        # (torch.save reports a full disk as a RuntimeError from its zip writer)
        warnings.warn(f"could not write the data cache entry {path} ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                      "going on with the data in memory; set FEDBENCH_DATA_CACHE to a writable folder or to off",
                      stacklevel=2)
    return data


def evict(root: Path, keep: Path) -> list[Path]:
    """Delete the least recently used entries other than ``keep`` until the folder's entries take at most
    ``FEDBENCH_DATA_CACHE_GB`` gigabytes, and temporary files killed writers left; returns the deleted entries. (A process still reading a deleted
    entry keeps its memory map: the file goes when the last reader closes it.)"""
    try:
        limit = float(os.environ.get("FEDBENCH_DATA_CACHE_GB", DEFAULT_GB)) * 1e9
    except ValueError:
        limit = DEFAULT_GB * 1e9
    for p in root.glob("*.tmp"):  # left by a writer killed more than an hour ago (a live one is writing now)
        try:
            if time.time() - p.stat().st_mtime > STALE_TMP_S:
                p.unlink(missing_ok=True)
        except OSError:
            pass
    entries = []
    for p in root.glob("*.pt"):
        try:
            st = p.stat()
        except OSError:  # deleted meanwhile by another process
            continue
        entries.append((st.st_mtime, st.st_size, p))
    total = sum(size for _, size, _ in entries)
    gone = []
    for _, size, p in sorted(entries, key=lambda e: e[0]):
        if total <= limit:
            break
        if p == keep:
            continue
        p.unlink(missing_ok=True)
        total -= size
        gone.append(p)
    return gone


MADV_DONTNEED = 4  # Linux


def _mapping_of(start: int, end: int) -> str | None:
    """The file mapped at ``[start, end)`` of this process's memory (Linux), or None."""
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                fields = line.split(maxsplit=5)
                lo, hi = (int(v, 16) for v in fields[0].split("-"))
                if lo <= start and end <= hi:
                    return fields[5].strip() if len(fields) == 6 else None
    except OSError:
        return None
    return None


def release(tensor: torch.Tensor) -> int:
    """Drop ``tensor``'s resident pages from this process if it lies in a memory-mapped entry of the data
    cache; returns the bytes released (0 for any other tensor, which is left alone).

    The data stay in the operating system's page cache, so the next read maps them back without disk I/O;
    they no longer count in this process's resident memory. Only whole pages inside the tensor are released.
    Entries are never written through the mapping, so nothing is lost (Linux only; elsewhere a no-op).
    """
    import sys

    root = cache_dir()
    if not sys.platform.startswith("linux") or root is None or tensor.device.type != "cpu" or tensor.numel() == 0:
        return 0
    if not tensor.is_contiguous():
        return 0
    start = tensor.data_ptr()
    end = start + tensor.numel() * tensor.element_size()
    page = os.sysconf("SC_PAGE_SIZE")
    lo, hi = -(-start // page) * page, end // page * page
    if hi <= lo:
        return 0
    path = _mapping_of(start, end)
    if path is None or Path(path).parent != root.resolve() and Path(path).parent != root:
        return 0  # anonymous memory (a generated or copied tensor) or another file: never touched
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    if libc.madvise(lo, hi - lo, MADV_DONTNEED) != 0:
        return 0
    return hi - lo
