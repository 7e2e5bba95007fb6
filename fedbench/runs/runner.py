"""Execute runs: the round loop, divergence checks, progress, and storing results.

A finished run (status ``done``) is never recomputed unless ``force``. A run
that raises is stored as ``failed`` with its error; one whose loss becomes
NaN/inf is stopped and stored as ``diverged``. Metrics already stored stay.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from fedbench.runs.build import Simulation, build_simulation
from fedbench.fl.config import RunConfig
from fedbench.fl.data import FederatedData
from fedbench.errors import ClaimLost, DivergedError, FedbenchError, ResultsError
from fedbench.fl.metrics import summarise
from fedbench.plugin.registry import Registry
from fedbench.reporting.store import Heartbeat, Held, ResultStore


@dataclass
class RunOutcome:
    """How a run ended, and its last evaluation's metrics."""

    config: RunConfig
    status: str  # done | failed | diverged | skipped | held (another live process computes it)
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0
    engine: str = ""

    @property
    def ok(self) -> bool:
        return self.status in ("done", "skipped")

    def summary(self) -> str:
        c = self.config
        head = f"{c.dataset} / {c.method} / seed {c.seed} [{c.run_id}]: {self.status}"
        if self.status == "skipped":
            return head + " (already in the results store; --force recomputes)"
        if self.status == "held":
            return f"{head} ({self.error}; not computed twice)"
        if self.error:
            return f"{head}: {self.error}"
        m = self.metrics
        return (
            f"{head} after {c.train.rounds} rounds in {self.seconds:.1f}s [engine: {self.engine}]: test_acc {m['test_acc']:.2f}% "
            f"(mean {m['test_acc_mean']:.2f}%, p10 {m['test_acc_p10']:.2f}%), train_loss {m['train_loss']:.4f}"
            + (f", unseen clients test_acc {m['unseen_test_acc']:.2f}%" if "unseen_test_acc" in m else "")
        )


def execute_run(
    registry: Registry,
    cfg: RunConfig,
    store: ResultStore,
    *,
    data_root: Path | None = None,
    force: bool = False,
    progress: bool = True,
    reraise: bool = False,
) -> RunOutcome:
    """Claim ``cfg``'s run, compute it, and commit its status and metrics together in ``store``.

    A run already ``done`` is ``skipped`` (unless ``force``); one another live process is computing
    is ``held`` (never computed twice). With ``reraise`` a non-fedbench exception propagates after
    being stored (for debugging); otherwise it is stored and returned as ``failed``.
    """
    claim = store.claim(cfg, force=force)
    if claim is None:
        return RunOutcome(cfg, "skipped")
    if isinstance(claim, Held):
        return RunOutcome(cfg, "held", error=str(claim))
    try:
        return _compute(registry, cfg, store, claim, data_root, progress, reraise)
    except BaseException as e:
        # an interrupt that lands outside the compute's own handlers (just after the claim, or inside the
        # final commit, which then rolls back) must not leave the claim behind: release it as interrupted
        try:
            store.abandon(cfg.run_id, os.getpid(), "interrupted" if not isinstance(e, ResultsError) else str(e))
        except ResultsError:  # (the file cannot be written now: the next opening repairs the claim)
            pass
        raise


@dataclass
class Attempt:
    """What one attempt at a run has produced so far: its last evaluation's metrics, its engine line,
    its clocks. :func:`compute` fills it in; whoever stores the run reads it, also after an interrupt."""

    started: float = field(default_factory=time.perf_counter)
    wall: float = field(default_factory=time.time)
    metrics: dict[str, float] = field(default_factory=dict)
    engine: str = ""
    sim: Simulation | None = None

    def engine_line(self) -> str:
        """The engine that ran it, with the rounds the batched engine declined (if any)."""
        if self.sim is not None and getattr(self.sim.aggregator.engine, "declined", None):
            return self.sim.engine + self.sim.aggregator.engine.note()
        return self.engine

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started


def compute(registry: Registry, cfg: RunConfig, data_root: Path | None, progress: bool | None, attempt: Attempt,
            log: Callable[[int, dict[str, float]], None], data: FederatedData | None = None,
            ) -> tuple[str, str | None, BaseException | None]:
    """Build and train ``cfg``'s run, handing each evaluation's metrics to ``log(round, metrics)``; returns
    (status, error, the exception behind a failure). Needs no results file: the local executors store
    through ``log`` directly, Ray's tasks send to the driver, the only writer. ``data``: the run's data set,
    when it was loaded elsewhere (else it is loaded from ``data_root``). An interrupt propagates."""
    try:
        attempt.sim = build_simulation(registry, cfg, data_root, data)
        attempt.engine = attempt.sim.engine
        for r, metrics in train(attempt.sim, cfg, progress=progress):
            attempt.metrics = metrics
            log(r, metrics)
    except DivergedError as e:
        return "diverged", str(e), None
    except (KeyboardInterrupt, Interrupted, ResultsError, ClaimLost):  # (a results file that cannot be written stops the sweep)
        raise
    except SystemExit as e:  # plugin code that calls sys.exit() ends its run, not the sweep (and not silently)
        return "failed", f"the run's code called sys.exit({e.code!r}) (a plugin?); the run is stopped, the sweep goes on", e
    except Exception as e:  # a failed run, stored with its reason; the sweep goes on
        return "failed", str(e) if isinstance(e, FedbenchError) else f"{type(e).__name__}: {e}", e
    return "done", None, None


def _compute(registry: Registry, cfg: RunConfig, store: ResultStore, claim, data_root, progress, reraise) -> RunOutcome:  # noqa: ANN001
    attempt = Attempt()
    beat = Heartbeat(store.path, claim)

    def finish(status: str, error: str | None = None) -> RunOutcome:
        beat.stop()
        return store_attempt(store, claim, cfg, attempt, status, error)

    try:
        status, error, exc = compute(registry, cfg, data_root, progress, attempt,
                                     lambda r, metrics: store.log_metrics(claim, r, metrics))
    except (KeyboardInterrupt, Interrupted):
        finish("failed", "interrupted")
        raise
    except ClaimLost as e:  # its attempt is recorded as stopped; the run is the new owner's
        beat.stop()
        return RunOutcome(cfg, "held", attempt.metrics, str(e), attempt.seconds, attempt.engine)
    outcome = finish(status, error)
    if reraise and exc is not None and not isinstance(exc, FedbenchError):
        raise exc
    return outcome


def store_attempt(store: ResultStore, claim, cfg: RunConfig, attempt: Attempt, status: str, error: str | None) -> RunOutcome:  # noqa: ANN001
    """Commit an attempt's status with its metrics (:meth:`ResultStore.finish`); the outcome to report."""
    engine, seconds = attempt.engine_line(), attempt.seconds
    stored = store.finish(claim, cfg, status, error=error, engine=engine, seconds=seconds, started=attempt.wall)
    if stored != status:
        error = f"{error}; the earlier complete result is kept" if error else "the earlier complete result is kept"
    return RunOutcome(cfg, status, attempt.metrics, error, seconds, engine)


def progress_mode(progress: bool | None) -> str:
    """``"bar"`` (tqdm bars), ``"lines"`` (a plain line per evaluation, for logs) or ``"off"``.

    ``None`` chooses: bars when stderr is a terminal, plain lines otherwise (no carriage returns or
    escape codes in a log file).
    """
    if progress is None:
        return "bar" if sys.stderr.isatty() else "lines"
    return "bar" if progress else "off"


def evaluate(sim: Simulation, sent: float) -> dict[str, float]:
    """One evaluation of every client (and of the unseen clients, when there are any)."""
    metrics = {**summarise(sim.aggregator.evaluate()), "bytes_sent": float(sent)}
    new = sim.aggregator.evaluate_new(sim.unseen)
    if new:
        metrics.update({f"unseen_{k}": v for k, v in summarise(new).items() if k.startswith("test")})
    return metrics


def train(sim: Simulation, cfg: RunConfig, *, progress: bool | None = False) -> Iterator[tuple[int, dict[str, float]]]:
    """Run ``cfg``'s rounds on ``sim``, yielding ``(round, metrics)`` at every evaluation: round 0 (the
    initial models, before any training, when ``train.eval_at_start``: the authors' protocol), then
    every ``eval_every`` rounds and the last. Raises :class:`DivergedError` at a NaN/inf loss.

    The one round loop: :func:`execute_run` (results store) and :func:`fedbench.run` (in memory) share it.
    """
    mode = progress_mode(progress)
    label = f"{cfg.dataset}/{cfg.method}/s{cfg.seed}"
    bar = tqdm(range(cfg.train.rounds), desc=label, unit="round", disable=mode != "bar", leave=False)
    sent = 0

    def scored(r: int) -> dict[str, float]:
        metrics = evaluate(sim, sent)
        if not math.isfinite(metrics["train_loss"]):
            raise DivergedError(r, metrics["train_loss"])
        if mode == "bar":
            bar.set_postfix(test_acc=f"{metrics['test_acc']:.2f}")
        elif mode == "lines":
            print(f"{label} round {r}/{cfg.train.rounds}: test_acc {metrics['test_acc']:.2f}%, "
                  f"train_loss {metrics['train_loss']:.4f}", file=sys.stderr, flush=True)
        return metrics

    try:
        if cfg.train.eval_at_start:
            yield 0, scored(0)
        for r in bar:
            stats = sim.aggregator.fit_round(r)
            sent += stats.bytes_sent
            if not math.isfinite(stats.train_loss):
                raise DivergedError(r + 1, stats.train_loss)
            if cfg.train.is_eval_round(r):
                yield r + 1, scored(r + 1)
    finally:
        bar.close()


class Interrupted(BaseException):
    """Raised in a worker asked to stop (SIGTERM from its parent after Ctrl-C): the run is stored as
    interrupted and the worker exits."""
