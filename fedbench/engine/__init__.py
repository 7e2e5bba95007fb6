"""The backends that run a round's local training and evaluations: one interface (:class:`Engine`'s
``fit(clients, instructions)`` and ``evaluate(clients, params)``), two implementations.

- :mod:`fedbench.engine.sequential`: one client at a time, the reference.
- :mod:`fedbench.engine.vectorized`: every (client, learner) pair of a round at once, by ``torch.func``;
  split by concern into ``layout`` (rows of parameters and buffers), ``schedule`` (batch orders, row sets,
  gathers), ``train`` (the phases' step loops), ``evaluate`` (no-grad passes) and ``check`` (whether it
  applies to a model and a round's clients, and whether it pays on a device).

What a method computes is written once, on its client type (local terms, phases, own steps, weights); both
engines run it.
"""

from __future__ import annotations

from fedbench.engine.base import Consume, Engine
from fedbench.engine.sequential import SequentialEngine
from fedbench.engine.vectorized import VectorizedEngine
from fedbench.engine.vectorized.check import (
    CPU_SEQUENTIAL_MODULES, CPU_SEQUENTIAL_PARAMS, ClientCheck, prefers_sequential, vectorisable,
)
from fedbench.engine.vectorized.layout import RowMajorLinear

__all__ = [
    "CPU_SEQUENTIAL_MODULES", "CPU_SEQUENTIAL_PARAMS", "ClientCheck", "Consume", "Engine", "RowMajorLinear",
    "SequentialEngine", "VectorizedEngine", "prefers_sequential", "vectorisable",
]
