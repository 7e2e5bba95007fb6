"""The Ray executor on a real two-node cluster started here, whose nodes cannot see the driver's results folder."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_idx import make_mnist_like

SUITE = """methods = ["fedavg", "fedprox"]
seeds = [1, 2]
[set]
rounds = 4
eval_every = 2
[datasets.synthetic]
n_clients = 8
n_test = 40
dim = 10
[datasets.mnist]
n_clients = 4
partitioner = "iid"
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def cluster(tmp_path):
    """A head node with no CPUs (so every task runs on the second node) and a second node with one."""
    pytest.importorskip("ray")
    ray_cli = Path(sys.executable).with_name("ray")
    if not ray_cli.exists() or os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs the ray command, root and unshare (the driver gets a private mount namespace)")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    port = _free_port()
    address = f"127.0.0.1:{port}"
    common = ["--disable-usage-stats"]
    subprocess.run([ray_cli, "start", "--head", "--port", str(port), "--num-cpus", "0", "--include-dashboard", "false", *common],
                   check=True, capture_output=True, env=env, timeout=120)
    try:
        subprocess.run([ray_cli, "start", "--address", address, "--num-cpus", "1", *common],
                       check=True, capture_output=True, env=env, timeout=120)
        yield address, env
    finally:
        subprocess.run([ray_cli, "stop", "--force"], capture_output=True, env=env, timeout=120)


def test_a_sweep_on_two_nodes_that_see_neither_results_nor_data_lands_whole_in_the_driver_file(cluster, tmp_path):
    address, env = cluster
    suite = tmp_path / "s.toml"
    suite.write_text(SUITE)
    private = tmp_path / "private"
    private.mkdir()
    staging = tmp_path / "staging"
    make_mnist_like(staging / "MNIST" / "raw", n_train=200, n_test=80)
    # the driver alone sees its results folder and the data files: a tmpfs in its own mount namespace (the nodes
    # see an empty folder), the files moved into it (gone outside) before the sweep
    inner = (f"mount -t tmpfs tmpfs {private} && cp -r {staging} {private}/data && rm -r {staging} && cd {private} && "
             f"{sys.executable} -m fedbench run --suite {suite} --executor ray --address {address} --results r.sqlite "
             f"--data-root data --no-progress && {sys.executable} -m fedbench report --results r.sqlite")
    proc = subprocess.run(["unshare", "-m", "sh", "-c", inner], capture_output=True, text=True, env=env, timeout=600,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count(": done after 4 rounds") == 8, proc.stderr[-3000:]
    # report: both data sets, both methods, both seeds; the files' data set reached the node through Ray
    assert "| synthetic | " in proc.stdout and "| mnist | " in proc.stdout and "(n=2)" in proc.stdout
    assert "mnist loaded on the driver, shared with its runs through Ray's object store" in proc.stderr
    assert not any(private.iterdir()) and not staging.exists()  # outside the driver's namespace: no results, no data
