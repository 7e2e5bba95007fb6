"""fedbench.fl.seeding: derived seeds and the global generators."""

from __future__ import annotations

import torch

from fedbench.fl.seeding import derive_seed, seed_global


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


def test_generators_of_a_round_are_those_of_generator_with_the_same_keys():
    from fedbench.fl.seeding import generator, generators

    ids = [0, 7, 299, 2**40 + 3]
    for prefix in [(1, 3, 0), (12345, 3, 199), ()]:
        many = generators(prefix, ids)
        for k, gen in zip(ids, many):
            assert torch.equal(torch.rand(5, generator=gen, dtype=torch.float64),
                               torch.rand(5, generator=generator(*prefix, k), dtype=torch.float64))
    # and the last key matters, as in generator()
    a, b = generators((1, 3, 0), [1, 2])
    assert not torch.equal(torch.rand(5, generator=a), torch.rand(5, generator=b))
