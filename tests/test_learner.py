"""The single training loop: weighted SGD steps against hand-computed updates."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fedbench.fl.learner import Learner, LearnersEnsemble, SGDConfig, epoch_orders
from fedbench.fl.seeding import generator
from fedbench.fl.tasks import BinaryTask, MulticlassTask


def _linear(w, b):
    model = nn.Linear(len(w), 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([w]))
        model.bias.fill_(b)
    return model


def _orders(n, epochs=1):
    return epoch_orders(generator(0), epochs, n)


def _sigmoid(z):
    return 1 / (1 + math.exp(-z))


class TestFit:
    def test_one_weighted_step(self):
        learner = Learner(_linear([1.0, -1.0], 0.0), BinaryTask())
        x, y = torch.tensor([[1.0, 2.0]]), torch.tensor([1.0])
        learner.fit_epochs(x, y, torch.tensor([0.5]), SGDConfig(lr=0.1, batch_size=8), _orders(len(y)))
        g = 0.5 * (_sigmoid(-1.0) - 1.0)  # d(0.5 * bce)/d logit at logit -1, label 1
        expected = torch.tensor([1.0 - 0.1 * g * 1.0, -1.0 - 0.1 * g * 2.0, 0.0 - 0.1 * g])
        torch.testing.assert_close(learner.get_params(), expected)

    def test_zero_weights_leave_only_weight_decay(self):
        learner = Learner(_linear([2.0], 1.0), BinaryTask())
        learner.fit_epochs(torch.ones(3, 1), torch.ones(3), torch.zeros(3), SGDConfig(lr=0.5, weight_decay=0.1), _orders(3))
        torch.testing.assert_close(learner.get_params(), torch.tensor([2.0 * (1 - 0.05), 1.0 * (1 - 0.05)]))

    def test_momentum_buffer_carries_over_between_fits(self):
        x, y, w = torch.tensor([[1.0]]), torch.tensor([0.0]), torch.ones(1)
        sgd = SGDConfig(lr=1.0, momentum=0.5)
        learner = Learner(_linear([0.0], 0.0), BinaryTask())
        first = learner.fit_epochs(x, y, w, sgd, _orders(len(y)))
        # logit 0, label 0: grad = sigmoid(0) = 0.5 for weight (x=1) and bias
        torch.testing.assert_close(first.momentum, torch.tensor([0.5, 0.5]))
        torch.testing.assert_close(learner.get_params(), torch.tensor([-0.5, -0.5]))
        second = learner.fit_epochs(x, y, w, sgd, _orders(1), momentum=first.momentum)
        g = _sigmoid(-1.0)  # logit is now -0.5*1 - 0.5 = -1
        torch.testing.assert_close(second.momentum, torch.tensor([0.25 + g, 0.25 + g]))
        torch.testing.assert_close(learner.get_params(), torch.tensor([-0.5 - 0.25 - g, -0.5 - 0.25 - g]))

    def test_batches_cover_every_sample_once_per_epoch(self):
        # only the bias trains; with x = 0 and y = 0 each batch's mean-loss gradient is sigmoid(b),
        # so 10 samples in batches of 4, 4, 2 give exactly three steps b <- b - sigmoid(b)
        model = _linear([0.0], 0.0)
        model.weight.requires_grad_(False)
        learner = Learner(model, BinaryTask())
        x, y = torch.zeros(10, 1), torch.zeros(10)
        learner.fit_epochs(x, y, None, SGDConfig(lr=1.0, batch_size=4), _orders(len(y)))
        b = 0.0
        for _ in range(3):
            b -= _sigmoid(b)
        torch.testing.assert_close(learner.get_params(), torch.tensor([b]))


class TestEnsemble:
    def test_mixture_prediction(self):
        learners = [Learner(_linear([0.0], z), BinaryTask()) for z in (0.0, 2.0)]
        ens = LearnersEnsemble(learners)
        p = ens.predict_proba(torch.zeros(1, 1), torch.tensor([0.25, 0.75]))
        torch.testing.assert_close(p, torch.tensor([0.25 * 0.5 + 0.75 * _sigmoid(2.0)]))

    def test_per_sample_losses_shape_and_value(self):
        ens = LearnersEnsemble([Learner(_linear([1.0], 0.0), BinaryTask()) for _ in range(3)])
        losses = ens.per_sample_losses(torch.tensor([[0.0], [1.0]]), torch.tensor([1.0, 0.0]))
        assert losses.shape == (3, 2)
        torch.testing.assert_close(losses[0], torch.tensor([math.log(2), -math.log(1 - _sigmoid(1.0))]))

    def test_multiclass_score(self):
        proba = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
        loss, correct = MulticlassTask().score(proba, torch.tensor([0, 1]))
        torch.testing.assert_close(loss, torch.tensor([-math.log(0.7), -math.log(0.3)]))
        torch.testing.assert_close(correct, torch.tensor([1.0, 0.0]))


class TestParams:
    def test_training_never_mutates_the_vector_it_was_loaded_from(self):
        # regression: loading by aliasing made every client of a round start from the previous client's result
        learner = Learner(_linear([0.5, -0.5], 0.1), BinaryTask())
        sent = torch.tensor([1.0, 2.0, 3.0])
        learner.set_params(sent)
        learner.fit_epochs(torch.ones(4, 2), torch.zeros(4), None, SGDConfig(lr=0.5), _orders(4))
        torch.testing.assert_close(sent, torch.tensor([1.0, 2.0, 3.0]))
        assert not torch.equal(learner.get_params(), sent)


class TestFunctionalGradient:
    def test_loss_and_grad_hand_computed_and_module_untouched(self):
        learner = Learner(_linear([5.0], 5.0), BinaryTask())
        flat = torch.tensor([1.0, -1.0])  # w = 1, b = -1
        x, y = torch.tensor([[2.0], [0.0]]), torch.tensor([1.0, 0.0])
        loss, grad = learner.loss_and_grad(flat, x, y)
        # logits (1, -1); mean BCE; d/dw = mean((sigmoid(z) - y) x), d/db = mean(sigmoid(z) - y)
        r0, r1 = _sigmoid(1.0) - 1.0, _sigmoid(-1.0)
        assert loss == pytest.approx((math.log(1 + math.exp(-1.0)) + math.log(1 + math.exp(-1.0))) / 2)
        torch.testing.assert_close(grad, torch.tensor([(r0 * 2.0) / 2, (r0 + r1) / 2]))
        torch.testing.assert_close(learner.get_params(), torch.tensor([5.0, 5.0]))


class TestSequenceLabels:
    """A label per window position (the authors' Shakespeare): per-sample means over positions, class weights."""

    def test_weighted_loss_and_score_by_hand(self):
        # one sample, two positions, two classes; logits (0, 0) and (ln 3, 0): p = (1/2, 1/2) and (3/4, 1/4)
        logits = torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0]]])
        y = torch.tensor([[1, 0]], dtype=torch.uint8)
        w = torch.tensor([2.0, 5.0])
        task = MulticlassTask(w)
        # position 0: label 1, -ln(1/2) * 5; position 1: label 0, -ln(3/4) * 2; the sample's loss is their mean
        expected = (5 * math.log(2.0) + 2 * math.log(4.0 / 3.0)) / 2
        assert task.loss(logits, y).tolist() == pytest.approx([expected])
        loss, correct = task.score(task.proba(logits), y)
        # the evaluation loss is unweighted (the authors' nn.NLLLoss() in learners_ensemble.py:224)
        assert loss.tolist() == pytest.approx([(math.log(2.0) + math.log(4.0 / 3.0)) / 2], rel=1e-6)
        # arg-max: position 0 is a tie (index 0 != label 1), position 1 is right: half the positions
        assert correct.tolist() == [0.5]
        # without weights: the plain mean cross-entropy over positions
        assert MulticlassTask().loss(logits, y).tolist() == pytest.approx([(math.log(2.0) + math.log(4.0 / 3.0)) / 2])

    def test_per_sample_labels_are_unchanged_by_the_sequence_support(self):
        logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
        y = torch.tensor([0, 2])
        torch.testing.assert_close(MulticlassTask().loss(logits, y), torch.nn.functional.cross_entropy(logits, y, reduction="none"))
        w = torch.tensor([1.0, 2.0, 3.0])
        torch.testing.assert_close(
            MulticlassTask(w).loss(logits, y), torch.nn.functional.cross_entropy(logits, y, weight=w, reduction="none")
        )


class TestOneSGDStep:
    """``sgd_update`` is the one SGD step of every training path; ``torch.optim.SGD`` stays as its reference."""

    def test_the_learners_loop_is_torchs_sgd_bit_for_bit(self):
        from plugins.models.networks import mlp

        torch.manual_seed(3)
        x, y = torch.randn(40, 6), torch.randint(0, 3, (40,))
        sgd = SGDConfig(lr=0.07, momentum=0.9, weight_decay=5e-4, batch_size=8, epochs=2)
        orders = _orders(40, epochs=2)
        ours = mlp((6,), 3, hidden=5)
        ref = mlp((6,), 3, hidden=5)
        ref.load_state_dict(ours.state_dict())
        learner = Learner(ours, MulticlassTask())
        fit = learner.fit_epochs(x, y, None, sgd, orders)
        opt = torch.optim.SGD(ref.parameters(), lr=sgd.lr, momentum=sgd.momentum, weight_decay=sgd.weight_decay)
        for perm in orders:
            for idx in perm.split(sgd.batch_size):
                opt.zero_grad()
                nn.functional.cross_entropy(ref(x[idx]), y[idx], reduction="sum").div(len(idx)).backward()
                opt.step()
        want = torch.cat([p.detach().reshape(-1) for p in ref.parameters()])
        assert torch.equal(learner.get_params(), want)  # 10 steps of momentum and weight decay, not one bit apart
        bufs = torch.cat([opt.state[p]["momentum_buffer"].reshape(-1) for p in ref.parameters()])
        assert torch.equal(fit.momentum, bufs)

    def test_a_mask_freezes_step_decay_and_momentum(self):
        from fedbench.fl.learner import sgd_update

        p, g = torch.tensor([1.0, 2.0]), torch.tensor([0.5, 0.5])
        new, buf = sgd_update(p, g, torch.tensor([1.0, 0.0]), SGDConfig(lr=0.1, momentum=0.5, weight_decay=0.1),
                              mask=torch.tensor([1.0, 0.0]))
        # coordinate 0: g + wd p = 0.6, b = 0.5 * 1 + 0.6 = 1.1, p = 1 - 0.11; coordinate 1 frozen
        torch.testing.assert_close(new, torch.tensor([0.89, 2.0]))
        torch.testing.assert_close(buf, torch.tensor([1.1, 0.0]))


def test_release_if_large_hands_memory_back_at_most_once_an_interval(monkeypatch):
    """Between clients the one-at-a-time engine trims the heap at most once in RELEASE_INTERVAL_S (each trim costs
    the next client its page faults); a small model never triggers one; no interval: every call of a large one."""
    from fedbench.fl import memory

    calls = []
    monkeypatch.setattr(memory, "release", lambda: calls.append(1))
    monkeypatch.setattr(memory, "_released_at", [float("-inf")])
    large = [torch.zeros(memory.RELEASE_EACH_BYTES // 4)]
    small = [torch.zeros(memory.RELEASE_EACH_BYTES // 4 - 1)]
    assert not memory.release_if_large(small) and calls == []
    assert memory.release_if_large(large, 3600.0) and len(calls) == 1  # the first one always
    assert not memory.release_if_large(large, 3600.0) and len(calls) == 1  # within the interval: none
    assert memory.release_if_large(large) and memory.release_if_large(large, 0.0) and len(calls) == 3
    monkeypatch.setattr(memory, "_released_at", [memory.time.monotonic() - 5.0])
    assert memory.release_if_large(large, 2.0) and len(calls) == 4  # 5 s since the last: due
