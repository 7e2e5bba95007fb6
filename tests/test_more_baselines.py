"""FedRep, FedBN, AFL, L2SGD and per-client BatchNorm statistics: limit cases and closed forms."""

from __future__ import annotations

import math

import pytest
import torch

from fedbench.runs.build import build_simulation, resolve_run
from fedbench.fl.learner import Learner, SGDConfig
from fedbench.runs.runner import execute_run
from fedbench.reporting.store import ResultStore
from fedbench.fl.tasks import MulticlassTask
from fedbench_plugins.methods.afl import project_simplex
from tests.conftest import TINY

BN = {"model": "mlp", "model.batch_norm": True, "model.hidden": 6}


def _sim(registry, method, **extra):
    cfg = resolve_run(registry, dataset="synthetic", method=method, seed=5, overrides={**TINY, **extra}, engine="sequential")
    return build_simulation(registry, cfg)


def _run(registry, tmp_path, method, **extra):
    cfg = resolve_run(registry, dataset="synthetic", method=method, seed=5, overrides={**TINY, **extra})
    out = execute_run(registry, cfg, ResultStore(tmp_path / "r.sqlite"), progress=False)
    assert out.status == "done", out.error
    return out.metrics


@pytest.mark.parametrize("method", ["fedrep", "fedbn", "afl", "l2sgd"])
def test_runs_end_to_end(registry, tmp_path, method):
    m = _run(registry, tmp_path, method, **(BN if method == "fedbn" else {}))
    assert 0 <= m["test_acc"] <= 100 and math.isfinite(m["train_loss"])


class TestFrozenTensors:
    def test_frozen_tensors_do_not_move_even_with_weight_decay(self):
        torch.manual_seed(0)
        learner = Learner(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)), MulticlassTask())
        before = [p.detach().clone() for p in learner.model.parameters()]
        x, y = torch.randn(10, 3), torch.randint(0, 2, (10,))
        sgd = SGDConfig(lr=0.5, momentum=0.9, weight_decay=0.1, batch_size=4, epochs=2)
        fit = learner.fit_epochs(x, y, None, sgd, torch.stack([torch.randperm(10), torch.randperm(10)]), trainable=[False, False, True, True])
        after = list(learner.model.parameters())
        assert torch.equal(after[0], before[0]) and torch.equal(after[1], before[1])
        assert not torch.equal(after[2], before[2]) and fit.momentum is None
        assert all(p.grad is None for p in after)


class TestBatchNormStatistics:
    def test_the_workspace_does_not_leak_statistics_between_clients(self, registry):
        sim = _sim(registry, "fedavg", **BN, batch_size=10_000, momentum=0.0)
        agg = sim.aggregator
        a, b = agg.clients[0], agg.clients[1]
        w = [p.clone() for p in agg.global_params]
        a.step(w, 0, 0.1)
        # one full batch: running_mean = 0.9 * 0 + 0.1 * batch mean of the pre-BN activations at the received weights
        lin = a.ensemble.learners[0].model[1]
        a.ensemble.set_params(w)
        expected_mean = 0.1 * lin(a.data.train_x).mean(0)
        n_hidden = expected_mean.numel()
        torch.testing.assert_close(a.buffers[0][:n_hidden], expected_mean.detach())
        score = a.evaluate(w)
        b.step(w, 0, 0.1)
        assert not torch.equal(a.buffers[0], b.buffers[0])
        assert a.evaluate(w) == score  # b's training did not touch a's statistics

    def test_fedavg_averages_statistics_and_fedbn_keeps_them(self, registry):
        sim = _sim(registry, "fedavg", **BN)
        w = [p.clone() for p in sim.aggregator.global_params]
        init = list(sim.aggregator.clients[0].buffers)
        updates = [c.step(w, 0, sim.config.train.learning_rate(0)) for c in sim.aggregator.clients]
        n = torch.tensor([u.weight for u in updates], dtype=torch.float32)
        expected = (torch.stack([u.buffers[0] for u in updates]) * (n / n.sum()).unsqueeze(1)).sum(0)
        fresh = _sim(registry, "fedavg", **BN)
        assert torch.equal(fresh.aggregator.clients[0].buffers[0], init[0])
        fresh.aggregator.fit_round(0)
        torch.testing.assert_close(fresh.aggregator.global_buffers[0], expected)
        fresh.aggregator.evaluate()
        assert all(torch.equal(c.buffers[0], fresh.aggregator.global_buffers[0]) for c in fresh.aggregator.clients)
        bn = _sim(registry, "fedbn", **BN)
        bn.aggregator.fit_round(0)
        bn.aggregator.evaluate()
        assert bn.aggregator.global_buffers is None
        assert not torch.equal(bn.aggregator.clients[0].buffers[0], bn.aggregator.clients[1].buffers[0])


class TestFedRep:
    def test_all_head_is_local(self, registry, tmp_path):
        e = TINY.get("local_epochs", 1)
        rep = _run(registry, tmp_path, "fedrep", **{"client.head_tensors": 2, "client.head_epochs": e, "momentum": 0.0})
        local = _run(registry, tmp_path, "local", momentum=0.0)
        for key in ("test_acc", "test_loss", "train_loss"):
            assert rep[key] == pytest.approx(local[key], rel=1e-6)

    def test_no_head_is_fedavg(self, registry):
        rep = _sim(registry, "fedrep", **{"client.head_tensors": 0, "client.head_epochs": 0, "momentum": 0.0})
        avg = _sim(registry, "fedavg", momentum=0.0)
        for r in range(3):
            rep.aggregator.fit_round(r), avg.aggregator.fit_round(r)
        torch.testing.assert_close(rep.aggregator.global_params[0], avg.aggregator.global_params[0], rtol=0, atol=0)

    def test_only_the_body_travels(self, registry):
        sim = _sim(registry, "fedrep", **{"client.head_tensors": 1})  # the linear model's 10 weights travel, its bias not
        assert sim.aggregator.fit_round(0).bytes_sent == 8 * 2 * 10 * 4
        whole = _sim(registry, "fedrep", **{"client.head_tensors": 2})
        assert whole.aggregator.fit_round(0).bytes_sent == 0  # everything personal: nothing to send

    def test_heads_stay_personal_and_the_body_is_shared(self, registry):
        sim = _sim(registry, "fedrep", **{"client.head_tensors": 1, "momentum": 0.0})  # head: the bias
        agg = sim.aggregator
        for r in range(2):
            agg.fit_round(r)
        g = agg.global_params[0]
        merged = [c.merge(agg.global_params)[0] for c in agg.clients[:2]]
        assert torch.equal(merged[0][:-1], g[:-1]) and torch.equal(merged[1][:-1], g[:-1])  # shared weights
        assert not torch.equal(merged[0][-1:], merged[1][-1:])  # personal biases


class TestFedBN:
    def test_without_batchnorm_it_is_fedavg(self, registry):
        bn, avg = _sim(registry, "fedbn"), _sim(registry, "fedavg")
        for r in range(3):
            bn.aggregator.fit_round(r), avg.aggregator.fit_round(r)
        assert torch.equal(bn.aggregator.global_params[0], avg.aggregator.global_params[0])

    def test_batchnorm_affine_parameters_stay_local(self, registry):
        sim = _sim(registry, "fedbn", **BN)
        agg = sim.aggregator
        for r in range(2):
            agg.fit_round(r)
        c0, c1 = agg.clients[0], agg.clients[1]
        mask = c0.personal_mask
        assert int(mask.sum()) == 2 * 6  # BatchNorm1d(6): weight and bias
        m0, m1 = c0.merge(agg.global_params)[0], c1.merge(agg.global_params)[0]
        g = agg.global_params[0]
        assert torch.equal(m0[~mask], g[~mask]) and torch.equal(m1[~mask], g[~mask])
        assert not torch.equal(m0[mask], m1[mask])
        n = mask.numel()
        assert agg.fit_round(2).bytes_sent == 8 * 2 * (n - 12) * 4  # the BatchNorm entries stay home


class TestAFL:
    def test_simplex_projection_closed_forms(self):
        torch.testing.assert_close(project_simplex(torch.tensor([0.5, 0.5, 0.5])), torch.full((3,), 1 / 3))
        torch.testing.assert_close(project_simplex(torch.tensor([0.6, 0.6, -0.2])), torch.tensor([0.5, 0.5, 0.0]))
        torch.testing.assert_close(project_simplex(torch.tensor([1.3, 0.0, 0.0])), torch.tensor([1.0, 0.0, 0.0]))
        p = project_simplex(torch.randn(20, generator=torch.Generator().manual_seed(0)))
        assert float(p.min()) >= 0 and float(p.sum()) == pytest.approx(1.0)

    def test_lr_lambda_zero_is_fedavg(self, registry):
        afl = _sim(registry, "afl", **{"aggregator.lr_lambda": 0.0, "aggregator.variant": "local"})
        avg = _sim(registry, "fedavg")
        for r in range(3):
            afl.aggregator.fit_round(r), avg.aggregator.fit_round(r)
        torch.testing.assert_close(afl.aggregator.global_params[0], avg.aggregator.global_params[0], rtol=1e-6, atol=1e-7)

    def test_lambda_ascends_on_client_losses(self, registry):
        sim = _sim(registry, "afl", **{"aggregator.lr_lambda": 0.05, "aggregator.variant": "local"})
        agg = sim.aggregator
        lam0 = agg.lambdas.clone()
        w = [p.clone() for p in agg.global_params]
        losses = []
        for c in agg.clients:
            c.load(w)
            losses.append(float(c.ensemble.per_sample_losses(c.data.train_x, c.data.train_y)[0].mean()))
        agg.fit_round(0)
        expected = project_simplex(lam0 + 0.05 * torch.tensor(losses, dtype=torch.float64))
        torch.testing.assert_close(agg.lambdas, expected)


    def test_authors_variant_is_one_lambda_weighted_gradient_step(self, registry):
        """The authors' AFL: one minibatch gradient per client at w, one server SGD step, lambda ascends on
        those one-batch losses (hand-computed from the same batches)."""
        from fedbench.fl.seeding import STREAM_TRAIN, generator

        sim = _sim(registry, "afl", **{"aggregator.lr_lambda": 0.05})
        agg = sim.aggregator
        assert agg.variant == "authors"
        w, lam0, train = agg.global_params[0].clone(), agg.lambdas.clone(), agg.train
        grads, losses = [], []
        for c in agg.clients:
            pick = torch.randperm(c.n_train, generator=generator(agg.seed, STREAM_TRAIN, 0, c.client_id))[: train.batch_size]
            loss, g = c.ensemble.learners[0].loss_and_grad(w, c.data.train_x[pick], c.data.train_y[pick])
            grads.append(g)
            losses.append(loss)
        lam = lam0 / lam0.sum()
        g = sum(float(l) * gi for l, gi in zip(lam, grads))
        expected = w - train.learning_rate(0) * (g + train.weight_decay * w)
        agg.fit_round(0)
        torch.testing.assert_close(agg.global_params[0], expected, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(agg.lambdas, project_simplex(lam0 + 0.05 * torch.tensor(losses, dtype=torch.float64)))


class TestL2SGD:
    def test_never_communicating_is_local(self, registry, tmp_path):
        l2 = _run(registry, tmp_path, "l2sgd", **{"aggregator.communication_probability": 0.0})
        local = _run(registry, tmp_path, "local")
        for key in ("test_acc", "test_loss", "train_loss"):
            assert l2[key] == pytest.approx(local[key], rel=1e-6)
        assert l2["bytes_sent"] == 0

    def test_communication_round_mixes_toward_the_average(self, registry):
        sim = _sim(registry, "l2sgd", **{"aggregator.communication_probability": 1.0, "aggregator.penalty": 0.25})
        agg = sim.aggregator
        for c in agg.clients:  # make the personal models differ
            agg.personal[c.client_id] = [torch.full_like(agg.personal[c.client_id][0], float(c.client_id))]
        n = torch.tensor([float(c.n_train) for c in agg.clients])
        avg = float((n * torch.arange(len(n), dtype=torch.float32)).sum() / n.sum())
        stats = agg.fit_round(0)
        for c in agg.clients:
            torch.testing.assert_close(agg.personal[c.client_id][0], torch.full_like(agg.personal[c.client_id][0], 0.75 * c.client_id + 0.25 * avg))
        assert stats.bytes_sent == 2 * 8 * 11 * 4  # every model up, the average down


class TestAFLPairing:
    """The authors' code adds the losses in sampled order (a fresh permutation each round) to the weights in
    client order (aggregator.py:266, :659); lambda_pairing = authors reproduces it, own (default) does not."""

    def _round(self, registry, pairing):
        from fedbench.fl.seeding import STREAM_SAMPLE, STREAM_TRAIN, generator

        sim = _sim(registry, "afl", **{"aggregator.lr_lambda": 0.05, "aggregator.lambda_pairing": pairing})
        agg = sim.aggregator
        w, lam0 = agg.global_params[0].clone(), agg.lambdas.clone()
        losses = []
        for c in agg.clients:  # each client's one-batch loss at w, as the round computes it
            pick = torch.randperm(c.n_train, generator=generator(agg.seed, STREAM_TRAIN, 0, c.client_id))[: agg.train.batch_size]
            losses.append(float(c.ensemble.learners[0].loss_and_grad(w, c.data.train_x[pick], c.data.train_y[pick])[0]))
        agg.fit_round(0)
        perm = torch.randperm(len(losses), generator=generator(agg.seed, STREAM_SAMPLE, 0, len(agg.clients)))
        return agg.lambdas, lam0, torch.tensor(losses, dtype=torch.float64), perm

    def test_own_pairs_each_loss_with_its_client(self, registry):
        lam, lam0, losses, _ = self._round(registry, "own")
        torch.testing.assert_close(lam, project_simplex(lam0 + 0.05 * losses))

    def test_authors_pairing_gives_client_j_the_loss_drawn_jth(self, registry):
        lam, lam0, losses, perm = self._round(registry, "authors")
        assert not torch.equal(perm, torch.arange(len(perm)))
        torch.testing.assert_close(lam, project_simplex(lam0 + 0.05 * losses[perm]))
        assert not torch.allclose(lam, project_simplex(lam0 + 0.05 * losses))

    def test_authors_pairing_needs_every_client(self, registry):
        with pytest.raises(Exception, match="lambda_pairing = authors needs participation = 1"):
            _sim(registry, "afl", **{"aggregator.lambda_pairing": "authors", "participation": 0.5})
