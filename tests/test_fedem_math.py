"""E-step and M-step of FedEM against hand-computed values."""

from __future__ import annotations

import math

import torch

from fedbench_plugins.methods.fedem import e_step, m_step


class TestEStep:
    def test_hand_computed_two_components(self):
        # pi = (0.25, 0.75); sample 0 losses (1, 2), sample 1 losses (3, 0)
        pi = torch.tensor([0.25, 0.75], dtype=torch.float64)
        losses = torch.tensor([[1.0, 3.0], [2.0, 0.0]], dtype=torch.float64)  # (M, n)
        q = e_step(torch.log(pi), losses)
        # q(0|0) = .25 e^-1 / (.25 e^-1 + .75 e^-2)
        a, b = 0.25 * math.exp(-1), 0.75 * math.exp(-2)
        c, d = 0.25 * math.exp(-3), 0.75 * math.exp(0)
        expected = torch.tensor([[a / (a + b), c / (c + d)], [b / (a + b), d / (c + d)]], dtype=torch.float64)
        torch.testing.assert_close(q, expected)

    def test_columns_sum_to_one_and_equal_losses_give_pi(self):
        pi = torch.tensor([0.2, 0.3, 0.5])
        q = e_step(torch.log(pi), torch.full((3, 4), 7.0))
        torch.testing.assert_close(q, pi.unsqueeze(1).expand(3, 4))

    def test_large_losses_do_not_underflow(self):
        q = e_step(torch.log(torch.tensor([0.5, 0.5])), torch.tensor([[1000.0], [1001.0]]))
        torch.testing.assert_close(q[:, 0], torch.tensor([1 / (1 + math.exp(-1)), math.exp(-1) / (1 + math.exp(-1))]))


class TestMStep:
    def test_mean_over_samples(self):
        q = torch.tensor([[1.0, 0.0, 0.5, 0.5], [0.0, 1.0, 0.5, 0.5]])
        torch.testing.assert_close(m_step(q), torch.tensor([0.5, 0.5]))
        q = torch.tensor([[0.9, 0.6], [0.1, 0.4]])
        torch.testing.assert_close(m_step(q), torch.tensor([0.75, 0.25]))
