"""The core's own components, registered through the same public hooks as every plugin: the ``plain``
client and the ``centralized`` aggregator that many methods share (FedEM's mixture client plugin and
every averaging method build on them), and the ``local`` and ``ray`` executors. They are the core's
objects, not a method: disabling any method plugin (``FEDBENCH_DISABLE_PLUGINS=fedavg``) leaves them
in place."""

from __future__ import annotations

from fedbench.aggregator import CentralizedAggregator
from fedbench.client import Client
from fedbench.registry import hookimpl
from fedbench.specs import AggregatorSpec, ClientSpec, ExecutorSpec


@hookimpl
def fedbench_clients() -> list[ClientSpec]:
    return [ClientSpec(name="plain", doc="uniform sample weights; trains every learner it is sent", cls=Client)]


@hookimpl
def fedbench_aggregators() -> list[AggregatorSpec]:
    return [
        AggregatorSpec(
            name="centralized",
            doc="server averages each learner over the clients, weighted by train size (unsampled ones hold the old model)",
            cls=CentralizedAggregator,
        )
    ]


def _local(configs, results, *, jobs=1, data_root=None, force=False, progress=True, on_outcome=None, address=None):  # noqa: ANN001, ANN202, ARG001
    from fedbench.executor import run_local

    return run_local(configs, results, jobs=jobs, data_root=data_root, force=force, progress=progress, on_outcome=on_outcome)


def _ray(configs, results, *, jobs=1, data_root=None, force=False, progress=True, on_outcome=None, address=None,  # noqa: ANN001, ANN202, ARG001
         resources=None, data_from="driver"):
    from fedbench.executor import run_ray

    resources = resources or {}
    return run_ray(configs, results, address=address, data_root=data_root, force=force, on_outcome=on_outcome,
                   cpus_per_run=resources.get("cpus", 1.0), gpus_per_run=resources.get("gpus"), data_from=data_from)


@hookimpl
def fedbench_executors() -> list[ExecutorSpec]:
    return [
        ExecutorSpec(name="local", doc="this machine: --jobs worker processes (1: in this process)", run=_local),
        ExecutorSpec(name="ray", doc="a Ray cluster (--address; default: a local Ray), one task per run", run=_ray),
    ]
