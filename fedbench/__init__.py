"""fedbench: a federated-learning benchmark suite built on plugins.

For notebooks and scripts (``docs/api.md``): :func:`load_dataset`, :func:`run`, :func:`run_suite`,
:func:`results`. For plugin authors (``docs/plugins.md``): the spec records, the hook marker, and
the FL base classes a plugin subclasses.
"""

from __future__ import annotations

__version__ = "0.1.0"

from fedbench.plugin.contract import PLUGIN_API, install_moved_modules

install_moved_modules()  # plugins written before the subpackages still import fedbench.client, fedbench.params, ...
from fedbench.fl.aggregator import Aggregator, CentralizedAggregator, weighted_average
from fedbench.fl.client import Client, ClientUpdate, EvalResult, FitIns, FitPhase, LossPhase, StepPhase
from fedbench.fl.messages import EvaluateIns
from fedbench.fl.data import ClientData, DataShape, FederatedData
from fedbench.fl.learner import Learner, LearnersEnsemble
from fedbench.plugin.params import Param
from fedbench.plugin.registry import get_registry, hookimpl
from fedbench.plugin.specs import (
    AggregatorSpec, ClientSpec, DatasetSpec, ExecutorSpec, MethodSpec, ModelSpec, PartitionerSpec, SuiteSpec,
)

#: the Python API (``docs/api.md``), imported on first use: a plugin's ``import fedbench`` does not load the
#: runner, the store or pandas
_API = ("RunResult", "SuiteResult", "configure", "load_dataset", "results", "run", "run_suite")


def __getattr__(name: str):  # noqa: ANN202 - PEP 562
    if name in _API:
        from fedbench import api

        return getattr(api, name)
    raise AttributeError(f"module 'fedbench' has no attribute {name!r}")


__all__ = [
    "Aggregator",
    "AggregatorSpec",
    "CentralizedAggregator",
    "Client",
    "ClientData",
    "ClientSpec",
    "ClientUpdate",
    "DataShape",
    "DatasetSpec",
    "EvalResult",
    "EvaluateIns",
    "ExecutorSpec",
    "FederatedData",
    "FitIns",
    "FitPhase",
    "LossPhase",
    "StepPhase",
    "Learner",
    "LearnersEnsemble",
    "MethodSpec",
    "PLUGIN_API",
    "Param",
    "ModelSpec",
    "RunResult",
    "SuiteResult",
    "PartitionerSpec",
    "SuiteSpec",
    "__version__",
    "configure",
    "get_registry",
    "hookimpl",
    "load_dataset",
    "results",
    "run",
    "run_suite",
    "weighted_average",
]
