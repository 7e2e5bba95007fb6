"""From names to objects: resolve a run's configuration and build its simulation.

Everything is looked up in the registry; nothing here imports a plugin.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fedbench.runs import datacache
from fedbench.fl.aggregator import Aggregator
from fedbench.fl.config import TRAIN_KEYS, RunConfig, TrainConfig, merge_params
from fedbench.runs.client_state import DiskSlots, ScratchFolder, choose as choose_client_state
from fedbench.fl.dropout import keyed_dropout
from fedbench.fl.recurrent import batchable_lstms
from fedbench.fl.data import DataShape, FederatedData, default_data_root
from fedbench.engine import VectorizedEngine, prefers_sequential, vectorisable
from fedbench.errors import ConfigError, FedbenchError, PluginError
from fedbench.runs.fingerprint import code_fingerprint
from fedbench.fl.learner import Learner, LearnersEnsemble, representation_module, uses_batch_statistics
from fedbench.plugin.registry import Registry
from fedbench.fl.seeding import STREAM_INIT, STREAM_UNSEEN, derive_seed
from fedbench.fl.tasks import make_task

GROUPS = ("dataset", "model", "client", "aggregator", "method")
#: the most learners (mixture components) a run may have: beyond it building the run alone takes minutes
MAX_LEARNERS = 1000


def resolve_run(
    registry: Registry,
    *,
    dataset: str,
    method: str,
    seed: int,
    overrides: dict[str, Any] | None = None,
    device: str = "cpu",
    engine: str = "auto",
    client_state: str = "auto",
) -> RunConfig:
    """A fully resolved :class:`RunConfig` from names and ``--set``-style overrides.

    Override keys: a training key (``lr``, ``rounds``, ...), ``model``,
    ``n_learners``, or ``GROUP.KEY`` for GROUP in dataset/model/client/aggregator/method
    (``method.KEY``: a parameter the method shares between its client and its aggregator).
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63:
        raise ConfigError(f"seed must be an integer in [0, 2**63), got {seed!r}")
    ds = registry.get("dataset", dataset)
    me = registry.get("method", method)
    overrides = dict(overrides or {})
    method_params = dict(me.params)
    # a method may name the model it needs (``MethodSpec(params={"model": ...})``); --set model= still wins
    model = overrides.pop("model", method_params.pop("model", ds.default_model))
    n_learners = overrides.pop("n_learners", me.n_learners)
    if not isinstance(n_learners, int) or isinstance(n_learners, bool) or n_learners < 1:
        raise ConfigError(f"n_learners must be a positive integer, got {n_learners!r}")
    if n_learners > MAX_LEARNERS:
        raise ConfigError(f"n_learners={n_learners} is more than {MAX_LEARNERS}: every client trains and scores each "
                          f"learner every round (the FedEM paper uses 3); choose n_learners <= {MAX_LEARNERS}")
    grouped: dict[str, dict[str, Any]] = {g: {} for g in GROUPS}
    train_over: dict[str, Any] = {}
    for key, value in overrides.items():
        group, dot, rest = key.partition(".")
        if dot and group in grouped:
            grouped[group][rest] = value
        elif key in TRAIN_KEYS:
            train_over[key] = value
        else:
            raise ConfigError(
                f"unknown setting {key!r}{_did_you_mean(registry, key, ds, me)}; use a training key "
                f"({', '.join(TRAIN_KEYS)}), model, n_learners, or GROUP.KEY with GROUP in {', '.join(GROUPS)}"
            )
    base = {**dataclasses.asdict(TrainConfig()), "eval_every": None}  # unset: follows the run's rounds
    train = merge_params("training", merge_params(f"method {method!r}", base, method_params), train_over)
    model_spec = registry.get("model", model)
    client_spec = registry.get("client", me.client)
    agg_spec = registry.get("aggregator", me.aggregator)
    client_defaults = merge_params(f"client {me.client!r}", client_spec.params, me.client_params, client_spec.rules, registry)
    agg_defaults = merge_params(f"aggregator {me.aggregator!r}", agg_spec.params, me.aggregator_params, agg_spec.rules, registry)
    shared = merge_params(f"method {method!r}", me.shared, grouped["method"], me.shared_rules, registry)
    clash = sorted(set(shared) & (set(client_defaults) | set(agg_defaults)))
    if clash:
        raise ConfigError(
            f"method {method!r} shares {', '.join(clash)} with its client and aggregator, which also declare it; "
            "declare a shared parameter once, in the method's shared"
        )
    ds_defaults, ds_rules, chosen = dataset_parameters(registry, dataset, grouped["dataset"])
    dataset_params = merge_params(f"dataset {dataset!r}", ds_defaults, grouped["dataset"], ds_rules, registry)
    components = [("dataset", dataset), ("method", method), ("model", model), ("client", me.client), ("aggregator", me.aggregator)]
    components += chosen
    return RunConfig(
        dataset=dataset,
        method=method,
        model=model,
        client=me.client,
        aggregator=me.aggregator,
        n_learners=n_learners,
        seed=seed,
        train=TrainConfig(**train),
        dataset_params=_items(dataset_params),
        model_params=_items(merge_params(f"model {model!r}", model_spec.params, grouped["model"], model_spec.rules, registry)),
        client_params=_items(
            {**merge_params(f"client {me.client!r}", client_defaults, grouped["client"], client_spec.rules, registry), **shared}
        ),
        aggregator_params=_items(
            {**merge_params(f"aggregator {me.aggregator!r}", agg_defaults, grouped["aggregator"], agg_spec.rules, registry), **shared}
        ),
        device=device,
        engine=engine,
        client_state=client_state,
        code=code_fingerprint(registry, components),
    )


def _did_you_mean(registry: Registry, key: str, ds: Any, me: Any) -> str:
    """``"; did you mean 'client.mu'?"`` for a bare parameter name of this run's components, or a near miss."""
    groups = {"dataset": dict(ds.params), "method": dict(me.shared)}
    for group, kind, name, own in (("client", "client", me.client, me.client_params),
                                   ("aggregator", "aggregator", me.aggregator, me.aggregator_params)):
        spec = registry.get(kind, name) if name in registry.names(kind) else None
        groups[group] = {**(dict(spec.params) if spec is not None else {}), **dict(own)}
    base = key.partition(".")[2] or key
    exact = [f"{g}.{base}" for g, params in groups.items() if base in params]
    if exact:
        return f"; did you mean {' or '.join(repr(e) for e in exact)}?"
    known = [*TRAIN_KEYS, "model", "n_learners", *(f"{g}.{k}" for g, params in groups.items() for k in params)]
    close = difflib.get_close_matches(key, known, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def dataset_parameters(
    registry: Registry, dataset: str, overrides: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any], list[tuple[str, str]]]:
    """A data set's parameters for this run: ``(defaults, rules, chosen components)``.

    A data-set parameter whose rule names a registry kind (``partitioner``) picks a component of that
    kind; the chosen one's own parameters (defaults and ranges, declared once in its spec) join the
    data set's, the data set's own values for them acting as defaults. The parameters of the other
    components of that kind are dropped, so that a setting the run does not use stays out of its id.
    """
    ds = registry.get("dataset", dataset)
    defaults, rules = dict(ds.params), dict(ds.rules)
    chosen: list[tuple[str, str]] = []
    for key, rule in ds.rules.items():
        if rule.kind is None or key not in defaults:
            continue
        name = overrides.get(key, defaults[key])
        rule.check(f"dataset {dataset!r}", key, name, registry)
        sub = registry.get(rule.kind, name)
        others = {k for e in registry.entries(rule.kind) for k in e.spec.params} - set(sub.params)
        for k in others:
            defaults.pop(k, None)
        defaults.update({k: ds.params.get(k, v) for k, v in sub.params.items()})
        rules = {**sub.rules, **rules}
        chosen.append((rule.kind, name))
    return defaults, rules, chosen


def _items(params: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(params.items()))


@functools.lru_cache(maxsize=1)
def _load_cached(registry: Registry, name: str, params: tuple, data_root: str) -> FederatedData:
    entry = registry.entry("dataset", name)
    try:
        if entry.spec.cache:
            data = datacache.cached(
                name, params, lambda: code_fingerprint(registry, [("dataset", name)]),
                lambda: entry.spec.load(data_root=Path(data_root), **dict(params)),
            )
        else:
            data = entry.spec.load(data_root=Path(data_root), **dict(params))
    except FedbenchError:
        raise
    except Exception as e:
        raise PluginError(f"dataset {name!r} (plugin {entry.plugin!r}) failed to load: {type(e).__name__}: {e}") from e
    if not isinstance(data, FederatedData):
        raise PluginError(f"dataset {name!r} (plugin {entry.plugin!r}) returned {type(data).__name__}, not FederatedData")
    return data


def load_data(registry: Registry, cfg: RunConfig, data_root: Path | None = None, *, keep: bool = True) -> FederatedData:
    """The run's data set on the CPU (the last one loaded is cached for the next run, unless not ``keep``)."""
    data = _load_cached(registry, cfg.dataset, cfg.dataset_params, str(data_root or default_data_root()))
    if not keep:
        _load_cached.cache_clear()
    return data


@dataclass
class Simulation:
    """A built run: its data (on the run's device) and its aggregator with clients."""

    config: RunConfig
    data: FederatedData
    aggregator: Aggregator
    n_params: int
    #: which engine runs the rounds, and why
    engine: str
    #: clients held out of training, scored at each evaluation after adapting (empty unless unseen_fraction > 0)
    unseen: list = dataclasses.field(default_factory=list)


def unseen_split(n_clients: int, fraction: float) -> tuple[list[int], list[int]]:
    """(training, unseen) client indices: a fixed random ``fraction`` of the clients is unseen (at least
    one when ``fraction > 0``), the same for every training seed; at least one client trains."""
    if fraction <= 0:
        return list(range(n_clients)), []
    k = min(max(1, round(fraction * n_clients)), n_clients - 1)
    if k < 1:
        raise ConfigError(f"unseen_fraction={fraction} leaves no client to train with {n_clients} clients; lower it")
    order = torch.randperm(n_clients, generator=torch.Generator().manual_seed(derive_seed(0, STREAM_UNSEEN))).tolist()
    return sorted(order[k:]), sorted(order[:k])


def check_device(name: str) -> torch.device:
    """``name`` as a torch device that exists on this machine, else a ConfigError naming it and a fix."""
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as e:
        raise ConfigError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from e
    if device.type == "cpu":
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} asked for but CUDA is not available here; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"device {name!r} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s); "
                f"use cuda:0..cuda:{torch.cuda.device_count() - 1}"
            )
        return device
    if device.type == "mps" and torch.backends.mps.is_available():
        return device
    raise ConfigError(f"device {name!r} is not available on this machine; use --device cpu")


def declared_shape(registry: Registry, cfg: RunConfig) -> DataShape | None:
    """The :class:`DataShape` the run's data set says it loads for the run's parameters, or None when the
    data set does not say (:attr:`~fedbench.plugin.specs.DatasetSpec.shape`)."""
    entry = registry.entry("dataset", cfg.dataset)
    if entry.spec.shape is None:
        return None
    try:
        shape = entry.spec.shape(**dict(cfg.dataset_params))
    except Exception as e:
        raise PluginError(f"data set {cfg.dataset!r} (plugin {entry.plugin!r}): its shape() failed: {type(e).__name__}: {e}") from e
    if not isinstance(shape, DataShape):
        raise PluginError(f"data set {cfg.dataset!r} (plugin {entry.plugin!r}): shape() must return a fedbench.fl.data.DataShape, "
                          f"got {type(shape).__name__}")
    return shape


def check_model_fits(registry: Registry, cfg: RunConfig) -> None:
    """Before any run: build the run's model for its data set's declared shape and pass one zero sample
    through it; a model that cannot take the inputs, or whose logits do not match the labels, is a
    ConfigError naming both and the fix. Nothing is checked for a data set that declares no shape (then
    the check happens when the run builds, on the loaded data)."""
    shape = declared_shape(registry, cfg)
    if shape is None:
        return
    model_entry = registry.entry("model", cfg.model)
    fix = (f"choose a model that takes them (`fedbench list model`; the default for {cfg.dataset!r} is "
           f"{registry.get('dataset', cfg.dataset).default_model!r}) or other dataset settings")
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        try:
            model = model_entry.spec.build(shape.input_shape, shape.n_outputs, **dict(cfg.model_params))
            model.eval()
            out = model(torch.zeros((1, *shape.input_shape), dtype=shape.input_dtype))
        except SystemExit as e:  # a plugin's sys.exit(): one line before any run, not fedbench ending in silence
            raise PluginError(f"model {cfg.model!r} (plugin {model_entry.plugin!r}) called sys.exit({e.code!r}) while it was "
                              f"built for data set {cfg.dataset!r} ({shape}); nothing was run") from e
        except Exception as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ConfigError(f"model {cfg.model!r} does not fit data set {cfg.dataset!r} ({shape}): {first}; {fix}") from e
    _check_logits(cfg, tuple(out.shape[1:]), shape, fix)
    check_capabilities(registry, cfg, model)


def check_capabilities(registry: Registry, cfg: RunConfig, model: torch.nn.Module) -> None:
    """What the run's client type needs of its model: a representation (``needs_representation``, a model
    whose ``representation`` attribute names a submodule, without BatchNorm: the representation at other
    parameters would use this model's batch statistics). A ConfigError naming the fix otherwise."""
    client_cls = registry.get("client", cfg.client).cls
    if not getattr(client_cls, "needs_representation", False):
        return
    fix = ("choose a model that declares one (`fedbench list model` says which do) with --set model=NAME, "
           "or give your model a `representation` attribute naming a submodule")
    try:
        body = representation_module(model)
    except ValueError as e:
        raise ConfigError(f"method {cfg.method!r}: {e}; {fix}") from e
    if body is None:
        raise ConfigError(f"method {cfg.method!r} compares the model's representations, but model {cfg.model!r} "
                          f"declares none; {fix}")
    if uses_batch_statistics(model):
        raise ConfigError(f"method {cfg.method!r} compares representations at other parameters, which fedbench does "
                          f"not compute for a model with BatchNorm ({cfg.model!r} with these settings); choose a "
                          f"model without it")


def _check_logits(cfg: RunConfig, got: tuple[int, ...], shape: DataShape, fix: str) -> None:
    """A multiclass data set needs logits of a label's shape plus the class axis (a label per window position
    needs a model that predicts every position); a ConfigError naming both otherwise."""
    want = (*shape.label_shape, shape.n_outputs)
    if shape.task == "multiclass" and got != want:
        raise ConfigError(f"model {cfg.model!r} gives logits of shape {got} per sample but data set {cfg.dataset!r} "
                          f"needs {want} ({shape}); {fix}")


def check_declared_shape(registry: Registry, cfg: RunConfig, data: FederatedData) -> None:
    """The loaded data against the shape its data set declared: a plugin whose ``shape`` says something else
    than its ``load`` returns fails the run loudly (the model was checked against the declaration)."""
    declared = declared_shape(registry, cfg)
    if declared is None:
        return
    loaded = DataShape.of(data)
    if declared != loaded:
        plugin = registry.entry("dataset", cfg.dataset).plugin
        raise PluginError(f"data set {cfg.dataset!r} (plugin {plugin!r}) declares {declared} but loaded {loaded}; "
                          "its shape() must say what its load() returns")


def check_output_shape(cfg: RunConfig, model: torch.nn.Module, data: FederatedData) -> None:
    """One sample through the model: its logits must have a label's shape plus the class axis (a multiclass
    data set with a label per window position needs a model that predicts every position)."""
    if data.task != "multiclass" or data.train_y.shape[0] == 0:
        return
    was_training = model.training
    model.eval()
    with torch.no_grad():
        got = tuple(model(data.train_x[:1].to(next(model.parameters()).device)).shape[1:])
    model.train(was_training)
    _check_logits(cfg, got, DataShape.of(data), "a label per position needs a model that predicts every position; "
                  "choose matching model and dataset settings")


def build_simulation(registry: Registry, cfg: RunConfig, data_root: Path | None = None,
                     data: FederatedData | None = None) -> Simulation:
    """Build data, learners, clients and aggregator for ``cfg`` (with ``data``, the run's data set as
    :func:`load_data` gives it, already loaded elsewhere: Ray's driver ships it to its tasks)."""
    device = check_device(cfg.device)
    data = load_data(registry, cfg, data_root) if data is None else data
    check_declared_shape(registry, cfg, data)
    empty = int((data.test_sizes() == 0).sum())
    if empty:
        warnings.warn(f"{cfg.dataset}: {empty} of {data.n_clients} clients have no test sample; test_acc_mean and "
                      "test_acc_p10 leave them out (test_acc weighs clients by test size)", stacklevel=2)
    training, unseen = unseen_split(data.n_clients, cfg.train.unseen_fraction)
    if unseen:  # training clients first (ids 0..), the unseen ones after them
        data = data.select(training + unseen)
    on_device = data.to(device)
    if on_device.test_x is not data.test_x:  # the run reads its own copy: a memory-mapped cache entry's pages can go
        for name in datacache.TENSORS:
            if getattr(data, name) is not None:
                datacache.release(getattr(data, name))
    data = on_device
    task = make_task(data.task, data.class_weights)
    model_entry = registry.entry("model", cfg.model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(cfg.seed, STREAM_INIT))
        try:
            models = [
                data.attach(batchable_lstms(keyed_dropout(model_entry.spec.build(data.input_shape, data.n_outputs,
                                                                                 **dict(cfg.model_params)))))
                for _ in range(cfg.n_learners)
            ]
        except Exception as e:
            raise PluginError(f"model {cfg.model!r} (plugin {model_entry.plugin!r}) failed to build: {e}") from e
    check_output_shape(cfg, models[0], data)
    check_capabilities(registry, cfg, models[0])
    layout = torch.channels_last if cfg.train.channels_last else torch.preserve_format
    ensemble = LearnersEnsemble([Learner(m.to(device, memory_format=layout), task) for m in models])
    client_cls = registry.get("client", cfg.client).cls
    everyone = [
        client_cls(i, data.client(i), ensemble, cfg.train, seed=cfg.seed, **dict(cfg.client_params))
        for i in range(data.n_clients)
    ]
    clients, new_clients = everyone[: len(training)], everyone[len(training) :]
    agg_cls = registry.get("aggregator", cfg.aggregator).cls
    aggregator = agg_cls(clients, ensemble.get_params(), cfg.train, seed=cfg.seed, **dict(cfg.aggregator_params))
    reason = vectorisable(models[0], clients)
    slower = prefers_sequential(models[0], device)
    if cfg.engine == "sequential":
        note = "sequential (asked for: engine=sequential)"
    elif reason is None and (slower is None or cfg.engine == "vectorized"):
        aggregator.engine = VectorizedEngine(models[0], task, data, cfg.seed)
        note = "vectorized (" + ("asked for: engine=vectorized" if cfg.engine == "vectorized" else
                                 "model and client loop allow it") + ")"
    elif cfg.engine == "vectorized":
        raise ConfigError(f"the vectorized engine cannot run this: {reason}; use --engine auto or sequential")
    elif reason is not None:
        note = f"sequential (vectorized engine not applicable: {reason})"
    else:
        note = f"sequential (chosen for speed: {slower})"
    sim = Simulation(cfg, data, aggregator, ensemble.learners[0].n_params, note, new_clients)
    state_bytes = sum(p.numel() * p.element_size() for m in models for p in m.parameters())
    on_disk, why = choose_client_state(cfg.client_state, not isinstance(aggregator.engine, VectorizedEngine),
                                       len(everyone), state_bytes)
    if on_disk:
        folder = ScratchFolder()
        for c in everyone:
            c.keep_state_in(functools.partial(DiskSlots.of_client, folder, c.client_id))
    sim.engine += f"; client state {'on disk' if on_disk else 'in memory'} ({why})"
    return sim
