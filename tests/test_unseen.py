"""Unseen clients (the paper's Table 3): held out of training, scored after adapting to the trained models."""

from __future__ import annotations

import pytest
import torch

from fedbench.runs.build import build_simulation, load_data, resolve_run, unseen_split
from fedbench.errors import ConfigError
from fedbench.runs.runner import execute_run
from fedbench.reporting.store import ResultStore
from fedbench_plugins.methods.fedem import fit_mixture_weights
from tests.conftest import TINY
from tests.test_engine import _registry_with


def test_split_is_fixed_across_seeds_and_covers_every_client():
    train, unseen = unseen_split(50, 0.2)
    assert len(unseen) == 10 and sorted(train + unseen) == list(range(50))
    assert unseen_split(50, 0.2) == (train, unseen)
    assert unseen_split(50, 0.0) == (list(range(50)), [])
    assert len(unseen_split(3, 0.9)[0]) == 1  # at least one client trains
    with pytest.raises(ConfigError, match="unseen_fraction"):
        unseen_split(1, 0.5)


def test_mixture_weights_have_the_closed_form_mle():
    # components with disjoint support: samples 0-2 only explained by component 0, sample 3 by component 1
    big = 50.0
    losses = torch.tensor([[0.1, 0.3, 0.2, big], [big, big, big, 0.4]], dtype=torch.float64)
    torch.testing.assert_close(fit_mixture_weights(losses), torch.tensor([0.75, 0.25], dtype=torch.float64))
    # overlapping components: the fixed point satisfies sum_i p_mi / L_i = n for every m with pi_m > 0
    p = torch.tensor([[0.9, 0.5, 0.2, 0.6, 0.3], [0.2, 0.4, 0.7, 0.1, 0.5]], dtype=torch.float64)
    pi = fit_mixture_weights(-p.log(), steps=2000)
    torch.testing.assert_close((p / (pi @ p)).sum(1), torch.full((2,), 5.0, dtype=torch.float64))


def _registry_on(data, name="heldout"):
    return _registry_with(name, lambda data_root=None, seed=0: data, "linear")


def test_unseen_clients_never_train(registry):
    over = {**TINY, "unseen_fraction": 0.25, "rounds": 3}
    cfg = resolve_run(registry, dataset="synthetic", method="fedavg", seed=1, overrides=over)
    sim = build_simulation(registry, cfg)
    assert len(sim.unseen) == 2 and len(sim.aggregator.clients) == 6
    for r in range(3):
        sim.aggregator.fit_round(r)
    # the same training on a federation of only the training clients gives the same global model
    full = load_data(registry, resolve_run(registry, dataset="synthetic", method="fedavg", seed=1, overrides=TINY))
    train_ids, _ = unseen_split(full.n_clients, 0.25)
    reg = _registry_on(full.select(train_ids))
    cfg2 = resolve_run(reg, dataset="heldout", method="fedavg", seed=1, overrides={"rounds": 3, "eval_every": 2, "model": "linear"})
    sim2 = build_simulation(reg, cfg2)
    for r in range(3):
        sim2.aggregator.fit_round(r)
    torch.testing.assert_close(sim.aggregator.global_params[0], sim2.aggregator.global_params[0])


@pytest.mark.parametrize("method, served", [("fedem", True), ("fedavg", True), ("fedavg+", True), ("local", False), ("ditto", False)])
def test_unseen_metrics_are_stored_for_methods_that_serve_new_clients(registry, tmp_path, method, served):
    cfg = resolve_run(registry, dataset="synthetic", method=method, seed=1, overrides={**TINY, "unseen_fraction": 0.25})
    out = execute_run(registry, cfg, ResultStore(tmp_path / "r.sqlite"), progress=False)
    assert out.status == "done", out.error
    assert ("unseen_test_acc" in out.metrics) == served
    if served:
        assert 0 <= out.metrics["unseen_test_acc"] <= 100 and "unseen clients test_acc" in out.summary()


def test_fedem_unseen_clients_fit_only_their_mixture_weights(registry):
    cfg = resolve_run(registry, dataset="synthetic", method="fedem", seed=1,
                      overrides={**TINY, "unseen_fraction": 0.25, "client.adapt_steps": 100, "client.adapt_from": "uniform"})
    sim = build_simulation(registry, cfg)
    for r in range(4):
        sim.aggregator.fit_round(r)
    before = [p.clone() for p in sim.aggregator.global_params]
    results = sim.aggregator.evaluate_new(sim.unseen)
    assert results is not None and len(results) == 2
    assert all(torch.equal(a, b) for a, b in zip(before, sim.aggregator.global_params))
    for c in sim.unseen:
        sim.aggregator.clients[0].ensemble.set_params(before)
        losses = c.ensemble.per_sample_losses(c.data.train_x, c.data.train_y)
        torch.testing.assert_close(c.learners_weights, fit_mixture_weights(losses))
        assert not torch.allclose(c.learners_weights, torch.full((3,), 1 / 3))


def test_fedem_unseen_clients_take_one_warm_started_em_step_per_evaluation_by_default(registry):
    """The authors' protocol: pi after k evaluations = k EM steps, each from the previous evaluation's pi."""
    from fedbench_plugins.methods.fedem import e_step, m_step

    cfg = resolve_run(registry, dataset="synthetic", method="fedem", seed=1, overrides={**TINY, "unseen_fraction": 0.25})
    sim = build_simulation(registry, cfg)
    for r in range(2):
        sim.aggregator.fit_round(r)
    c = sim.unseen[0]
    pi = torch.full((3,), 1 / 3)
    for _ in range(3):  # three evaluations with the same learners: three chained EM steps
        sim.aggregator.evaluate_new(sim.unseen)
        c.load(sim.aggregator.global_params)
        pi = m_step(e_step(torch.log(pi), c.ensemble.per_sample_losses(c.data.train_x, c.data.train_y)))
        torch.testing.assert_close(c.learners_weights, pi)


def test_suite_report_shows_unseen_accuracy_and_na_for_local(tmp_path):
    from tests.conftest import run_cli

    suite = tmp_path / "u.toml"
    suite.write_text(
        'methods = ["fedavg", "local"]\nseeds = [1, 2]\n[set]\nrounds = 2\nunseen_fraction = 0.25\n'
        "[datasets.synthetic]\nn_clients = 8\nn_test = 10\ndim = 5\n"
    )
    db = tmp_path / "r.sqlite"
    run = run_cli("run", "--suite", str(suite), "--results", str(db), "--no-progress")
    assert run.returncode == 0, run.stderr
    assert "unseen_test_acc, last evaluated round" in run.stdout
    out = run_cli("report", "--suite", str(suite), "--results", str(db)).stdout
    section = out.split("unseen_test_acc, last evaluated round")[1]
    row = next(line for line in section.splitlines() if line.startswith("| synthetic"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1].endswith("(n=2)") and cells[2] == "n/a"  # fedavg has a number, local has none


def test_engines_agree_with_held_out_clients(registry, tmp_path):
    outs = []
    for engine in ("vectorized", "sequential"):
        cfg = resolve_run(registry, dataset="synthetic", method="fedem", seed=2, overrides={**TINY, "unseen_fraction": 0.25}, engine=engine)
        outs.append(execute_run(registry, cfg, ResultStore(tmp_path / f"{engine}.sqlite"), progress=False).metrics)
    for key in ("test_acc", "train_loss", "unseen_test_acc", "unseen_test_loss"):
        assert outs[0][key] == pytest.approx(outs[1][key], rel=1e-5)


def test_new_clients_adapt_at_the_last_rounds_learning_rate(registry):
    cfg = resolve_run(registry, dataset="synthetic", method="fedavg+", seed=1, overrides={**TINY, "unseen_fraction": 0.25})
    sim = build_simulation(registry, cfg)
    for r in range(4):
        sim.aggregator.fit_round(r)
    sim.aggregator.evaluate_new(sim.unseen)
    assert cfg.train.learning_rate(3) == pytest.approx(cfg.train.lr / 100)  # the multistep schedule's last rate
    assert all(c.last_lr == cfg.train.learning_rate(3) for c in sim.unseen)
