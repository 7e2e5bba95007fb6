"""fedbench.testing.check_method: every built-in method passes it, and it catches what it promises to catch."""

from __future__ import annotations

import pytest

from fedbench import Client, ClientSpec, MethodSpec, hookimpl
from fedbench.plugin.registry import Registry, get_registry
from fedbench.testing import check_method
from tests.conftest import with_plugin


@pytest.mark.parametrize("method", get_registry().names("method"))
def test_every_built_in_method_passes(method):
    report = check_method(method, rounds=2)
    assert {"determinism", "stored run"} <= set(report.passed), report
    assert "both backends" in report.passed or report.declined, report  # compared, or the batched engine said why not


class ParityProxClient(Client):
    """mu differs by client (0 on even ids, 5 on odd ones): the batched engine must decline, not compute client 0's term for all."""

    def local_term(self, theta, ctx):  # noqa: ANN001, ANN201
        mu = 0.0 if self.client_id % 2 == 0 else 5.0
        return mu / 2 * (theta - ctx["received"]).pow(2).sum()


class LeakyClient(Client):
    """Keeps a count in its class, so one run's state leaks into the next: not reproducible under its seed."""

    calls = 0

    def local_term(self, theta, ctx):  # noqa: ANN001, ANN201
        type(self).calls += 1
        return 1e-3 * type(self).calls * theta.sum()


def _registry_with_clients() -> Registry:
    """The installed plugins plus a test plugin with the two clients above and a method for each (real pluggy)."""

    class TestMethods:
        @hookimpl
        def fedbench_clients(self):  # noqa: ANN202
            return [ClientSpec(name="parity", doc="per-client mu", cls=ParityProxClient),
                    ClientSpec(name="leaky", doc="state across runs", cls=LeakyClient)]

        @hookimpl
        def fedbench_methods(self):  # noqa: ANN202
            return [MethodSpec(name="parity-prox", doc="per-client mu", client="parity", aggregator="centralized",
                               n_learners=1, params={"momentum": 0.0}),
                    MethodSpec(name="leaky-avg", doc="state across runs", client="leaky", aggregator="centralized",
                               n_learners=1)]

    return with_plugin(TestMethods(), "testmethods")


def test_a_method_the_batched_engine_cannot_batch_is_reported_declined_with_equal_numbers():
    report = check_method("parity-prox", rounds=2, registry=_registry_with_clients())
    assert "both backends" in report.passed
    assert "client 1's local term" in report.declined["vectorized rounds"]


def test_a_method_that_is_not_reproducible_under_its_seed_fails_by_name():
    with pytest.raises(AssertionError, match="leaky-avg: the sequential engine, built twice with seed 7, differs"):
        check_method("leaky-avg", rounds=2, registry=_registry_with_clients())
