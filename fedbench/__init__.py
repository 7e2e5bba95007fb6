"""fedbench: a federated-learning benchmark suite built on plugins.

Public API for plugin authors: the spec records, the hook marker, and the
FL base classes a plugin subclasses.
"""

from __future__ import annotations

__version__ = "0.1.0"

from fedbench.aggregator import Aggregator, CentralizedAggregator, weighted_average
from fedbench.client import Client, ClientUpdate, EvalResult
from fedbench.data import ClientData, FederatedData
from fedbench.learner import Learner, LearnersEnsemble
from fedbench.registry import get_registry, hookimpl
from fedbench.specs import AggregatorSpec, ClientSpec, DatasetSpec, MethodSpec, ModelSpec, PartitionerSpec, SuiteSpec

__all__ = [
    "Aggregator",
    "AggregatorSpec",
    "CentralizedAggregator",
    "Client",
    "ClientData",
    "ClientSpec",
    "ClientUpdate",
    "DatasetSpec",
    "EvalResult",
    "FederatedData",
    "Learner",
    "LearnersEnsemble",
    "MethodSpec",
    "ModelSpec",
    "PartitionerSpec",
    "SuiteSpec",
    "__version__",
    "get_registry",
    "hookimpl",
    "weighted_average",
]
