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
import signal
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from tqdm.auto import tqdm

from fedbench.fl.config import RunConfig
from fedbench.errors import ClaimLost, ConfigError, FedbenchError, ResultsError
from fedbench.plugin.hookspecs import hookimpl
from fedbench.runs.runner import Attempt, RunOutcome, compute, execute_run, store_attempt
from fedbench.plugin.specs import ExecutorSpec
from fedbench.reporting.store import Held, ResultStore


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


def _init_worker(threads: int, runs_at_once: int) -> None:
    """A worker's torch threads, and how many runs share its machine's memory (``auto``'s client-state budget)."""
    import torch

    from fedbench.runs.client_state import set_runs_at_once

    torch.set_num_threads(threads)
    set_runs_at_once(runs_at_once)


def die_with_parent(parent_pid: int) -> None:
    """Make this process get SIGTERM when ``parent_pid`` dies (Linux ``PR_SET_PDEATHSIG``; elsewhere a
    thread that watches the parent pid), so that no orphan worker runs on after a ``kill -9`` of the
    sweep; SIGTERM lets it store its run as interrupted first."""
    if sys.platform == "linux":
        import ctypes

        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
        except OSError:
            pass
    else:
        def watch() -> None:
            while os.getppid() == parent_pid:
                time.sleep(1.0)
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=watch, daemon=True).start()
    if os.getppid() != parent_pid:  # the parent died before the death signal was armed
        os._exit(1)


def _stop_on_sigterm(signum: int, frame) -> None:  # noqa: ANN001
    from fedbench.runs.runner import Interrupted

    signal.alarm(10)  # a worker that cannot stop within 10 s is ended by SIGALRM
    raise Interrupted()


def _worker_main(conn, threads: int, jobs: int, parent_pid: int, results: str, data_root: str | None, force: bool) -> None:  # noqa: ANN001
    """A worker: runs the configs its parent sends, one at a time, until told to stop."""
    from fedbench.plugin.registry import get_registry
    from fedbench.runs.runner import Interrupted

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        die_with_parent(parent_pid)
        _init_worker(threads, jobs)
        store = ResultStore(results)
        while True:
            task = conn.recv()
            if task is None:
                break
            i, cfg = task
            try:
                outcome = execute_run(
                    get_registry(), cfg, store, data_root=Path(data_root) if data_root else None, force=force, progress=False
                )
            except Interrupted:
                conn.send((i, RunOutcome(cfg, "failed", error="interrupted")))
                break
            except ResultsError as e:  # the results file cannot be written (a full disk): the parent stops the sweep
                conn.send((i, e))
                break
            conn.send((i, outcome))
    except ResultsError as e:  # the results file could not even be opened for writing (a full disk)
        try:
            conn.send((-1, e))
        except (EOFError, BrokenPipeError, OSError):
            pass
    except (Interrupted, EOFError, BrokenPipeError, KeyboardInterrupt):
        pass


class _Worker:
    """One worker process, the pipe to it, and the run it is computing."""

    def __init__(self, jobs: int, results: str, data_root: str | None, force: bool) -> None:
        ctx = mp.get_context(start_method(jobs))
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(
            target=_worker_main, args=(child, threads_per_worker(jobs), jobs, os.getpid(), results, data_root, force), daemon=True
        )
        self.proc.start()
        child.close()
        self.task: tuple[int, RunConfig] | None = None

    def send(self, task: tuple[int, RunConfig] | None) -> None:
        self.task = task
        try:
            self.conn.send(task)
        except (BrokenPipeError, OSError):
            pass  # it died: its sentinel says so

    def fail(self, store: ResultStore, done, why: str) -> None:  # noqa: ANN001
        """Its run ends ``failed`` with ``why`` (the worker died or was stopped): release its claim, report it."""
        i, cfg = self.task
        store.abandon(cfg.run_id, self.proc.pid, why)
        self.task = None
        done(i, RunOutcome(cfg, "failed", error=why))

    def death(self) -> str:
        code = self.proc.exitcode
        if code is not None and code < 0:
            return f"worker died (signal {-code}{', ' + signal.Signals(-code).name if -code in signal.valid_signals() else ''})"
        return f"worker exited with code {code}"


def _wait_released(store: ResultStore, configs: Sequence[RunConfig]) -> None:
    """Wait until no other live process holds any of ``configs``."""
    print(f"fedbench: waiting for {len(configs)} run(s) that another process is computing", file=sys.stderr)
    while any(store.holder(c.run_id) is not None for c in configs):
        time.sleep(1.0)


def run_local(
    configs: Sequence[RunConfig],
    results: str | Path,
    *,
    jobs: int = 1,
    data_root: Path | None = None,
    force: bool = False,
    progress: bool | None = True,
    on_outcome=None,  # noqa: ANN001 - callable(RunOutcome) -> None
) -> list[RunOutcome]:
    """Run ``configs`` with ``jobs`` worker processes (1: in this process); outcomes in input order.

    A run another live process is computing is waited for, never computed twice. A worker that dies
    (``kill -9``, the OOM killer) fails only its run; a fresh worker takes the next. The first Ctrl-C
    stops scheduling, stops the running runs (stored as interrupted) and raises KeyboardInterrupt
    within a few seconds; a second Ctrl-C kills the workers at once.
    """
    if jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {jobs}")
    configs = list(configs)
    outcomes: list[RunOutcome | None] = [None] * len(configs)
    store = ResultStore(results)  # creates the file and its schema once, before any worker opens it
    tqdm.monitor_interval = 0  # no monitor thread (tqdm starts one with any bar): workers can be forked safely
    # progress None is tqdm's own switch: a bar on a terminal, none in a log (where each run's line says enough)
    quiet = progress is False or len(configs) < 2
    bar = tqdm(total=len(configs), desc="runs", unit="run", disable=True if quiet else (None if progress is None else False))

    def done(i: int, outcome: RunOutcome) -> None:
        outcomes[i] = outcome
        if outcome.status == "held":
            return
        bar.update(1)
        if on_outcome is not None:
            on_outcome(outcome)

    todo = list(range(len(configs)))
    try:
        while todo:
            if jobs == 1:
                from fedbench.plugin.registry import get_registry

                for i in todo:
                    done(i, execute_run(get_registry(), configs[i], store, data_root=data_root, force=force, progress=progress))
            else:
                _run_pool(configs, todo, store, jobs, str(results), str(data_root) if data_root else None, force, done)
            todo = [i for i in todo if outcomes[i] is not None and outcomes[i].status == "held"]
            if todo:
                _wait_released(store, [configs[i] for i in todo])
                force = False  # what the other process finished counts: not computed twice
    except KeyboardInterrupt:
        bar.close()
        finished = sum(o is not None and o.status in ("done", "diverged", "skipped") for o in outcomes)
        print(
            f"fedbench: interrupted: {finished} of {len(configs)} runs finished and are stored; "
            "run the same command again to compute the rest",
            file=sys.stderr,
        )
        raise
    finally:
        store.close()
    bar.close()
    return outcomes  # type: ignore[return-value]


def _run_pool(configs, todo, store, jobs, results, data_root, force, done) -> None:  # noqa: ANN001
    """The runs ``todo`` on up to ``jobs`` worker processes that are replaced when they die."""
    from multiprocessing.connection import wait as wait_any

    queue = list(todo)
    queue.reverse()
    workers: list[_Worker] = []

    def feed(w: _Worker) -> None:
        """The next queued run to ``w``, or tell it to exit."""
        if queue:
            i = queue.pop()
            w.send((i, configs[i]))
        else:
            w.send(None)

    try:
        for _ in range(min(jobs, len(queue))):
            w = _Worker(jobs, results, data_root, force)
            workers.append(w)
            feed(w)
        while any(w.task is not None for w in workers):
            busy = [w for w in workers if w.task is not None]
            ready = set(wait_any([w.conn for w in busy] + [w.proc.sentinel for w in busy], timeout=1.0))
            for w in busy:
                if w.conn in ready or w.proc.sentinel in ready:
                    message = None
                    try:
                        if w.conn.poll():
                            message = w.conn.recv()
                    except (EOFError, OSError):
                        message = None
                    if message is not None:
                        i, outcome = message
                        if isinstance(outcome, ResultsError):  # one line for the whole sweep, not a crash loop
                            raise ResultsError(str(outcome))
                        w.task = None
                        done(i, outcome)
                        feed(w)
                    elif not w.proc.is_alive():
                        w.proc.join()
                        w.fail(store, done, w.death())
                        workers.remove(w)
                        if queue:
                            fresh = _Worker(jobs, results, data_root, force)
                            workers.append(fresh)
                            feed(fresh)
    except KeyboardInterrupt:
        queue.clear()
        _stop_workers(workers, store, done)
        raise
    finally:
        for w in workers:
            if w.proc.is_alive() and w.task is None:
                w.send(None)
        for w in workers:
            w.proc.join(timeout=5)
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join()


#: seconds the running runs get to store themselves as interrupted after the first Ctrl-C
STOP_GRACE = 4.0


def _stop_workers(workers: list[_Worker], store: ResultStore, done) -> None:  # noqa: ANN001
    """First Ctrl-C: SIGTERM every busy worker and give it :data:`STOP_GRACE` seconds to store its run
    as interrupted; a second Ctrl-C, or the grace running out, kills them."""
    busy = [w for w in workers if w.task is not None]
    print(f"fedbench: stopping {len(busy)} running run(s) (Ctrl-C again to kill them at once) ...", file=sys.stderr)
    for w in workers:
        if w.task is None:
            w.send(None)
        elif w.proc.is_alive():
            os.kill(w.proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE
    try:
        for w in busy:
            w.proc.join(timeout=max(0.0, deadline - time.monotonic()))
    except KeyboardInterrupt:
        pass
    for w in busy:
        if w.proc.is_alive():
            w.proc.kill()
            w.proc.join()
        held = w.task
        if held is not None:  # the worker is dead: whatever it still holds of its run, if anything, is released
            store.abandon(held[1].run_id, w.proc.pid, "interrupted")
        try:
            while w.conn.poll():
                i, outcome = w.conn.recv()
                w.task = None
                done(i, outcome)
        except (EOFError, OSError):
            pass
        if w.task is not None:
            w.fail(store, done, "interrupted")


def run_ray(
    configs: Iterable[RunConfig],
    results: str | Path,
    *,
    address: str | None = None,
    data_root: Path | None = None,
    force: bool = False,
    num_cpus: int | None = None,
    on_outcome=None,  # noqa: ANN001
    cpus_per_run: float = 1.0,
    gpus_per_run: float | None = None,
    data_from: str = "driver",
) -> list[RunOutcome]:
    """The same runs as Ray tasks, with this process, the driver, as the only writer of ``results``.

    Each task asks Ray for ``cpus_per_run`` CPUs and ``gpus_per_run`` GPUs (default: one GPU when the run's
    device is cuda, none otherwise; a fraction shares a GPU: 0.25 runs four at once on each), and Ray's
    resource model places them.

    The driver claims each run in its own results file (resolved here: a relative path is the driver's),
    sends the task its configuration only, stores each evaluation's metrics as the task sends them (a Ray
    queue) and the task's outcome when it returns, with the claim/finish and heartbeat rules of the local
    executor. A task never opens the results file, so the nodes need not share a disk. With ``data_from``
    ``"driver"`` (the default) the driver loads each data set once, from its own ``data_root``, and shares it
    with every run of it through Ray's object store (freed when its last run returns), so the nodes need no
    data files either; with ``"nodes"`` each task loads its data set from ``data_root`` on its own node (or
    generates it). A data set the driver cannot load fails its runs, each with the reason in one line. A task that dies (its node lost, its worker killed
    past Ray's retries) is stored ``failed`` with Ray's reason in one line; the sweep goes on. Ctrl-C cancels
    the tasks and stores their runs as interrupted.
    """
    try:
        import ray
        from ray.util.queue import Empty, Queue
    except ImportError as e:
        raise ConfigError("--executor ray needs Ray: pip install 'fedbench-suite[ray]'") from e
    from fedbench.reporting.store import HEARTBEAT_EVERY

    if data_from not in ("driver", "nodes"):
        raise ConfigError(f"data_from={data_from!r}: use 'driver' (loaded once, shared through Ray's object store) or 'nodes'")
    from fedbench.runs.build import load_data
    from fedbench.plugin.registry import get_registry

    configs = list(configs)
    data_root = Path(data_root).resolve() if data_root is not None else None  # the driver's, as the results path
    store = ResultStore(Path(results).resolve())
    outcomes: list[RunOutcome | None] = [None] * len(configs)

    def report(i: int, outcome: RunOutcome) -> None:
        outcomes[i] = outcome
        if on_outcome is not None:
            on_outcome(outcome)

    started_here = not ray.is_initialized()
    running: dict = {}  # task ref -> (index, claim, attempt)
    claims: dict = {}  # run id -> (claim, attempt)
    shipped: dict = {}  # (data set, its parameters) -> [its object ref or the load's error, runs still to return]

    def data_of(cfg: RunConfig):  # noqa: ANN202 - an ObjectRef, a load error, or None (the task loads it)
        if data_from == "nodes":
            return None
        key = (cfg.dataset, cfg.dataset_params)
        if key not in shipped:
            try:
                shipped[key] = [ray.put(load_data(get_registry(), cfg, data_root, keep=False)), 0]
                store.beat([claim for _, claim, _ in running.values()])  # (a long load must not let them go stale)
                print(f"fedbench: {cfg.dataset} loaded on the driver, shared with its runs through Ray's object store",
                      file=sys.stderr, flush=True)
            except FedbenchError as e:
                shipped[key] = [e, 0]
        shipped[key][1] += 1
        return shipped[key][0]

    def returned(cfg: RunConfig) -> None:  # a data set's last run is back: its copy in the object store can go
        key = (cfg.dataset, cfg.dataset_params)
        if key in shipped:
            shipped[key][1] -= 1
            if shipped[key][1] <= 0:
                del shipped[key]
    try:
        if started_here:
            ray.init(address=address, num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
        # the queue's actor lives on the driver's node, whatever the cluster has: a lost node must not take the
        # metrics of every run with it (a queue placed on a node that died ended the sweep, 10 runs left running)
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        queue = Queue(actor_options={"num_cpus": 0, "scheduling_strategy": NodeAffinitySchedulingStrategy(
            ray.get_runtime_context().get_node_id(), soft=False)})
        remote = ray.remote(_ray_compute)
        for i, cfg in enumerate(configs):
            claim = store.claim(cfg, force=force)
            if claim is None:
                report(i, RunOutcome(cfg, "skipped"))
                continue
            if isinstance(claim, Held):
                report(i, RunOutcome(cfg, "held", error=str(claim)))
                continue
            attempt = Attempt()
            data = data_of(cfg)
            if isinstance(data, FedbenchError):
                returned(cfg)
                report(i, store_attempt(store, claim, cfg, attempt, "failed", f"the driver could not load the data: {data}"))
                continue
            gpus = gpus_per_run if gpus_per_run is not None else (1 if cfg.device.startswith("cuda") else 0)
            ref = remote.options(num_cpus=cpus_per_run, num_gpus=gpus).remote(
                cfg, str(data_root) if data_root else None, queue, data)
            running[ref] = (i, claim, attempt)
            claims[cfg.run_id] = (claim, attempt)

        def drain() -> None:
            while True:
                try:
                    run_id, r, metrics, engine = queue.get_nowait()
                except Empty:
                    return
                if run_id in claims:
                    claim, attempt = claims[run_id]
                    attempt.metrics, attempt.engine = metrics, engine
                    try:
                        store.log_metrics(claim, r, metrics)
                    except ClaimLost as e:  # (the driver stood still): its task stops, the new owner computes the run
                        ref = next(k for k, v in running.items() if v[1] is claim)
                        i = running.pop(ref)[0]
                        ray.cancel(ref, force=True)
                        claims.pop(run_id, None)
                        returned(configs[i])
                        report(i, RunOutcome(configs[i], "held", attempt.metrics, str(e), attempt.seconds, attempt.engine))

        beat = time.monotonic()
        while running:
            ready, _ = ray.wait(list(running), num_returns=1, timeout=1.0)
            drain()  # every evaluation sent before a task's outcome is stored before it
            if time.monotonic() - beat > HEARTBEAT_EVERY:
                store.beat([claim for _, claim, _ in running.values()])
                beat = time.monotonic()
            for ref in ready:
                i, claim, attempt = running.pop(ref)
                try:
                    status, error, seconds, engine, wall = ray.get(ref)
                except Exception as e:  # noqa: BLE001 - the task died: a failed run with Ray's reason, the sweep goes on
                    status, error, seconds, engine, wall = "failed", _one_line(e), attempt.seconds, attempt.engine, attempt.wall
                attempt.engine = engine or attempt.engine
                attempt.started, attempt.wall = time.perf_counter() - seconds, wall  # (when and how long it ran)
                claims.pop(configs[i].run_id, None)
                returned(configs[i])
                report(i, store_attempt(store, claim, configs[i], attempt, status, error))
        return outcomes  # type: ignore[return-value]
    except KeyboardInterrupt:
        for ref in running:
            ray.cancel(ref, force=True)
        for i, claim, attempt in running.values():
            store_attempt(store, claim, configs[i], attempt, "failed", "interrupted")
        raise
    except ResultsError:
        raise
    except Exception as e:  # the driver lost Ray itself: every run still out is stored failed with why, not left running
        why = f"the driver lost the Ray cluster: {_one_line(e)}"
        for i, claim, attempt in running.values():
            report(i, store_attempt(store, claim, configs[i], attempt, "failed", why))
        raise FedbenchError(why) from e
    finally:
        store.close()
        if started_here and ray.is_initialized():
            ray.shutdown()


def _one_line(error: BaseException) -> str:
    """A Ray error as one line: its type and its first line without terminal colour codes."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


def _runs_per_node() -> int:
    """How many tasks like this one the Ray node it runs on holds at once: its CPUs over this task's."""
    import ray

    context = ray.get_runtime_context()
    mine = context.get_assigned_resources().get("CPU") or 1.0
    node = next((n for n in ray.nodes() if n.get("NodeID") == context.get_node_id()), {})
    return max(1, int(node.get("Resources", {}).get("CPU", 1.0) // mine))


def _ray_compute(cfg: RunConfig, data_root: str | None, queue, data=None) -> tuple[str, str | None, float, str, float]:  # noqa: ANN001
    """A Ray task: compute one run (on ``data``, the driver's copy of its data set from the object store, or
    loaded here from ``data_root``), sending each evaluation to the driver; (status, error, seconds, engine,
    the wall-clock time it started)."""
    from fedbench.plugin.registry import get_registry

    _init_worker(1, _runs_per_node())
    attempt = Attempt()
    status, error, _ = compute(get_registry(), cfg, Path(data_root) if data_root else None, False, attempt,
                               lambda r, metrics: queue.put((cfg.run_id, r, metrics, attempt.engine)), data)
    return status, error, attempt.seconds, attempt.engine_line(), attempt.wall


# ---- the executors, registered through the same hook as a third party's (fedbench.plugin.registry.CORE_MODULES) -------
def _local(configs, results, *, jobs=1, data_root=None, force=False, progress=True, on_outcome=None, address=None):  # noqa: ANN001, ANN202, ARG001
    return run_local(configs, results, jobs=jobs, data_root=data_root, force=force, progress=progress, on_outcome=on_outcome)


def _ray(configs, results, *, jobs=1, data_root=None, force=False, progress=True, on_outcome=None, address=None,  # noqa: ANN001, ANN202, ARG001
         resources=None, data_from="driver"):
    resources = resources or {}
    return run_ray(configs, results, address=address, data_root=data_root, force=force, on_outcome=on_outcome,
                   cpus_per_run=resources.get("cpus", 1.0), gpus_per_run=resources.get("gpus"), data_from=data_from)


@hookimpl
def fedbench_executors() -> list[ExecutorSpec]:
    return [
        ExecutorSpec(name="local", doc="this machine: --jobs worker processes (1: in this process)", run=_local),
        ExecutorSpec(name="ray", doc="a Ray cluster (--address; default: a local Ray), one task per run", run=_ray),
    ]
