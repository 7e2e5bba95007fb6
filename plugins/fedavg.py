"""FedAvg (McMahan et al., 2017): plain clients, server-side weighted averaging.

Also registers the two generic components other methods reuse: the ``plain``
client and the ``centralized`` aggregator (both defined in fedbench's core).
"""

from __future__ import annotations

from fedbench.params import Param
from fedbench import AggregatorSpec, CentralizedAggregator, Client, ClientSpec, MethodSpec, hookimpl


@hookimpl
def fedbench_clients() -> list[ClientSpec]:
    return [ClientSpec(name="plain", doc="uniform sample weights; trains every learner it is sent", cls=Client)]


@hookimpl
def fedbench_aggregators() -> list[AggregatorSpec]:
    return [
        AggregatorSpec(
            name="centralized",
            doc="server averages each learner over the clients, weighted by train size (unsampled ones hold the old model)",
            params={"unsampled": Param("hold", choices=("hold", "drop"))},
            cls=CentralizedAggregator,
        )
    ]


@hookimpl
def fedbench_methods() -> list[MethodSpec]:
    return [
        MethodSpec(
            name="fedavg",
            doc="FedAvg: one global model averaged over clients (McMahan et al. 2017)",
            client="plain",
            aggregator="centralized",
            n_learners=1,
        )
    ]
