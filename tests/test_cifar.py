"""CIFAR loaders on small files written in torchvision's exact python-pickle format."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from fedbench.errors import DataError
from fedbench_plugins.datasets.cifar import LAYOUT, load, read_batches
from tests.conftest import run_cli


def make_cifar(root, name="cifar10", per_file=30, seed=0):
    folder, files, label_key, n_classes = LAYOUT[name]
    (root / folder).mkdir(parents=True)
    rng = np.random.default_rng(seed)
    all_x, all_y = [], []
    for f in files:
        x = rng.integers(0, 256, size=(per_file, 3072), dtype=np.uint8)
        y = (np.arange(per_file) % n_classes).tolist()
        batch = {b"batch_label": f.encode(), b"data": x, label_key: y, b"filenames": [b"x.png"] * per_file}
        if name == "cifar100":
            batch[b"coarse_labels"] = [v // 5 for v in y]
        with open(root / folder / f, "wb") as fh:
            pickle.dump(batch, fh)
        all_x.append(x)
        all_y += y
    return np.concatenate(all_x), np.array(all_y)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_batches_are_read_in_layout_order(tmp_path, name):
    x_raw, y_raw = make_cifar(tmp_path, name)
    x, y, coarse = read_batches(name, tmp_path)
    assert (coarse is None) == (name == "cifar10")
    if coarse is not None:
        assert coarse.tolist() == (y // 5).tolist()
    assert x.shape == (len(y_raw), 3, 32, 32) and x.dtype == torch.uint8  # floats only after the split
    torch.testing.assert_close(x[3], torch.from_numpy(x_raw[3].reshape(3, 32, 32)))
    assert y.tolist() == y_raw.tolist()


def test_pooled_and_partitioned(tmp_path):
    make_cifar(tmp_path, "cifar10", per_file=40)
    data = load("cifar10", tmp_path, {"n_clients": 6, "partitioner": "iid"})
    assert data.n_clients == 6 and data.num_classes == 10 and data.input_shape == (3, 32, 32)
    assert int(data.train_sizes().sum() + data.test_sizes().sum()) == 240


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(DataError, match=r"missing data_batch_1.*download=True.*--data-root"):
        read_batches("cifar10", tmp_path)
    make_cifar(tmp_path, "cifar10")
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as fh:
        pickle.dump({b"data": np.zeros((2, 10), dtype=np.uint8), b"labels": [0, 1]}, fh)
    with pytest.raises(DataError, match="expected N x 3072"):
        read_batches("cifar10", tmp_path)


def test_cifar10_through_the_cli_with_the_paper_split(tmp_path):
    make_cifar(tmp_path, "cifar10", per_file=120)
    proc = run_cli(
        "run", "--dataset", "cifar10", "--method", "fedavg", "--rounds", "1", "--data-root", str(tmp_path),
        "--set", "dataset.n_clients=8", "--set", "dataset.min_size=0", "--results", str(tmp_path / "r.sqlite"), "--no-progress",
    )
    assert proc.returncode == 0, proc.stderr
    assert "cifar10 / fedavg / seed 0" in proc.stdout and "Conv2d layers run faster one client at a time" in proc.stdout


def test_cifar100_defaults_to_the_papers_pachinko_split(tmp_path):
    make_cifar(tmp_path, "cifar100", per_file=500)  # 1,000 samples, 20 coarse x 5 fine labels
    data = load("cifar100", tmp_path, {"n_clients": 10, "partitioner": "pachinko", "alpha": 0.4, "beta": 10.0, "samples_per_client": 90})
    sizes = (data.train_sizes() + data.test_sizes()).tolist()
    assert data.n_clients == 10 and sizes == [90] * 10 and data.num_classes == 100


def test_fedbn_with_mobilenet_end_to_end(tmp_path):
    # a BatchNorm model through the CLI: per-client statistics, FedBN's local BN layers, the sequential engine
    make_cifar(tmp_path, "cifar10", per_file=16)
    proc = run_cli(
        "run", "--dataset", "cifar10", "--method", "fedbn", "--rounds", "2", "--data-root", str(tmp_path),
        "--set", "model=mobilenet_v2", "--set", "model.width_mult=0.25", "--set", "dataset.n_clients=3",
        "--set", "dataset.partitioner=iid", "--set", "batch_size=8", "--results", str(tmp_path / "r.sqlite"), "--no-progress",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "cifar10 / fedbn / seed 0" in proc.stdout and "done after 2 rounds" in proc.stdout and "engine: sequential (chosen for speed: Conv2d" in proc.stdout


@pytest.mark.slow  # 11 s: two fresh processes each training MobileNetV2
def test_mobilenet_runs_give_the_same_numbers_in_every_process(tmp_path):
    """MobileNetV2's dropout draws from torch's global generator: seeded per (seed, round, client), a run gives
    the same numbers whatever the process did before (here: under two Python hash seeds, which used to differ)."""

    make_cifar(tmp_path, "cifar10", per_file=16)
    outs = []
    for hash_seed in ("0", "1"):
        proc = run_cli(
            "run", "--dataset", "cifar10", "--method", "local", "--rounds", "2", "--data-root", str(tmp_path),
            "--set", "model=mobilenet_v2", "--set", "model.width_mult=0.25", "--set", "dataset.n_clients=3",
            "--set", "dataset.partitioner=iid", "--set", "batch_size=8", "--results", str(tmp_path / f"r{hash_seed}.sqlite"),
            "--no-progress", env={"PYTHONHASHSEED": hash_seed},
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        outs.append(proc.stdout.split("]: ", 1)[1].split(" in ")[0] + proc.stdout.split("test_acc", 1)[1])
    assert outs[0] == outs[1]
