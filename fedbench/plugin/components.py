"""The core's own components, registered through the same public hooks as every plugin: the ``plain``
client and the ``centralized`` aggregator that many methods share (FedEM's mixture client plugin and
every averaging method build on them); the ``local`` and ``ray`` executors register from
``fedbench/runs/executor.py`` the same way. They are the core's objects, not a method: disabling any method
plugin (``FEDBENCH_DISABLE_PLUGINS=fedavg``) leaves them in place."""

from __future__ import annotations

from fedbench.fl.aggregator import CentralizedAggregator
from fedbench.fl.client import Client
from fedbench.plugin.hookspecs import hookimpl
from fedbench.plugin.specs import AggregatorSpec, ClientSpec


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
