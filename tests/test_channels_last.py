"""``train.channels_last``: the same network and flat parameters in another memory layout, the same numbers to
rounding, deterministic, and part of the run id only when set."""

from __future__ import annotations

import pytest
import torch

from fedbench.runs.build import build_simulation, resolve_run
from fedbench.fl.learner import Learner, flatten
from fedbench.fl.tasks import make_task
from tests.test_engine import _image_registry


def test_flatten_reads_a_channels_last_weight_in_its_logical_order():
    w = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    cl = w.contiguous(memory_format=torch.channels_last)
    assert not cl.is_contiguous() and torch.equal(cl, w)
    assert torch.equal(flatten([cl, torch.ones(3)]), torch.cat([w.view(-1), torch.ones(3)]))
    with pytest.raises(RuntimeError):
        cl.view(-1)  # what torch's parameters_to_vector does, and why the learner does not use it


def test_a_channels_last_learner_has_the_same_flat_parameters_and_loads_them_back():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 5))
    plain = Learner(model, make_task("multiclass"))
    flat = plain.get_params()
    cl = Learner(torch.nn.Sequential(*[m for m in model]).to(memory_format=torch.channels_last), make_task("multiclass"))
    assert cl.model[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(cl.get_params(), flat)
    cl.set_params(flat * 2)
    assert torch.equal(cl.get_params(), flat * 2) and cl.model[0].weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(6, 3, 8, 8)
    plain.set_params(flat * 2)
    torch.testing.assert_close(cl.model(x), plain.model(x), rtol=1e-5, atol=1e-6)


def _run(reg, channels_last, engine="sequential", rounds=2):
    cfg = resolve_run(reg, dataset="tiny-images", method="fedavg", seed=1, engine=engine,
                      overrides={"batch_size": 4, "lr": 0.01, "rounds": 3, "channels_last": channels_last})
    sim = build_simulation(reg, cfg)
    for r in range(rounds):
        sim.aggregator.fit_round(r)
    return cfg, sim


def test_a_channels_last_run_agrees_to_rounding_is_deterministic_and_has_its_own_run_id():
    reg = _image_registry()
    cfg0, plain = _run(reg, False)
    cfg1, cl = _run(reg, True)
    _, again = _run(reg, True)
    conv = next(m for m in cl.aggregator.clients[0].ensemble.learners[0].model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    for a, b, c in zip(plain.aggregator.global_params, cl.aggregator.global_params, again.aggregator.global_params):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
        assert torch.equal(b, c)  # same config, same seed: the same numbers
    for mp, mc in zip(plain.aggregator.clients[0].momentum, cl.aggregator.clients[0].momentum):
        torch.testing.assert_close(mc, mp, rtol=1e-4, atol=1e-5)  # flat momentum in the same logical order
    for a, b in zip(plain.aggregator.evaluate(), cl.aggregator.evaluate()):
        assert b.test_loss == pytest.approx(a.test_loss, rel=1e-4)
    default = resolve_run(reg, dataset="tiny-images", method="fedavg", seed=1, engine="sequential",
                          overrides={"batch_size": 4, "lr": 0.01, "rounds": 3})
    assert cfg0.config_id == default.config_id  # the default leaves every earlier run id as it was
    assert cfg1.config_id != cfg0.config_id


def test_the_batched_engine_trains_a_channels_last_run_to_the_same_numbers():
    reg = _image_registry()
    _, seq = _run(reg, True, "sequential")
    _, vec = _run(reg, True, "vectorized")
    assert vec.engine.startswith("vectorized")
    for a, b in zip(seq.aggregator.global_params, vec.aggregator.global_params):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
