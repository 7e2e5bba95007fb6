"""The paper's real cells follow the FedEM authors' protocol (issue 24): each item with the test that fails
without it. "A:" cites omarfoq/FedEM at 996fadd."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fedbench import FederatedData
from fedbench.runs.build import build_simulation, resolve_run
from fedbench.fl.learner import Learner, SGDConfig, batches_per_epoch
from fedbench.fl.tasks import make_task
from fedbench_plugins.datasets.cifar import MEAN, STD, load as load_cifar
from tests.test_cifar import make_cifar
from tests.test_engine import _registry_with, _state


class TestCifarNormalisation:
    """A: datasets.py:172-179 and :234-242, Normalize(MEAN, STD) after ToTensor, on both CIFAR data sets."""

    @pytest.mark.parametrize("name", ["cifar10", "cifar100"])
    def test_pixels_are_normalised_per_channel_by_default(self, tmp_path, name):
        x_raw, _ = make_cifar(tmp_path, name, per_file=20)
        data = load_cifar(name, tmp_path, {"n_clients": 1, "partitioner": "iid", "test_fraction": 0.5})
        raw = torch.from_numpy(x_raw.reshape(-1, 3, 32, 32)).double() / 255
        stored = torch.cat([data.train_x, data.test_x])
        assert stored.dtype == torch.uint8  # a quarter of float32; each model decodes its batches
        pool = data.decode(stored)
        assert pool.dtype == torch.float32
        pool = pool.double()
        assert pool.shape == raw.shape
        # the same multiset of images: compare per-channel sums, which the split's order does not change
        for ch in range(3):
            expected = ((raw[:, ch] - MEAN[ch]) / STD[ch]).sum()
            assert float(pool[:, ch].sum()) == pytest.approx(float(expected), rel=1e-6)
        # a hand-computed pixel: value v becomes (v / 255 - mean) / std
        v = x_raw.reshape(-1, 3, 32, 32)[:, 1].min()
        assert float(pool[:, 1].min()) == pytest.approx((v / 255 - MEAN[1]) / STD[1], rel=1e-6)

    def test_bit_identical_to_the_authors_torchvision_transform(self):
        import numpy as np
        from torchvision.transforms import Compose, Normalize, ToTensor

        from fedbench_plugins.datasets.pooled import to_float_images

        images = np.random.default_rng(1).integers(0, 256, (20, 3, 32, 32), dtype=np.uint8)
        theirs = Compose([ToTensor(), Normalize(MEAN, STD)])
        expected = torch.stack([theirs(im.transpose(1, 2, 0)) for im in images])  # HWC uint8, as their datasets hold
        assert torch.equal(to_float_images(torch.from_numpy(images), MEAN, STD), expected)

    def test_raw_pixels_on_request(self, tmp_path):
        make_cifar(tmp_path, "cifar10", per_file=20)
        data = load_cifar("cifar10", tmp_path, {"n_clients": 2, "partitioner": "iid", "normalize": False})
        pool = data.decode(data.train_x)
        assert float(pool.min()) >= 0 and float(pool.max()) <= 1
        assert torch.equal(pool, data.train_x.float() / 255)


class TestDropLast:
    """A: utils/utils.py:302-305, drop_last = CIFAR and len(dataset) > batch_size and train."""

    def test_cifar_drops_and_says_so_in_its_data(self, tmp_path):
        make_cifar(tmp_path, "cifar10", per_file=20)
        assert load_cifar("cifar10", tmp_path, {"n_clients": 2, "partitioner": "iid"}).drop_last
        assert not load_cifar("cifar10", tmp_path, {"n_clients": 2, "partitioner": "iid", "drop_last": False}).drop_last

    @pytest.mark.parametrize("n, batch, drop, expected", [
        (10, 4, True, 2), (10, 4, False, 3), (8, 4, True, 2), (3, 4, True, 1), (4, 4, True, 1), (5, 4, True, 1),
        (349 * 128 + 5, 128, True, 349), (349 * 128 + 5, 128, False, 350),
    ])
    def test_steps_per_epoch(self, n, batch, drop, expected):
        assert batches_per_epoch(n, SGDConfig(lr=1, batch_size=batch, drop_last=drop)) == expected

    def test_the_short_last_batch_takes_no_step(self):
        """Training on 10 samples in batches of 4 with drop_last equals training on the order's first 8."""
        torch.manual_seed(0)
        x, y = torch.randn(10, 3), torch.randint(0, 2, (10,))
        order = torch.randperm(10).view(1, -1)

        def fit(orders, drop):
            torch.manual_seed(1)
            learner = Learner(nn.Linear(3, 2), make_task("multiclass"))
            learner.fit_epochs(x, y, None, SGDConfig(lr=0.5, momentum=0.9, batch_size=4, drop_last=drop), orders)
            return [p.detach().clone() for p in learner.model.parameters()]

        dropped, first_eight, kept = fit(order, True), fit(order[:, :8], False), fit(order, False)
        for a, b in zip(dropped, first_eight):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        assert any(not torch.equal(a, b) for a, b in zip(dropped, kept))

    @pytest.mark.parametrize("method, extra", [
        ("fedavg", {}), ("fedem", {"local_epochs": 2}), ("fedavg", {"model.batch_norm": True}),
        ("pfedme", {}), ("apfl", {}),  # the client's own step (apfl) and a proximal anchor (pfedme)
    ])
    def test_both_engines_drop_the_same_batches(self, method, extra):
        def load(data_root=None, seed=0):
            g = torch.Generator().manual_seed(seed)
            sizes = (13, 8, 3, 9, 17, 1)  # short last batches (13, 9, 17), an exact multiple (8), one batch (3, 1)
            tr = [(torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)) for n in sizes]
            te = [(torch.randn(4, 6, generator=g), torch.randint(0, 3, (4,), generator=g)) for _ in sizes]
            return FederatedData.from_clients(tr, te, task="multiclass", num_classes=3, drop_last=True)

        reg = _registry_with("tiny-drop", load, "mlp")
        overrides = {"batch_size": 4, "lr": 0.05, "model.hidden": 8, "rounds": 3, **extra}
        aggs = [build_simulation(reg, resolve_run(reg, dataset="tiny-drop", method=method, seed=1, overrides=overrides,
                                                  engine=e)).aggregator for e in ("sequential", "vectorized")]
        seq, vec = aggs
        assert all(c.sgd_config(0.1).drop_last for c in seq.clients)
        for r in range(2):
            a, b = seq.fit_round(r), vec.fit_round(r)
            assert b.train_loss == pytest.approx(a.train_loss, rel=1e-5)
            for p, q in zip(_state(seq), _state(vec)):
                torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6)


def _builtin_suites():
    from pathlib import Path

    import fedbench_plugins.suites as suites

    return sorted(p.stem for p in Path(suites.__file__).parent.glob("*.toml"))


class TestPickingPartOfASuite:
    """Every single data set and method of every built-in suite can be picked out of it (item 9)."""

    @pytest.mark.parametrize("name", _builtin_suites())
    def test_each_data_set_and_each_method_alone(self, registry, name):
        import tomllib

        from fedbench.runs.suite import find_suite, load_suite

        doc = tomllib.loads(find_suite(registry, name).read_text())
        methods = list(doc["methods"])
        for ds in doc["datasets"]:
            for method in methods:
                suite = load_suite(registry, name, seeds=[1], only_datasets=[ds], only_methods=[method])
                assert suite.runs and {(c.dataset, c.method) for c in suite.runs} == {(ds, method)}

    def test_the_reference_numbers_are_those_of_the_kept_cells(self, registry):
        from fedbench.runs.suite import load_suite

        suite = load_suite(registry, "paper", seeds=[1], only_datasets=["femnist"], only_methods=["fedem", "local"])
        assert sorted(zip(suite.references.dataset, suite.references.method)) == [("femnist", "fedem"), ("femnist", "local")]
        assert len(load_suite(registry, "paper", seeds=[1]).references) > 2

    def test_the_cli_runs_one_cell_of_the_paper_suite(self, tmp_path):
        from tests.conftest import run_cli

        proc = run_cli("run", "--suite", "paper", "--datasets", "cifar10", "--methods", "fedavg", "--data-root",
                       str(tmp_path), "--results", str(tmp_path / "r.sqlite"))  # no files: the runs are skipped
        # 1: every selected run was skipped for its missing files (a refused suite exits 2 before any run)
        assert proc.returncode == 1, proc.stderr
        assert "suite paper: 3 runs" in proc.stderr + proc.stdout and "skipping 3 run(s) of cifar10" in proc.stderr
        assert "femnist" not in proc.stdout  # no reference rows of cells not picked


class TestEvaluationFrequency:
    """A: paper_experiments/*/run_*.sh use --log_freq 10 on CIFAR-10 and 5 on the other real data sets."""

    def test_the_paper_suite_evaluates_as_their_scripts(self, registry):
        from fedbench.runs.suite import load_suite

        expected = {"cifar10": 10, "cifar100": 5, "emnist": 5, "femnist": 5, "shakespeare": 5}
        suite = load_suite(registry, "paper", seeds=[1])
        assert {c.dataset: c.train.eval_every for c in suite.runs} == expected


class TestSplitRounding:
    """A: sklearn's train_test_split(train_size=0.8) keeps floor(0.8 n) train samples."""

    @pytest.mark.parametrize("n, n_train", [(7, 5), (10, 8), (3, 2), (227, 181), (600, 480)])
    def test_pooled_clients(self, n, n_train):
        from fedbench.runs.partition import federate

        x, y = torch.randn(n, 2), torch.zeros(n, dtype=torch.long)
        data = federate(x, y, [np.arange(n)], test_fraction=0.2, seed=0, task="multiclass", num_classes=2)
        assert (data.client(0).n_train, data.client(0).n_test) == (n_train, n - n_train)

    def test_femnist_writers_filtered_first_then_int_of_fraction(self, tmp_path):
        """A: data_to_tensor.py:59 keeps writers with more than 2 images; generate_data.py:83 takes int(0.15 N)."""
        from fedbench_plugins.datasets.leaf import load_femnist
        from tests.test_leaf import make_leaf

        sizes = make_leaf(tmp_path, writers=20, per_writer=(1, 12), seed=3)
        eligible = [n for n in sizes.values() if n > 2]
        assert len(eligible) < 20  # some writers have 1 or 2 samples
        data = load_femnist(tmp_path, fraction=0.15, seed=1)
        assert data.n_clients == max(1, int(0.15 * len(eligible)))
        for i in range(data.n_clients):
            c = data.client(i)
            n = c.n_train + c.n_test
            assert n > 2 and c.n_train == int(np.floor(0.8 * n))


class TestClusteredBatchNorm:
    """A: average_learners (utils/torch_utils.py:39-70) averages every float32 entry, BatchNorm statistics
    too, within each cluster (aggregator.py:569-594), and update_clients copies them to the members."""

    def _sim(self, registry, engine="sequential"):
        from tests.conftest import TINY

        cfg = resolve_run(registry, dataset="synthetic", method="clustered", seed=2, engine=engine,
                          overrides={**TINY, "model": "mlp", "model.hidden": 4, "model.batch_norm": True, "batch_size": 16})
        return build_simulation(registry, cfg).aggregator

    def test_buffers_are_averaged_per_cluster_by_hand(self, registry):
        from fedbench import ClientUpdate

        agg = self._sim(registry)
        agg.clusters = [[0, 1, 2], [3, 4, 5, 6, 7]]
        agg._cluster_of = {i: k for k, members in enumerate(agg.clusters) for i in members}
        sizes = [1.0, 3.0, 4.0, 2.0, 2.0, 2.0, 2.0, 2.0]
        updates = [ClientUpdate(i, [], sizes[i], 0.0, [torch.full((3,), float(i))]) for i in range(8)]
        agg.collect_buffers(updates)
        # cluster 0: (0*1 + 1*3 + 2*4) / 8 = 11/8; cluster 1: mean of 3..7 with equal weights = 5
        torch.testing.assert_close(agg.cluster_buffers[0][0], torch.full((3,), 11 / 8))
        torch.testing.assert_close(agg.cluster_buffers[1][0], torch.full((3,), 5.0))
        assert [float(agg.buffers_for(c)[0][0]) for c in agg.clients] == [11 / 8] * 3 + [5.0] * 5
        agg.models = [agg.models[0]] * 2
        assert all(agg.instructions(0, 0.1, c).buffers is agg.buffers_for(c) for c in agg.clients)  # sent in the record

    def test_members_share_statistics_after_a_round_and_both_engines_agree(self, registry):
        seq, vec = self._sim(registry), self._sim(registry, "vectorized")
        for r in range(2):
            seq.fit_round(r), vec.fit_round(r)
        for agg in (seq, vec):
            agg.evaluate()  # each client takes its cluster's buffers from its EvaluateIns
            for members in agg.clusters:
                first = agg.clients[members[0]].buffers
                for i in members[1:]:
                    for a, b in zip(first, agg.clients[i].buffers):
                        torch.testing.assert_close(a, b, rtol=0, atol=0)
        for cs, cv in zip(seq.clients, vec.clients):
            for a, b in zip(cs.buffers, cv.buffers):
                torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
        for a, b in zip(seq.evaluate(), vec.evaluate()):
            assert b.test_acc == pytest.approx(a.test_acc)


class TestShakespeareRoles:
    """A: LEAF's preprocess_shakespeare.py writes one line per speech to by_play_and_character/ROLE.txt;
    data/shakespeare/generate_data.py:50-73 cuts by lines (its 1 - 0.8 quirk), and a role is a client only
    when both its train and its test text are longer than 80 characters (datasets.py:303-309)."""

    @staticmethod
    def write(root, roles):
        folder = root / "shakespeare" / "raw_data" / "by_play_and_character"
        folder.mkdir(parents=True)
        for name, text in roles.items():
            (folder / f"{name}.txt").write_text(text)

    def test_the_line_cut_and_its_quirk_by_hand(self):
        from fedbench_plugins.datasets.leaf import authors_role_split

        ten = "".join(f"line {i}\n" for i in range(10))
        # int((1 - 0.8) * 10) = int(1.9999999999999996) = 1 test line, not 2
        assert authors_role_split(ten) == (" ".join(f"line {i}" for i in range(9)), "line 9")
        five = "".join(f"l{i}\n" for i in range(5))
        assert authors_role_split(five) == ("l0 l1 l2 l3", "l4")  # max(1, int(0.99...)) = 1
        seven = "".join(f"l{i}\n" for i in range(7))
        assert authors_role_split(seven) == ("l0 l1 l2 l3 l4 l5", "l6")  # int(1.4) = 1
        # runs of two or more spaces become one; a last line without its newline is dropped, as [:-1] drops it
        assert authors_role_split("a   b\nc  d\ne\nf") == ("a b c d", "e")

    def test_which_roles_are_clients_and_their_windows(self, tmp_path):
        from fedbench_plugins.datasets.leaf import VOCAB, load_shakespeare

        line = "x" * 40  # 40 characters a line
        roles = {
            # 10 lines: 9 train lines (9 * 40 + 8 spaces = 368 characters), 1 test line (40): dropped (test <= 80)
            "A_ONE_TEST_LINE": (line + "\n") * 10,
            # 15 lines: int(0.19999 * 15) = 2 test lines (81 characters: one window), 13 train (13 * 40 + 12 = 532)
            "B_KEPT": (line + "\n") * 13 + (line + "\n") + ("y" * 40 + "\n"),
            # 20 lines of 30: int(0.19999 * 20) = 3 test lines, not 4 (3 * 30 + 2 = 92 characters, 12 windows),
            # 17 train lines (17 * 30 + 16 = 526 characters, 446 windows)
            "C_KEPT": ("z" * 30 + "\n") * 20,
            "D_SHORT": "tiny\n" * 3,  # dropped: nothing near 80 characters
        }
        self.write(tmp_path, roles)
        data = load_shakespeare(tmp_path)
        assert data.n_clients == 2
        by_size = sorted((c.n_train, c.n_test) for c in (data.client(0), data.client(1)))
        assert by_size == [(526 - 80, 92 - 80), (532 - 80, 81 - 80)]
        b = next(data.client(i) for i in range(2) if data.client(i).n_test == 1)
        expected = [VOCAB.index(ch) for ch in ("x" * 40 + " " + "y" * 40)]
        assert b.test_x[0].tolist() == expected[:80] and b.test_y[0].tolist() == expected[1:81]

    def test_json_is_the_fallback_and_says_why_its_count_differs(self, tmp_path):
        from fedbench_plugins.datasets.leaf import load_shakespeare
        from tests.test_leaf import make_shakespeare

        make_shakespeare(tmp_path)
        with pytest.warns(UserWarning, match="778"):
            load_shakespeare(tmp_path)


class TestSegmentSum:
    """The per-client sums of pooled rows (FedEM's M-step, the GPU evaluation): the same numbers every call."""

    @pytest.mark.parametrize("sequential", [True, False])
    def test_by_hand_on_both_paths(self, sequential):
        from fedbench.fl.data import segment_sum

        values = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]])
        torch.testing.assert_close(segment_sum(values, [1, 0, 3], sequential=sequential),
                                   torch.tensor([[1.0, 2.0], [0.0, 0.0], [15.0, 18.0]]))

    def test_the_running_sum_path_agrees_with_the_sequential_one(self):
        from fedbench.fl.data import segment_sum

        values = torch.rand(1000, 3, generator=torch.Generator().manual_seed(0))
        sizes = [0, 17, 400, 1, 582]
        torch.testing.assert_close(segment_sum(values, sizes, sequential=False), segment_sum(values, sizes, sequential=True),
                                   rtol=1e-6, atol=1e-6)
