"""The paper's LSTM on the batched engine: nn.LSTM written out as matrix products inside it, the fused kernel
outside, the same numbers to float rounding."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fedbench.runs.build import build_simulation, resolve_run
from fedbench.engine.vectorized.check import vectorisable
from fedbench.fl.recurrent import BatchableLSTM, batchable_lstms, unbatchable, unrolled


@pytest.mark.parametrize("batch_first", [True, False])
def test_the_written_out_recurrence_is_torchs_lstm(batch_first):
    torch.manual_seed(0)
    fused = nn.LSTM(5, 7, num_layers=2, batch_first=batch_first)
    mine = batchable_lstms(nn.Sequential(nn.LSTM(5, 7, num_layers=2, batch_first=batch_first)))[0]
    mine.load_state_dict(fused.state_dict())
    assert type(mine) is BatchableLSTM
    x = torch.randn(3, 6, 5) if batch_first else torch.randn(6, 3, 5)
    hx = (torch.randn(2, 3, 7), torch.randn(2, 3, 7))
    want, (h, c) = fused(x, hx)
    want.sum().backward()
    with unrolled():
        got, (h2, c2) = mine(x, hx)
    got.sum().backward()
    for a, b in ((want, got), (h, h2), (c, c2)):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    for name, p in fused.named_parameters():
        torch.testing.assert_close(dict(mine.named_parameters())[name].grad, p.grad, rtol=1e-4, atol=1e-6)
    # outside the batched engine it is the fused kernel itself
    assert torch.equal(mine(x, hx)[0], fused(x, hx)[0])


def test_only_what_can_be_written_out_is_converted_and_the_rest_is_declined():
    model = batchable_lstms(nn.ModuleDict({"a": nn.LSTM(3, 4), "b": nn.LSTM(3, 4, bidirectional=True), "c": nn.GRU(3, 4),
                                           "d": nn.LSTM(3, 4, num_layers=2, dropout=0.5)}))
    assert [type(m).__name__ for m in model.values()] == ["BatchableLSTM", "LSTM", "GRU", "LSTM"]
    assert sorted(unbatchable(model)) == ["GRU", "LSTM", "LSTM"]
    reason = vectorisable(model, [])
    assert reason is not None and "recurrent layers vmap cannot batch (GRU, LSTM" in reason


def _registry():
    from fedbench import FederatedData
    from tests.test_engine import _registry_with

    def load(data_root=None, seed=0):  # noqa: ANN001, ANN202
        g = torch.Generator().manual_seed(seed)
        text = lambda n: torch.randint(0, 100, (n, 12), generator=g, dtype=torch.uint8)  # noqa: E731
        tr = [(text(n), text(n)) for n in (12, 17, 9)]
        te = [(text(4), text(4)) for _ in range(3)]
        return FederatedData.from_clients(tr, te, task="multiclass", num_classes=100)

    return _registry_with("chars", load, "next_char_lstm")


@pytest.mark.parametrize("method", ["fedavg", "fedem"])
def test_the_next_character_lstm_trains_vectorised_with_the_one_at_a_time_numbers(method):
    reg = _registry()
    sims = [build_simulation(reg, resolve_run(reg, dataset="chars", method=method, seed=0,
                                              overrides={"batch_size": 8, "model.hidden": 16}, engine=e))
            for e in ("sequential", "vectorized")]
    assert sims[1].engine.split("; ")[0] == "vectorized (asked for: engine=vectorized)"
    seq, vec = sims[0].aggregator, sims[1].aggregator
    for r in range(2):
        assert vec.fit_round(r).train_loss == pytest.approx(seq.fit_round(r).train_loss, rel=1e-5)
    for a, b in zip(seq.global_params, vec.global_params):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)
    for a, b in zip(seq.evaluate(), vec.evaluate()):
        assert b.test_acc == a.test_acc and b.test_loss == pytest.approx(a.test_loss, rel=1e-5)
    # on this CPU the automatic choice stays one client at a time for recurrent layers (measured faster)
    auto = build_simulation(reg, resolve_run(reg, dataset="chars", method=method, seed=0, overrides={"model.hidden": 16}))
    assert auto.engine.startswith("sequential (chosen for speed: ") and "LSTM layers run faster" in auto.engine
