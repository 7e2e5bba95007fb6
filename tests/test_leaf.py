"""FEMNIST from small files in LEAF's exact json format, naturally partitioned by writer."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedbench.errors import DataError
from fedbench_plugins.leaf import load_femnist
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
        "--set", "dataset.fraction=1.0", "--set", "model.hidden=16", "--results", str(tmp_path / "r.sqlite"), "--no-progress",
    )
    assert proc.returncode == 0, proc.stderr
    assert "femnist / fedem / seed 0" in proc.stdout and "done after 2 rounds" in proc.stdout
