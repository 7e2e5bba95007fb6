"""The CUDA path equals the CPU reference (skipped where no GPU is present; CI has none).

Run on a GPU machine with ``pytest tests/test_cuda.py``: every method of the baselines suite trains
on the GPU, on both engines, and must give the CPU's one-at-a-time numbers to float32 rounding;
a run repeated on the GPU must give the same numbers.
"""

from __future__ import annotations

import pytest
import torch

from fedbench.runs.build import build_simulation, resolve_run
from fedbench.runs.runner import evaluate, execute_run
from fedbench.reporting.store import ResultStore
from tests.conftest import TINY
from tests.test_engine import CASES, _state

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _sim(registry, method, extra, engine, device):  # noqa: ANN001, ANN202
    cfg = resolve_run(registry, dataset="synthetic", method=method, seed=3, overrides={**TINY, **extra},
                      engine=engine, device=device)
    return build_simulation(registry, cfg)


@pytest.mark.parametrize("method, extra", CASES)
@pytest.mark.parametrize("engine", ["vectorized", "sequential"])
def test_gpu_equals_the_cpu_reference_after_every_round(registry, method, extra, engine):
    ref = _sim(registry, method, extra, "sequential", "cpu")
    gpu = _sim(registry, method, extra, engine, "cuda")
    assert gpu.engine.startswith(engine)
    for r in range(2):
        a, b = ref.aggregator.fit_round(r), gpu.aggregator.fit_round(r)
        assert b.train_loss == pytest.approx(a.train_loss, rel=1e-4)
        for p, q in zip(_state(ref.aggregator), _state(gpu.aggregator)):
            assert q.device.type == "cuda"
            torch.testing.assert_close(q.cpu(), p, rtol=1e-4, atol=1e-5)
    want, got = evaluate(ref, 0), evaluate(gpu, 0)
    assert got["test_acc"] == pytest.approx(want["test_acc"], abs=0.5)
    assert got["test_loss"] == pytest.approx(want["test_loss"], rel=1e-3)


@pytest.mark.parametrize("method", ["fedem", "fedavg", "apfl", "fedrep"])
def test_same_seed_same_numbers_on_the_gpu(registry, method):
    runs = []
    for _ in range(2):
        sim = _sim(registry, method, {}, "vectorized", "cuda")
        for r in range(3):
            sim.aggregator.fit_round(r)
        runs.append(([p.cpu() for p in _state(sim.aggregator)], evaluate(sim, 0)))
    (a, ma), (b, mb) = runs
    for p, q in zip(a, b):
        assert torch.equal(p, q)
    assert ma == mb


def test_a_stored_gpu_run_matches_the_cpu_run(registry, tmp_path):
    out = {}
    for i, device in enumerate(("cpu", "cuda")):  # one file each: the device is not part of the run id
        store = ResultStore(tmp_path / f"{i}.sqlite")
        cfg = resolve_run(registry, dataset="synthetic", method="fedem", seed=1, overrides=TINY, device=device)
        outcome = execute_run(registry, cfg, store, progress=False)
        assert outcome.status == "done", outcome.error
        out[device] = outcome.metrics
    assert out["cuda"]["test_acc"] == pytest.approx(out["cpu"]["test_acc"], abs=0.5)
    assert out["cuda"]["train_loss"] == pytest.approx(out["cpu"]["train_loss"], rel=1e-3)


def test_dropout_masks_on_the_gpu_are_the_cpus_bit_for_bit():
    from fedbench.fl.dropout import batch_key, keep_mask, row_key

    key = batch_key(torch.tensor(row_key(1, 3, 7, 11, 2)), 5)
    cpu = keep_mask(key, 1, torch.Size([128, 1280]), 0.2, torch.device("cpu"))
    gpu = keep_mask(key.cuda(), 1, torch.Size([128, 1280]), 0.2, torch.device("cuda"))
    assert torch.equal(gpu.cpu(), cpu)


@pytest.mark.parametrize("engine", ["vectorized", "sequential"])
def test_a_dropout_model_on_the_gpu_equals_the_cpu_reference(engine):
    from tests.test_dropout import _registry

    reg = _registry()
    sims = [build_simulation(reg, resolve_run(reg, dataset="synthetic", method="fedem", seed=2,
                                              overrides={**TINY, "model": "dropnet", "batch_size": 16}, engine=e, device=d))
            for e, d in (("sequential", "cpu"), (engine, "cuda"))]
    ref, gpu = sims[0].aggregator, sims[1].aggregator
    for r in range(2):
        assert gpu.fit_round(r).train_loss == pytest.approx(ref.fit_round(r).train_loss, rel=1e-4)
    for p, q in zip(ref.global_params, gpu.global_params):
        torch.testing.assert_close(q.cpu(), p, rtol=1e-4, atol=1e-5)


def test_the_lstm_written_out_on_the_gpu_equals_the_cpu_reference():
    from tests.test_recurrent import _registry

    reg = _registry()
    sims = [build_simulation(reg, resolve_run(reg, dataset="chars", method="fedavg", seed=0,
                                              overrides={"batch_size": 8, "model.hidden": 16}, engine=e, device=d))
            for e, d in (("sequential", "cpu"), ("vectorized", "cuda"))]
    ref, gpu = sims[0].aggregator, sims[1].aggregator
    for r in range(2):
        assert gpu.fit_round(r).train_loss == pytest.approx(ref.fit_round(r).train_loss, rel=1e-4)
    for p, q in zip(ref.global_params, gpu.global_params):
        torch.testing.assert_close(q.cpu(), p, rtol=1e-4, atol=1e-5)
