"""Where clients keep what lasts between the rounds they take part in: their SGD momentum buffers and their
personal models (:attr:`fedbench.fl.client.Client.kept_momentum`, :attr:`~fedbench.fl.client.Client.kept`).

With ``client_state="disk"`` (``fedbench run --client-state disk``) each client's entries live in files
of a scratch folder of the run and are read back when the client trains again: the same tensors, bit for
bit (they are saved and loaded, never converted), for a run's peak memory of one client's state instead of
every client's (CIFAR-10's 80 MobileNetV2 momentum buffers are 0.7 GB; Shakespeare's 778 LSTM ones 2.6 GB).
The folder is ``$FEDBENCH_STATE_DIR`` or the system's temporary folder, removed when the run's clients are
released. With ``"memory"`` every client's entries stay in memory.

``"auto"`` (the default) decides per run with :func:`choose`: on disk when the one-at-a-time engine runs
and the clients' state could exceed :func:`memory_budget` (clients x one model's parameters per learner:
the size of their momentum), in memory otherwise: the vectorised engine stacks every client's rows in
memory for each round anyway, and a folder on a RAM-backed file system (tmpfs) would hold the same bytes in
memory where the process's own measure no longer shows them. The budget is this run's share of the machine:
:data:`MEMORY_SHARE` of its memory divided by the runs that share it (:func:`set_runs_at_once`: a sweep's
``--jobs``, or the runs a Ray node holds), never less than :data:`MEMORY_BUDGET_MIN`. In memory is the faster
place: on EMNIST (100 clients x 8.7 MB) the files cost ~40 ms a client, a round 25.0 s in memory against
29.0 s in files (results/paper-speed.md).
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import weakref
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import torch

from fedbench.fl.memory import memory_bytes

#: ``"auto"`` keeps the clients' state (clients x a model's parameters) in memory up to this part of the
#: machine's memory, divided by the runs that share the machine at once
MEMORY_SHARE = 1 / 8
#: ... and never less than this many bytes (also the budget where the machine's memory is unknown)
MEMORY_BUDGET_MIN = 256 * 2**20
_runs_at_once = [1]


def set_runs_at_once(n: int) -> None:
    """Tell :func:`memory_budget` that ``n`` runs share this machine's memory at once (a worker of ``--jobs n``)."""
    _runs_at_once[0] = max(1, int(n))


def memory_budget() -> int:
    """Bytes of client state ``"auto"`` keeps in memory: this run's share of the machine (:data:`MEMORY_SHARE` of
    its memory over the runs sharing it), at least :data:`MEMORY_BUDGET_MIN`."""
    total = memory_bytes()
    if total is None:
        return MEMORY_BUDGET_MIN
    return max(MEMORY_BUDGET_MIN, int(total * MEMORY_SHARE / _runs_at_once[0]))


#: file systems whose files are memory (``/proc/mounts`` types)
RAM_BACKED = ("tmpfs", "ramfs")


def base_folder() -> Path:
    """Where :class:`ScratchFolder` makes a run's folder: ``$FEDBENCH_STATE_DIR`` or the temporary folder."""
    return Path(os.environ.get("FEDBENCH_STATE_DIR") or tempfile.gettempdir())


def file_system(path: Path) -> str:
    """The type (``/proc/mounts``) of the file system that holds ``path`` (its deepest mount point above
    it), or ``""`` where it cannot be read (not Linux)."""
    path = path.resolve()
    best, kind = -1, ""
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return ""
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        mount = Path(fields[1].replace("\\040", " "))
        if (path == mount or mount in path.parents) and len(mount.parts) > best:
            best, kind = len(mount.parts), fields[2]
    return kind


def choose(mode: str, sequential: bool, n_clients: int, state_bytes: int) -> tuple[bool, str]:
    """(whether the clients keep their state in files, why) for ``client_state=mode`` when ``n_clients``
    clients may each keep ``state_bytes`` (one model's parameters, all learners) and ``sequential`` says
    whether the one-at-a-time engine runs."""
    if mode != "auto":
        return mode == "disk", f"asked for: client_state={mode}"
    total = n_clients * state_bytes
    size = f"{n_clients} clients x {state_bytes / 2**20:.1f} MB"
    if not sequential:
        return False, "auto: the vectorized engine holds every client's rows in memory each round"
    budget = memory_budget()
    share = f"{budget / 2**20:,.0f} MB (this run's share of the memory)"
    if total <= budget:
        return False, f"auto: {size} within {share}"
    base = base_folder()
    kind = file_system(base)
    if kind in RAM_BACKED:
        return False, (f"auto: {size} over {share}, but {base} is {kind} (memory); "
                       "set FEDBENCH_STATE_DIR to a folder on a disk")
    return True, f"auto: {size} over {share}, files under {base}"


class DiskSlots(MutableMapping):
    """A mapping name -> list of tensors (or None) whose values are files: setting one saves it, getting one
    loads it (onto the device it was saved from). Only the names stay in memory."""

    def __init__(self, folder: ScratchFolder, prefix: str, initial: dict[str, Any] | None = None) -> None:
        self._folder, self._prefix = folder, prefix
        self._files: dict[str, Path] = {}
        self._written = 0  # files ever named here: a new key never takes the name of a deleted one's live neighbour
        for key, value in (initial or {}).items():
            self[key] = value

    @classmethod
    def of_client(cls, folder: ScratchFolder, client_id: int, name: str, initial: dict[str, Any]) -> DiskSlots:
        """A client's slots called ``name`` (``"kept"``, ``"momentum"``) in ``folder``, holding ``initial``."""
        return cls(folder, f"client{client_id}-{name}", initial)

    def __setitem__(self, key: str, value: Any) -> None:
        path = self._files.get(key)
        if path is None:
            path = self._folder.path / f"{self._prefix}-{self._written}.pt"
            self._written += 1
        torch.save(value, path)
        self._files[key] = path

    def __getitem__(self, key: str) -> Any:
        if key not in self._files:
            raise KeyError(key)
        return torch.load(self._files[key], weights_only=True)

    def __delitem__(self, key: str) -> None:
        self._files.pop(key).unlink(missing_ok=True)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._files))

    def __len__(self) -> int:
        return len(self._files)


class ScratchFolder:
    """A new folder for one run's client state under ``$FEDBENCH_STATE_DIR`` (or the system's temporary
    folder), removed with its files once nothing refers to this object (every :class:`DiskSlots` of the run
    holds it), or at exit. A process killed before that leaves its folder; its name holds the host and the
    process id, and the next folder made on that host removes those of processes no longer alive there."""

    PREFIX = "fedbench-client-state-"

    def __init__(self) -> None:
        base = base_folder()
        base.mkdir(parents=True, exist_ok=True)
        host = socket.gethostname().replace("-", "_")
        self.path = Path(tempfile.mkdtemp(prefix=f"{self.PREFIX}{host}-{os.getpid()}-", dir=base))
        weakref.finalize(self, shutil.rmtree, self.path, True)
        for old in base.glob(f"{self.PREFIX}{host}-*-*"):
            pid = old.name[len(f"{self.PREFIX}{host}-"):].split("-")[0]
            if pid.isdigit() and old != self.path and not _alive(int(pid)):
                shutil.rmtree(old, ignore_errors=True)


def _alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this host (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True
