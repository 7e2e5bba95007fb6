"""What a plugin hands the registry: one small frozen record per component.

Each record names the component, documents it in one line, lists its tunable
parameters with their defaults (the only keys a user may override), and holds
the callable that builds it. The registry attaches the providing plugin.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from fedbench.plugin.params import Param, class_params, split_params


def _frozen(mapping: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True, kw_only=True)
class Spec:
    """Fields shared by every component: its name, one-line doc and parameters."""

    name: str
    doc: str = ""
    #: parameter -> default, or -> :class:`fedbench.plugin.params.Param` (default plus valid range);
    #: after construction ``params`` holds the defaults and ``rules`` the ranges
    params: Mapping[str, Any] = field(default_factory=dict)
    rules: Mapping[str, Param] = field(default_factory=dict)

    def __post_init__(self) -> None:
        defaults, rules = split_params(self.params)
        object.__setattr__(self, "params", _frozen(defaults))
        object.__setattr__(self, "rules", _frozen({**rules, **self.rules}))


@dataclass(frozen=True, kw_only=True)
class DatasetSpec(Spec):
    """A federated data set.

    ``load(data_root=..., **params)`` returns a
    :class:`fedbench.fl.data.FederatedData` on the CPU; a data set's own random
    seed, if it has one, is one of its ``params`` (so the data stay fixed
    across training seeds, as in the paper). ``default_model`` names the
    model plugin used when a run does not choose one.

    ``check(data_root)``, when given, returns None if the data set's files are
    present under ``data_root``, else one line naming the missing files and how
    to get them (suites use it to report every missing data set up front).
    ``download(data_root)``, when given, fetches the files into ``data_root``
    (only where the machine has internet; ``fedbench data download``).
    ``shape(**params)``, when given, returns the :class:`fedbench.fl.data.DataShape` that ``load`` will return
    for these parameters, without reading files: fedbench then builds each run's model on it and checks its
    output before any run (a model that does not fit is one line, not a failed run), and checks the loaded
    data against it (a ``shape`` that does not say what ``load`` returns fails the run, naming the plugin).
    ``cache=True``: ``load`` reads no files, its result depends only on its parameters and its
    code (a generated data set), so fedbench keeps it on disk, content-addressed
    (:mod:`fedbench.runs.datacache`), instead of generating it again in every process.
    """

    load: Callable[..., Any]
    default_model: str
    check: Callable[..., str | None] | None = None
    download: Callable[..., None] | None = None
    shape: Callable[..., Any] | None = None
    cache: bool = False


@dataclass(frozen=True, kw_only=True)
class ModelSpec(Spec):
    """A model factory: ``build(input_shape, n_outputs, **params) -> nn.Module``.

    ``init_note(params)``, when given, returns None, or ``(tag, line)`` when these parameters start the
    model in a way a reader of the results must know (e.g. ``("from scratch", "no ImageNet weights
    given ...")``): ``fedbench run`` prints the line before any run and reports mark the cells with the tag.
    """

    build: Callable[..., Any]
    init_note: Callable[[dict], tuple[str, str] | None] | None = None


@dataclass(frozen=True, kw_only=True)
class ClassSpec(Spec):
    """A component given as a class ``cls``. Without ``params``, the spec offers what the class declares in
    ``PARAMS`` (:func:`fedbench.plugin.params.declare`)."""

    cls: type

    def __post_init__(self) -> None:
        if not self.params:
            object.__setattr__(self, "params", class_params(self.cls))
        super().__post_init__()


@dataclass(frozen=True, kw_only=True)
class ClientSpec(ClassSpec):
    """A client type: a subclass of :class:`fedbench.fl.client.Client`."""


@dataclass(frozen=True, kw_only=True)
class AggregatorSpec(ClassSpec):
    """An aggregator: a subclass of :class:`fedbench.fl.aggregator.Aggregator`."""


@dataclass(frozen=True, kw_only=True)
class MethodSpec(Spec):
    """A method preset: a client type and an aggregator bound with defaults.

    ``params`` holds the training hyper-parameters this method changes from
    :class:`fedbench.fl.config.TrainConfig`'s defaults; ``client_params`` and
    ``aggregator_params`` override those components' own defaults.
    ``shared`` declares the method's own parameters (default, or a
    :class:`fedbench.plugin.params.Param`), set with ``--set method.KEY=VALUE`` and
    handed to *both* its client type and its aggregator as keyword arguments
    (FedDyn's ``alpha``, used by the clients' objective and the server's update);
    after construction ``shared`` holds the defaults and ``shared_rules`` the ranges.
    """

    client: str
    aggregator: str
    n_learners: int = 1
    client_params: Mapping[str, Any] = field(default_factory=dict)
    aggregator_params: Mapping[str, Any] = field(default_factory=dict)
    shared: Mapping[str, Any] = field(default_factory=dict)
    shared_rules: Mapping[str, Param] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "client_params", _frozen(self.client_params))
        object.__setattr__(self, "aggregator_params", _frozen(self.aggregator_params))
        defaults, rules = split_params(self.shared)
        object.__setattr__(self, "shared", _frozen(defaults))
        object.__setattr__(self, "shared_rules", _frozen({**rules, **self.shared_rules}))
        if not self.client or not self.aggregator:
            raise ValueError(f"method {self.name!r}: client and aggregator must name registered components")
        if self.n_learners < 1:
            raise ValueError(f"method {self.name!r}: n_learners must be >= 1, got {self.n_learners}")


@dataclass(frozen=True, kw_only=True)
class SuiteSpec(Spec):
    """A named suite file (TOML) that ``fedbench run --suite NAME`` can expand."""

    path: str


@dataclass(frozen=True, kw_only=True)
class ExecutorSpec(Spec):
    """A way to run many configurations (``fedbench run --executor NAME``).

    ``run(configs, results, *, jobs, data_root, force, progress, on_outcome, address)`` computes every
    config into the SQLite results file ``results`` (through :func:`fedbench.runs.runner.execute_run`, which
    claims, stores and never computes a run twice) and returns one :class:`~fedbench.runs.runner.RunOutcome`
    per config, in order, calling ``on_outcome(outcome)`` as each run ends. ``jobs`` and ``address``
    are hints it may ignore.
    """

    run: Callable[..., list[Any]]


@dataclass(frozen=True, kw_only=True)
class PartitionerSpec(Spec):
    """A way to split one pooled data set over clients.

    ``partition(labels, n_clients, rng, **params)`` takes the integer labels
    (numpy array), the number of clients and a ``numpy.random.Generator``, and
    returns one index array per client. It must terminate, be deterministic for
    the generator, and raise :class:`~fedbench.errors.DataError` when infeasible.
    """

    partition: Callable[..., Any]
