"""Every (data set, method) cell of the paper suite runs, on format-exact stand-in files (slow).

The stand-ins come from ``benchmarks/standin_data.py`` (torchvision's and LEAF's formats) at a
small scale; the real-size run of the same loaders and cells is ``benchmarks/paper_cost.py``."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]

#: per data set: the stand-in scale and the settings that make one round small enough for a test
CELLS = {
    "cifar10": (0.02, ["dataset.n_clients=10"]),
    "cifar100": (0.02, ["dataset.n_clients=10", "dataset.samples_per_client=60"]),
    "emnist": (0.01, ["dataset.n_clients=10"]),
    "femnist": (0.05, []),
    "shakespeare": (0.0005, []),
}


@pytest.mark.slow
def test_every_paper_cell_runs_one_round_on_standin_files(tmp_path):
    data = tmp_path / "standin"
    for name, (scale, _) in CELLS.items():
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "standin_data.py"), "--root", str(data),
                        "--only", name, "--scale", str(scale)], check=True, capture_output=True, timeout=600)
    db = tmp_path / "paper.sqlite"
    for name, (_, settings) in CELLS.items():
        sets = [x for s in ["rounds=1", "eval_every=1", *settings] for x in ("--set", s)]
        proc = run_cli("run", "--suite", "paper", "--datasets", name, "--seed", "1", *sets,
                       "--data-root", str(data), "--results", str(db), "--no-progress")
        assert proc.returncode == 0, proc.stderr[-3000:]
    rows = sqlite3.connect(db).execute("SELECT dataset, method, status FROM runs").fetchall()
    assert len(rows) == 5 * 7 and {s for *_, s in rows} == {"done"}, rows
