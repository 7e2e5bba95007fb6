"""A local term that sees the batch (``Client.sample_term``) and a model's declared representation: the
arithmetic against a hand-written objective, both backends against each other, the per-client check, the
before-any-run refusal, and docs/plugins.md's MOON module installed through an entry point."""

from __future__ import annotations

import math
import re
import sqlite3

import pytest
import torch
from torch.nn import functional as F

from tests.conftest import run_cli
from fedbench.runs.build import build_simulation, check_model_fits, resolve_run
from fedbench.fl.client import FitPhase
from fedbench.errors import ConfigError
from fedbench.fl.learner import Batch, Learner, SGDConfig, representation_module, representer
from fedbench.fl.tasks import make_task
from fedbench.testing import TINY, check_method
from tests.test_registry import _doc_block, installed_registry, make_dist

MOON = _doc_block("# moon_plugin.py")


@pytest.fixture
def moon_registry(tmp_path, monkeypatch):
    return installed_registry(tmp_path, monkeypatch, "moon_plugin", MOON, method="moon")


def _mlp(hidden: int = 4, batch_norm: bool = False):
    from plugins.models.networks import mlp

    torch.manual_seed(0)
    return mlp((3,), 2, hidden=hidden, batch_norm=batch_norm)


class TestArithmetic:
    def test_one_step_is_sgd_on_the_hand_written_objective(self):
        """One batch of 5, a term s/2 ||h_i||^2 on the hidden layer h: the new parameters are theta - lr * the
        gradient of mean_i (CE_i + s/2 ||relu(W1 x_i + b1)||^2), written out here without fedbench."""
        model = _mlp()
        learner = Learner(model, make_task("multiclass"))
        gen = torch.Generator().manual_seed(1)
        x, y = torch.randn(5, 3, generator=gen), torch.tensor([0, 1, 1, 0, 1])
        s, lr = 0.7, 0.1
        w1, b1, w2, b2 = (p.detach().clone().requires_grad_(True) for p in model.parameters())
        h = torch.relu(x @ w1.T + b1)
        objective = (F.cross_entropy(h @ w2.T + b2, y, reduction="none") + s / 2 * h.pow(2).sum(1)).mean()
        objective.backward()
        want = torch.cat([(p - lr * p.grad).reshape(-1) for p in (w1, b1, w2, b2)]).detach()

        seen = []

        def term(theta, batch):
            seen.append(batch)
            return s / 2 * batch.features.pow(2).sum(1)

        fit = learner.fit_epochs(x, y, None, SGDConfig(lr=lr, batch_size=5), torch.arange(5).unsqueeze(0), sample_term=term)
        torch.testing.assert_close(learner.get_params(), want, rtol=0, atol=1e-6)
        assert math.isclose(fit.loss, float(objective.detach()), rel_tol=1e-6)
        # the batch it saw: the inputs, labels, and the hidden layer (the mlp's declared representation)
        assert torch.equal(seen[0].x, x) and torch.equal(seen[0].y, y) and seen[0].features.shape == (5, 4)

    def test_represent_is_the_hidden_layer_at_other_parameters_without_gradient(self):
        model = _mlp()
        learner = Learner(model, make_task("multiclass"))
        x = torch.randn(6, 3)
        point = learner.get_params() + 0.5
        w1 = point[:12].view(4, 3)
        b1 = point[12:16]
        got = representer(learner.call, representation_module(model), x)(point.requires_grad_(True))
        torch.testing.assert_close(got, torch.relu(x @ w1.T + b1))
        assert not got.requires_grad

    def test_a_representation_that_names_no_submodule_is_refused_naming_the_submodules(self):
        model = _mlp()
        model.representation = "hidden"
        with pytest.raises(ValueError, match=r"representation = 'hidden', which is not one of its submodules \(0, 1, 2, 3\)"):
            representation_module(model)
        assert representation_module(torch.nn.Linear(2, 2)) is None

    def test_a_phase_with_its_own_step_takes_no_sample_term(self):
        with pytest.raises(ValueError, match="sample_term=None"):
            FitPhase(term=None, step="own", sample_term="sample_term")


class TestMoon:
    def test_the_term_is_the_papers_contrastive_loss(self, moon_registry):
        """mu * -log(e^{sim(z, z_glob)/tau} / (e^{sim(z, z_glob)/tau} + e^{sim(z, z_prev)/tau})), per sample."""
        cls = moon_registry.get("client", "moon").cls
        client = cls.__new__(cls)
        client.mu, client.tau = 2.0, 0.5
        z = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
        glob, prev = torch.tensor([[1.0, 1.0], [0.0, 1.0]]), torch.tensor([[1.0, 0.0], [3.0, 0.0]])
        at = {1: glob, 2: prev}
        batch = Batch(torch.zeros(2, 1), torch.zeros(2), z, lambda point: at[int(point[0])])
        got = client.sample_term(None, {"received": torch.tensor([1.0]), "previous": torch.tensor([2.0])}, batch)
        cos_g, cos_p = [1 / math.sqrt(2), 1.0], [1.0, 0.0]
        want = [2.0 * -math.log(math.exp(g / 0.5) / (math.exp(g / 0.5) + math.exp(p / 0.5))) for g, p in zip(cos_g, cos_p)]
        torch.testing.assert_close(got, torch.tensor(want))

    def test_it_passes_the_conformance_check_on_both_backends(self, moon_registry):
        report = check_method("moon", settings={"model": "mlp", "batch_size": 7, "client.mu": 5.0},
                              registry=moon_registry)
        assert not report.declined and not report.skipped, report
        assert "both backends" in report.passed

    @pytest.mark.parametrize("engine", ["sequential", "vectorized"])
    def test_mu_zero_is_fedavg_and_mu_five_is_not(self, moon_registry, engine):
        def trained(method, **over):
            cfg = resolve_run(moon_registry, dataset="synthetic", method=method, seed=3, engine=engine,
                              overrides={**TINY, "model": "mlp", "rounds": 3, "batch_size": 7, **over})
            sim = build_simulation(moon_registry, cfg)
            for r in range(3):
                sim.aggregator.fit_round(r)
            return torch.cat(sim.aggregator.global_params)

        fedavg, zero, five = trained("fedavg"), trained("moon", **{"client.mu": 0.0}), trained("moon", **{"client.mu": 5.0})
        torch.testing.assert_close(zero, fedavg, rtol=0, atol=0 if engine == "sequential" else 1e-6)
        assert float((five - fedavg).abs().max()) > 0.05

    def test_a_per_client_mu_trains_one_client_at_a_time_with_the_sequential_numbers(self, moon_registry):
        def trained(engine):
            cfg = resolve_run(moon_registry, dataset="synthetic", method="moon", seed=3, engine=engine,
                              overrides={**TINY, "model": "mlp", "rounds": 2, "batch_size": 7})
            sim = build_simulation(moon_registry, cfg)
            for c in sim.aggregator.clients:
                c.mu = 5.0 * (c.client_id % 2)
            for r in range(2):
                sim.aggregator.fit_round(r)
            return torch.cat(sim.aggregator.global_params), sim.aggregator.engine

        seq, _ = trained("sequential")
        vec, engine = trained("vectorized")
        torch.testing.assert_close(vec, seq, rtol=0, atol=0)
        assert re.search(r"per-sample term \(\w+\.sample_term\)", engine.note()) and "reads a per-client value" in engine.note()

    def test_a_model_without_a_representation_is_refused_before_any_run(self, tmp_path):
        make_dist(tmp_path, "moon_plugin", MOON)
        db = tmp_path / "r.sqlite"
        proc = run_cli("run", "--dataset", "synthetic", "--method", "moon", "--results", str(db),
                       "--no-progress", env={"PYTHONPATH": str(tmp_path)})
        assert proc.returncode == 2, proc.stderr
        assert "method 'moon' compares the model's representations, but model 'linear' declares none" in proc.stderr
        assert not db.exists() or not sqlite3.connect(db).execute("SELECT count(*) FROM runs").fetchone()[0]

    def test_a_model_with_batch_norm_is_refused_before_any_run(self, moon_registry):
        cfg = resolve_run(moon_registry, dataset="synthetic", method="moon", seed=1,
                          overrides={**TINY, "model": "mlp", "model.batch_norm": True})
        with pytest.raises(ConfigError, match="BatchNorm"):
            check_model_fits(moon_registry, cfg)
