"""The baselines of the FedEM paper: limit cases and closed forms, and each one end to end."""

from __future__ import annotations

import math
import types

import pytest
import torch

from fedbench.runs.build import build_simulation, resolve_run
from fedbench.fl.learner import Learner, SGDConfig, epoch_orders
from fedbench.runs.runner import execute_run
from fedbench.fl.seeding import generator
from fedbench.errors import ConfigError
from fedbench.reporting.store import ResultStore
from fedbench.fl.tasks import BinaryTask
from fedbench_plugins.methods.clustered import complete_linkage_bipartition, cosine_similarities
from fedbench_plugins.methods.decentralized import binomial_graph, erdos_renyi_ring, fmmc_weights, metropolis_weights
from fedbench_plugins.methods.fedopt import server_step
from tests.conftest import TINY

METHODS = [
    "fedem", "fedavg", "local", "fedprox", "fedavg+", "fedavgm", "fedadam", "fedyogi", "clustered", "d-fedavg", "d-fedem",
    "ditto", "scaffold", "apfl", "pfedme", "pfedme-moreau", "qffl",
]


def _sim(registry, method, engine="auto", **extra):
    cfg = resolve_run(registry, dataset="synthetic", method=method, seed=4, overrides={**TINY, **extra}, engine=engine)
    return build_simulation(registry, cfg)


def _global(sim):
    return [p.clone() for p in sim.aggregator.global_params]


@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_end_to_end(registry, tmp_path, method):
    cfg = resolve_run(registry, dataset="synthetic", method=method, seed=1, overrides=TINY)
    out = execute_run(registry, cfg, ResultStore(tmp_path / "r.sqlite"), progress=False)
    assert out.status == "done", out.error
    assert 0 <= out.metrics["test_acc"] <= 100 and math.isfinite(out.metrics["train_loss"])


class TestFedProx:
    @pytest.mark.parametrize("engine", ["sequential", "vectorized"])
    def test_mu_zero_is_fedavg_exactly(self, registry, engine):
        prox = _sim(registry, "fedprox", engine, **{"client.mu": 0.0})
        avg = _sim(registry, "fedavg", engine, momentum=0.0)
        for r in range(3):
            prox.aggregator.fit_round(r), avg.aggregator.fit_round(r)
        for a, b in zip(_global(prox), _global(avg)):
            assert torch.equal(a, b)

    def test_proximal_step_hand_computed(self):
        from fedbench_plugins.methods.fedprox import ProximalClient

        model = torch.nn.Linear(1, 1)
        with torch.no_grad():
            model.weight.fill_(1.0), model.bias.fill_(0.0)
        learner = Learner(model, BinaryTask())
        anchor = torch.tensor([3.0, -2.0])
        x, y = torch.tensor([[0.0]]), torch.tensor([0.0])  # data gradient only on the bias: sigmoid(0) = 0.5
        prox = ProximalClient.local_term.__get__(types.SimpleNamespace(mu=2.0))  # the client type's own term
        learner.fit_epochs(x, y, None, SGDConfig(lr=0.1), epoch_orders(generator(0), 1, 1),
                           term=lambda theta: prox(theta, {"received": anchor}))
        # grad = data + mu (theta - anchor): weight 0 + 2 (1 - 3) = -4; bias 0.5 + 2 (0 + 2) = 4.5
        torch.testing.assert_close(learner.get_params(), torch.tensor([1.0 + 0.4, 0.0 - 0.45]))

    def test_vectorised_prox_equals_sequential(self, registry):
        seq, vec = _sim(registry, "fedprox", "sequential", **{"client.mu": 0.5}), _sim(registry, "fedprox", "vectorized", **{"client.mu": 0.5})
        assert vec.engine.startswith("vectorized")
        for r in range(3):
            s, v = seq.aggregator.fit_round(r), vec.aggregator.fit_round(r)
            assert v.train_loss == pytest.approx(s.train_loss, rel=1e-5)
        for a, b in zip(_global(seq), _global(vec)):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


class TestServerOptimisers:
    def test_momentum_zero_lr_one_is_fedavg_exactly(self, registry):
        m = _sim(registry, "fedavgm", **{"aggregator.beta1": 0.0})
        avg = _sim(registry, "fedavg")
        for r in range(3):
            m.aggregator.fit_round(r), avg.aggregator.fit_round(r)
        for a, b in zip(_global(m), _global(avg)):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-7)

    def test_steps_hand_computed(self):
        w, d = torch.tensor([1.0]), torch.tensor([0.5])
        m0, v0 = torch.tensor([0.2]), torch.tensor([0.04])
        kw = dict(server_lr=0.1, beta1=0.9, beta2=0.99, tau=0.01)
        w1, m1, _ = server_step("sgd", w, d, m0, v0, **kw)
        assert m1.item() == pytest.approx(0.9 * 0.2 + 0.5) and w1.item() == pytest.approx(1 + 0.1 * 0.68)
        w1, m1, v1 = server_step("adam", w, d, m0, v0, **kw)
        m, v = 0.9 * 0.2 + 0.1 * 0.5, 0.99 * 0.04 + 0.01 * 0.25
        assert (m1.item(), v1.item()) == (pytest.approx(m), pytest.approx(v))
        assert w1.item() == pytest.approx(1 + 0.1 * m / (math.sqrt(v) + 0.01))
        _, _, v1 = server_step("yogi", w, d, m0, v0, **kw)  # v - (1 - b2) d^2 sign(v - d^2), v < d^2
        assert v1.item() == pytest.approx(0.04 + 0.01 * 0.25)


class TestFedAvgPlus:
    def test_no_tuning_is_fedavg_and_tuning_personalises(self, registry):
        plain = _sim(registry, "fedavg+", **{"client.tune_epochs": 0})
        tuned = _sim(registry, "fedavg+", **{"client.tune_epochs": 3, "client.tune_lr": 0.5})
        avg = _sim(registry, "fedavg")
        for r in range(4):
            for s in (plain, tuned, avg):
                s.aggregator.fit_round(r)
        e_avg, e_plain, e_tuned = (s.aggregator.evaluate() for s in (avg, plain, tuned))
        assert [e.train_loss for e in e_plain] == pytest.approx([e.train_loss for e in e_avg], rel=1e-6)
        for a, b in zip(_global(tuned), _global(avg)):  # tuning never reaches the server
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
        mean_train = lambda ev: sum(e.train_loss * e.n_train for e in ev) / sum(e.n_train for e in ev)  # noqa: E731
        assert mean_train(e_tuned) < mean_train(e_avg)


class TestClustered:
    def test_bipartition_of_two_blocks(self):
        u = torch.tensor([[1.0, 0.1], [0.9, 0.0], [-1.0, 0.0], [1.0, -0.1], [-0.8, 0.2]])
        assert complete_linkage_bipartition(-cosine_similarities(u)) == ([0, 1, 3], [2, 4])

    def test_complete_linkage_hand_example(self):
        # points on a line at 0, 1, 5, 6, 20: complete linkage merges {0,1}, {5,6}, then {0,1,5,6} vs {20}
        x = torch.tensor([0.0, 1.0, 5.0, 6.0, 20.0])
        assert complete_linkage_bipartition((x[:, None] - x[None, :]).abs()) == ([0, 1, 2, 3], [4])

    def test_two_populations_split_into_the_right_clusters(self, registry):
        from tests.test_engine import _registry_with

        def load(data_root=None, seed=0):
            from fedbench import FederatedData

            g = torch.Generator().manual_seed(seed)
            train, test = [], []
            for i in range(8):
                x = torch.randn(60, 5, generator=g)
                y = ((x[:, 0] > 0) if i % 2 == 0 else (x[:, 0] < 0)).float()  # even clients: one rule, odd: the opposite
                train.append((x[:40], y[:40]))
                test.append((x[40:], y[40:]))
            return FederatedData.from_clients(train, test, task="binary", num_classes=2)

        reg = _registry_with("two-populations", load, "linear")
        cfg = resolve_run(
            reg, dataset="two-populations", method="clustered", seed=0,
            overrides={"rounds": 30, "lr": 0.5, "momentum": 0.0, "aggregator.eps1": 100.0, "aggregator.eps2": 0.0,
                       "aggregator.warmup": 2, "aggregator.min_size": 5},
        )
        sim = build_simulation(reg, cfg)
        for r in range(30):
            sim.aggregator.fit_round(r)
        assert sorted(sim.aggregator.clusters) == [[0, 2, 4, 6], [1, 3, 5, 7]]
        accs = [e.test_acc for e in sim.aggregator.evaluate()]
        assert min(accs) > 0.8  # each cluster's model fits its own population


#: networkx 3.6.1's binomial_graph(n=10, p=0.5, seed=1234) (the FedEM authors' graph), edge list
NX_EDGES_10 = [(0, 2), (0, 3), (0, 8), (1, 2), (1, 3), (1, 5), (1, 8), (1, 9), (2, 3), (2, 4), (2, 5), (2, 7), (2, 9), (3, 5),
               (3, 7), (4, 5), (4, 6), (4, 7), (4, 9), (5, 7), (5, 9), (6, 7), (6, 8), (6, 9), (7, 8), (8, 9)]
#: the optimum ||W - 11^T/n||_2 of the authors' FMMC program on binomial_graph(n, 0.5, 1234), solved by cvxpy 1.9.3
CVXPY_FMMC = {10: 0.5447823363716815, 50: 0.21855393261772316}


class TestFastestMixing:
    def test_the_graph_is_the_authors_networkx_draw(self):
        adj = binomial_graph(10, 0.5, 1234)
        assert [(i, j) for i in range(10) for j in range(i + 1, 10) if adj[i, j]] == NX_EDGES_10
        torch.testing.assert_close(adj, adj.T)

    @pytest.mark.parametrize("n", [10, 50])
    def test_fmmc_is_feasible_and_near_the_semidefinite_optimum(self, n):
        adj = binomial_graph(n, 0.5, 1234)
        w = fmmc_weights(adj)
        torch.testing.assert_close(w, w.T)
        torch.testing.assert_close(w.sum(dim=1), torch.ones(n, dtype=torch.float64), rtol=0, atol=1e-10)
        assert bool((w >= 0).all()) and float(w.diagonal().abs().max()) == 0.0
        assert float(w[adj == 0].abs().max()) == 0.0  # nothing off the graph's edges
        norm = float(torch.linalg.eigvalsh(w - 1.0 / n).abs().max())
        assert CVXPY_FMMC[n] - 1e-6 <= norm <= CVXPY_FMMC[n] * 1.01
        assert norm < float(torch.linalg.eigvalsh(metropolis_weights(adj) - 1.0 / n).abs().max())  # it mixes faster

    def test_complete_graph_closed_form(self):
        # zero trace forces the other eigenvalues to sum to -1: (J - I)/(n - 1), all of them -1/(n - 1), is optimal
        n = 6
        adj = torch.ones(n, n, dtype=torch.float64) - torch.eye(n, dtype=torch.float64)
        torch.testing.assert_close(fmmc_weights(adj), adj / (n - 1), rtol=0, atol=2e-3)

    def test_a_graph_without_such_a_matrix_is_a_one_line_error(self):
        star = torch.zeros(4, 4, dtype=torch.float64)
        star[0, 1:] = star[1:, 0] = 1.0  # each leaf must give the centre 1, so the centre's row sums to 3
        with pytest.raises(ConfigError, match="aggregator.mixing=metropolis"):
            fmmc_weights(star)

    def test_d_fedem_defaults_to_the_authors_graph_and_matrix(self, registry):
        agg = _sim(registry, "d-fedem").aggregator
        n = len(agg.clients)
        torch.testing.assert_close(agg.mixing, fmmc_weights(binomial_graph(n, 0.5, 4)))


class TestDecentralized:
    def test_metropolis_is_symmetric_doubly_stochastic(self):
        adj = erdos_renyi_ring(12, 0.3, generator(0))
        w = metropolis_weights(adj)
        torch.testing.assert_close(w, w.T)
        torch.testing.assert_close(w.sum(dim=1), torch.ones(12, dtype=torch.float64))
        assert bool((w >= 0).all()) and bool(((w > 0) == (adj + torch.eye(12, dtype=torch.float64) > 0)).all())
        assert int(adj.sum(dim=1).min()) >= 2  # the ring keeps it connected

    def test_complete_graph_uniform_mixing_equals_the_plain_average(self, registry):
        sim = _sim(registry, "d-fedavg", **{"aggregator.graph": "complete", "aggregator.mixing": "uniform"})
        agg = sim.aggregator
        sent = {c.client_id: [p.clone() for p in agg.configure_fit(0, c)] for c in agg.clients}
        updates = [c.step(sent[c.client_id], 0, agg.train.learning_rate(0)) for c in agg.clients]
        agg.aggregate_fit(0, updates)
        mean = torch.stack([u.params[0] for u in updates]).mean(dim=0)
        for c in agg.clients:
            torch.testing.assert_close(agg.personal[c.client_id][0], mean, rtol=1e-6, atol=1e-7)

    def test_bytes_count_every_link(self, registry):
        sim = _sim(registry, "d-fedavg", **{"aggregator.graph": "complete", "aggregator.mixing": "uniform"})
        stats = sim.aggregator.fit_round(0)
        assert stats.bytes_sent == 8 * 7 * 11 * 4  # 8 clients, 7 neighbours each, 11 float32 parameters


class TestDitto:
    def test_lambda_zero_personal_models_are_local_training(self, registry, tmp_path):
        store = ResultStore(tmp_path / "r.sqlite")
        ditto = execute_run(registry, resolve_run(registry, dataset="synthetic", method="ditto", seed=2,
                                                  overrides={**TINY, "client.lam": 0.0}), store, progress=False)
        local = execute_run(registry, resolve_run(registry, dataset="synthetic", method="local", seed=2, overrides=TINY),
                            store, progress=False)
        for key in ("test_acc", "test_loss", "train_loss"):
            assert ditto.metrics[key] == pytest.approx(local.metrics[key], rel=1e-6)

    def test_large_lambda_keeps_personal_close_to_global(self, registry):
        def gap(lam):
            sim = _sim(registry, "ditto", **{"client.lam": lam, "momentum": 0.0, "local_epochs": 3})
            for r in range(3):
                received = [p.clone() for p in sim.aggregator.global_params]
                sim.aggregator.fit_round(r)
            return max(float((c.personal[0] - received[0]).norm()) for c in sim.aggregator.clients)

        g0, g1, g8 = gap(0.0), gap(1.0), gap(8.0)
        assert g8 < g1 < g0 and g8 < 0.5 * g0

    @pytest.mark.parametrize("engine", ["sequential", "vectorized"])
    def test_lambda_zero_personal_models_are_local_batch_for_batch(self, registry, engine):
        ditto, local = _sim(registry, "ditto", engine, **{"client.lam": 0.0}), _sim(registry, "local", engine)
        assert ditto.engine.startswith(engine if engine == "sequential" else "vectorized")
        for r in range(3):
            ditto.aggregator.fit_round(r), local.aggregator.fit_round(r)
        for c in ditto.aggregator.clients:
            for a, b in zip(c.kept["personal"], local.aggregator.personal[c.client_id]):
                torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


class TestScaffold:
    def test_bytes_count_the_control_variates_both_ways(self, registry):
        stats = _sim(registry, "scaffold").aggregator.fit_round(0)
        assert stats.bytes_sent == 8 * 4 * 11 * 4  # 8 clients: w and c down, y_i and c_i+ - c_i up, 11 float32 each

    @pytest.mark.parametrize("engine", ["sequential", "vectorized"])
    def test_one_client_is_local_sgd(self, registry, engine):
        one = {"dataset.n_clients": 1}
        sc, avg = _sim(registry, "scaffold", engine, **one), _sim(registry, "fedavg", engine, momentum=0.0, **one)
        for r in range(4):
            sc.aggregator.fit_round(r), avg.aggregator.fit_round(r)
        for a, b in zip(_global(sc), _global(avg)):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
        assert float(sc.aggregator.c[0].abs().max()) > 0  # the control variates are really there

    def test_first_round_control_variates_closed_form(self, registry):
        import math as _math

        sim, ref = _sim(registry, "scaffold"), _sim(registry, "scaffold")
        w0 = [p.clone() for p in sim.aggregator.global_params]
        lr = sim.aggregator.train.learning_rate(0)
        sim.aggregator.fit_round(0)
        total = torch.zeros_like(w0[0])
        for c in ref.aggregator.clients:  # round 0: c = c_i = 0, so training is plain SGD from w0
            y = c.step([p.clone() for p in w0], 0, lr).params[0]
            k = _math.ceil(c.n_train / 128)
            expected = (w0[0] - y) / (k * lr)
            torch.testing.assert_close(sim.aggregator.c_i[c.client_id][0], expected, rtol=1e-5, atol=1e-6)
            total += expected
        torch.testing.assert_close(sim.aggregator.c[0], total / len(ref.aggregator.clients), rtol=1e-5, atol=1e-6)

    def test_vectorised_equals_sequential(self, registry):
        seq, vec = _sim(registry, "scaffold", "sequential"), _sim(registry, "scaffold", "vectorized")
        assert vec.engine.startswith("vectorized")
        for r in range(3):
            seq.aggregator.fit_round(r), vec.aggregator.fit_round(r)
        for a, b in zip(_global(seq), _global(vec)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


class TestAPFL:
    @pytest.mark.parametrize("alpha, other", [(0.0, "fedavg"), (1.0, "local")])
    def test_limits_are_fedavg_and_local(self, registry, tmp_path, alpha, other):
        store = ResultStore(tmp_path / "r.sqlite")
        apfl = execute_run(registry, resolve_run(registry, dataset="synthetic", method="apfl", seed=3,
                                                 overrides={**TINY, "client.alpha": alpha}), store, progress=False)
        ref = execute_run(registry, resolve_run(registry, dataset="synthetic", method=other, seed=3, overrides=TINY),
                          store, progress=False)
        for key in ("test_acc", "test_loss", "train_loss", "test_acc_p10"):
            assert apfl.metrics[key] == pytest.approx(ref.metrics[key], rel=1e-5, abs=1e-6)

    def test_only_the_shared_model_is_averaged(self, registry):
        sim = _sim(registry, "apfl")
        agg = sim.aggregator
        agg.fit_round(0)
        personal = [agg.personal[c.client_id] for c in agg.clients]
        assert not torch.equal(personal[0], personal[1])  # personal models stay personal
        assert sim.aggregator.fit_round(1).bytes_sent == 8 * 2 * 11 * 4  # w down and up, 8 clients


class TestPFedMeAsTheAuthorsRanIt:
    """``pfedme``: the authors' personalised aggregator with their proximal SGD."""

    def test_a_round_is_proximal_sgd_from_the_personal_model_toward_the_global_one(self, registry):
        sim = _sim(registry, "pfedme", lr=0.3, batch_size=10_000, **{"client.lam": 2.0})  # one full batch per round
        agg = sim.aggregator
        agg.fit_round(0)  # personal models now differ from the global one
        c = agg.clients[0]
        theta, w = agg.personal[c.client_id][0].clone(), agg.global_params[0].clone()
        assert not torch.equal(theta, w)
        _, grad = c.ensemble.learners[0].loss_and_grad(theta, c.data.train_x, c.data.train_y)
        wd = c.sgd_config(0.3).weight_decay
        agg.fit_round(1)
        # authors' ProxSGD without momentum: theta - lr (grad + wd theta + lam (theta - w))
        expected = theta - 0.3 * (grad + wd * theta + 2.0 * (theta - w))
        torch.testing.assert_close(agg.personal[c.client_id][0], expected, rtol=1e-5, atol=1e-6)

    def test_the_global_model_averages_every_clients_personal_model(self, registry):
        sim = _sim(registry, "pfedme", participation=0.5)
        agg = sim.aggregator
        for r in range(2):
            agg.fit_round(r)
        n = torch.tensor([float(c.n_train) for c in agg.clients])
        stacked = torch.stack([agg.personal[c.client_id][0] for c in agg.clients])
        torch.testing.assert_close(agg.global_params[0], (n / n.sum()) @ stacked, rtol=1e-5, atol=1e-6)

    def test_personal_models_are_never_reset_and_are_what_is_evaluated(self, registry):
        sim = _sim(registry, "pfedme")
        agg = sim.aggregator
        agg.fit_round(0)
        assert agg.configure_fit(1, agg.clients[0]).params is agg.personal[agg.clients[0].client_id]
        for c, res in zip(agg.clients, agg.evaluate()):
            assert res.test_loss == pytest.approx(Client_evaluate(c, agg.personal[c.client_id]).test_loss, rel=1e-5)

    def test_lam_zero_is_local_training(self, registry):
        a, b = _sim(registry, "pfedme", **{"client.lam": 0.0}), _sim(registry, "local", momentum=0.0)
        for r in range(2):
            a.aggregator.fit_round(r), b.aggregator.fit_round(r)
        for c in a.aggregator.clients:
            torch.testing.assert_close(a.aggregator.personal[c.client_id][0], b.aggregator.personal[c.client_id][0])


class TestPFedMeMoreau:
    """``pfedme-moreau``: the pFedMe paper's Algorithm 1."""

    def test_personal_solution_on_a_quadratic(self):
        from fedbench_plugins.methods.pfedme import solve_personal, toward_personal

        a, w = torch.tensor([2.0, -1.0]), torch.tensor([0.0, 1.0])
        lam = 3.0
        # f(theta) = 1/2 ||theta - a||^2: the minimiser of f + lam/2 ||theta - w||^2 is (a + lam w) / (1 + lam)
        theta, last = solve_personal(lambda t: (t - a, 0.5 * ((t - a) ** 2).sum()), torch.zeros(2), w, lam, lr=0.1, steps=200)
        torch.testing.assert_close(theta, (a + lam * w) / (1 + lam))
        # the loss reported is f at the point of the last gradient, one step before the end
        before = theta + 0.1 * ((theta - a) + lam * (theta - w)) / (1 - 0.1 * (1 + lam))
        torch.testing.assert_close(last, 0.5 * ((before - a) ** 2).sum(), rtol=1e-4, atol=1e-6)
        # one local step of the global copy moves it a fraction lr * lam toward theta_hat
        torch.testing.assert_close(toward_personal(w, theta, 0.1, lam), w - 0.3 * (w - theta))

    def test_beta_blends_old_and_averaged_global(self, registry):
        one, half = _sim(registry, "pfedme-moreau"), _sim(registry, "pfedme-moreau", **{"aggregator.beta": 0.5})
        w0 = _global(half)
        one.aggregator.fit_round(0), half.aggregator.fit_round(0)
        torch.testing.assert_close(_global(half)[0], 0.5 * w0[0] + 0.5 * _global(one)[0], rtol=1e-5, atol=1e-6)

    def test_clients_evaluate_their_personal_models(self, registry):
        sim = _sim(registry, "pfedme-moreau", **{"client.lam": 0.5})
        sim.aggregator.fit_round(0)
        c = sim.aggregator.clients[0]
        assert not torch.equal(c.personal[0], sim.aggregator.global_params[0])
        assert c.evaluate(sim.aggregator.global_params).test_loss == pytest.approx(
            Client_evaluate(c, c.personal).test_loss
        )


def Client_evaluate(client, params):  # noqa: N802 - the base class's evaluation, bypassing the override
    from fedbench import Client

    return Client.evaluate(client, params)


class TestQFFL:
    def test_q_zero_is_the_unweighted_average(self, registry):
        sim = _sim(registry, "qffl", **{"aggregator.q": 0.0})
        agg = sim.aggregator
        sent = [p.clone() for p in agg.global_params]
        lr = agg.train.learning_rate(0)
        ref = _sim(registry, "qffl", **{"aggregator.q": 0.0})
        locals_ = [c.step([p.clone() for p in sent], 0, lr).params[0] for c in ref.aggregator.clients]
        agg.fit_round(0)
        torch.testing.assert_close(agg.global_params[0], torch.stack(locals_).mean(dim=0), rtol=1e-5, atol=1e-6)

    def test_hand_computed_update(self):
        from fedbench_plugins.methods.qffl import qffl_step

        w = torch.tensor([1.0])
        local = [torch.tensor([0.5]), torch.tensor([2.0])]
        # L = 2, q = 1: dw = (1, -2); delta = (F1 * 1, F2 * -2) with F = (0.5, 2): (0.5, -4)
        # h = q * F^0 * dw^2 + L * F = (1 + 1, 4 + 4) = (2, 8); w - (0.5 - 4) / 10 = 1.35
        out = qffl_step(w, local, [0.5, 2.0], q=1.0, lipschitz=2.0)
        torch.testing.assert_close(out, torch.tensor([1.35]))

    def test_q_changes_the_solution(self, registry, tmp_path):
        store = ResultStore(tmp_path / "r.sqlite")
        runs = {
            q: execute_run(registry, resolve_run(registry, dataset="synthetic", method="qffl", seed=1,
                                                 overrides={**TINY, "rounds": 10, "aggregator.q": q}), store, progress=False)
            for q in (0.0, 5.0)
        }
        assert runs[0.0].status == runs[5.0].status == "done"
        assert runs[5.0].metrics["test_loss"] != runs[0.0].metrics["test_loss"]
