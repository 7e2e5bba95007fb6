"""Executors: run many configurations, in this process or in worker processes.

Every worker opens its own connection to the one SQLite results file (WAL
mode), so finished runs are stored the moment they finish: a sweep killed at
any point loses only the runs in flight, and re-running it skips every run
already ``done``.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import sys
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path

from tqdm.auto import tqdm

from fedbench.config import RunConfig
from fedbench.errors import ConfigError
from fedbench.runner import RunOutcome, execute_run
from fedbench.store import ResultStore


def assign_devices(configs: Sequence[RunConfig], devices: Sequence[str]) -> list[RunConfig]:
    """Configs with devices assigned round-robin (the device is not part of a run's id)."""
    if not devices:
        raise ConfigError("--devices needs at least one device, e.g. --devices cpu or --devices cuda:0,cuda:1")
    return [dataclasses.replace(c, device=devices[i % len(devices)]) for i, c in enumerate(configs)]


def threads_per_worker(jobs: int) -> int:
    """Torch threads per worker so that workers do not oversubscribe the cores."""
    return max(1, (os.cpu_count() or 1) // jobs)


def start_method(jobs: int) -> str:
    """How to start workers: ``fork`` (no second import of torch: a sweep of short runs gains the
    most) only where it is safe - on Linux, from a process with no other thread, for workers that
    run one torch thread (no OpenMP thread pool is used in the child); else ``spawn``."""
    if sys.platform == "linux" and threading.active_count() == 1 and threads_per_worker(jobs) == 1:
        return "fork"
    return "spawn"


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _work(cfg: RunConfig, results: str, data_root: str | None, force: bool) -> RunOutcome:
    from fedbench.registry import get_registry

    store = ResultStore(results)
    try:
        return execute_run(get_registry(), cfg, store, data_root=Path(data_root) if data_root else None, force=force, progress=False)
    finally:
        store.close()


def run_local(
    configs: Sequence[RunConfig],
    results: str | Path,
    *,
    jobs: int = 1,
    data_root: Path | None = None,
    force: bool = False,
    progress: bool = True,
    on_outcome=None,  # noqa: ANN001 - callable(RunOutcome) -> None
) -> list[RunOutcome]:
    """Run ``configs`` with ``jobs`` worker processes (1: in this process); outcomes in input order."""
    if jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {jobs}")
    outcomes: list[RunOutcome | None] = [None] * len(configs)
    bar = None

    def done(i: int, outcome: RunOutcome) -> None:
        outcomes[i] = outcome
        bar.update(1)
        if on_outcome is not None:
            on_outcome(outcome)

    def progress_bar() -> tqdm:
        return tqdm(total=len(configs), desc="runs", unit="run", disable=not progress or len(configs) < 2)

    if jobs == 1:
        from fedbench.registry import get_registry

        bar = progress_bar()
        store = ResultStore(results)
        for i, cfg in enumerate(configs):
            done(i, execute_run(get_registry(), cfg, store, data_root=data_root, force=force, progress=progress))
        bar.close()
        return outcomes  # type: ignore[return-value]

    ResultStore(results).close()  # create the file and its schema once, before the workers open it
    ctx = mp.get_context(start_method(jobs))
    with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_worker, initargs=(threads_per_worker(jobs),)) as pool:
        # with fork, every worker starts at the first submit: before the progress bar's monitor thread
        pending: dict[Future, int] = {
            pool.submit(_work, cfg, str(results), str(data_root) if data_root else None, force): i
            for i, cfg in enumerate(configs)
        }
        bar = progress_bar()
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                done(pending.pop(fut), fut.result())
    bar.close()
    return outcomes  # type: ignore[return-value]


def run_ray(
    configs: Iterable[RunConfig],
    results: str | Path,
    *,
    address: str | None = None,
    data_root: Path | None = None,
    force: bool = False,
    num_cpus: int | None = None,
    on_outcome=None,  # noqa: ANN001
) -> list[RunOutcome]:
    """The same runs as Ray tasks (one CPU each; one GPU when the run's device is cuda)."""
    try:
        import ray
    except ImportError as e:
        raise ConfigError("--executor ray needs Ray: pip install 'fedbench-suite[ray]'") from e
    configs = list(configs)
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    try:
        remote = ray.remote(_ray_work)
        refs = [
            remote.options(num_cpus=1, num_gpus=1 if c.device.startswith("cuda") else 0).remote(
                c, str(results), str(data_root) if data_root else None, force
            )
            for c in configs
        ]
        index = {ref: i for i, ref in enumerate(refs)}
        outcomes: list[RunOutcome | None] = [None] * len(refs)
        remaining = list(refs)
        while remaining:
            ready, remaining = ray.wait(remaining, num_returns=1)
            outcome = ray.get(ready[0])
            outcomes[index[ready[0]]] = outcome
            if on_outcome is not None:
                on_outcome(outcome)
        return outcomes  # type: ignore[return-value]
    finally:
        if started_here:
            ray.shutdown()


def _ray_work(cfg: RunConfig, results: str, data_root: str | None, force: bool) -> RunOutcome:
    _init_worker(1)
    return _work(cfg, results, data_root, force)
