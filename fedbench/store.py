"""The results store: one SQLite file (WAL mode) with runs and per-round metrics.

Safe with several writer processes (each opens its own connection; writes are
short transactions with a busy timeout). A run's row is keyed by its run id.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pandas as pd

from fedbench.config import RunConfig
from fedbench.errors import ResultsError

SCHEMA = """
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
"""

DEFAULT_PATH = Path("results") / "fedbench.sqlite"


class ResultStore:
    """Runs and their metrics in one SQLite file, created on first use."""

    def __init__(self, path: str | Path = DEFAULT_PATH) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=60)
            self._init_schema()
        except (OSError, sqlite3.Error) as e:
            raise ResultsError(
                f"cannot open results file {str(self.path)!r}: {e}; pass --results with a writable path"
            ) from e

    def _init_schema(self, attempts: int = 50) -> None:
        # Switching to WAL and creating tables can hit SQLITE_BUSY without the busy
        # handler being consulted when several workers open a new file at once: retry.
        for attempt in range(attempts):
            try:
                if self._db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    self._db.execute("PRAGMA journal_mode=WAL")
                self._db.executescript(SCHEMA)
                self._db.commit()
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) and "busy" not in str(e) or attempt == attempts - 1:
                    raise
                time.sleep(0.05 * (attempt + 1))

    def close(self) -> None:
        self._db.close()

    def _write(self, sql: str, rows: list[tuple[Any, ...]] | tuple[Any, ...]) -> None:
        try:
            with self._db:
                if isinstance(rows, list):
                    self._db.executemany(sql, rows)
                else:
                    self._db.execute(sql, rows)
        except sqlite3.Error as e:
            raise ResultsError(f"cannot write results file {str(self.path)!r}: {e}") from e

    def status(self, run_id: str) -> str | None:
        row = self._db.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return row[0] if row else None

    def start_run(self, cfg: RunConfig) -> None:
        """Record ``cfg`` as running, discarding metrics of any earlier attempt."""
        from fedbench import __version__

        run_id = cfg.run_id
        self._write("DELETE FROM metrics WHERE run_id = ?", (run_id,))
        self._write(
            "INSERT OR REPLACE INTO runs (run_id, dataset, method, seed, rounds, status, error, config, version, "
            "started, finished) VALUES (?, ?, ?, ?, ?, 'running', NULL, ?, ?, ?, NULL)",
            (
                run_id, cfg.dataset, cfg.method, cfg.seed, cfg.train.rounds,
                json.dumps(cfg.to_dict(), sort_keys=True, default=str), __version__, time.time(),
            ),
        )

    def log_metrics(self, run_id: str, round_: int, metrics: dict[str, float]) -> None:
        self._write(
            "INSERT OR REPLACE INTO metrics (run_id, round, name, value) VALUES (?, ?, ?, ?)",
            [(run_id, round_, name, float(value)) for name, value in metrics.items()],
        )

    def set_engine(self, run_id: str, engine: str) -> None:
        self._write("UPDATE runs SET engine = ? WHERE run_id = ?", (engine, run_id))

    def finish_run(self, run_id: str, status: str, error: str | None = None) -> None:
        self._write(
            "UPDATE runs SET status = ?, error = ?, finished = ? WHERE run_id = ?",
            (status, error, time.time(), run_id),
        )

    def runs(self) -> pd.DataFrame:
        return pd.read_sql_query("SELECT * FROM runs ORDER BY dataset, method, seed", self._db)

    def metrics(self, run_ids: list[str] | None = None) -> pd.DataFrame:
        df = pd.read_sql_query("SELECT * FROM metrics ORDER BY run_id, round, name", self._db)
        return df if run_ids is None else df[df.run_id.isin(run_ids)]
