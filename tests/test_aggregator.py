"""Aggregation and client sampling against closed forms."""

from __future__ import annotations

import pytest
import torch

from fedbench.fl.aggregator import sample_clients, weighted_average
from fedbench.runs.build import build_simulation, resolve_run
from fedbench.fl.seeding import generator
from tests.conftest import TINY


class TestWeightedAverageSuccess:
    def test_closed_form(self):
        a, b, c = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 6.0]), torch.tensor([0.0, -4.0])
        out = weighted_average([a, b, c], [1, 3, 4])
        # (1*[1,2] + 3*[3,6] + 4*[0,-4]) / 8 = ([10, 4]) / 8
        torch.testing.assert_close(out, torch.tensor([1.25, 0.5]))

    def test_a_stacked_tensor_is_its_rows(self):
        rows = torch.tensor([[1.0, 2.0], [3.0, 6.0], [0.0, -4.0]], dtype=torch.float64)
        assert torch.equal(weighted_average(rows, [1, 3, 4]), weighted_average(list(rows), [1, 3, 4]))
        torch.testing.assert_close(weighted_average(rows, [1, 3, 4]), torch.tensor([1.25, 0.5], dtype=torch.float64))

    def test_summed_in_client_order_from_zero_as_the_authors_average_learners(self):
        # float32, weights [1, 1, 2] -> [0.25, 0.25, 0.5] (exact). In client order from zero:
        # 0.25 * 1 = 0.25; + 0.25 * 2**25 = 2**23 + 0.25, which rounds to 2**23 (float32's spacing there is 1);
        # + 0.5 * -2**24 = -2**23 -> 0.0. The exact answer, 0.25, is what another order (or float64) gives.
        ts = [torch.tensor([1.0]), torch.tensor([2.0**25]), torch.tensor([-(2.0**24)])]
        assert weighted_average(ts, [1, 1, 2]).item() == 0.0
        assert weighted_average(torch.stack(ts), [1, 1, 2]).item() == 0.0
        assert weighted_average(ts[::-1], [2, 1, 1]).item() == 0.25  # (-2**23 + 2**23) + 0.25

    def test_single_tensor_is_identity(self):
        t = torch.randn(5)
        torch.testing.assert_close(weighted_average([t], [7.0]), t)


class TestWeightedAverageFailure:
    @pytest.mark.parametrize("tensors, weights", [([], []), ([torch.zeros(2)], [1, 2]), ([torch.zeros(2)], [0.0]),
                                                  (torch.zeros(0, 2), []), (torch.zeros(2, 3), [1.0])])
    def test_bad_input(self, tensors, weights):
        with pytest.raises(ValueError):
            weighted_average(tensors, weights)


class TestSampling:
    def test_full_participation_takes_everyone(self):
        assert sample_clients(5, 1.0, generator(0)) == [0, 1, 2, 3, 4]

    def test_fraction_is_deterministic_and_sized(self):
        a = sample_clients(100, 0.1, generator(3, 1))
        assert a == sample_clients(100, 0.1, generator(3, 1))
        assert len(a) == 10 and len(set(a)) == 10 and a == sorted(a)
        assert a != sample_clients(100, 0.1, generator(3, 2))

    def test_at_least_one(self):
        assert len(sample_clients(10, 0.01, generator(0))) == 1


class TestCentralizedAggregator:
    def test_round_average_weighted_by_train_size(self, registry):
        cfg = resolve_run(registry, dataset="synthetic", method="fedem", seed=0, overrides=TINY)
        agg = build_simulation(registry, cfg).aggregator
        # train every client by hand from the same global params, then compare with the aggregator
        params = [p.clone() for p in agg.global_params]
        updates = [c.step(params, 0, cfg.train.learning_rate(0)) for c in agg.clients]
        agg2 = build_simulation(registry, cfg).aggregator
        agg2.fit_round(0)
        sizes = [c.n_train for c in agg.clients]
        for m in range(3):
            expected = sum(s * u.params[m] for s, u in zip(sizes, updates)) / sum(sizes)
            torch.testing.assert_close(agg2.global_params[m], expected)


class TestFoldingAsUpdatesArrive:
    """The one-at-a-time loop folds each update into the average as it arrives (no list of every client's
    parameters): the same numbers as aggregate_fit on the whole list, bit for bit."""

    @pytest.mark.parametrize("method, over", [
        ("fedavg", {}),
        ("fedem", {}),
        ("fedavg", {"participation": 0.5}),  # the unsampled clients hold the old model (the authors')
        ("fedavg", {"participation": 0.5, "aggregator.unsampled": "drop"}),
    ])
    def test_folding_equals_the_whole_list(self, registry, monkeypatch, method, over):
        from fedbench.fl.aggregator import CentralizedAggregator

        def rounds():
            cfg = resolve_run(registry, dataset="synthetic", method=method, seed=3, overrides={**TINY, **over},
                              engine="sequential")
            sim = build_simulation(registry, cfg)
            stats = [sim.aggregator.fit_round(r) for r in range(3)]
            return sim.aggregator, stats

        folded_agg, folded = rounds()
        assert folded_agg.folds(folded_agg.clients)
        monkeypatch.setattr(CentralizedAggregator, "folds", lambda self, clients: False)
        listed_agg, listed = rounds()
        assert folded == listed  # the round's loss and bytes
        for a, b in zip(folded_agg.global_params, listed_agg.global_params):
            assert torch.equal(a, b)

    def test_a_client_that_trains_its_own_way_is_not_folded(self, registry):
        from fedbench.fl.client import Client

        class OwnFit(Client):
            def fit(self, ins, phases=None):  # noqa: ANN001, ANN201
                return super().fit(ins, phases)

        cfg = resolve_run(registry, dataset="synthetic", method="fedavg", seed=3, overrides=TINY, engine="sequential")
        agg = build_simulation(registry, cfg).aggregator
        assert agg.folds(agg.clients)
        agg.clients[0].__class__ = OwnFit  # its update's weight is its own business: the whole list, as before
        assert not agg.folds(agg.clients)


@pytest.mark.parametrize("engine", ["sequential", "vectorized"])
def test_the_loss_at_the_sent_model_comes_back_in_the_update_when_asked(registry, engine):
    """q-FFL's and AFL's servers weigh clients by F_k(w): it travels in the update (FitIns.report_start_loss ->
    ClientUpdate.start_loss), computed by the client before training, on either engine; nothing else asks for it."""
    cfg = resolve_run(registry, dataset="synthetic", method="qffl", seed=3, overrides=TINY, engine=engine)
    sim = build_simulation(registry, cfg)
    agg = sim.aggregator
    assert sim.engine.startswith(engine)
    sent = [agg.instructions(0, 0.1, c) for c in agg.clients]
    assert all(ins.report_start_loss for ins in sent)
    expected = [c.loss_at(ins.params) for c, ins in zip(agg.clients, sent)]
    updates = agg.engine.fit(agg.clients, sent)
    assert [u.start_loss for u in updates] == expected and all(v > 0 for v in expected)
    plain = resolve_run(registry, dataset="synthetic", method="fedavg", seed=3, overrides=TINY, engine=engine)
    fedavg = build_simulation(registry, plain).aggregator
    ins = [fedavg.instructions(0, 0.1, c) for c in fedavg.clients]
    assert all(u.start_loss is None for u in fedavg.engine.fit(fedavg.clients, ins))


class TestBuffersTravelInTheInstructions:
    """BatchNorm averages reach clients in FitIns/EvaluateIns (``buffers_for``), not by the server calling them."""

    def test_the_average_is_in_each_clients_instructions_and_taken_before_training(self, registry):
        from fedbench.runs.build import build_simulation, resolve_run

        over = {**TINY, "model": "mlp", "model.batch_norm": True, "model.hidden": 8}
        agg = build_simulation(registry, resolve_run(registry, dataset="synthetic", method="fedavg", seed=0, overrides=over)).aggregator
        assert agg.instructions(0, 0.1, agg.clients[0]).buffers is None  # nothing averaged yet: nothing sent
        agg.fit_round(0)
        sent = agg.instructions(1, 0.1, agg.clients[3])
        assert sent.buffers is agg.global_buffers and sent.buffers is not None
        agg.clients[3].buffers = [torch.zeros_like(b) for b in agg.global_buffers]  # a stale copy
        agg.engine.deliver([agg.clients[3]], [sent])
        assert all(torch.equal(a, b) for a, b in zip(agg.clients[3].buffers, agg.global_buffers))

    def test_an_aggregator_written_for_send_buffers_is_refused_where_it_is_defined(self):
        from fedbench.fl.aggregator import CentralizedAggregator
        from fedbench.errors import PluginError

        with pytest.raises(PluginError, match=r"defines send_buffers\(clients\), which fedbench no longer calls.*buffers_for\(client\)"):
            class OldStyle(CentralizedAggregator):  # noqa: F841
                def send_buffers(self, clients):  # noqa: ANN001, ANN202
                    for c in clients:
                        c.receive_buffers(self.global_buffers)
