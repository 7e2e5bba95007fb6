"""The synthetic generator reproduces the authors' draw order, including the label quirk."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedbench.errors import DataError
from fedbench_plugins.datasets import synthetic


def _reference_client(n, pi, theta, noise):
    """Independent re-implementation of one client's draws; returns pieces before the shuffle too."""
    counts = np.random.multinomial(n, pi)
    x = np.random.uniform(-1, 1, (n, theta.shape[1]))
    eps = [np.random.normal(0, noise, c) for c in counts]
    perm = np.random.permutation(n)
    return counts, x, eps, perm


class TestDrawOrder:
    def test_first_clients_match_an_independent_replay(self):
        T, M, d, n_test, alpha, seed = 4, 3, 5, 7, 0.4, 12345
        train, test = synthetic.generate(n_clients=T, n_components=M, dim=d, noise=0.1, n_test=n_test, alpha=alpha, seed=seed)
        np.random.seed(seed)
        sizes = np.minimum(np.floor(np.random.lognormal(4, 2, T)).astype(int) + 50, 1000)
        pis = [np.random.dirichlet(alpha * np.ones(M)) for _ in range(T)]
        theta = np.random.uniform(-1, 1, (M, d))
        assert [len(y) for _, y in train] == list(sizes)
        assert all(len(y) == n_test for _, y in test)
        for t in range(T):
            for n, (x_got, y_got) in ((sizes[t], train[t]), (n_test, test[t])):
                counts, x, eps, perm = _reference_client(n, pis[t], theta, 0.1)
                y = np.zeros(n)
                for k in range(M):  # the quirk: every component writes from index 0
                    y[: counts[k]] = np.round(1 / (1 + np.exp(-(x[: counts[k]] @ theta[k] + eps[k]))))
                np.testing.assert_array_equal(x_got, x[perm])
                np.testing.assert_array_equal(y_got, y[perm])

    def test_paper_first_client_size(self):
        # n_0 = min(floor(LogNormal(4, 2)) + 50, 1000) from the seed-12345 global state, drawn for all 300 at once
        np.random.seed(12345)
        expected = int(min(np.floor(np.random.lognormal(4, 2, 300)[0]) + 50, 1000))
        data = synthetic.load(n_clients=300, n_components=3, dim=150, noise=0.1, n_test=1, alpha=0.4, seed=12345)
        assert data.client(0).n_train == expected
        assert data.n_clients == 300 and data.input_shape == (150,)
        sizes = data.train_sizes()
        assert int(sizes.min()) >= 50 and int(sizes.max()) <= 1000


class TestLabelQuirk:
    def test_labels_beyond_the_largest_component_stay_zero(self):
        np.random.seed(0)
        theta = np.random.uniform(-1, 1, (3, 4))
        pi = np.array([0.2, 0.3, 0.5])
        state = np.random.get_state()
        x, unshuffled, perm_got = synthetic._client_samples(200, pi, theta, 0.1, corrected=False)
        np.random.set_state(state)
        counts, x_raw, eps, perm = _reference_client(200, pi, theta, 0.1)
        np.testing.assert_array_equal(perm_got, perm)
        np.testing.assert_array_equal(x, x_raw)
        assert np.all(unshuffled[counts.max():] == 0)
        last = counts[-1]
        np.testing.assert_array_equal(unshuffled[:last], np.round(1 / (1 + np.exp(-(x_raw[:last] @ theta[2] + eps[2])))))

    def test_corrected_variant_labels_each_block_by_its_component(self):
        np.random.seed(1)
        theta = np.random.uniform(-1, 1, (2, 3))
        pi = np.array([0.5, 0.5])
        state = np.random.get_state()
        _, unshuffled, _ = synthetic._client_samples(100, pi, theta, 0.0, corrected=True)
        np.random.set_state(state)
        counts, x_raw, eps, perm = _reference_client(100, pi, theta, 0.0)
        c0 = counts[0]
        np.testing.assert_array_equal(unshuffled[:c0], np.round(1 / (1 + np.exp(-(x_raw[:c0] @ theta[0])))))
        np.testing.assert_array_equal(unshuffled[c0:], np.round(1 / (1 + np.exp(-(x_raw[c0:] @ theta[1])))))


class TestDataset:
    def test_loaded_tensors_equal_the_generated_arrays(self):
        kw = dict(n_clients=4, n_components=3, dim=6, noise=0.1, n_test=9, alpha=0.4, seed=3)
        train, test = synthetic.generate(**kw)
        data = synthetic.load(**kw)
        for i, ((x, y), (xt, yt)) in enumerate(zip(train, test)):
            c = data.client(i)
            assert torch.equal(c.train_x, torch.from_numpy(x).float()) and torch.equal(c.train_y, torch.from_numpy(y).float())
            assert torch.equal(c.test_x, torch.from_numpy(xt).float()) and torch.equal(c.test_y, torch.from_numpy(yt).float())

    def test_same_seed_same_tensors_other_seed_differs(self):
        kw = dict(n_clients=3, n_components=2, dim=4, noise=0.1, n_test=5, alpha=0.4)
        a, b, c = synthetic.load(seed=7, **kw), synthetic.load(seed=7, **kw), synthetic.load(seed=8, **kw)
        assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
        assert not torch.equal(a.train_x, c.train_x)
        assert a.train_x.dtype == torch.float32 and a.task == "binary" and a.n_outputs == 1

    @pytest.mark.parametrize("bad", [{"n_clients": 0}, {"alpha": 0.0}, {"n_test": 0}])
    def test_bad_parameters_fail_clearly(self, bad):
        kw = dict(n_clients=3, n_components=2, dim=4, noise=0.1, n_test=5, alpha=0.4, seed=1) | bad
        with pytest.raises(DataError, match="synthetic"):
            synthetic.load(**kw)
