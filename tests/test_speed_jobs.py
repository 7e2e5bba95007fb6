"""benchmarks/speed_jobs.py: the same runs at several --jobs, with runs per hour and the process tree's memory."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import benchmark_module

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def speed_jobs():
    return benchmark_module("speed_jobs")


def test_tree_rss_counts_the_workers_below_a_process(speed_jobs):
    """A parent that starts two children holding 100 MB each: the tree's resident memory counts all three."""
    code = ("import subprocess, sys, time\n"
            "kid = 'x = bytearray(100 * 2**20)\\nfor i in range(0, len(x), 4096): x[i] = 1\\nimport time; time.sleep(30)'\n"
            "ps = [subprocess.Popen([sys.executable, '-c', kid]) for _ in range(2)]\ntime.sleep(30)\n")
    parent = subprocess.Popen([sys.executable, "-c", code])
    try:
        seen = 0.0
        for _ in range(100):  # until both children have touched their pages
            time.sleep(0.1)
            seen = speed_jobs.tree_rss_mb(parent.pid)
            if seen >= 200:
                break
        assert seen >= 200  # one child alone holds 100 MB and the parent far less
    finally:
        subprocess.run(["pkill", "-P", str(parent.pid)])
        parent.kill()
        parent.wait()


def test_the_same_runs_at_two_settings_with_runs_per_hour(tmp_path):
    suite = tmp_path / "tiny.toml"
    suite.write_text('description = "tiny"\nmethods = ["fedavg"]\nseeds = [1]\n[set]\nrounds = 1\neval_every = 1\n'
                     "[datasets.synthetic]\nn_clients = 4\nn_test = 20\ndim = 8\n")
    out = tmp_path / "jobs.md"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "speed_jobs.py"), "--suite", str(suite),
                           "--seeds", "1-2", "--jobs-list", "1,2", "--devices", "cpu", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split("|")[1:-1] for line in out.read_text().splitlines() if line.startswith("| ") and "jobs" not in line]
    assert [(int(r[0]), int(r[1])) for r in rows] == [(1, 2), (2, 2)]  # both settings finished both seeds
    for r in rows:
        wall, per_hour, host = float(r[2]), float(r[3].replace(",", "")), float(r[5].replace(",", ""))
        assert 2 * 3600 / (wall + 0.05) - 0.5 <= per_hour <= 2 * 3600 / (wall - 0.05) + 0.5  # wall printed to 0.1 s
        assert host > 50  # at least the CLI's interpreter with torch
        assert r[6].strip() == ""  # no GPU named: no GPU column
