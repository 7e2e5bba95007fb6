"""Fault injection: kill, interrupt and race real sweeps on one results store, then count what was lost.

    python benchmarks/faults.py [--kills 51] [--out results/faults.md]

Scenarios (each on a 24-run grid, ``--jobs 2``, real processes and signals):
``kill -9`` at random moments of the whole process group, of the parent alone,
and of one worker; one and two Ctrl-C (SIGINT to the group, as a terminal
sends it); two and three sweeps of the same suite at once on one store; a
``--force`` re-run killed mid-write. After the faults, one clean re-run
completes the store, and the store is audited: runs expected, done exactly
once, lost, computed twice (more than one attempt ending ``done`` without
--force), ``done`` with missing metrics, seconds from Ctrl-C to exit, and
worker processes still alive 5 s after the parent was killed.
Target: zero in every loss column, Ctrl-C to exit under 5 s, no process left.
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
    from fedbench.config import TrainConfig
    from fedbench.store import n_evaluations

    return n_evaluations(TrainConfig(rounds=60, eval_every=10))


def sweep(suite: Path, db: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "fedbench", "run", "--suite", str(suite), "--results", str(db), "--no-progress", "--jobs", "2", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
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


def audit(db: Path, forced: bool = False) -> dict[str, int]:
    """Counts over the store after a final clean re-run."""
    status = dict(rows(db, "SELECT run_id, status FROM runs"))
    evals = dict(rows(db, "SELECT run_id, count(DISTINCT round) FROM metrics GROUP BY run_id"))
    done_attempts = dict(rows(db, "SELECT run_id, count(*) FROM attempts WHERE outcome = 'done' GROUP BY run_id"))
    done = [r for r, s in status.items() if s == "done"]
    return {
        "expected": N_RUNS,
        "done once": sum(done_attempts.get(r, 0) == 1 for r in done) if not forced else len(done),
        "lost": N_RUNS - len(done),
        "computed twice": 0 if forced else sum(n > 1 for n in done_attempts.values()),
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


def ctrl_c(suite: Path, times: int) -> dict:
    db = Path(tempfile.mkdtemp()) / "ctrlc.sqlite"
    proc = sweep(suite, db)
    wait_until(lambda: len(claimed(db)) >= 2, 60)
    workers = claimed(db)
    start = time.monotonic()
    for i in range(times):
        os.killpg(proc.pid, signal.SIGINT)
        if i + 1 < times:
            time.sleep(0.2)
    try:
        proc.communicate(timeout=60)
        took = time.monotonic() - start
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        took = float("inf")
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=51, help="kill -9s in all, split over group/parent/worker")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results/faults.md")
    args = p.parse_args()
    rng = random.Random(args.seed)
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
    ]:
        t = time.time()
        table[name] = job()
        print(f"{name}: {json.dumps(table[name])} ({time.time() - t:.0f}s)", flush=True)
    cols = ["expected", "done once", "lost", "computed twice", "done, metrics missing", "left running",
            "exit after Ctrl-C (s)", "processes left after 5 s"]
    lines = [
        "# Fault injection on one results store",
        "",
        f"`python benchmarks/faults.py --kills {args.kills} --seed {args.seed}` on {os.cpu_count()} cores, "
        f"{time.time() - started:.0f} s. Each scenario runs a {N_RUNS}-run grid (`--jobs 2`), injects its faults, "
        "then one clean re-run completes the store, which is then audited. 'done once': runs whose attempts "
        "ended `done` exactly once; 'computed twice': runs computed to `done` more than once without --force; "
        "'left running': `running` rows or claims left after the clean re-run. For `--force`, 'done, metrics "
        "missing' adds up every audit taken right after each kill (a finished result must survive each one).",
        "",
        "| scenario | " + " | ".join(cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for name, r in table.items():
        lines.append(f"| {name} | " + " | ".join(str(r.get(c, "")) for c in cols) + " |")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
