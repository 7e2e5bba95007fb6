"""The whole plugin contract of fedbench.

A plugin is a module (or object) registered under the entry-point group
``fedbench``. It implements any of the hooks below with ``@fedbench.hookimpl``.
Every hook is a *registration* hook: it is called once, when the registry is
first built (lazily, on the first lookup; never at import time), takes no
arguments and returns a list of specs of its kind. Returning ``None`` or an
empty list means "this plugin adds nothing of this kind". Names must be unique
per kind across all plugins; a clash is reported naming both providers.

Built-in plugins (``plugins/`` in the source tree) use exactly these hooks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from fedbench.plugin.specs import (
        AggregatorSpec, ClientSpec, DatasetSpec, ExecutorSpec, MethodSpec, ModelSpec, PartitionerSpec, SuiteSpec,
    )

hookspec = pluggy.HookspecMarker("fedbench")


def hookimpl(function: Any = None, **kwargs: Any) -> Any:
    """Mark a function as an implementation of a fedbench hook (``fedbench.hookimpl``)."""
    return pluggy.HookimplMarker("fedbench")(function, **kwargs)


@hookspec
def fedbench_datasets() -> list[DatasetSpec] | None:
    """Return the data sets this plugin provides.

    Each :class:`~fedbench.plugin.specs.DatasetSpec` carries ``load(data_root=...,
    **params)`` returning a :class:`~fedbench.fl.data.FederatedData` on the CPU,
    and the name of the model plugin to use by default.
    """


@hookspec
def fedbench_models() -> list[ModelSpec] | None:
    """Return the model factories this plugin provides.

    ``build(input_shape, n_outputs, **params)`` must return a fresh
    ``torch.nn.Module`` mapping a batch of inputs to ``n_outputs`` logits. It
    is called once per learner, under a seeded torch RNG.
    """


@hookspec
def fedbench_clients() -> list[ClientSpec] | None:
    """Return the client types this plugin provides.

    ``cls`` subclasses :class:`~fedbench.fl.client.Client`; its extra keyword
    arguments are the spec's ``params``.
    """


@hookspec
def fedbench_aggregators() -> list[AggregatorSpec] | None:
    """Return the aggregators this plugin provides.

    ``cls`` subclasses :class:`~fedbench.fl.aggregator.Aggregator`; its extra
    keyword arguments are the spec's ``params``.
    """


@hookspec
def fedbench_methods() -> list[MethodSpec] | None:
    """Return the method presets this plugin provides.

    A :class:`~fedbench.plugin.specs.MethodSpec` binds a client type, an aggregator
    and a number of learners (all looked up by name in the registry) with
    default hyper-parameters. Users and suites choose methods by this name.
    """


@hookspec
def fedbench_suites() -> list[SuiteSpec] | None:
    """Return the named suite files this plugin ships.

    ``path`` is a TOML suite file (see docs/guide.md, "Suites"); the
    name is what ``fedbench run --suite NAME`` accepts.
    """


@hookspec
def fedbench_partitioners() -> list[PartitionerSpec] | None:
    """Return the partitioners this plugin provides.

    A data set built from one pooled set of samples (see
    :func:`fedbench.runs.partition.federate`) looks its partitioner up by name;
    ``partition(labels, n_clients, rng, **params)`` returns one index array
    per client.
    """


@hookspec
def fedbench_executors() -> list[ExecutorSpec] | None:
    """Return the executors this plugin provides: ways to run a sweep's configurations
    (``fedbench run --executor NAME``); the core registers ``local`` (worker processes) and ``ray``.

    ``run(configs, results, *, jobs, data_root, force, progress, on_outcome, address)`` must store every
    run through :func:`fedbench.runs.runner.execute_run` and return one outcome per config, in order.
    """
