"""FEMNIST and Shakespeare from small files in LEAF's exact json format, naturally partitioned."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedbench.errors import DataError
import torch

from fedbench_plugins.datasets.leaf import VOCAB, check, encode, load_femnist, load_shakespeare
from tests.conftest import run_cli


def make_leaf(root, writers=20, per_writer=(5, 30), files=2, seed=0):
    rng = np.random.default_rng(seed)
    folder = root / "femnist" / "all_data"
    folder.mkdir(parents=True)
    users = [f"f{i:04d}_{i % 7}" for i in range(writers)]
    sizes = {}
    for k in range(files):
        part = users[k::files]
        doc = {"users": part, "num_samples": [], "user_data": {}}
        for u in part:
            n = int(rng.integers(*per_writer))
            sizes[u] = n
            doc["num_samples"].append(n)
            doc["user_data"][u] = {"x": rng.random((n, 784)).round(3).tolist(), "y": rng.integers(0, 62, n).tolist()}
        (folder / f"all_data_{k}.json").write_text(json.dumps(doc))
    return sizes


def test_natural_partition_and_fraction(tmp_path):
    sizes = make_leaf(tmp_path)
    data = load_femnist(tmp_path, fraction=0.5, seed=1)
    assert data.n_clients == 10 and data.input_shape == (1, 28, 28) and data.num_classes == 62
    totals = sorted((data.train_sizes() + data.test_sizes()).tolist())
    assert all(t in sizes.values() for t in totals)  # every client is one whole writer
    again = load_femnist(tmp_path, fraction=0.5, seed=1)
    assert (again.train_y == data.train_y).all()
    full = load_femnist(tmp_path, fraction=1.0)
    assert int(full.train_sizes().sum() + full.test_sizes().sum()) == sum(sizes.values())


def test_missing_and_malformed(tmp_path):
    with pytest.raises(DataError, match="no LEAF json files"):
        load_femnist(tmp_path)
    (tmp_path / "femnist" / "all_data").mkdir(parents=True)
    (tmp_path / "femnist" / "all_data" / "x.json").write_text('{"users": ["a"]}')
    with pytest.raises(DataError, match="not a LEAF json file"):
        load_femnist(tmp_path)


def test_femnist_through_the_cli(tmp_path):
    make_leaf(tmp_path, writers=10)
    proc = run_cli(
        "run", "--dataset", "femnist", "--method", "fedem", "--rounds", "2", "--data-root", str(tmp_path),
        "--set", "dataset.fraction=1.0", "--set", "model=mlp", "--set", "model.hidden=16", "--results", str(tmp_path / "r.sqlite"), "--no-progress",
    )
    assert proc.returncode == 0, proc.stderr
    assert "femnist / fedem / seed 0" in proc.stdout and "done after 2 rounds" in proc.stdout


def make_shakespeare(root, roles=6, width=80, seed=0, lengths=None):
    """LEAF's shakespeare all_data json: per role, 80-char windows over its text and the next character
    (roles of 480+ characters: long enough to have windows on both sides of the authors' 80/20 cut)."""
    rng = np.random.default_rng(seed)
    folder = root / "shakespeare" / "data" / "all_data"
    folder.mkdir(parents=True)
    doc = {"users": [], "hierarchies": [], "num_samples": [], "user_data": {}}
    texts = {}
    for r in range(roles):
        user = f"THE_TRAGEDY_OF_X_ROLE{r}"
        size = lengths[r] if lengths is not None else width + 400 + 40 * r
        text = "".join(rng.choice(list("abcde fgh,.\nXYZ"), size=size))
        xs = [text[i : i + width] for i in range(len(text) - width)]
        ys = [text[i + width] for i in range(len(text) - width)]
        doc["users"].append(user)
        doc["hierarchies"].append("THE_TRAGEDY_OF_X")
        doc["num_samples"].append(len(ys))
        doc["user_data"][user] = {"x": xs, "y": ys}
        texts[user] = text
    (folder / "all_data.json").write_text(json.dumps(doc))
    return texts


class TestShakespeare:
    def test_leafs_task_windows_split(self, tmp_path):
        texts = make_shakespeare(tmp_path)
        data = load_shakespeare(tmp_path, split="windows", targets="next", class_weights="none")
        assert data.n_clients == 6 and data.input_shape == (80,) and data.num_classes == 100 == len(VOCAB)
        assert data.train_x.dtype == torch.uint8 and data.train_y.dtype == torch.long and data.class_weights is None
        first = sorted(texts)[0]
        text, n = texts[first], len(texts[first]) - 80
        n_test = round(n * 0.2)
        c = data.client(0)
        assert c.n_train == n - n_test and c.n_test == n_test
        # train is the role's first windows in text order, test its last ones
        assert c.train_x[0].tolist() == encode(text[:80]).tolist() and c.train_y[0].item() == VOCAB.index(text[80])
        assert c.test_x[-1].tolist() == encode(text[n - 1 : n - 1 + 80]).tolist() and c.test_y[-1].item() == VOCAB.index(text[-1])

    def test_authors_protocol_every_position_disjoint_text_and_short_roles_dropped(self, tmp_path):
        # role 0: 480 characters; role 1: 300 (too short for a test window after the cut); role 2: 1000
        texts = make_shakespeare(tmp_path, roles=3, lengths=[480, 300, 1000])
        data = load_shakespeare(tmp_path)
        assert data.n_clients == 2  # the 300-character role has no window wholly in its last 20 %
        for c, name in zip([data.client(0), data.client(1)], [sorted(texts)[0], sorted(texts)[2]]):
            text = texts[name]
            length, n = len(text), len(text) - 80
            cut = length - int(0.2 * length)  # 480 -> 384; 1000 -> 800
            assert c.n_train == cut - 80 and c.n_test == n - cut
            # a window's labels are the characters after each of its positions
            assert c.train_y.shape == (cut - 80, 80) and c.train_y[0].tolist() == encode(text[1:81]).tolist()
            # the last train window's last label is the last train character; the first test window starts at the cut
            assert c.train_y[-1, -1].item() == VOCAB.index(text[cut - 1])
            assert c.test_x[0].tolist() == encode(text[cut : cut + 80]).tolist()
            assert c.test_y[-1].tolist() == encode(text[-80:]).tolist()
        # the authors' class weights: listed characters at 8x their value, the rest at 8
        w = data.class_weights
        assert w[VOCAB.index(" ")].item() == pytest.approx(8 * 0.042500849608091536)
        assert w[VOCAB.index("e")].item() == pytest.approx(8 * 0.13455606165058104) and w[VOCAB.index("X")].item() == 8.0

    def test_a_next_character_model_on_window_labels_is_refused_in_one_line(self, tmp_path):
        make_shakespeare(tmp_path, roles=2)
        proc = run_cli(
            "run", "--dataset", "shakespeare", "--method", "fedavg", "--rounds", "1", "--data-root", str(tmp_path),
            "--set", "model.hidden=8", "--set", "model.positions=last", "--results", str(tmp_path / "r.sqlite"), "--no-progress",
        )
        assert proc.returncode != 0  # the run is stored as failed with the reason, and the sweep says so
        assert "gives logits of shape (100,) per sample but data set 'shakespeare' needs (80, 100)" in proc.stdout + proc.stderr

    def test_encoding_and_errors(self, tmp_path):
        assert encode("a\n ").tolist() == [VOCAB.index("a"), VOCAB.index("\n"), VOCAB.index(" ")]
        assert encode("\u00e9\u2014x\x7f").tolist() == [VOCAB.index(" "), VOCAB.index(" "), VOCAB.index("x"), VOCAB.index(" ")]
        assert [VOCAB[i] for i in encode(VOCAB)] == list(VOCAB)  # every character of the vocabulary round-trips
        assert "no LEAF json files" in check("shakespeare", tmp_path) and "shakespeare/data/all_data" in check("shakespeare", tmp_path)
        make_shakespeare(tmp_path)
        assert check("shakespeare", tmp_path) is None
        with pytest.raises(DataError, match="min_samples"):
            load_shakespeare(tmp_path, min_samples=10_000)

    def test_through_the_cli_with_the_lstm(self, tmp_path):
        make_shakespeare(tmp_path, roles=3)
        proc = run_cli(
            "run", "--dataset", "shakespeare", "--method", "fedavg", "--rounds", "2", "--data-root", str(tmp_path),
            "--set", "model.hidden=8", "--set", "lr=0.5", "--results", str(tmp_path / "r.sqlite"), "--no-progress",
        )
        assert proc.returncode == 0, proc.stderr
        assert "shakespeare / fedavg / seed 0" in proc.stdout and "done after 2 rounds" in proc.stdout


def test_femnist_converts_only_the_writers_it_keeps(tmp_path, monkeypatch):
    """Writers are chosen from their counts first; only the kept ones become arrays (peak memory), a writer split
    over two files is one client, and the data are those of converting every writer and sampling after."""
    import fedbench_plugins.datasets.leaf as leaf

    make_leaf(tmp_path, writers=20, files=2)
    folder = tmp_path / "femnist" / "all_data"
    doc = json.loads((folder / "all_data_1.json").read_text())  # f0000_0 (file 0) gets more samples in file 1
    doc["users"].append("f0000_0")
    doc["user_data"]["f0000_0"] = {"x": np.full((4, 784), 0.5).tolist(), "y": [1, 2, 3, 4]}
    (folder / "all_data_1.json").write_text(json.dumps(doc))
    converted = []
    real = leaf._femnist_arrays
    monkeypatch.setattr(leaf, "_femnist_arrays", lambda x, y: converted.append(len(y)) or real(x, y))
    data = load_femnist(tmp_path, fraction=0.25, seed=3)
    assert data.n_clients == 5 and sum(converted) == int(data.train_sizes().sum() + data.test_sizes().sum())

    # the same clients and samples as reading every writer and choosing among them afterwards
    everyone = leaf.read_leaf(leaf.find_leaf_files("femnist", tmp_path), real)
    counts = {u: sum(len(c) for c in ys) for u, (_, ys) in everyone.items()}
    assert leaf.count_leaf(leaf.find_leaf_files("femnist", tmp_path)) == counts and counts["f0000_0"] > 4
    kept = leaf._keep_users({u: n for u, n in counts.items() if n > 2}, 0.25, np.random.default_rng(3), rounding=int)
    assert sorted((data.train_sizes() + data.test_sizes()).tolist()) == sorted(counts[u] for u in kept)
