"""Partitioners: counts, determinism, skew against the requested settings, termination, clear failures."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from fedbench.errors import DataError
from fedbench_plugins.partitioners import label_skew as P
from tests.conftest import run_cli

LABELS = np.repeat(np.arange(10), 100)  # 1000 samples, 10 classes
CASES = [
    (P.iid, {}),
    (P.dirichlet, {"alpha": 0.5}),
    (P.label_groups, {"n_groups": 3, "alpha": 0.4}),
    (P.shards, {"shards_per_client": 2}),
    (P.quantity, {"sigma": 1.0}),
    (P.pachinko, {"alpha": 0.4, "beta": 10.0, "coarse_labels": LABELS // 2}),  # 5 coarse labels of 2 fine ones
]


def _labels_per_client(parts):
    return [len(np.unique(LABELS[p])) for p in parts]


class TestEveryPartitioner:
    @pytest.mark.parametrize("fn, kw", CASES)
    def test_disjoint_cover_and_deterministic(self, fn, kw):
        parts = fn(LABELS, 20, np.random.default_rng(3), **kw)
        allidx = np.concatenate(parts)
        assert len(parts) == 20 and sorted(allidx.tolist()) == list(range(1000))
        again = fn(LABELS, 20, np.random.default_rng(3), **kw)
        assert all(np.array_equal(a, b) for a, b in zip(parts, again))
        other = fn(LABELS, 20, np.random.default_rng(4), **kw)
        assert not all(np.array_equal(a, b) for a, b in zip(parts, other))

    @pytest.mark.parametrize("fn, kw", CASES)
    def test_reversed_data_gives_the_same_assignment_of_label_counts(self, fn, kw):
        # the split depends on the labels and the generator only, not on where samples sit
        a = fn(LABELS, 10, np.random.default_rng(0), **kw)
        if "coarse_labels" in kw:
            kw = {**kw, "coarse_labels": kw["coarse_labels"][::-1].copy()}
        b = fn(LABELS[::-1].copy(), 10, np.random.default_rng(0), **kw)
        assert [np.bincount(LABELS[p], minlength=10).sum() for p in a] == [np.bincount(LABELS[::-1][p], minlength=10).sum() for p in b]


class TestSkew:
    def test_smaller_alpha_concentrates_labels(self):
        rng = np.random.default_rng(0)
        skewed = np.mean(_labels_per_client(P.dirichlet(LABELS, 20, rng, alpha=0.05, min_size=0)))
        even = np.mean(_labels_per_client(P.dirichlet(LABELS, 20, np.random.default_rng(0), alpha=100.0)))
        assert skewed < 5 and even == 10

    def test_shards_give_at_most_k_labels(self):
        parts = P.shards(LABELS, 50, np.random.default_rng(1), shards_per_client=2)
        assert max(_labels_per_client(parts)) <= 2 and {len(p) for p in parts} == {20}

    def test_label_groups_keep_clients_within_groups(self):
        parts = P.label_groups(LABELS, 10, np.random.default_rng(2), n_groups=10, alpha=1e-3, min_size=0)
        # with one class per group and a tiny alpha, a client sees few classes
        assert np.mean(_labels_per_client([p for p in parts if len(p)])) < 3

    def test_quantity_sizes_vary_and_cover(self):
        parts = P.quantity(LABELS, 10, np.random.default_rng(0), sigma=2.0)
        sizes = [len(p) for p in parts]
        assert sum(sizes) == 1000 and min(sizes) >= 1 and max(sizes) > 3 * min(sizes)


    def test_pachinko_alpha_concentrates_coarse_labels(self):
        coarse = LABELS // 2
        def coarse_per_client(alpha):
            parts = P.pachinko(LABELS, 50, np.random.default_rng(0), alpha=alpha, beta=10.0, samples_per_client=10, coarse_labels=coarse)
            assert [len(p) for p in parts] == [10] * 50
            return np.mean([len(np.unique(coarse[p])) for p in parts])
        assert coarse_per_client(0.01) < 1.5 < 4 < coarse_per_client(1000.0)

    def test_pachinko_draws_follow_the_weights_among_available_labels(self):
        rng = np.random.default_rng(0)
        w, avail = np.array([0.5, 0.2, 0.3, 0.0]), np.array([True, False, True, True])
        draws = np.bincount([P._draw(rng, w, avail) for _ in range(4000)], minlength=4)
        assert draws[1] == 0 and draws[3] == 0 and abs(draws[0] / 4000 - 0.625) < 0.03
        zero = np.bincount([P._draw(rng, np.zeros(3), np.array([False, True, True])) for _ in range(400)], minlength=3)
        assert zero[0] == 0 and min(zero[1:]) > 150  # underflowed weights: uniform over the available ones

    def test_pachinko_exhausted_labels_are_removed(self):
        # a tiny alpha on every client: the favourite labels run out, later clients take what remains
        parts = P.pachinko(LABELS, 10, np.random.default_rng(5), alpha=1e-3, beta=1e-3, coarse_labels=LABELS // 2)
        assert sorted(np.concatenate(parts).tolist()) == list(range(1000))


class TestFailure:
    @pytest.mark.parametrize(
        "kw, message",
        [
            ({}, "needs each sample's coarse label"),
            ({"coarse_labels": LABELS // 2, "samples_per_client": 200}, "lower samples_per_client"),
            ({"coarse_labels": np.arange(1000) % 3}, "inconsistent"),
        ],
    )
    def test_pachinko_errors(self, kw, message):
        with pytest.raises(DataError, match=message):
            P.pachinko(LABELS, 10, np.random.default_rng(0), **kw)

    def test_infeasible_dirichlet_fails_fast_with_the_fix(self):
        start = time.perf_counter()
        with pytest.raises(DataError, match="raise alpha, use fewer clients, or set min_size=0"):
            P.dirichlet(LABELS, 500, np.random.default_rng(0), alpha=0.01, min_size=2)
        assert time.perf_counter() - start < 5  # bounded redraws: no hang at 500 clients

    @pytest.mark.parametrize(
        "fn, kw, message",
        [
            (P.shards, {"shards_per_client": 200}, "use fewer clients"),
            (P.iid, {}, "cannot give each"),
            (P.label_groups, {"n_groups": 11}, "n_groups must be in"),
            (P.dirichlet, {"alpha": 0.0}, "alpha must be > 0"),
        ],
    )
    def test_clear_errors(self, fn, kw, message):
        n = 2000 if fn is P.iid else 10
        with pytest.raises(DataError, match=message):
            fn(LABELS, n, np.random.default_rng(0), **kw)


class TestDigits:
    def test_digits_through_a_partitioner(self, registry):
        pytest.importorskip("sklearn")
        from fedbench_plugins.datasets.digits import load

        data = load(n_clients=10, partitioner="shards", shards_per_client=1, seed=1)
        assert data.n_clients == 10 and data.task == "multiclass" and data.input_shape == (64,)
        assert int(data.train_sizes().sum() + data.test_sizes().sum()) == 1797
        for i in range(10):  # one label-sorted shard of ~180 samples each: nearly all of one label
            c = data.client(i)
            counts = torch.bincount(torch.cat([c.train_y, c.test_y]), minlength=10)
            assert int(counts.max()) >= 0.8 * int(counts.sum())
        assert abs(int(data.test_sizes().sum()) - 0.2 * 1797) <= 10

    def test_describe_cli_and_heat_map(self, tmp_path):
        pytest.importorskip("sklearn")
        proc = run_cli("data", "describe", "digits", "--set", "n_clients=4", "--set", "partitioner=iid", "--format", "csv",
                       "--plot", str(tmp_path / "heat.png"))
        assert proc.returncode == 0, proc.stderr
        lines = [line for line in proc.stdout.splitlines() if line]
        assert lines[0].startswith("digits: 4 clients") and lines[1].startswith("client,n_train,n_test,label_0")
        assert sum(int(l.split(",")[1]) + int(l.split(",")[2]) for l in lines[2:]) == 1797
        if (tmp_path / "heat.png").exists():
            assert (tmp_path / "heat.png").read_bytes()[:4] == b"\x89PNG"

    def test_digits_end_to_end_fedem(self, tmp_path):
        pytest.importorskip("sklearn")
        proc = run_cli("run", "--dataset", "digits", "--method", "fedem", "--rounds", "20", "--results", str(tmp_path / "r.sqlite"), "--no-progress")
        assert proc.returncode == 0, proc.stderr
        acc = float(proc.stdout.split("test_acc ")[1].split("%")[0])
        assert acc > 60  # ten classes: chance is 10 %
