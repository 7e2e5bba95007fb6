"""fedbench.seeding: derived seeds and the global generators."""

from __future__ import annotations

import torch

from fedbench.seeding import derive_seed, seed_global


def test_seed_global_gives_torch_manual_seeds_cpu_draws():
    seed_global(7, 5, 3, 11)
    got = torch.rand(4)
    torch.manual_seed(derive_seed(7, 5, 3, 11))
    assert torch.equal(got, torch.rand(4))
    seed_global(7, 5, 3, 12)  # another client: other draws
    assert not torch.equal(got, torch.rand(4))


def test_seed_global_formats_no_stack_trace_for_a_cuda_that_never_started(monkeypatch):
    # a CUDA build's torch.manual_seed, before CUDA starts, formats a stack trace per call to replay the
    # seeding later: 0.57 ms, per client and round
    import traceback

    if torch.cuda.is_initialized():
        return
    calls = []
    real = traceback.format_stack
    monkeypatch.setattr(traceback, "format_stack", lambda *a, **k: calls.append(1) or real(*a, **k))
    for client in range(5):
        seed_global(1, 5, 0, client)
    assert calls == []
