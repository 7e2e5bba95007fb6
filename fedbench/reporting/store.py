"""The results store: one SQLite file (WAL mode) with runs and per-round metrics.

Never a silent half-result:

- A run is **claimed** in one transaction (table ``claims``: owner host, pid,
  the pid's start time, a heartbeat the owner refreshes). A live claim held by
  another process is never computed a second time; a claim whose owner is gone
  (a dead pid on this host, or a heartbeat older than :data:`STALE_AFTER` from
  another host) is taken over.
- While it runs, its metrics go to ``live_metrics`` under the claim's token. Its
  final status and its metrics are **committed together** in one transaction,
  so no reader ever sees ``done`` with missing metrics.
- ``--force`` keeps the old result until the new one is complete: a forced
  attempt that fails or is interrupted leaves the earlier ``done`` row as it was.
- On open, rows that an older version or a crash left inconsistent (``done``
  with fewer evaluations than its config implies, ``running`` with no live
  owner) are repaired to ``failed`` with a reason, never trusted.
- A file that is not a fedbench store is refused and never modified;
  ``readonly=True`` opens without writing anything (reports, plots).
"""

from __future__ import annotations

import functools
import json
import os
import platform
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import pandas as pd

from fedbench.fl.config import LATER_TRAIN_KEYS, RunConfig, TrainConfig, config_id_of
from fedbench.errors import ClaimLost, ResultsError

APPLICATION = "fedbench"
SCHEMA_VERSION = "2"
#: seconds between a running run's heartbeats, and after which a silent claim from another host is stale
HEARTBEAT_EVERY = 5.0
#: seconds SQLite waits for another process's write lock before fedbench says it is waiting (and waits on)
LOCK_WAIT_S = 5.0
#: seconds between the lines saying a write still waits for the lock
LOCK_NOTICE_S = 60.0
STALE_AFTER = 120.0

TABLES = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    dataset TEXT NOT NULL,
    method TEXT NOT NULL,
    seed INTEGER NOT NULL,
    rounds INTEGER NOT NULL,
    status TEXT NOT NULL,          -- running | done | failed | diverged
    error TEXT,
    engine TEXT,                   -- the engine that ran it, and why
    config TEXT NOT NULL,          -- the resolved RunConfig as JSON
    version TEXT NOT NULL,
    started REAL NOT NULL,
    finished REAL
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    round INTEGER NOT NULL,        -- number of training rounds completed
    name TEXT NOT NULL,
    value REAL,
    PRIMARY KEY (run_id, round, name)
);
CREATE TABLE IF NOT EXISTS claims (
    run_id TEXT PRIMARY KEY,
    token TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    pid_start TEXT,                -- the pid's start time (Linux), so a reused pid is not taken for the owner
    started REAL NOT NULL,
    heartbeat REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS attempts (  -- every claim, and how it ended: an audit of what was computed
    token TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started REAL NOT NULL,
    finished REAL,
    outcome TEXT                   -- done | failed | diverged | interrupted | worker died ..., NULL while running
);
CREATE TABLE IF NOT EXISTS live_metrics (
    token TEXT NOT NULL,
    run_id TEXT NOT NULL,
    round INTEGER NOT NULL,
    name TEXT NOT NULL,
    value REAL,
    PRIMARY KEY (token, round, name)
);
"""
#: columns added to ``runs`` since the first schema: (name, SQL type)
NEW_RUN_COLUMNS = (("config_id", "TEXT"), ("code", "TEXT"), ("env", "TEXT"), ("n_evals", "INTEGER"), ("seconds", "REAL"))

DEFAULT_PATH = Path("results") / "fedbench.sqlite"


def host_identity() -> str:
    """This machine and PID namespace, as claims record them: the host name, and on Linux the boot id and the
    PID namespace. A process in a container that shares the host name (its own PID namespace), or on this
    machine before a reboot, is then another host: its pids mean nothing here, so its claims are judged by
    their heartbeat, never by a pid that happens to be alive (or dead) in this namespace."""
    parts = []
    try:
        parts.append("boot " + Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8])
    except OSError:
        pass
    try:
        parts.append("pid ns " + os.readlink("/proc/self/ns/pid").rsplit("[", 1)[-1].rstrip("]"))
    except OSError:
        pass
    name = socket.gethostname()
    return f"{name} ({', '.join(parts)})" if parts else name


HOST = host_identity()


def pid_start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (Linux ``/proc``), or None where it cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def pid_alive(pid: int, start: str | None) -> bool:
    """Whether ``pid`` is a live (not zombie) process started at ``start``."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return True  # no /proc: the pid exists, that is all we can know
    if fields[0] in ("Z", "X"):
        return False
    return start is None or fields[19] == start


def n_evaluations(train: TrainConfig) -> int:
    """How many evaluations a finished run of ``train`` stores (round 0 included when ``eval_at_start``)."""
    # closed form of sum(train.is_eval_round(r) for r in range(rounds)): every eval_every-th round, and the
    # last when it is not one of them; O(1), since it runs inside the store's write transaction
    rounds, every = train.rounds, train.eval_every
    return int(train.eval_at_start) + rounds // every + (1 if rounds % every else 0)


@dataclass(frozen=True)
class Claim:
    """This process's hold on one run."""

    run_id: str
    token: str
    #: the run's status before this attempt (``done`` under --force): what an aborted attempt leaves
    previous: str | None


@dataclass(frozen=True)
class Held:
    """A run another live process is computing."""

    run_id: str
    host: str
    pid: int
    since: float

    def __str__(self) -> str:
        return f"being computed by pid {self.pid} on {self.host} since {time.strftime('%H:%M:%S', time.localtime(self.since))}"


class ResultStore:
    """Runs and their metrics in one SQLite file, created on first use."""

    def __init__(self, path: str | Path = DEFAULT_PATH, *, readonly: bool = False) -> None:
        self.path = Path(path)
        self.readonly = readonly
        #: the private copy a read-only store with an unmerged write-ahead log is read from (or None)
        self._copy = None
        try:
            if readonly:
                self._db = self._open_readonly()
                self._check_ours(create=False)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(self.path, timeout=LOCK_WAIT_S, isolation_level=None)
                self._check_ours(create=True)
                self._init_schema()
                self.repair()
        except ResultsError:
            raise
        except (OSError, sqlite3.Error) as e:
            raise ResultsError(
                f"cannot open results file {str(self.path)!r}: {e}; pass --results with a writable fedbench results file"
            ) from e

    # -- opening ---------------------------------------------------------------------------------------------

    def _open_readonly(self) -> sqlite3.Connection:
        if not self.path.is_file():
            raise ResultsError(f"no results file at {str(self.path)!r}; run `fedbench run ...` first or pass --results PATH")
        uri = self.path.resolve().as_uri()
        db = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=60, isolation_level=None)
        try:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return db
        except sqlite3.OperationalError:
            db.close()
        # a read-only file or folder: SQLite cannot make the -shm it needs to read the write-ahead log
        wal = self.path.with_name(self.path.name + "-wal")
        if not (wal.is_file() and wal.stat().st_size > 0):  # nothing in a log: the file is all there is
            return sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True, isolation_level=None)
        # runs still in the log (a writer killed before it merged them): read a private copy of both, where
        # SQLite can replay the log, never the file alone (that would silently show fewer runs)
        import shutil
        import tempfile

        self._copy = tempfile.TemporaryDirectory(prefix="fedbench-readonly-")
        copy = Path(self._copy.name) / self.path.name
        try:
            shutil.copyfile(self.path, copy)
            shutil.copyfile(wal, copy.with_name(copy.name + "-wal"))
        except OSError as e:
            raise ResultsError(
                f"{str(self.path)!r} is on a read-only disk with unmerged runs in {wal.name}, and no private copy "
                f"could be made ({e}); copy the file with its -wal to a writable folder and read that"
            ) from e
        return sqlite3.connect(copy, timeout=60, isolation_level=None)

    def _check_ours(self, *, create: bool) -> None:
        """Refuse a file that is not a fedbench store, before anything is written to it."""
        try:
            tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError as e:
            raise ResultsError(
                f"{str(self.path)!r} is not a fedbench results file ({e}); pass --results with a new or fedbench file"
            ) from e
        if not tables:
            if create:
                return
            raise ResultsError(f"{str(self.path)!r} is empty: no runs stored yet; run `fedbench run ...` first")
        if "meta" in tables:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'application'").fetchone()
            if row is not None and row[0] == APPLICATION:
                return
        elif {"runs", "metrics"} <= tables and tables <= {"runs", "metrics"}:
            columns = {r[1] for r in self._db.execute("PRAGMA table_info(runs)")}
            if {"run_id", "dataset", "method", "seed", "status", "config", "version"} <= columns:
                return  # a store written by fedbench before the meta table: upgraded by _init_schema
        raise ResultsError(
            f"{str(self.path)!r} is not a fedbench results file (it holds the tables {', '.join(sorted(tables))}); "
            "it was left unchanged; pass --results with a new or fedbench file"
        )

    def _init_schema(self) -> None:
        # Switching to WAL and creating tables can hit SQLITE_BUSY without the busy
        # handler being consulted when several workers open a new file at once: retry (at once, since
        # SQLite then returns at once); a lock held for long is waited for in the open (_begin).
        began, attempt = time.monotonic(), 0
        while True:
            attempt += 1
            try:
                if self._db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    self._db.execute("PRAGMA journal_mode=WAL")
                with self._transaction():
                    for statement in TABLES.split(";"):
                        if statement.strip():
                            self._db.execute(statement)
                    have = {r[1] for r in self._db.execute("PRAGMA table_info(runs)")}
                    for name, kind in NEW_RUN_COLUMNS:
                        if name not in have:
                            self._db.execute(f"ALTER TABLE runs ADD COLUMN {name} {kind}")
                    self._db.execute("CREATE INDEX IF NOT EXISTS runs_config_id ON runs(config_id)")
                    self._db.execute("INSERT OR IGNORE INTO meta VALUES ('application', ?)", (APPLICATION,))
                    self._db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
                    for run_id, config in self._db.execute("SELECT run_id, config FROM runs WHERE config_id IS NULL").fetchall():
                        # (an unreadable configuration keeps no id: that row is left out of suites, not every open failed)
                        self._db.execute("UPDATE runs SET config_id = ? WHERE run_id = ?", (_config_id(config), run_id))
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) and "busy" not in str(e):
                    raise
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                if time.monotonic() - began > 2 * LOCK_WAIT_S:  # held for long: wait for it, saying so
                    self._begin()
                    self._db.execute("ROLLBACK")
                time.sleep(0.05 * min(attempt, 20))

    def _begin(self) -> None:
        """BEGIN IMMEDIATE, waiting as long as another process holds the write lock (a sweep, a ``sqlite3``
        shell, a process stopped with Ctrl-Z): a wait, with a line on stderr now and then, never a failed run."""
        began = time.monotonic()
        said = 0.0
        while True:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                if said:
                    print(f"fedbench: the results file {str(self.path)!r} is free again after "
                          f"{time.monotonic() - began:.0f} s; going on", file=sys.stderr, flush=True)
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) and "busy" not in str(e):
                    raise
            waited = time.monotonic() - began
            if waited - said >= LOCK_NOTICE_S or not said:
                said = max(waited, 1e-9)
                print(f"fedbench: waiting for the results file {str(self.path)!r}: another process has held its "
                      f"write lock for {waited:.0f} s (a sweep, a sqlite3 shell, or a process stopped with Ctrl-Z); "
                      f"pid {os.getpid()} waits, nothing is lost", file=sys.stderr, flush=True)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken at once (BEGIN IMMEDIATE) so that read-then-write is atomic."""
        if self._db.in_transaction:  # one an interrupt cut off between its BEGIN and its try: nothing of it counts
            self._db.execute("ROLLBACK")
        self._begin()
        try:
            yield self._db
            self._db.execute("COMMIT")
        except BaseException as e:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            if isinstance(e, sqlite3.OperationalError) and "full" in str(e):  # SQLITE_FULL: nothing was written
                raise ResultsError(f"the disk holding {str(self.path)!r} is full ({e}); free some space and run the "
                                   "same command again: every finished run is kept") from e
            raise

    def _write(self) -> Any:
        if self.readonly:
            raise ResultsError(f"results file {str(self.path)!r} was opened read-only")
        return self._transaction()

    def close(self) -> None:
        self._db.close()

    # -- consistency ------------------------------------------------------------------------------------------

    def inconsistent(self) -> dict[str, str]:
        """run id -> why its row cannot be trusted: ``done`` without all its evaluations, or ``running``
        with no live owner."""
        out: dict[str, str] = {}
        counts = dict(self._db.execute("SELECT run_id, count(DISTINCT round) FROM metrics GROUP BY run_id").fetchall())
        claims = {r[0]: r[1:] for r in self._db.execute("SELECT run_id, host, pid, pid_start, heartbeat FROM claims")}
        for run_id, status, config, n_evals in self._db.execute("SELECT run_id, status, config, n_evals FROM runs"):
            if status == "done":
                if n_evals is None:
                    try:
                        # a config stored before a training key existed ran with that key's earlier behaviour
                        n_evals = n_evaluations(TrainConfig(**{**LATER_TRAIN_KEYS, **json.loads(config)["train"]}))
                    except Exception:  # noqa: BLE001 - an unreadable config is itself a reason
                        out[run_id] = "its stored configuration cannot be read"
                        continue
                have = counts.get(run_id, 0)
                if have != n_evals:
                    out[run_id] = f"marked done with {have} of its {n_evals} evaluations stored"
            elif status == "running":
                claim = claims.get(run_id)
                if claim is None or not _owner_alive(*claim):
                    out[run_id] = "its process died while running it"
        return out

    def repair(self) -> dict[str, str]:
        """Mark every inconsistent row ``failed`` with its reason (a re-run recomputes it); returns them."""
        if self.readonly:
            return {}
        bad = self.inconsistent()
        dead = [r for r, *owner in self._db.execute("SELECT run_id, host, pid, pid_start, heartbeat FROM claims").fetchall()
                if not _owner_alive(*owner)]
        if bad or dead:
            with self._write():
                for run_id, why in self.inconsistent().items():  # again, inside the transaction
                    self._db.execute(
                        "UPDATE runs SET status = 'failed', error = ? WHERE run_id = ?",
                        (f"repaired: {why}; re-run to recompute", run_id),
                    )
                for run_id in dead:  # e.g. a --force attempt killed with its sweep: the done row stays as it was
                    self._drop_dead_claim(run_id)
        return bad

    def _drop_dead_claim(self, run_id: str) -> None:
        row = self._db.execute("SELECT token, host, pid, pid_start, heartbeat FROM claims WHERE run_id = ?", (run_id,)).fetchone()
        if row is not None and not _owner_alive(*row[1:]):
            self._release(row[0], "owner died")

    def _release(self, token: str, outcome: str) -> None:
        """End an attempt (inside a write transaction): drop its live metrics and claim, record how it ended."""
        self._db.execute("DELETE FROM live_metrics WHERE token = ?", (token,))
        self._db.execute("DELETE FROM claims WHERE token = ?", (token,))
        self._db.execute("UPDATE attempts SET finished = ?, outcome = ? WHERE token = ?", (time.time(), outcome[:200], token))

    # -- the life of a run --------------------------------------------------------------------------------------

    def status(self, run_id: str) -> str | None:
        row = self._db.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return row[0] if row else None

    def holder(self, run_id: str) -> Held | None:
        """Who computes ``run_id`` now, if a live process does."""
        row = self._db.execute("SELECT host, pid, pid_start, heartbeat, started FROM claims WHERE run_id = ?", (run_id,)).fetchone()
        if row is None or not _owner_alive(*row[:4]):
            return None
        return Held(run_id, row[0], row[1], row[4])

    def claim(self, cfg: RunConfig, *, force: bool = False, pid: int | None = None) -> Claim | Held | None:
        """Claim ``cfg``'s run for process ``pid`` (default: this one), in one transaction.

        Returns the :class:`Claim`; or None when the run is already ``done`` (and not ``force``); or
        :class:`Held` when another live process computes it.
        """

        pid = os.getpid() if pid is None else pid
        run_id = cfg.run_id
        env = environment()  # (computed before the write lock is taken: nothing slow runs inside it)
        now = time.time()
        with self._write():
            row = self._db.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            previous = row[0] if row else None
            held = self.holder(run_id)
            if held is not None:
                return held
            if previous == "done" and not force:
                return None
            self._drop_dead_claim(run_id)
            token = uuid.uuid4().hex
            self._db.execute(
                "INSERT INTO claims (run_id, token, host, pid, pid_start, started, heartbeat) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (run_id, token, HOST, pid, pid_start_time(pid), now, now),
            )
            self._db.execute("INSERT INTO attempts (token, run_id, host, pid, started) VALUES (?, ?, ?, ?, ?)", (token, run_id, HOST, pid, now))
            if previous != "done":  # nothing finished to keep: the row says running from now on
                self._db.execute("DELETE FROM metrics WHERE run_id = ?", (run_id,))
                self._upsert_run(cfg, "running", None, None, now, None, None, env)
        return Claim(run_id, token, previous)

    def _upsert_run(self, cfg: RunConfig, status: str, error: str | None, engine: str | None, started: float,
                    finished: float | None, seconds: float | None, env: dict[str, Any]) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO runs (run_id, dataset, method, seed, rounds, status, error, engine, config, version, "
            "started, finished, config_id, code, env, n_evals, seconds) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                cfg.run_id, cfg.dataset, cfg.method, cfg.seed, cfg.train.rounds, status, error, engine,
                json.dumps(cfg.to_dict(), sort_keys=True, default=str), str(env.get("fedbench")), started, finished,
                cfg.config_id, cfg.code, json.dumps(env, sort_keys=True), n_evaluations(cfg.train), seconds,
            ),
        )

    def log_metrics(self, claim: Claim, round_: int, metrics: dict[str, float]) -> None:
        """Stream one evaluation of the claimed run (visible as live progress, not yet a result). Raises
        :class:`ClaimLost` when the claim was taken over as stale meanwhile: the attempt is recorded as stopped
        and computes no further (the run is then computed once to the end, by the new owner)."""
        with self._write():
            mine = self._db.execute("UPDATE claims SET heartbeat = ? WHERE token = ?", (time.time(), claim.token)).rowcount
            if mine:
                self._db.executemany(
                    "INSERT OR REPLACE INTO live_metrics (token, run_id, round, name, value) VALUES (?, ?, ?, ?, ?)",
                    [(claim.token, claim.run_id, round_, name, float(value)) for name, value in metrics.items()],
                )
            else:
                self._release(claim.token, f"claim lost (taken over as stale); stopped at round {round_}")
        if not mine:
            raise ClaimLost(f"this process stood still over {STALE_AFTER:.0f} s (stopped?) and its claim was taken over; "
                            f"it stopped at round {round_}, the process that took it over computes the run")

    def beat(self, claims: Sequence[Claim]) -> None:
        """Refresh the heartbeat of ``claims`` (a Ray driver, for the runs its tasks compute)."""
        if claims:
            with self._write():
                now = time.time()
                self._db.executemany("UPDATE claims SET heartbeat = ? WHERE token = ?", [(now, c.token) for c in claims])

    def finish(self, claim: Claim, cfg: RunConfig, status: str, *, error: str | None = None, engine: str | None = None,
               seconds: float | None = None, started: float | None = None) -> str:
        """Commit the attempt's status and metrics together and release the claim; returns the status
        now stored. An incomplete attempt (``failed``, ``diverged``) on a run that was ``done`` (under
        --force) keeps the old result; the attempt itself is kept with its outcome (``attempts``)."""

        env = environment()  # (before the write lock: nothing slow runs inside it)
        with self._write():
            mine = self._db.execute("SELECT started FROM claims WHERE token = ?", (claim.token,)).fetchone()
            if mine is None:  # taken over as stale meanwhile: the new owner's result counts, not ours
                self._release(claim.token, "claim lost (taken over as stale); discarded")
                return self.status(claim.run_id) or "failed"
            stored = status
            if status != "done" and claim.previous == "done":
                stored = "done"  # keep the complete earlier result
            else:
                self._db.execute("DELETE FROM metrics WHERE run_id = ?", (claim.run_id,))
                self._db.execute(
                    "INSERT INTO metrics (run_id, round, name, value) SELECT run_id, round, name, value FROM live_metrics "
                    "WHERE token = ?",
                    (claim.token,),
                )
                self._upsert_run(cfg, status, error, engine, started or mine[0], time.time(), seconds, env)
            self._release(claim.token, error if status == "failed" and error else status)
        return stored

    def abandon(self, run_id: str, pid: int, why: str) -> None:
        """Fail the run that process ``pid`` held (it died): used by the parent of a dead worker."""
        with self._write():
            row = self._db.execute("SELECT token FROM claims WHERE run_id = ? AND pid = ? AND host = ?", (run_id, pid, HOST)).fetchone()
            if row is None:
                return
            self._release(row[0], why)
            if self.status(run_id) != "done":
                self._db.execute("UPDATE runs SET status = 'failed', error = ?, finished = ? WHERE run_id = ?", (why, time.time(), run_id))

    def claims(self) -> pd.DataFrame:
        """Every claim held now: run, data set, method, seed, host, pid, started, heartbeat age (s), and
        whether its owner counts as alive here (:func:`_owner_alive`)."""
        rows = self._db.execute(
            "SELECT c.run_id, r.dataset, r.method, r.seed, c.host, c.pid, c.pid_start, c.started, c.heartbeat "
            "FROM claims c LEFT JOIN runs r USING (run_id) ORDER BY c.started").fetchall()
        now = time.time()
        return pd.DataFrame(
            [(run_id, ds, me, seed, host, pid, started, now - beat, _owner_alive(host, pid, pid_start, beat))
             for run_id, ds, me, seed, host, pid, pid_start, started, beat in rows],
            columns=["run_id", "dataset", "method", "seed", "host", "pid", "started", "heartbeat_age_s", "alive"])

    def release_claim(self, run_id: str, why: str) -> bool:
        """Break the claim on ``run_id`` by hand (a stuck or foreign claim): the attempt ends with ``why``
        and a run that was not ``done`` is stored failed (a re-run recomputes it). True if there was one."""
        with self._write():
            row = self._db.execute("SELECT token FROM claims WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                return False
            self._release(row[0], why)
            if self.status(run_id) != "done":
                self._db.execute("UPDATE runs SET status = 'failed', error = ?, finished = ? WHERE run_id = ?",
                                 (f"{why}; re-run to recompute", time.time(), run_id))
        return True

    # -- reading ------------------------------------------------------------------------------------------------

    def runs(self) -> pd.DataFrame:
        df = pd.read_sql_query("SELECT * FROM runs ORDER BY dataset, method, seed", self._db)
        for name, _ in NEW_RUN_COLUMNS:  # a store of an older schema read without upgrading it (read-only)
            if name not in df.columns:
                df[name] = None
        if len(df) and df.config_id.isna().any():  # (as the upgrade fills it in: from the stored configuration)
            df["config_id"] = [cid if isinstance(cid, str) else _config_id(config) for cid, config in zip(df.config_id, df.config)]
        return df

    def metrics(self, run_ids: list[str] | None = None) -> pd.DataFrame:
        df = pd.read_sql_query("SELECT * FROM metrics ORDER BY run_id, round, name", self._db)
        return df if run_ids is None else df[df.run_id.isin(run_ids)]


def _config_id(config: str | None) -> str | None:
    """The configuration id of a stored configuration, or None where it cannot be read."""
    try:
        return config_id_of(json.loads(config))
    except Exception:  # noqa: BLE001 - an unreadable configuration has no id (report shows the row, suites skip it)
        return None


#: (host, pid) of foreign claims whose heartbeat looked stale or ahead here -> (that heartbeat, when first seen)
_SEEN: dict[tuple[str, int], tuple[float, float]] = {}


def _owner_alive(host: str, pid: int, pid_start: str | None, heartbeat: float) -> bool:
    """Whether a claim's owner counts as alive.

    On this host (and PID namespace): by its pid *and* a heartbeat less than :data:`STALE_AFTER` old on the
    one clock both read (a live pid that stopped beating, a sweep stopped with SIGSTOP or Ctrl-Z, held its
    runs from every other sweep until it was continued; its claims are now taken over, and if it resumes its
    result is discarded at finish).

    Elsewhere the other host's clock wrote the heartbeat, so its age on this clock means nothing under skew
    (a reader an hour ahead took over 18 of 24 live runs; one an hour behind waited an hour): a heartbeat
    that looks fresh here counts as alive; any other counts as alive while it changes as this process
    watches it, and as dead once it has stood still for ``STALE_AFTER`` seconds of this process's clock
    (so a dead foreign claim is taken over ``STALE_AFTER`` after this process first saw it)."""
    now = time.time()
    if host == HOST:
        return pid_alive(pid, pid_start) and now - heartbeat < STALE_AFTER
    if abs(now - heartbeat) < STALE_AFTER:
        _SEEN.pop((host, pid), None)
        return True
    seen = _SEEN.get((host, pid))
    if seen is None or seen[0] != heartbeat:  # first seen, or it moved: its owner beats
        _SEEN[(host, pid)] = (heartbeat, time.monotonic())
        return True
    return time.monotonic() - seen[1] < STALE_AFTER


class Heartbeat:
    """A daemon thread refreshing a claim's heartbeat every :data:`HEARTBEAT_EVERY` seconds, on its own
    connection, while a long round runs."""

    def __init__(self, path: Path, claim: Claim) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(path, claim), daemon=True, name="fedbench-heartbeat")
        self._thread.start()

    def _beat(self, path: Path, claim: Claim) -> None:
        try:
            db = sqlite3.connect(path, timeout=60)
        except sqlite3.Error:
            return
        try:
            while not self._stop.wait(HEARTBEAT_EVERY):
                try:
                    with db:
                        db.execute("UPDATE claims SET heartbeat = ? WHERE token = ?", (time.time(), claim.token))
                except sqlite3.Error:
                    pass  # a busy store: the next beat tries again
        finally:
            db.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=HEARTBEAT_EVERY + 1)


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the source tree fedbench runs from, when it is a git checkout."""
    import fedbench

    root = Path(fedbench.__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out + ("+dirty" if dirty else "")


@functools.lru_cache(maxsize=1)
def environment() -> dict[str, str | None]:
    """Versions stored with every run."""
    import numpy
    import torch

    from fedbench import __version__

    return {
        "fedbench": __version__,
        "git": git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
    }
