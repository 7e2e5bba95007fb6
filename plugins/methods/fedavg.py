"""FedAvg (McMahan et al., 2017): plain clients, server-side weighted averaging.

Both components are the core's own (``fedbench/plugin/components.py`` registers the ``plain`` client and
the ``centralized`` aggregator); this plugin only names the method.
"""

from __future__ import annotations

from fedbench import MethodSpec, hookimpl


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
