"""FEMNIST and Shakespeare from small files in LEAF's exact json format, naturally partitioned."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedbench.errors import DataError
import torch

from fedbench_plugins.leaf import VOCAB, check, encode, load_femnist, load_shakespeare
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


def make_shakespeare(root, roles=6, width=80, seed=0):
    """LEAF's shakespeare all_data json: per role, 80-char windows over its lines and the next character."""
    rng = np.random.default_rng(seed)
    folder = root / "shakespeare" / "data" / "all_data"
    folder.mkdir(parents=True)
    doc = {"users": [], "hierarchies": [], "num_samples": [], "user_data": {}}
    texts = {}
    for r in range(roles):
        user = f"THE_TRAGEDY_OF_X_ROLE{r}"
        text = "".join(rng.choice(list("abcde fgh,.\nXYZ"), size=width + 10 + 5 * r))
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
    def test_windows_next_char_and_temporal_split(self, tmp_path):
        texts = make_shakespeare(tmp_path)
        data = load_shakespeare(tmp_path)
        assert data.n_clients == 6 and data.input_shape == (80,) and data.num_classes == 100 == len(VOCAB)
        assert data.train_x.dtype == torch.uint8 and data.train_y.dtype == torch.long
        first = sorted(texts)[0]
        text, n = texts[first], len(texts[first]) - 80
        n_test = round(n * 0.2)
        c = data.client(0)
        assert c.n_train == n - n_test and c.n_test == n_test
        # train is the role's first windows in text order, test its last ones
        assert c.train_x[0].tolist() == encode(text[:80]).tolist() and c.train_y[0].item() == VOCAB.index(text[80])
        assert c.test_x[-1].tolist() == encode(text[n - 1 : n - 1 + 80]).tolist() and c.test_y[-1].item() == VOCAB.index(text[-1])

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
