"""A third-party plugin package, installed with pip, adds a method without touching fedbench."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import TINY, run_cli

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "fedbench-fedavgm"
TINY_ARGS = [x for k, v in TINY.items() if k not in ("rounds", "eval_every") for x in ("--set", f"{k}={v}")]


def _pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def installed_example():
    proc = _pip("install", "--no-deps", "--no-build-isolation", "-q", str(EXAMPLE))
    assert proc.returncode == 0, proc.stderr
    yield
    _pip("uninstall", "-y", "-q", "fedbench-fedavgm")


def test_installed_plugin_is_listed(installed_example):
    proc = run_cli("list", "method")
    assert proc.returncode == 0, proc.stderr
    line = next(l for l in proc.stdout.splitlines() if l.strip().startswith("fedavgm"))
    assert "fedbench-fedavgm" in line and "server momentum" in line
    assert "aggregator.server_lr=1.0 aggregator.server_momentum=0.9" in proc.stdout


def test_installed_plugin_runs_and_zero_momentum_equals_fedavg(installed_example, tmp_path):
    db = tmp_path / "r.sqlite"
    common = ["--rounds", "3", "--seed", "2", "--results", str(db), "--no-progress", *TINY_ARGS]
    runs = [
        ["--method", "fedavg"],
        ["--method", "fedavgm", "--set", "aggregator.server_momentum=0.0"],
        ["--method", "fedavgm", "--set", "aggregator.server_momentum=0.9"],
    ]
    for extra in runs:
        proc = run_cli("run", "--dataset", "synthetic", *extra, *common)
        assert proc.returncode == 0, proc.stderr
    df = pd.read_csv(io.StringIO(run_cli("report", "--results", str(db), "--format", "csv").stdout))
    assert len(df) == 3 and set(df.method) == {"fedavg", "fedavgm"}
    fedavg = df[df.method == "fedavg"].iloc[0]
    m = df[df.method == "fedavgm"].sort_values("train_loss")
    zero = m.iloc[(m.train_loss - fedavg.train_loss).abs().argmin()]
    assert zero.train_loss == pytest.approx(fedavg.train_loss, abs=1e-5)
    assert zero.test_acc == pytest.approx(fedavg.test_acc, abs=1e-3)
    assert (m.train_loss - fedavg.train_loss).abs().max() > 1e-3  # momentum 0.9 really changes the run
