"""Protocol details the paper suite relies on (issue 10): each with the test that would have caught it."""

from __future__ import annotations

import pytest
import torch

from fedbench.config import TrainConfig
from fedbench.learner import Learner, SGDConfig, epoch_orders
from fedbench.tasks import make_task


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
