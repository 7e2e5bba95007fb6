"""MNIST / Fashion-MNIST IDX loaders on small files written in the exact on-disk format."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from fedbench.errors import DataError
from fedbench_plugins.datasets.idx import EMNIST_FILES, MNIST_FILES as FILES, check, load_idx, read_idx
from tests.conftest import run_cli


def write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">i", d) for d in array.shape)
    blob = header + array.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(blob))
    else:
        path.write_bytes(blob)


def make_mnist_like(folder: Path, n_train: int = 120, n_test: int = 40, gz: bool = True, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    images = rng.integers(0, 256, size=(n_train + n_test, 28, 28))
    labels = np.arange(n_train + n_test) % 10
    write_idx(folder / FILES[0], images[:n_train], gz)
    write_idx(folder / FILES[1], labels[:n_train], gz)
    write_idx(folder / FILES[2], images[n_train:], gz)
    write_idx(folder / FILES[3], labels[n_train:], gz)
    return images, labels


class TestReadIdx:
    @pytest.mark.parametrize("gz", [True, False])
    def test_round_trip(self, tmp_path, gz):
        arr = np.arange(2 * 3 * 4).reshape(2, 3, 4) % 256
        write_idx(tmp_path / "a-idx3-ubyte", arr, gz)
        got = read_idx(tmp_path / ("a-idx3-ubyte" + (".gz" if gz else "")))
        assert np.array_equal(got, arr)

    def test_bad_magic_and_truncation(self, tmp_path):
        (tmp_path / "bad").write_bytes(b"\x00\x00\x0d\x01\x00\x00\x00\x02ab")
        with pytest.raises(DataError, match="not an unsigned-byte IDX file"):
            read_idx(tmp_path / "bad")
        (tmp_path / "short").write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">i", 5) + b"abc")
        with pytest.raises(DataError, match="truncated"):
            read_idx(tmp_path / "short")


class TestLoaders:
    def test_torchvision_layout_is_pooled_and_partitioned(self, tmp_path):
        images, labels = make_mnist_like(tmp_path / "MNIST" / "raw")
        data = load_idx("mnist", tmp_path, {"n_clients": 4, "partitioner": "iid"})
        assert data.n_clients == 4 and data.input_shape == (1, 28, 28) and data.num_classes == 10
        assert int(data.train_sizes().sum() + data.test_sizes().sum()) == 160
        pooled = data.decode(torch.cat([data.train_x, data.test_x])).flatten(1).sum(1).sort().values
        expected = torch.from_numpy(images.reshape(160, -1).astype(np.float32) / 255.0).sum(1).sort().values
        torch.testing.assert_close(pooled, expected)
        assert sorted(torch.cat([data.train_y, data.test_y]).tolist()) == sorted(labels.tolist())

    def test_reading_only_the_kept_images_equals_keeping_them_from_the_whole_pool(self, tmp_path):
        from fedbench_plugins.datasets.pooled import federate_images

        images, labels = make_mnist_like(tmp_path / "MNIST" / "raw", n_train=300, n_test=100)
        params = {"n_clients": 4, "partitioner": "iid", "fraction": 0.3}
        read = load_idx("mnist", tmp_path, dict(params))  # gathers the kept 30 % from the files, passes kept=
        whole = federate_images(torch.from_numpy(images.astype(np.uint8)).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)),
                                10, dict(params))  # the whole pool, the kept samples drawn inside
        assert read.n_clients == whole.n_clients == 4 and len(read.train_y) + len(read.test_y) == 120
        for name in ("train_x", "train_y", "test_x", "test_y", "train_offsets"):
            assert torch.equal(getattr(read, name), getattr(whole, name)), name

    def test_flat_layout_uncompressed(self, tmp_path):
        make_mnist_like(tmp_path / "fashion-mnist", gz=False)
        assert load_idx("fashion-mnist", tmp_path, {"n_clients": 2, "partitioner": "iid"}).n_clients == 2

    def test_missing_files_name_places_and_fix(self, tmp_path):
        with pytest.raises(DataError) as err:
            load_idx("mnist", tmp_path, {})
        msg = str(err.value)
        assert "train-images-idx3-ubyte" in msg and str(tmp_path / "MNIST" / "raw") in msg and "download=True" in msg

    def test_end_to_end_through_the_cli(self, tmp_path):
        make_mnist_like(tmp_path / "MNIST" / "raw", n_train=300, n_test=100)
        proc = run_cli(
            "run", "--dataset", "mnist", "--method", "fedavg", "--rounds", "2", "--data-root", str(tmp_path),
            "--set", "dataset.n_clients=5", "--set", "dataset.partitioner=iid", "--set", "model.hidden=16",
            "--results", str(tmp_path / "r.sqlite"), "--no-progress",
        )
        assert proc.returncode == 0, proc.stderr
        assert "mnist / fedavg / seed 0" in proc.stdout and "done after 2 rounds" in proc.stdout


class TestEmnist:
    def write(self, folder: Path, n: int = 1240, gz: bool = False) -> np.ndarray:
        rng = np.random.default_rng(3)
        folder.mkdir(parents=True, exist_ok=True)
        images = rng.integers(0, 256, size=(n, 28, 28))
        labels = np.arange(n) % 62
        half = n // 2
        for name, arr in zip(EMNIST_FILES, (images[:half], labels[:half], images[half:], labels[half:])):
            write_idx(folder / name, arr, gz)
        return labels

    def test_byclass_files_with_the_paper_defaults(self, tmp_path):
        labels = self.write(tmp_path / "EMNIST" / "raw")
        assert check("emnist", tmp_path) is None
        data = load_idx("emnist", tmp_path, {"n_clients": 4, "fraction": 0.5, "partitioner": "label_groups", "n_groups": 62, "alpha": 0.4, "min_size": 0})
        assert data.num_classes == 62 and data.input_shape == (1, 28, 28)
        assert int(data.train_sizes().sum() + data.test_sizes().sum()) == 620  # the 10 % of the paper, here 50 %
        kept = torch.cat([data.train_y, data.test_y]).numpy()
        assert set(kept.tolist()) <= set(labels.tolist()) and len(set(kept.tolist())) == 62

    def test_fraction_is_deterministic_and_validated(self, tmp_path):
        self.write(tmp_path / "EMNIST" / "raw" / "gzip", gz=True)
        opts = {"n_clients": 2, "fraction": 0.25, "partitioner": "iid"}
        a, b = load_idx("emnist", tmp_path, opts), load_idx("emnist", tmp_path, opts)
        assert torch.equal(a.train_x, b.train_x) and int(a.train_sizes().sum() + a.test_sizes().sum()) == 310
        with pytest.raises(DataError, match="fraction must be in"):
            load_idx("emnist", tmp_path, {**opts, "fraction": 0.0})

    def test_one_missing_file_is_named_alone_with_its_folder(self, tmp_path):
        folder = tmp_path / "MNIST" / "raw"
        make_mnist_like(folder)
        (folder / (FILES[3] + ".gz")).unlink()
        with pytest.raises(DataError) as err:
            load_idx("mnist", tmp_path, {})
        msg = str(err.value)
        assert msg.startswith(f"mnist: {FILES[3]} (optionally .gz) missing from {folder}, which holds the other 3")
        assert FILES[0] not in msg and "\n" not in msg

    def test_missing_files_line(self, tmp_path):
        msg = check("emnist", tmp_path)
        assert msg is not None and "emnist-byclass-train-images-idx3-ubyte" in msg and "split='byclass'" in msg
        assert "\n" not in msg


@pytest.mark.slow
def test_debian_fashion_mnist_when_present():
    if not Path("/usr/share/datasets/fashion-mnist").is_dir():
        pytest.skip("dataset-fashion-mnist is not installed (apt install dataset-fashion-mnist)")
    data = load_idx("fashion-mnist", Path("/nonexistent"), {"n_clients": 10, "partitioner": "iid"})
    assert int(data.train_sizes().sum() + data.test_sizes().sum()) == 70_000
