"""A third-party plugin package, installed with pip, adds a method without touching fedbench."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import TINY_ARGS, run_cli

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "fedbench-median"


def _pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)


@pytest.fixture(scope="module")
def installed_example():
    proc = _pip("install", "--no-deps", "--no-build-isolation", "-q", str(EXAMPLE))
    assert proc.returncode == 0, proc.stderr
    yield
    _pip("uninstall", "-y", "-q", "fedbench-median")


def test_installed_plugin_is_listed(installed_example):
    proc = run_cli("list", "method")
    assert proc.returncode == 0, proc.stderr
    line = next(l for l in proc.stdout.splitlines() if l.strip().startswith("fedmedian"))
    assert "fedbench-median" in line and "median" in line


def test_median_of_three_hand_computed():
    sys.path.insert(0, str(EXAMPLE))
    try:
        from fedbench_median import coordinate_median
    finally:
        sys.path.pop(0)
    import torch

    out = coordinate_median([torch.tensor([1.0, 5.0]), torch.tensor([3.0, -1.0]), torch.tensor([2.0, 0.0])])
    assert out.tolist() == [2.0, 0.0]
    assert coordinate_median([torch.tensor([1.0]), torch.tensor([4.0])]).tolist() == [2.5]


def test_installed_plugin_runs_and_one_client_equals_fedavg(installed_example, tmp_path):
    db = tmp_path / "r.sqlite"
    runs = [
        ["--method", "fedavg", "--set", "dataset.n_clients=1"],
        ["--method", "fedmedian", "--set", "dataset.n_clients=1"],
        ["--method", "fedavg"],
        ["--method", "fedmedian"],
    ]
    for extra in runs:
        proc = run_cli(
            "run", "--dataset", "synthetic", *TINY_ARGS, *extra, "--rounds", "3", "--seed", "2",
            "--results", str(db), "--no-progress",
        )
        assert proc.returncode == 0, proc.stderr
    df = pd.read_csv(io.StringIO(run_cli("report", "--results", str(db), "--format", "csv").stdout))
    assert len(df) == 4 and set(df.method) == {"fedavg", "fedmedian"}
    one = df[df.bytes_sent == df.bytes_sent.min()].set_index("method")  # the 1-client federations
    assert one.loc["fedmedian", "test_acc"] == one.loc["fedavg", "test_acc"]  # median of one = mean of one
    assert one.loc["fedmedian", "train_loss"] == one.loc["fedavg", "train_loss"]
    many = df[df.bytes_sent == df.bytes_sent.max()].set_index("method")
    assert many.loc["fedmedian", "train_loss"] != many.loc["fedavg", "train_loss"]


def test_the_example_passes_the_conformance_check_in_its_own_test(installed_example):
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "test_fedbench_median.py")],
                          capture_output=True, text=True, cwd=EXAMPLE)
    assert proc.returncode == 0 and "1 passed" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-2000:]
