"""Protocol details the paper suite relies on (issue 10): each with the test that would have caught it."""

from __future__ import annotations

import pytest
import torch

from fedbench.fl.config import TrainConfig
from fedbench.fl.learner import Learner, SGDConfig, epoch_orders
from fedbench.fl.tasks import make_task


class TestShortRunSchedule:
    @pytest.mark.parametrize("rounds, expected", [
        (1, [1.0]),
        (2, [1.0, 0.1]),
        (3, [1.0, 0.1, 0.1]),
        (4, [1.0, 1.0, 0.1, 0.01]),
        (8, [1.0, 1.0, 1.0, 1.0, 0.1, 0.1, 0.01, 0.01]),
    ])
    def test_multistep_never_divides_in_round_zero(self, rounds, expected):
        train = TrainConfig(rounds=rounds, lr=1.0)
        assert [train.learning_rate(r) for r in range(rounds)] == pytest.approx(expected)

    def test_paper_length_runs_keep_the_authors_milestones(self):
        train = TrainConfig(rounds=200, lr=0.1)
        assert train.learning_rate(99) == pytest.approx(0.1)
        assert train.learning_rate(100) == pytest.approx(0.01) and train.learning_rate(149) == pytest.approx(0.01)
        assert train.learning_rate(150) == pytest.approx(0.001)


class TestBatchNormLoneSample:
    def _learner(self):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        return Learner(model, make_task("multiclass"))

    def test_a_257_sample_client_trains_a_batchnorm_model_with_batch_128(self):
        gen = torch.Generator().manual_seed(1)
        x, y = torch.randn(257, 4, generator=gen), torch.randint(0, 3, (257,), generator=gen)
        learner = self._learner()
        before = learner.get_params().clone() if hasattr(learner, "get_params") else None
        orders = epoch_orders(gen, 2, 257)
        result = learner.fit_epochs(x, y, None, SGDConfig(lr=0.1, batch_size=128), orders)  # raised ValueError before
        assert torch.isfinite(torch.tensor(result.loss))
        if before is not None:
            assert not torch.equal(before, learner.get_params())

    def test_the_lone_sample_is_what_is_left_out(self):
        """Training on 257 samples equals training on the first 256 of each order: the 257th is dropped."""
        gen = torch.Generator().manual_seed(2)
        x, y = torch.randn(257, 4, generator=gen), torch.randint(0, 3, (257,), generator=gen)
        orders = epoch_orders(gen, 1, 257)
        a, b = self._learner(), self._learner()
        ra = a.fit_epochs(x, y, None, SGDConfig(lr=0.1, batch_size=128), orders)
        kept = orders[:, :256]
        rb = b.fit_epochs(x, y, None, SGDConfig(lr=0.1, batch_size=128), kept)
        assert ra.loss == rb.loss
        for p, q in zip(a.model.parameters(), b.model.parameters()):
            assert torch.equal(p, q)


def _sim(registry, method, **extra):
    from fedbench.runs.build import build_simulation, resolve_run
    from tests.conftest import TINY

    cfg = resolve_run(registry, dataset="synthetic", method=method, seed=3, overrides={**TINY, **extra})
    return build_simulation(registry, cfg)


class TestFedAvgPlus:
    def test_tunes_at_the_initial_lr_by_default_and_at_the_current_one_on_request(self, registry):
        for tune_at, expected in (("initial", 1.0), ("current", 0.01)):
            sim = _sim(registry, "fedavg+", lr=1.0, **{"client.tune_at": tune_at})
            for r in range(4):
                sim.aggregator.fit_round(r)
            sim.aggregator.evaluate()
            assert [c.last_tune_lr for c in sim.aggregator.clients] == pytest.approx([expected] * len(sim.aggregator.clients))

    def test_the_tuned_copy_is_scored_with_the_statistics_the_tuning_left(self, registry):
        from fedbench.fl.seeding import generator
        from fedbench_plugins.methods.fedavg_plus import STREAM_TUNE

        sim = _sim(registry, "fedavg+", model="mlp", **{"model.batch_norm": True, "model.hidden": 8, "client.tune_epochs": 2})
        for r in range(2):
            sim.aggregator.fit_round(r)
        client = sim.aggregator.clients[0]
        params = sim.aggregator.global_params
        client.buffers = sim.aggregator.global_buffers
        kept = [b.clone() for b in client.buffers]
        got = client.evaluate(params)
        # by hand: the same tuning from the same start, then score with (a) the tuned and (b) the old statistics
        client.load(params)
        sgd = client.sgd_config(client.train.lr).__class__(**{**client.sgd_config(client.train.lr).__dict__, "epochs": 2})
        client.ensemble.fit_epochs(client.data.train_x, client.data.train_y, client.samples_weights, sgd,
                                   generator(client.seed, STREAM_TUNE, 0, client.client_id))
        tuned_stats = client.score()
        client.ensemble.set_buffers(kept)
        old_stats = client.score()
        assert got == tuned_stats and got != old_stats
        assert all(torch.equal(a, b) for a, b in zip(client.buffers, kept))  # the tuned copy never becomes the client's

    def test_the_tuning_momentum_carries_over_between_evaluations(self, registry):
        results = {}
        for mode in ("carried", "fresh"):
            sim = _sim(registry, "fedavg+", **{"client.tune_momentum": mode})
            sim.aggregator.fit_round(0)
            first = sim.aggregator.evaluate()
            second = sim.aggregator.evaluate()
            results[mode] = (first, second)
        assert results["carried"][0] == results["fresh"][0]  # nothing to carry at the first evaluation
        assert results["carried"][1] != results["fresh"][1]


class TestPartialParticipation:
    def test_unsampled_clients_hold_the_old_model_by_default(self, registry):
        for unsampled in ("hold", "drop"):
            sim = _sim(registry, "fedavg", participation=0.5, **{"aggregator.unsampled": unsampled})
            agg = sim.aggregator
            old = agg.global_params[0].clone()
            clients = [agg.clients[i] for i in (0, 3, 5)]
            updates = [c.step(agg.global_params, 0, agg.train.lr) for c in clients]
            agg.aggregate_fit(0, updates)
            n_all = sum(c.n_train for c in agg.clients)
            if unsampled == "hold":
                expected = old + sum(c.n_train / n_all * (u.params[0] - old) for c, u in zip(clients, updates))
            else:
                expected = sum(c.n_train * u.params[0] for c, u in zip(clients, updates)) / sum(c.n_train for c in clients)
            torch.testing.assert_close(agg.global_params[0], expected, rtol=1e-6, atol=1e-7)

    def test_full_participation_is_the_plain_average_bit_for_bit(self, registry):
        a = _sim(registry, "fedavg", **{"aggregator.unsampled": "hold"})
        b = _sim(registry, "fedavg", **{"aggregator.unsampled": "drop"})
        for r in range(3):
            a.aggregator.fit_round(r)
            b.aggregator.fit_round(r)
        assert torch.equal(a.aggregator.global_params[0], b.aggregator.global_params[0])


class TestPFedMe:
    def test_the_personal_step_uses_the_rounds_learning_rate(self, registry):
        sim = _sim(registry, "pfedme-moreau", lr=0.3, batch_size=10_000, **{"client.k_steps": 1})
        client = sim.aggregator.clients[0]
        w = sim.aggregator.global_params[0].clone()
        _, grad = client.ensemble.learners[0].loss_and_grad(w, client.data.train_x, client.data.train_y)
        client.step([w], 0, 0.3)
        expected = w - 0.3 * (grad + client.lam * (w - w))  # one step from theta = w at the suite's lr
        torch.testing.assert_close(client.personal[0], expected, rtol=1e-5, atol=1e-6)


class TestClusteredCriterion:
    def test_max_update_norm_closed_forms(self):
        from fedbench_plugins.methods.clustered import max_update_norm

        # two clients, two learners, three coordinates
        delta = torch.tensor([[[3.0, 0.0, 1.0], [4.0, 0.0, 0.0]],
                              [[0.0, 2.0, 0.0], [0.0, 0.0, 2.0]]])
        # l2: client norms sqrt(9 + 1 + 16) and sqrt(4 + 4)
        assert max_update_norm(delta, "l2") == pytest.approx(26 ** 0.5)
        # authors: norm across learners per coordinate: client 0 -> (5, 0, 1), client 1 -> (0, 2, 2); max 5
        assert max_update_norm(delta, "authors") == pytest.approx(5.0)
        one = torch.tensor([[[0.5, -1.2, 0.1]], [[0.3, 0.2, 0.9]]])  # one learner: the largest |coordinate|
        assert max_update_norm(one, "authors") == pytest.approx(1.2)

    def test_splits_from_the_first_round_by_default(self, registry):
        sim = _sim(registry, "clustered")
        assert sim.aggregator.warmup == 0 and sim.aggregator.max_norm == "authors"


class TestPretrainedWeights:
    def test_a_paper_cifar_run_without_weights_is_announced_and_marked_from_scratch(self, registry, tmp_path):
        import pandas as pd

        from fedbench.api import init_notes
        from fedbench.reporting.report import comparison_table
        from fedbench.runs.suite import load_suite

        suite = load_suite(registry, "paper", seeds=[1])
        cifar = [c for c in suite.runs if c.dataset == "cifar10"]
        notes = init_notes(registry, cifar)
        assert len(notes) == 1 and list(notes.values()) == [len(cifar)]
        assert "from scratch" in next(iter(notes)) and "model.weights_path" in next(iter(notes))
        weights = tmp_path / "w.pth"
        import dataclasses

        with_weights = [dataclasses.replace(c, model_params=tuple((k, str(weights) if k == "weights_path" else v)
                                                                   for k, v in c.model_params)) for c in cifar]
        assert init_notes(registry, with_weights) == {}
        assert init_notes(registry, [c for c in suite.runs if c.dataset == "emnist"]) == {}  # no note for other models
        runs = pd.DataFrame({"dataset": ["cifar10"] * 2, "method": ["fedavg"] * 2, "seed": [1, 2], "status": ["done"] * 2,
                             "test_acc": [50.0, 52.0], "init": ["from scratch", "from scratch"]})
        assert comparison_table(runs).loc["cifar10", "fedavg"] == "51.00 ± 1.41 (n=2) [from scratch]"


class TestEmnistNormalisation:
    def test_emnist_and_femnist_pixels_get_the_authors_normalisation_by_default(self, registry, tmp_path):
        from fedbench_plugins.datasets.leaf import load_femnist
        from tests.test_leaf import make_leaf

        make_leaf(tmp_path)
        raw = load_femnist(tmp_path, fraction=1.0, normalize=False)
        norm = load_femnist(tmp_path, fraction=1.0)
        torch.testing.assert_close(norm.train_x, (raw.train_x - 0.1307) / 0.3081)
        assert dict(registry.get("dataset", "emnist").params)["normalize"] is True
        import numpy as np

        from fedbench_plugins.datasets.idx import EMNIST_FILES, load_idx
        from tests.test_idx import write_idx

        folder = tmp_path / "EMNIST" / "raw"
        folder.mkdir(parents=True)
        rng = np.random.default_rng(0)
        images, labels = rng.integers(0, 256, size=(124, 28, 28)), np.arange(124) % 62
        for name, arr in zip(EMNIST_FILES, (images[:62], labels[:62], images[62:], labels[62:])):
            write_idx(folder / name, arr, False)
        opts = {"n_clients": 2, "partitioner": "iid"}
        plain, scaled = load_idx("emnist", tmp_path, dict(opts)), load_idx("emnist", tmp_path, {**opts, "normalize": True})
        assert torch.equal(scaled.train_x, plain.train_x) and scaled.train_x.dtype == torch.uint8  # the same codes
        torch.testing.assert_close(scaled.decode(scaled.train_x), (plain.decode(plain.train_x) - 0.1307) / 0.3081)
        assert "normalize" not in registry.get("dataset", "fashion-mnist").params  # only the authors' (F)EMNIST


class TestRoundZeroEvaluation:
    """The authors' aggregator evaluates when it is built (round 0), before any training."""

    def test_round_zero_scores_the_untrained_models_and_the_rest_is_unchanged(self, registry):
        from fedbench.runs.build import build_simulation, resolve_run
        from fedbench.fl.config import config_id_of
        from fedbench.fl.metrics import summarise
        from fedbench.runs.runner import train
        from tests.conftest import TINY

        runs = {}
        for start in (True, False):
            cfg = resolve_run(registry, dataset="synthetic", method="fedavg", seed=3,
                              overrides={**TINY, "eval_at_start": start})
            runs[start] = (cfg, dict(train(build_simulation(registry, cfg), cfg)))
        (cfg, with0), (cfg_off, without0) = runs[True], runs[False]
        assert list(with0) == [0, *without0]
        untrained = summarise(build_simulation(registry, cfg).aggregator.evaluate())
        assert with0[0]["test_acc"] == untrained["test_acc"] and with0[0]["bytes_sent"] == 0.0
        # FedAvg's evaluation changes no state: the trained rounds are the same numbers
        assert {r: m for r, m in with0.items() if r} == without0
        # a run without the round-0 evaluation keeps the id it had before the setting existed
        old = cfg_off.to_dict()
        del old["train"]["eval_at_start"]
        assert cfg_off.config_id == config_id_of(old) and cfg.config_id != cfg_off.config_id

    def test_fedavg_plus_tunes_at_round_zero_as_the_authors_do(self, registry):
        from fedbench.runs.build import build_simulation, resolve_run
        from fedbench.runs.runner import train
        from tests.conftest import TINY

        finals = {}
        for start in (True, False):
            cfg = resolve_run(registry, dataset="synthetic", method="fedavg+", seed=3,
                              overrides={**TINY, "eval_at_start": start})
            finals[start] = list(train(build_simulation(registry, cfg), cfg))[-1][1]
        # the round-0 tuning's carried momentum reaches the last evaluation
        assert finals[True]["test_acc"] != finals[False]["test_acc"] or finals[True]["test_loss"] != finals[False]["test_loss"]


def test_a_client_of_one_sample_takes_no_step_with_batchnorm():
    """Such a client made MobileNetV2 fail ("Expected more than 1 value per channel when training") on a
    CIFAR-10 split with a one-sample client; it now keeps the parameters it received."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    learner = Learner(model, make_task("multiclass"))
    before = [p.detach().clone() for p in model.parameters()]
    result = learner.fit_epochs(torch.randn(1, 4), torch.tensor([2]), None, SGDConfig(lr=0.1, batch_size=128),
                                torch.zeros(2, 1, dtype=torch.long))
    assert result.loss == 0.0
    for p, q in zip(before, model.parameters()):
        assert torch.equal(p, q)
