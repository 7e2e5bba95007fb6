"""A client's per-round metadata (``Client.report`` -> ``ClientUpdate.metadata``): what an aggregator reads on
both backends, identical; a report that is not finite numbers by name fails the run naming the client."""

from __future__ import annotations

import math

import pytest
import torch

from fedbench import Client, ClientSpec, ClientUpdate, FitIns, MethodSpec, hookimpl
from fedbench.fl.aggregator import CentralizedAggregator, weighted_average
from fedbench.runs.build import build_simulation, resolve_run
from fedbench.fl.learner import batches_per_epoch
from fedbench.plugin.registry import Registry
from fedbench.plugin.specs import AggregatorSpec
from tests.conftest import TINY, with_plugin


class StepsClient(Client):
    """Says how many SGD steps it took this round (as FedNova's server needs)."""

    def report(self, ins, update):  # noqa: ANN001, ANN201
        sgd = self.sgd_config(ins.lr)
        return {"local_steps": sgd.epochs * batches_per_epoch(self.n_train, sgd), "round": ins.round}


class BadClient(Client):
    def report(self, ins, update):  # noqa: ANN001, ANN201
        return {"local_steps": float("nan")}


class NovaAggregator(CentralizedAggregator):
    """FedNova's normalised averaging for plain SGD: each update's change divided by its steps, averaged by
    weight, scaled by the weighted mean of the steps; keeps what it read."""

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.read: list[list[dict]] = []

    def aggregate_fit(self, round_, updates):  # noqa: ANN001, ANN201
        self.read.append([dict(u.metadata) for u in updates])
        total = sum(u.weight for u in updates)
        tau = sum(u.weight * u.metadata["local_steps"] for u in updates) / total
        for m in range(len(self.global_params)):
            normalised = [(u.params[m] - self.global_params[m]) / u.metadata["local_steps"] for u in updates]
            self.global_params[m] = self.global_params[m] + tau * weighted_average(normalised, [u.weight for u in updates])


def _registry() -> Registry:
    class Plugin:
        @hookimpl
        def fedbench_clients(self):  # noqa: ANN202
            return [ClientSpec(name="steps", doc="reports its steps", cls=StepsClient),
                    ClientSpec(name="bad-report", doc="reports NaN", cls=BadClient)]

        @hookimpl
        def fedbench_aggregators(self):  # noqa: ANN202
            return [AggregatorSpec(name="nova", doc="FedNova averaging", cls=NovaAggregator)]

        @hookimpl
        def fedbench_methods(self):  # noqa: ANN202
            return [MethodSpec(name="nova", doc="FedNova", client="steps", aggregator="nova", n_learners=1,
                               params={"momentum": 0.0}),
                    MethodSpec(name="bad-report", doc="reports NaN", client="bad-report", aggregator="centralized",
                               n_learners=1)]

    return with_plugin(Plugin(), "metadata-test")


def _rounds(reg: Registry, engine: str, method: str = "nova", rounds: int = 3):
    cfg = resolve_run(reg, dataset="synthetic", method=method, seed=2, engine=engine,
                      overrides={**TINY, "rounds": rounds, "batch_size": 16})
    sim = build_simulation(reg, cfg)
    for r in range(rounds):
        sim.aggregator.fit_round(r)
    return sim


def test_both_backends_deliver_the_same_metadata_and_the_aggregator_uses_it():
    reg = _registry()
    seq, vec = _rounds(reg, "sequential"), _rounds(reg, "vectorized")
    assert vec.engine.startswith("vectorized"), vec.engine
    sizes = [c.n_train for c in seq.aggregator.clients]
    want = [[{"local_steps": float(math.ceil(n / 16)), "round": float(r)} for n in sizes] for r in range(3)]
    assert seq.aggregator.read == want  # hand-computed: one epoch of ceil(n / 16) batches
    assert vec.aggregator.read == want
    torch.testing.assert_close(seq.aggregator.global_params[0], vec.aggregator.global_params[0], rtol=1e-5, atol=1e-6)


def test_without_report_an_update_carries_no_metadata():
    reg = _registry()
    sim = _rounds(reg, "sequential", method="fedavg", rounds=1)
    update = sim.aggregator.clients[0].reported(FitIns(sim.aggregator.global_params, {}, 0, 0.1),
                                                ClientUpdate(0, sim.aggregator.global_params, 1.0, 0.0))
    assert dict(update.metadata) == {}


@pytest.mark.parametrize("engine", ["sequential", "vectorized"])
def test_a_report_that_is_not_finite_numbers_fails_the_run_naming_the_client(engine):
    with pytest.raises(TypeError, match=r"BadClient.report\(\) must return finite numbers by name, got 'local_steps': nan"):
        _rounds(_registry(), engine, method="bad-report", rounds=1)
