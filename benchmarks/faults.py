"""Fault injection: kill, interrupt and race real sweeps on one results store, then count what was lost.

    python benchmarks/faults.py [--kills 51] [--out results/faults.md]

Scenarios (each on a 24-run grid, ``--jobs 2``, real processes and signals):
``kill -9`` at random moments of the whole process group, of the parent alone,
and of one worker; one and two Ctrl-C (SIGINT to the group, as a terminal
sends it); two and three sweeps of the same suite at once on one store; a
``--force`` re-run killed mid-write; two sweeps at once, one in its own PID namespace (``unshare``,
root); a sweep stopped with SIGSTOP past the heartbeat's staleness while a second one runs, then continued;
two sweeps at once, one with its clock an hour ahead; the write lock held by another process for
``--lock-hold`` seconds (300) while a sweep runs. After the faults, one clean re-run
completes the store, and the store is audited: runs expected, done exactly
once, lost, computed twice (runs computed to their end by more than one attempt, without --force, whether
the second result was stored, diverged or discarded), extra attempts (every attempt beyond a run's first:
a kill or an interrupt that stopped one adds one; computing nothing twice), ``done`` with missing metrics, seconds from Ctrl-C to exit, and
worker processes still alive 5 s after the parent was killed.
Target: zero in every loss column, Ctrl-C to exit under 5 s, no process left.

    python benchmarks/faults.py --only ray [--out results/faults.md]

The cluster rows (``--executor ray``): a local Ray cluster started here (a head with no CPUs, two nodes
of one CPU each, so every task runs on a node that can be lost), a 12-run grid, and: ``kill -9`` of the
worker process running a task, repeatedly in one sweep; one node's raylet and its workers killed (the
node dies) mid-sweep; the driver killed with ``kill -9`` and the sweep started again; Ctrl-C on the
driver. Then one clean re-run on the same cluster, and the same audit. 'processes left' there counts
task workers still running a run 5 s after the driver ended. ``--only local`` runs the single-machine
rows alone; each part rewrites its own table in ``--out`` and keeps the other's.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SUITE = """
description = "fault injection grid"
methods = ["fedem", "fedavg", "local", "fedprox"]
seeds = [1, 2, 3]
[set]
rounds = 60
eval_every = 10
lr = [0.05, 0.1]
[datasets.synthetic]
n_clients = 20
n_test = 100
dim = 10
"""
N_RUNS = 24


def _n_evals() -> int:
    """Evaluations a finished run of the grid stores, by the store's own rule (round 0 included)."""
    from fedbench.fl.config import TrainConfig
    from fedbench.reporting.store import n_evaluations

    return n_evaluations(TrainConfig(rounds=60, eval_every=10))


def sweep(suite: Path, db: Path, *extra: str, jobs: int | None = 2, prefix: tuple[str, ...] = (),
          env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [*prefix, sys.executable, "-m", "fedbench", "run", "--suite", str(suite), "--results", str(db), "--no-progress",
         *(("--jobs", str(jobs)) if jobs else ()), *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True, env=env or RAY_ENV,
        # a shell's background job inherits SIGINT ignored; a terminal's sweep does not: restore it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def rows(db: Path, sql: str) -> list[tuple]:
    for _ in range(50):
        try:
            con = sqlite3.connect(db, timeout=30)
            try:
                return con.execute(sql).fetchall()
            finally:
                con.close()
        except sqlite3.OperationalError:
            time.sleep(0.1)
    return []


def claimed(db: Path) -> list[int]:
    return [p for (p,) in rows(db, "SELECT pid FROM claims")] if db.exists() else []


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def wait_until(predicate, timeout: float = 60.0) -> bool:  # noqa: ANN001
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def audit(db: Path, forced: bool = False, expected: int = N_RUNS) -> dict[str, int]:
    """Counts over the store after a final clean re-run."""
    status = dict(rows(db, "SELECT run_id, status FROM runs"))
    evals = dict(rows(db, "SELECT run_id, count(DISTINCT round) FROM metrics GROUP BY run_id"))
    done_attempts = dict(rows(db, "SELECT run_id, count(*) FROM attempts WHERE outcome = 'done' GROUP BY run_id"))
    attempts = rows(db, "SELECT run_id, coalesce(outcome, '') FROM attempts")
    to_end: dict[str, int] = {}  # attempts that computed the run to its end, whatever became of the result
    for run_id, outcome in attempts:
        if outcome in ("done", "diverged") or outcome.endswith("discarded"):
            to_end[run_id] = to_end.get(run_id, 0) + 1
    done = [r for r, s in status.items() if s == "done"]
    return {
        "expected": expected,
        "done once": sum(done_attempts.get(r, 0) == 1 for r in done) if not forced else len(done),
        "lost": expected - len(done),
        "computed twice": 0 if forced else sum(n > 1 for n in to_end.values()),
        "extra attempts": len(attempts) - len({r for r, _ in attempts}),
        "done, metrics missing": sum(evals.get(r, 0) != _n_evals() for r in done),
        "left running": sum(s == "running" for s in status.values()) + len(claimed(db)),
    }


def finish(suite: Path, db: Path) -> None:
    proc = sweep(suite, db)
    proc.communicate(timeout=900)


def kills(suite: Path, mode: str, n: int, rng: random.Random) -> dict:
    db = Path(tempfile.mkdtemp()) / f"{mode}.sqlite"
    orphans = 0
    for _ in range(n):
        proc = sweep(suite, db)
        if mode == "worker":
            if wait_until(lambda: bool(claimed(db)), 30):
                time.sleep(rng.uniform(0.0, 0.8))
                pids = claimed(db)
                if pids:
                    os.kill(rng.choice(pids), signal.SIGKILL)
            proc.communicate(timeout=900)
            continue
        time.sleep(rng.uniform(0.5, 6.0))
        workers = claimed(db)
        if mode == "group":
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()
        if mode == "parent":
            time.sleep(5.0)
            orphans += sum(alive(p) for p in workers if p != proc.pid)
        else:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    finish(suite, db)
    return {**audit(db), "processes left after 5 s": orphans if mode == "parent" else "", "kills": n}


def interrupt_sweep(proc: subprocess.Popen, times: int) -> float:
    """Ctrl-C ``times`` times (SIGINT to the sweep's group, 0.2 s apart); seconds until it exited (inf: it did
    not within 60 s and was killed)."""
    start = time.monotonic()
    for i in range(times):
        os.killpg(proc.pid, signal.SIGINT)
        if i + 1 < times:
            time.sleep(0.2)
    try:
        proc.communicate(timeout=60)
        return time.monotonic() - start
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return float("inf")


def ctrl_c(suite: Path, times: int) -> dict:
    db = Path(tempfile.mkdtemp()) / "ctrlc.sqlite"
    proc = sweep(suite, db)
    wait_until(lambda: len(claimed(db)) >= 2, 60)
    workers = claimed(db)
    took = interrupt_sweep(proc, times)
    time.sleep(0.5)
    left = sum(alive(p) for p in workers)
    finish(suite, db)
    return {**audit(db), "exit after Ctrl-C (s)": f"{took:.2f} (rc {proc.returncode})", "processes left after 5 s": left, "kills": times}


def concurrent(suite: Path, k: int) -> dict:
    db = Path(tempfile.mkdtemp()) / "concurrent.sqlite"
    procs = [sweep(suite, db) for _ in range(k)]
    for p in procs:
        p.communicate(timeout=900)
    return {**audit(db), "kills": 0}


def other_namespace(suite: Path) -> dict:
    """Two sweeps at once on one store, the second in its own PID namespace (a container with this host name:
    its pids mean nothing here)."""
    import shutil

    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return {"expected": "skipped: needs root and unshare"}
    db = Path(tempfile.mkdtemp()) / "pidns.sqlite"
    procs = [sweep(suite, db), sweep(suite, db, prefix=("unshare", "-p", "-f", "--kill-child", "--mount-proc"))]
    for p in procs:
        p.communicate(timeout=900)
    return {**audit(db), "kills": 0, "faulted sweep": outcomes(db)}


def stopped(suite: Path) -> dict:
    """A sweep stopped (SIGSTOP) past the heartbeat's staleness while a second sweep runs, then continued."""
    from fedbench.reporting.store import STALE_AFTER

    db = Path(tempfile.mkdtemp()) / "sigstop.sqlite"
    first = sweep(suite, db)
    wait_until(lambda: len(claimed(db)) >= 2, 60)
    os.killpg(first.pid, signal.SIGSTOP)
    time.sleep(STALE_AFTER + 10)
    second = sweep(suite, db)
    second.communicate(timeout=900)
    os.killpg(first.pid, signal.SIGCONT)
    first.communicate(timeout=900)
    finish(suite, db)
    return {**audit(db), "kills": 1, "faulted sweep": outcomes(db)}


def outcomes(db: Path) -> str:
    """How every attempt on the store ended (an attempt is a claim: its computation, whole or not)."""
    counts = dict(rows(db, "SELECT coalesce(outcome, 'open'), count(*) FROM attempts GROUP BY 1"))
    return "attempts: " + ", ".join(f"{n} {o}" for o, n in sorted(counts.items()))


SKEW = """import time as _time
_real = _time.time
_time.time = lambda: _real() + {seconds}
"""


def skewed(suite: Path, seconds: float = 3600.0) -> dict:
    """Two sweeps at once, the second as another machine (its own PID namespace) with its clock ``seconds`` ahead
    (time.time shifted in it and its workers by a sitecustomize on its PYTHONPATH)."""
    db = Path(tempfile.mkdtemp()) / "skew.sqlite"
    shim = Path(tempfile.mkdtemp())
    (shim / "sitecustomize.py").write_text(SKEW.format(seconds=seconds))
    env = {**RAY_ENV, "PYTHONPATH": os.pathsep.join(filter(None, [str(shim), os.environ.get("PYTHONPATH")]))}
    # another machine whose clock runs ahead: its own PID namespace (another host identity) where root allows
    other = ("unshare", "-p", "-f", "--kill-child", "--mount-proc") if os.geteuid() == 0 else ()
    procs = [sweep(suite, db), sweep(suite, db, env=env, prefix=other)]
    for p in procs:
        p.communicate(timeout=1800)
    finish(suite, db)
    return {**audit(db), "kills": 0, "faulted sweep": outcomes(db)}


def lock_held(suite: Path, seconds: float) -> dict:
    """Another process holds the results file's write lock for ``seconds`` while a sweep runs."""
    db = Path(tempfile.mkdtemp()) / "lock.sqlite"
    finish_one = sweep(suite, db, "--seed", "1")  # the store exists and holds a few runs
    finish_one.communicate(timeout=900)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sqlite3, sys, time\n"
        f"con = sqlite3.connect({str(db)!r}, isolation_level=None)\n"
        "con.execute('BEGIN IMMEDIATE')\nprint('held', flush=True)\n"
        f"time.sleep({seconds})\ncon.execute('COMMIT')\n")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    proc = sweep(suite, db)
    _, err = proc.communicate(timeout=seconds + 1800)
    holder.wait()
    failed = rows(db, "SELECT count(*) FROM attempts WHERE outcome NOT IN ('done')")[0][0]
    finish(suite, db)
    waits = err.count("waiting for the results file")
    return {**audit(db), "kills": 0, "faulted sweep": f"{failed} attempts not done, {waits} wait message(s), rc {proc.returncode}"}


def forced(suite: Path, n: int, rng: random.Random) -> dict:
    db = Path(tempfile.mkdtemp()) / "force.sqlite"
    finish(suite, db)
    missing = 0
    for _ in range(n):
        proc = sweep(suite, db, "--force")
        time.sleep(rng.uniform(1.0, 6.0))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        a = audit(db, forced=True)
        missing += a["done, metrics missing"] + a["lost"]  # a finished result must survive every kill
    finish(suite, db)  # a clean re-run: nothing to compute, and it clears the dead sweep's claims
    return {**audit(db, forced=True), "done, metrics missing": missing, "kills": n}


#: the same grid on the cluster, with two of the methods (12 runs: a cluster of two 1-CPU nodes is slower)
RAY_SUITE = SUITE.replace('"fedem", "fedavg", "local", "fedprox"', '"fedem", "fedavg"').replace(
    "fault injection grid", "fault injection grid on a Ray cluster")
RAY_RUNS = 12
RAY_ENV = {**os.environ, "RAY_AUTH_MODE": "disabled"}


def _ray_cli() -> str:
    return str(Path(sys.executable).with_name("ray"))


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class Cluster:
    """A local Ray cluster: a head with no CPUs and ``nodes`` nodes of one CPU, each tagged with a resource
    (``fault_node_K``) by which its raylet is found."""

    def __init__(self, nodes: int = 2, node_env: dict[int, dict[str, str]] | None = None) -> None:
        import socket

        self.node_env = node_env or {}

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        subprocess.run([_ray_cli(), "stop", "--force"], capture_output=True, env=RAY_ENV, timeout=120)
        subprocess.run([_ray_cli(), "start", "--head", "--port", str(self.port), "--num-cpus", "0",
                        "--include-dashboard", "false", "--disable-usage-stats"],
                       check=True, capture_output=True, env=RAY_ENV, timeout=180)
        for k in range(nodes):
            self.add_node(k)

    def add_node(self, k: int) -> None:
        subprocess.run([_ray_cli(), "start", "--address", self.address, "--num-cpus", "1", "--resources",
                        json.dumps({f"fault_node_{k}": 1}), "--disable-usage-stats"],
                       check=True, capture_output=True, env={**RAY_ENV, **self.node_env.get(k, {})}, timeout=180)

    def raylet(self, k: int) -> int | None:
        for d in Path("/proc").iterdir():
            if d.name.isdigit() and "raylet/raylet" in (c := _cmdline(int(d.name))) and f"fault_node_{k}," in c:
                return int(d.name)
        return None

    @staticmethod
    def task_workers() -> list[int]:
        """Ray worker processes running a run now (their process title names the task)."""
        return [int(d.name) for d in Path("/proc").iterdir()
                if d.name.isdigit() and _cmdline(int(d.name)).startswith("ray::_ray_compute")]

    def kill_node(self, k: int) -> None:
        pid = self.raylet(k)
        if pid is not None:
            doomed = [pid, *_children(pid)]
            for p in doomed:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def stop(self) -> None:
        subprocess.run([_ray_cli(), "stop", "--force"], capture_output=True, env=RAY_ENV, timeout=180)


def faulted(db: Path) -> str:
    """The runs' statuses right after the sweep that met the fault ended, before the clean re-run."""
    counts = dict(rows(db, "SELECT status, count(*) FROM runs GROUP BY status"))
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none stored"


def ray_sweep(suite: Path, db: Path, cluster: Cluster) -> subprocess.Popen:
    return sweep(suite, db, "--executor", "ray", "--address", cluster.address, jobs=None)


def ray_finish(suite: Path, db: Path, cluster: Cluster) -> None:
    ray_sweep(suite, db, cluster).communicate(timeout=1800)


def ray_rows(rng: random.Random, pick: str | None = None) -> dict[str, dict]:
    suite = Path(tempfile.mkdtemp()) / "ray-faults.toml"
    suite.write_text(RAY_SUITE)
    table: dict[str, dict] = {}

    def scenario(name: str, job, **cluster_options) -> None:  # noqa: ANN001 - each scenario on a fresh cluster
        if pick and not any(p in name for p in pick.split(",")):
            return
        t = time.time()
        cluster = Cluster(**cluster_options)
        try:
            table[name] = job(cluster)
        finally:
            cluster.stop()
        print(f"{name}: {json.dumps(table[name])} ({time.time() - t:.0f}s)", flush=True)

    def kill_workers(cluster: Cluster, n: int = 6) -> dict:
        db = Path(tempfile.mkdtemp()) / "ray-worker.sqlite"
        proc = ray_sweep(suite, db, cluster)
        killed = 0
        while killed < n and proc.poll() is None:
            if wait_until(lambda: bool(cluster.task_workers()), 60):
                time.sleep(rng.uniform(0.5, 3.0))
                workers = cluster.task_workers()
                if workers:
                    os.kill(rng.choice(workers), signal.SIGKILL)
                    killed += 1
        proc.communicate(timeout=1800)
        first = faulted(db)
        ray_finish(suite, db, cluster)
        return {**audit(db, expected=RAY_RUNS), "kills": killed, "faulted sweep": first}

    def kill_node(cluster: Cluster) -> dict:
        db = Path(tempfile.mkdtemp()) / "ray-node.sqlite"
        proc = ray_sweep(suite, db, cluster)
        wait_until(lambda: len(rows(db, "SELECT run_id FROM runs WHERE status = 'done'")) >= 2, 300)
        cluster.kill_node(1)  # node 1 dies mid-sweep; node 0 goes on
        proc.communicate(timeout=1800)
        first = faulted(db)
        ray_finish(suite, db, cluster)
        return {**audit(db, expected=RAY_RUNS), "kills": 1, "faulted sweep": first}

    def kill_driver(cluster: Cluster, n: int = 3) -> dict:
        db = Path(tempfile.mkdtemp()) / "ray-driver.sqlite"
        left = 0
        for _ in range(n):
            proc = ray_sweep(suite, db, cluster)
            wait_until(lambda: bool(cluster.task_workers()), 120)
            time.sleep(rng.uniform(1.0, 6.0))
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            time.sleep(5.0)
            left += len(cluster.task_workers())
        first = faulted(db)
        ray_finish(suite, db, cluster)
        return {**audit(db, expected=RAY_RUNS), "processes left after 5 s": left, "kills": n, "faulted sweep": first}

    def interrupt(cluster: Cluster) -> dict:
        db = Path(tempfile.mkdtemp()) / "ray-ctrlc.sqlite"
        proc = ray_sweep(suite, db, cluster)
        wait_until(lambda: len(cluster.task_workers()) >= 2, 120)
        time.sleep(1.0)
        took = interrupt_sweep(proc, 1)
        time.sleep(5.0)
        left = len(cluster.task_workers())
        first = faulted(db)
        ray_finish(suite, db, cluster)
        return {**audit(db, expected=RAY_RUNS), "exit after Ctrl-C (s)": f"{took:.2f} (rc {proc.returncode})",
                "processes left after 5 s": left, "kills": 1, "faulted sweep": first}

    def oom_kills() -> int:
        """Workers Ray's memory monitor has killed in this cluster's session (its raylets' logs say each kill)."""
        logs = Path(tempfile.gettempdir()) / "ray" / "session_latest" / "logs"
        return sum(f.read_text(errors="replace").count("OOM kill reason") for f in logs.glob("raylet*.out"))

    def out_of_memory(cluster: Cluster) -> dict:
        db = Path(tempfile.mkdtemp()) / "ray-oom.sqlite"
        before = oom_kills()
        ray_finish(suite, db, cluster)  # node 1's memory monitor kills every task it runs (threshold 1 %)
        kills = oom_kills() - before
        first = faulted(db)
        errors = rows(db, "SELECT count(*) FROM runs WHERE status = 'failed' AND error LIKE '%memory%'")[0][0]
        cluster.kill_node(1)  # then the clean re-run on node 0 alone
        ray_finish(suite, db, cluster)
        return {**audit(db, expected=RAY_RUNS), "kills": kills,
                "faulted sweep": f"{first}; {kills} kill records of Ray's memory monitor in the raylets' logs, {errors} runs failed for memory"}

    scenario("ray: kill -9 a task's worker x6", kill_workers)
    scenario("ray: a node dies mid-sweep", kill_node)
    scenario("ray: kill -9 the driver x3, restarted", kill_driver)
    scenario("ray: Ctrl-C on the driver", interrupt)
    # Ray's own memory monitor on node 1, set to kill a task's worker at 1 % of the node's memory, one OOM retry
    scenario("ray: out-of-memory kills on one node", out_of_memory, node_env={1: {
        "RAY_memory_usage_threshold": "0.01", "RAY_memory_monitor_refresh_ms": "100", "RAY_task_oom_retries": "1"}})
    return table


COLS = ["expected", "done once", "lost", "computed twice", "extra attempts", "done, metrics missing", "left running",
        "exit after Ctrl-C (s)", "processes left after 5 s"]


def _table(table: dict[str, dict], extra: tuple[str, ...] = ()) -> list[str]:
    cols = COLS + list(extra)
    lines = ["| scenario | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    return lines + [f"| {name} | " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for name, r in table.items()]


def _write(out: Path, part: str, text: list[str]) -> None:
    """Rewrite ``part``'s section of ``out`` (between its markers), keeping the other's."""
    begin, end = f"<!-- {part}: begin -->", f"<!-- {part}: end -->"
    old = out.read_text() if out.exists() else "# Fault injection on one results store\n"
    block = "\n".join([begin, *text, end])
    if begin in old and end in old:
        new = old[: old.index(begin)] + block + old[old.index(end) + len(end):]
    else:
        new = old.rstrip("\n") + "\n\n" + block + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(new)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=51, help="kill -9s in all, split over group/parent/worker")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", choices=("local", "ray"), help="one part of the benchmark (default: both)")
    p.add_argument("--pick", help="only the scenarios whose name holds one of these comma-separated texts; their "
                   "table goes to a section of its own in --out, beside the whole part's")
    p.add_argument("--lock-hold", type=float, default=300.0, help="seconds another process holds the write lock")
    p.add_argument("--out", default="results/faults.md")
    args = p.parse_args()
    rng = random.Random(args.seed)
    if args.only != "ray":
        local_rows(args, rng)
    if args.only != "local":
        started = time.time()
        table = ray_rows(rng, args.pick)
        _write(Path(args.out), f"ray {args.pick}" if args.pick else "ray", [
            "## On a Ray cluster" + (" (more rows)" if args.pick else ""),
            "",
            f"`python benchmarks/faults.py --only ray --seed {args.seed}"
            f"{f' --pick {chr(39)}{args.pick}{chr(39)}' if args.pick else ''}` on {os.cpu_count()} cores, "
            f"{time.time() - started:.0f} s. Each scenario starts a local Ray cluster (a head with no CPUs, two "
            f"nodes of one CPU), runs a {RAY_RUNS}-run grid with `--executor ray` (the driver the only writer), "
            "injects its faults, then one clean re-run on the same cluster completes the store, which is audited "
            "as above. 'processes left after 5 s': task workers still computing a run 5 s after the driver ended. "
            "'faulted sweep': the runs' statuses when the sweep that met the fault had ended, before the clean "
            "re-run (after the driver's last kill, runs it held stay `running` until the next sweep repairs them).",
            "",
            *_table(table, ("faulted sweep",)),
        ])
        print("\n".join(_table(table, ("faulted sweep",))))


def local_rows(args: argparse.Namespace, rng: random.Random) -> None:
    suite = Path(tempfile.mkdtemp()) / "faults.toml"
    suite.write_text(SUITE)
    each = max(1, args.kills // 3)
    started = time.time()
    table = {}
    for name, job in [
        (f"kill -9 whole group x{each}", lambda: kills(suite, "group", each, rng)),
        (f"kill -9 parent only x{each}", lambda: kills(suite, "parent", each, rng)),
        (f"kill -9 one worker x{each}", lambda: kills(suite, "worker", each, rng)),
        ("Ctrl-C once", lambda: ctrl_c(suite, 1)),
        ("Ctrl-C twice", lambda: ctrl_c(suite, 2)),
        ("2 sweeps at once", lambda: concurrent(suite, 2)),
        ("3 sweeps at once", lambda: concurrent(suite, 3)),
        ("--force killed mid-write x5", lambda: forced(suite, 5, rng)),
        ("2 sweeps at once, one in another PID namespace", lambda: other_namespace(suite)),
        ("a sweep SIGSTOPped past the heartbeat, another runs, then SIGCONT", lambda: stopped(suite)),
        ("2 sweeps at once, one as another host with its clock 1 h ahead", lambda: skewed(suite)),
        (f"the write lock held {args.lock_hold:g} s by another process", lambda: lock_held(suite, args.lock_hold)),
    ]:
        if args.pick and not any(p in name for p in args.pick.split(",")):
            continue
        t = time.time()
        table[name] = job()
        print(f"{name}: {json.dumps(table[name])} ({time.time() - t:.0f}s)", flush=True)
    _write(Path(args.out), f"local {args.pick}" if args.pick else "local", [
        *(["## More rows on one machine", ""] if args.pick else []),
        f"`python benchmarks/faults.py --only local --kills {args.kills} --seed {args.seed}"
        f"{f' --pick {chr(39)}{args.pick}{chr(39)}' if args.pick else ''}` on {os.cpu_count()} cores, "
        f"{time.time() - started:.0f} s. Each scenario runs a {N_RUNS}-run grid (`--jobs 2`), injects its faults, "
        "then one clean re-run completes the store, which is then audited. 'done once': runs whose attempts "
        "ended `done` exactly once; 'computed twice': runs computed to their end by more than one attempt without "
        "--force (stored, diverged or discarded); 'extra attempts': attempts beyond each run's first (a kill, an "
        "interrupt or a lost claim stopped the earlier one); "
        "'left running': `running` rows or claims left after the clean re-run. For `--force`, 'done, metrics "
        "missing' adds up every audit taken right after each kill (a finished result must survive each one). "
        "'faulted sweep', for the later rows: how every attempt (claim) on the store ended, or for the held "
        "lock the attempts that did not end done, the sweep's wait messages and its exit code.",
        "",
        *_table(table, ("faulted sweep",)),
    ])
    print("\n".join(_table(table, ("faulted sweep",))))


if __name__ == "__main__":
    main()
