"""The Python API: load a data set, run a method or a suite, read results - from a notebook or a script.

The ``fedbench`` command line calls these same functions. Settings use the ``--set`` keys: a training
key (``lr=0.05``, ``rounds=50``), ``model``, ``n_learners``, or ``GROUP.KEY`` for GROUP in dataset,
model, client, aggregator; as Python keywords write the dot as a double underscore
(``dataset__n_clients=50``) or pass ``settings={"dataset.n_clients": 50}``. See ``docs/api.md``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from fedbench.runs.build import (
    _items, _load_cached, build_simulation, check_device, check_model_fits, dataset_parameters, resolve_run,
)
from fedbench.fl.config import RunConfig, flat_settings, merge_params
from fedbench.fl.data import FederatedData, default_data_root
from fedbench.errors import ConfigError, DivergedError, FedbenchError
from fedbench.runs.executor import assign_devices, run_local
from fedbench.plugin.registry import Registry, get_registry
from fedbench.reporting.report import comparison_table, init_note, runs_table
from fedbench.runs.runner import RunOutcome, train
from fedbench.reporting.store import DEFAULT_PATH, ResultStore
from fedbench.runs.suite import Suite, load_suite, missing_data


@dataclass
class RunResult:
    """One run: its final metrics, its per-round metrics, and how it ran."""

    config: RunConfig
    #: done | failed | diverged | skipped (already in the results file: read back from it)
    status: str
    #: the last evaluation's metrics (``test_acc`` in %, ``train_loss``, ``bytes_sent``, ...)
    metrics: dict[str, float]
    #: one row per evaluated round (round 0 = the initial models), one column per metric
    history: pd.DataFrame
    #: which engine trained it, and why
    engine: str
    #: wall time of the run in seconds
    seconds: float
    error: str | None = None

    @property
    def run_id(self) -> str:
        return self.config.run_id

    def __repr__(self) -> str:
        c = self.config
        acc = f", test_acc={self.metrics['test_acc']:.2f}" if "test_acc" in self.metrics else ""
        return (f"RunResult({c.dataset}/{c.method}/seed {c.seed}: {self.status}{acc}, "
                f"{len(self.history)} evaluations, {self.seconds:.1f}s, run_id={self.run_id})")


@dataclass
class SuiteResult:
    """What :func:`run_suite` did: one outcome per run, the data sets it skipped, and the stored table."""

    suite: Suite
    outcomes: list[RunOutcome]
    #: data set -> why its runs were skipped (files missing)
    missing: dict[str, str]
    #: one row per run of the suite (``fedbench report``'s table)
    table: pd.DataFrame = field(repr=False)

    @property
    def ok(self) -> bool:
        """Every run finished (or was already stored) and no data set was missing."""
        return all(o.ok for o in self.outcomes) and not self.missing

    def comparison(self, metric: str = "test_acc") -> pd.DataFrame:
        """Data sets x methods, ``mean ± std (n=seeds)`` of ``metric``."""
        return comparison_table(self.table, metric)


def settings_of(settings: Mapping[str, Any] | None, keywords: Mapping[str, Any]) -> dict[str, Any]:
    """``settings`` plus keyword settings, in the one spelling ``GROUP.KEY``: ``dataset__n_clients=5``,
    ``dataset={"n_clients": 5}`` and ``settings={"dataset.n_clients": 5}`` are the same setting."""
    return {**flat_settings(settings), **flat_settings(keywords)}


def configure(dataset: str, method: str, seed: int = 0, *, settings: Mapping[str, Any] | None = None,
              device: str = "cpu", engine: str = "auto", client_state: str = "auto", **keywords: Any) -> RunConfig:
    """The fully resolved configuration of one run (every default filled in, every value checked)."""
    check_device(device)
    return resolve_run(get_registry(), dataset=dataset, method=method, seed=seed,
                       overrides=settings_of(settings, keywords), device=device, engine=engine,
                       client_state=client_state)


def load_dataset(name: str, *, data_root: str | Path | None = None, **params: Any) -> FederatedData:
    """A data set as fedbench's runs see it: per-client train/test tensors (:class:`FederatedData`).

    ``params`` are the data set's parameters (``fedbench list dataset``), e.g.
    ``load_dataset("mnist", n_clients=20, alpha=0.3)``; missing files give a one-line error saying
    where to put them.
    """
    registry = get_registry()
    # the one spelling: load_dataset("x", alpha=0.3), dataset__alpha=0.3 and dataset={"alpha": 0.3} are one setting
    params = {k.removeprefix("dataset."): v for k, v in flat_settings(params).items()}
    defaults, rules, _ = dataset_parameters(registry, name, params)
    merged = merge_params(f"dataset {name!r}", defaults, params, rules, registry)
    root = Path(data_root) if data_root is not None else None
    check = registry.get("dataset", name).check
    problem = check(data_root=root) if check is not None else None
    if problem:
        raise FedbenchError(problem)
    return _load_cached(registry, name, _items(merged), str(root or default_data_root()))


def _say(line: str) -> None:
    print(line, file=sys.stderr)


def prepare(registry: Registry, configs: list[RunConfig], *, data_root: Path | None, download: bool,
            skip_missing: bool, say: Callable[[str], None] = _say) -> tuple[list[RunConfig], dict[str, str]]:
    """Before any run: fetch data sets (``download``), find the missing ones (an error, or with
    ``skip_missing`` one line each and their runs left out) and say each model-initialisation note."""
    if download:
        for name in dict.fromkeys(c.dataset for c in configs):
            spec = registry.get("dataset", name)
            if spec.download is not None and spec.check is not None and spec.check(data_root=data_root):
                say(f"downloading {name} into {data_root or default_data_root()} ...")
                fetch(name, data_root)
    missing = missing_data(registry, configs, data_root)
    if missing and not skip_missing:
        raise FedbenchError(next(iter(missing.values())))
    for name, problem in missing.items():  # every missing data set up front; the other runs go ahead
        say(f"fedbench: skipping {sum(c.dataset == name for c in configs)} run(s) of {name}: {problem}")
    configs = [c for c in configs if c.dataset not in missing]
    pairs = {(c.dataset, c.dataset_params, c.model, c.model_params): c for c in configs}
    for c in pairs.values():  # every (data set, model) pair whose data set declares its shape, once
        check_model_fits(registry, c)
    for line, n in init_notes(registry, configs).items():  # e.g. a model started from scratch: said before any run
        say(f"fedbench: warning: {n} run(s): {line}")
    return configs, missing


def init_notes(registry: Registry, configs: Sequence[RunConfig]) -> dict[str, int]:
    """The distinct :attr:`~fedbench.plugin.specs.ModelSpec.init_note` lines of ``configs``, with how many runs each concerns."""
    out: dict[str, int] = {}
    for c in configs:
        note = init_note(registry, c.model, dict(c.model_params))
        if note:
            out[note[1]] = out.get(note[1], 0) + 1
    return out


def fetch(name: str, data_root: Path | None, *, spec: Any = None) -> None:
    """Download data set ``name`` with its plugin's downloader (or ``spec``'s); a failure is one line."""
    spec = spec if spec is not None else get_registry().get("dataset", name)
    if spec.download is None:
        problem = spec.check(data_root=data_root) if spec.check is not None else None
        raise FedbenchError(f"{name} cannot be downloaded by fedbench" + (f"; {problem}" if problem else " (it needs no files)"))
    try:
        spec.download(data_root=data_root)
    except FedbenchError:
        raise
    except Exception as e:  # no internet, a moved mirror, a full disk: one line, not a traceback
        raise FedbenchError(
            f"downloading {name} failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); fetch the files on a "
            "machine with internet and pass --data-root (fedbench data check says where they go)"
        ) from e


def history_of(store: ResultStore, run_id: str) -> pd.DataFrame:
    """A stored run's metrics, one row per evaluated round."""
    m = store.metrics([run_id])
    if m.empty:
        return pd.DataFrame(index=pd.Index([], name="round"))
    wide = m.pivot(index="round", columns="name", values="value")
    wide.columns.name = None
    return wide


def run(dataset: str, method: str, seed: int = 0, *, results: str | Path | None = None,
        settings: Mapping[str, Any] | None = None, data_root: str | Path | None = None, device: str = "cpu",
        engine: str = "auto", force: bool = False, download: bool = False, progress: bool | None = None,
        client_state: str = "auto", **keywords: Any) -> RunResult:
    """Run one method on one data set and return its result.

    ``results=None`` keeps everything in memory (nothing is written; an exception propagates with
    its traceback). With a results file the run is stored there like ``fedbench run`` stores it, and a
    run already done is read back (``status="skipped"``) unless ``force``.
    """
    registry = get_registry()
    cfg = configure(dataset, method, seed, settings=settings, device=device, engine=engine, client_state=client_state,
                    **keywords)
    root = Path(data_root) if data_root is not None else None
    prepare(registry, [cfg], data_root=root, download=download, skip_missing=False)
    if results is None:
        start = time.perf_counter()
        sim = build_simulation(registry, cfg, root)
        rows: dict[int, dict[str, float]] = {}
        status, error = "done", None
        try:
            for r, metrics in train(sim, cfg, progress=progress):
                rows[r] = metrics
        except DivergedError as e:
            status, error = "diverged", str(e)
        history = pd.DataFrame.from_dict(rows, orient="index")
        history.index.name = "round"
        last = rows[max(rows)] if rows else {}
        return RunResult(cfg, status, dict(last), history, sim.engine, time.perf_counter() - start, error)
    outcome = run_local([cfg], results, jobs=1, data_root=root, force=force, progress=progress)[0]
    store = ResultStore(results, readonly=True)
    try:
        row = store.runs().set_index("run_id").loc[cfg.run_id]
        history = history_of(store, cfg.run_id)
    finally:
        store.close()
    last = history.iloc[-1].dropna().to_dict() if len(history) else {}
    seconds = outcome.seconds if outcome.status != "skipped" else float(row.get("seconds") or 0.0)
    return RunResult(cfg, outcome.status, last, history, str(row.engine or ""), seconds,
                     outcome.error if outcome.status != "skipped" else row.error)


def run_suite(suite: str | Path, *, results: str | Path = DEFAULT_PATH, seeds: Sequence[int] | None = None,
              datasets: Sequence[str] | None = None, methods: Sequence[str] | None = None, jobs: int = 1,
              executor: str = "local", address: str | None = None, devices: Sequence[str] | None = None,
              data_root: str | Path | None = None, download: bool = False, force: bool = False, device: str = "cpu",
              engine: str = "auto", progress: bool | None = None, client_state: str = "auto",
              on_outcome: Callable[[RunOutcome], None] | None = None, settings: Mapping[str, Any] | None = None,
              resources: Mapping[str, float] | None = None, data_from: str | None = None,
              **keywords: Any) -> SuiteResult:
    """Run a suite (a built-in name or a TOML path) into ``results``; runs already done are skipped.

    ``datasets``/``methods`` keep part of the suite; ``seeds`` replaces its seeds; settings apply on
    top of the suite's own. Data sets whose files are missing are skipped (``SuiteResult.missing``)
    and the other runs go ahead. ``executor="ray"`` sends runs to a Ray cluster (``address``); a
plugin may register other executors (``fedbench list executor``). ``resources`` (Ray only):
    ``{"cpus": C, "gpus": G}`` per run, e.g. ``{"gpus": 0.25}`` puts four runs on one GPU; ``data_from``
    (Ray only): ``"driver"`` (the default: each data set loaded once here and shared through Ray's object
    store) or ``"nodes"`` (each run loads it from ``data_root`` on its own node).
    """
    registry = get_registry()
    registry.get("executor", executor)  # an unknown name fails before any run
    check_device(device)
    for d in devices or []:
        check_device(d)
    loaded = load_suite(
        registry, str(suite), extra=settings_of(settings, keywords), seeds=list(seeds) if seeds is not None else None,
        device=device, engine=engine, client_state=client_state, only_datasets=list(datasets) if datasets else None,
        only_methods=list(methods) if methods else None,
    )
    if resources and executor != "ray":
        raise ConfigError("--cpus-per-run and --gpus-per-run are Ray's resources per run: use them with --executor ray")
    if data_from is not None and executor != "ray":
        raise ConfigError("--data-from chooses where Ray's runs get their data: use it with --executor ray")
    if data_from not in (None, "driver", "nodes"):
        raise ConfigError(f"--data-from {data_from!r}: use driver (loaded once, shared through Ray's object store) or nodes")
    for key, value in (resources or {}).items():
        if key not in ("cpus", "gpus") or not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"resources per run: {key}={value!r}; give cpus and gpus as numbers >= 0")
    _say(f"suite {loaded.name}: {len(loaded.runs)} runs ({loaded.description})")
    root = Path(data_root) if data_root is not None else None
    configs, missing = prepare(registry, list(loaded.runs), data_root=root, download=download, skip_missing=True)
    if devices:
        configs = assign_devices(configs, list(devices))
    ResultStore(results).close()  # a bad results path fails here, before any run
    run_all = registry.get("executor", executor).run  # local, ray, or a plugin's (fedbench list executor)
    extra = {"resources": dict(resources)} if resources else {}
    if data_from is not None:
        extra["data_from"] = data_from
    outcomes = run_all(configs, results, jobs=jobs, data_root=root, force=force, progress=progress,
                       on_outcome=on_outcome, address=address, **extra)
    store = ResultStore(results, readonly=True)
    try:
        table = runs_table(store, [c.run_id for c in configs], registry=registry)
    finally:
        store.close()
    return SuiteResult(loaded, outcomes, missing, table)


def results(path: str | Path = DEFAULT_PATH, suite: str | Path | None = None) -> pd.DataFrame:
    """One row per stored run (identity, grid settings, status, error, last metrics, wall time).

    With ``suite``, only that suite's runs (matched by configuration; ``other_code`` marks rows
    computed by other code than the installed one).
    """
    registry = get_registry()
    configs = load_suite(registry, str(suite)).runs if suite is not None else None
    store = ResultStore(path, readonly=True)
    try:
        return runs_table(store, configs=configs, registry=registry)
    finally:
        store.close()
