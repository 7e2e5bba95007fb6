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


class TestBatchedWeights:
    """``MixtureClient.update_weights`` (the vectorised backend's E- and M-steps, batched over clients)
    against each client's own :meth:`update_sample_weights` and :meth:`update_learners_weights`."""

    @staticmethod
    def _clients(registry, n_clients=7):  # noqa: ANN001, ANN205
        from fedbench.runs.build import build_simulation, resolve_run

        cfg = resolve_run(registry, dataset="synthetic", method="fedem", seed=0,
                          overrides={"rounds": 1, "dataset.n_clients": n_clients, "dataset.n_test": 20})
        return build_simulation(registry, cfg).aggregator.clients

    def test_equals_the_per_client_steps_to_rounding(self, registry):
        from fedbench import Client

        gen = torch.Generator().manual_seed(0)
        batched, single = self._clients(registry), self._clients(registry)
        for a, b in zip(batched, single):  # unequal priors, to see each column get its own client's
            pi = torch.rand(3, generator=gen) + 0.1
            a.learners_weights = b.learners_weights = pi / pi.sum()
        losses = [torch.rand(3, c.n_train, generator=gen) * 5 for c in batched]
        assert len({c.n_train for c in batched}) > 1
        for _ in range(2):  # twice: the second E-step starts from the first M-step's pi
            priors = [torch.log(c.learners_weights) for c in single]
            type(batched[0]).update_weights(batched, losses)
            Client.update_weights.__func__(type(single[0]), single, losses)  # the default: client by client
            for a, b, loss, prior in zip(batched, single, losses, priors):
                torch.testing.assert_close(a.samples_weights, b.samples_weights, rtol=1e-6, atol=1e-7)
                torch.testing.assert_close(a.learners_weights, b.learners_weights, rtol=1e-6, atol=1e-7)
                # and the closed form: q_mi = pi_m e^-l_mi / sum_k pi_k e^-l_ki, pi'_m = mean_i q_mi
                q = (prior.exp().unsqueeze(1) * (-loss).exp()).double()
                q = q / q.sum(dim=0)
                torch.testing.assert_close(a.samples_weights.double(), q, rtol=1e-5, atol=1e-7)
                torch.testing.assert_close(a.learners_weights.double(), q.mean(dim=1), rtol=1e-5, atol=1e-7)

    def test_a_subclass_overriding_a_step_gets_its_own_step_per_client(self, registry):
        from fedbench_plugins.methods.fedem import MixtureClient

        class Tempered(MixtureClient):
            def update_sample_weights(self, losses):  # noqa: ANN001, ANN201
                super().update_sample_weights(losses / 2)

        clients = self._clients(registry, 3)
        for c in clients:
            c.__class__ = Tempered
        losses = [torch.arange(3 * c.n_train, dtype=torch.float32).view(3, -1) % 4 for c in clients]
        Tempered.update_weights(clients, losses)
        for c, loss in zip(clients, losses):
            expected = e_step(torch.log(torch.full((3,), 1 / 3)), loss / 2)
            torch.testing.assert_close(c.samples_weights, expected)
            torch.testing.assert_close(c.learners_weights, m_step(expected))
