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


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _pids() -> list[int]:
    return [int(d.name) for d in Path("/proc").iterdir() if d.name.isdigit()]


@pytest.mark.slow  # 40 s: a three-node cluster, a node killed mid-sweep (benchmarks/faults.py --only ray measures it too)
def test_a_node_lost_mid_sweep_takes_no_run_with_it(tmp_path):
    """Three nodes: a head without CPUs (where the driver runs) and two of one CPU. The node that holds the
    driver's metrics queue is killed if it is not the head (it was, wherever Ray put the queue: the sweep then
    ended with 10 of 12 runs left running), else a worker node: every run must still end done in that sweep."""
    import signal
    import sqlite3
    import time

    pytest.importorskip("ray")
    ray_cli = Path(sys.executable).with_name("ray")
    if not ray_cli.exists():
        pytest.skip("needs the ray command")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    address = f"127.0.0.1:{_free_port()}"
    common = ["--disable-usage-stats"]
    subprocess.run([ray_cli, "start", "--head", "--port", address.split(":")[1], "--num-cpus", "0", "--include-dashboard",
                    "false", *common], check=True, capture_output=True, env=env, timeout=120)
    try:
        for k in (1, 2):
            subprocess.run([ray_cli, "start", "--address", address, "--num-cpus", "1", "--resources",
                            f'{{"lost_node_{k}": 1}}', *common], check=True, capture_output=True, env=env, timeout=120)
        suite = tmp_path / "s.toml"
        suite.write_text(SUITE.replace("rounds = 4", "rounds = 60").replace("seeds = [1, 2]", "seeds = [1, 2, 3]")
                         .split("[datasets.mnist]")[0])
        db = tmp_path / "r.sqlite"
        proc = subprocess.Popen([sys.executable, "-m", "fedbench", "run", "--suite", str(suite), "--executor", "ray",
                                 "--address", address, "--results", str(db), "--no-progress"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                cwd=Path(__file__).resolve().parents[1])
        raylets = {}
        deadline = time.monotonic() + 120
        queue = None
        while time.monotonic() < deadline and (queue is None or len(raylets) < 3):
            raylets = {p: _cmdline(p) for p in _pids() if "raylet/raylet" in _cmdline(p)}
            queue = next((p for p in _pids() if _cmdline(p).startswith("ray::_QueueActor")), None)
            time.sleep(0.2)
        assert queue is not None and len(raylets) == 3, (queue, raylets)
        head = next(p for p, c in raylets.items() if "lost_node_" not in c)
        holder = _parent(queue)
        doomed = holder if holder != head else next(p for p, c in raylets.items() if "lost_node_1," in c)
        while time.monotonic() < deadline:  # a run or two in: the node dies mid-sweep
            con = sqlite3.connect(db, timeout=30)
            try:
                if con.execute("SELECT count(*) FROM runs WHERE status = 'done'").fetchone()[0] >= 1:
                    break
            except sqlite3.OperationalError:
                pass
            finally:
                con.close()
            time.sleep(0.2)
        for p in [doomed, *[c for c in _pids() if _parent(c) == doomed]]:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        out, err = proc.communicate(timeout=600)
        con = sqlite3.connect(db)
        try:
            statuses = dict(con.execute("SELECT status, count(*) FROM runs GROUP BY status").fetchall())
        finally:
            con.close()
        assert statuses == {"done": 6}, (statuses, err[-3000:])
        assert holder == head  # the queue lived on the driver's node
    finally:
        subprocess.run([ray_cli, "stop", "--force"], capture_output=True, env=env, timeout=120)
