"""The two phase records, a client's predictor, and evaluation groups decided by values."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from fedbench import Client, FitPhase, LossPhase, StepPhase
from fedbench.runs.build import build_simulation, resolve_run
from fedbench.fl.messages import EvaluateIns
from tests.conftest import TINY


def test_fitphase_builds_the_record_its_arguments_describe():
    loss = FitPhase("personal", "personal", term=None, momentum="personal")
    assert type(loss) is LossPhase and isinstance(loss, FitPhase)
    assert (loss.start, loss.keep, loss.term, loss.momentum) == ("personal", "personal", None, "personal")
    assert FitPhase() == LossPhase()  # the defaults: from the received parameters, the client's local term
    assert LossPhase().term == "local_term" and LossPhase().functions() == {"term": "local_term", "sample_term": None}

    step = FitPhase(term=None, step=Client.joint_step, carry=("personal",))
    assert type(step) is StepPhase and isinstance(step, FitPhase)
    assert step.functions() == {"step": Client.joint_step} and step.kept_names() == ("personal",)
    assert step == StepPhase(step=Client.joint_step, carry=("personal",))
    # a record copied with a change stays the same record
    assert type(dataclasses.replace(step, epochs=3)) is StepPhase and dataclasses.replace(step, epochs=3).epochs == 3


def test_each_record_refuses_what_belongs_to_the_other():
    assert type(FitPhase(step=Client.joint_step)) is StepPhase  # the loss phase's default term is not asked for
    with pytest.raises(ValueError, match="adds no term and freezes nothing"):
        FitPhase(term="local_term", step=Client.joint_step)
    with pytest.raises(ValueError, match="adds no term"):
        FitPhase(term=None, step=Client.joint_step, trainable=(True,))
    with pytest.raises(ValueError, match="carries kept models"):
        FitPhase(term=None, carry=("personal",))
    with pytest.raises(ValueError, match="needs its step"):
        StepPhase(step=None)
    with pytest.raises(TypeError):
        StepPhase(term=None, step=Client.joint_step)  # a StepPhase has no term field
    with pytest.raises(TypeError):
        LossPhase(step=Client.joint_step)  # nor a LossPhase a step
    with pytest.raises(ValueError, match="fresh momentum"):
        LossPhase(trainable=(True, False))
    with pytest.raises(ValueError, match="cannot be named"):
        StepPhase(step=Client.joint_step, carry=("previous",))


def _apfl(registry, engine, alpha):
    cfg = resolve_run(registry, dataset="synthetic", method="apfl", seed=2, engine=engine,
                      overrides={**TINY, "client.alpha": alpha})
    agg = build_simulation(registry, cfg).aggregator
    agg.fit_round(0)
    return agg


def test_apfls_predictor_is_the_mixed_model_and_leaves_the_clients_weights_alone(registry):
    agg = _apfl(registry, "sequential", 0.3)
    client = agg.clients[0]
    params = agg.configure_evaluate(client)
    w, v = params
    assert not torch.equal(w, v)
    pred, weights = client.predictor(params)
    torch.testing.assert_close(pred[0], 0.3 * v + 0.7 * w)
    assert weights.tolist() == [1.0, 0.0]
    before = client.learners_weights.clone()
    got = client.evaluate(params)
    assert torch.equal(client.learners_weights, before)  # nothing swapped during (or left after) the evaluation
    # the same scores as the client's workspace holding the mixed model alone, scored with weights [1, 0]
    client.load([0.3 * v + 0.7 * w, torch.zeros_like(v)])
    by_hand = client.score(torch.tensor([1.0, 0.0]))
    assert torch.equal(client.learners_weights, before)
    assert got == by_hand


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_apfl_at_the_ends_is_scored_as_the_global_or_the_personal_model(registry, alpha):
    agg = _apfl(registry, "sequential", alpha)
    client = agg.clients[1]
    w, v = agg.configure_evaluate(client)
    pred, _ = client.predictor([w, v])
    assert torch.equal(pred[0], w if alpha == 0.0 else v)


def _fedem(registry, engine):
    cfg = resolve_run(registry, dataset="synthetic", method="fedem", seed=5, engine=engine, overrides=TINY)
    agg = build_simulation(registry, cfg).aggregator
    agg.fit_round(0)
    return agg


def test_evaluation_groups_clients_by_the_values_of_their_parameters_not_by_the_lists(registry):
    agg = _fedem(registry, "vectorized")
    engine = agg.engine
    shared = [EvaluateIns(agg.configure_evaluate(c)) for c in agg.clients]
    copies = [EvaluateIns([p.clone() for p in ins.params]) for ins in shared]
    assert len({id(ins.params) for ins in copies}) == len(agg.clients)
    assert engine._groups(agg.clients, [ins.params for ins in copies]) == [list(range(len(agg.clients)))]
    assert engine.evaluate(agg.clients, copies) == engine.evaluate(agg.clients, shared)
    # a copy that differs in one value is scored on its own, and as the one-at-a-time path scores it
    changed = [p.clone() for p in copies[2].params]
    changed[0][0] += 0.5
    copies[2] = EvaluateIns(changed)
    groups = engine._groups(agg.clients, [ins.params for ins in copies])
    assert sorted(map(sorted, groups)) == sorted([[2], [i for i in range(len(agg.clients)) if i != 2]])
    got = engine.evaluate(agg.clients, copies)
    reference = _fedem(registry, "sequential")
    want = reference.engine.evaluate(reference.clients, copies)
    for a, b in zip(got, want):
        assert (a.client_id, a.n_train, a.n_test) == (b.client_id, b.n_train, b.n_test)
        for name in ("train_loss", "train_acc", "test_loss", "test_acc"):
            assert getattr(a, name) == pytest.approx(getattr(b, name), rel=1e-5, abs=1e-6)
