"""The store never loses, corrupts or double-computes a result: each scenario that once broke it.

Real processes, real signals, a real SQLite file."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from fedbench.runs.build import resolve_run
from fedbench.errors import ConfigError, ResultsError
from fedbench.runs.executor import run_local
from fedbench.runs.runner import execute_run
from fedbench.reporting.store import ResultStore, pid_alive
from fedbench.runs.suite import load_references
from tests.conftest import TINY, run_cli


def _cfg(registry, method="fedavg", seed=0, **extra):
    return resolve_run(registry, dataset="synthetic", method=method, seed=seed, overrides={**TINY, **extra})


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _rows(db: Path, sql: str) -> list[tuple]:
    con = sqlite3.connect(db)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _one_done_run(registry, db: Path, sql: str | None = None, args: tuple = ()):  # noqa: ANN001, ANN202
    """A results file at ``db`` with one finished tiny run, then ``sql`` run on it (a hostile edit); the run's config."""
    store = ResultStore(db)
    cfg = _cfg(registry)
    assert execute_run(registry, cfg, store, progress=False).status == "done"
    if sql is not None:
        store._db.execute(sql, args)
    store.close()
    return cfg


class TestAtomicRuns:
    def test_a_half_written_run_is_never_done_and_is_repaired(self, registry, tmp_path):
        store = ResultStore(tmp_path / "r.sqlite")
        cfg = _cfg(registry)
        claim = store.claim(cfg, pid=_dead_pid())  # an owner that is gone, as after a kill -9
        store.log_metrics(claim, 2, {"test_acc": 50.0})  # one of its two evaluations
        assert store.status(cfg.run_id) == "running"
        assert store.metrics([cfg.run_id]).empty  # live metrics are not results
        store.close()
        reopened = ResultStore(tmp_path / "r.sqlite")
        assert reopened.status(cfg.run_id) == "failed"
        assert "died" in reopened.runs().set_index("run_id").loc[cfg.run_id, "error"]
        outcome = execute_run(registry, cfg, reopened, progress=False)
        assert outcome.status == "done"
        assert len(reopened.metrics([cfg.run_id])) == 3 * 7 and not _rows(tmp_path / "r.sqlite", "SELECT * FROM live_metrics")

    def test_force_keeps_the_old_result_until_the_new_one_is_complete(self, registry, tmp_path):
        store = ResultStore(tmp_path / "r.sqlite")
        cfg = _cfg(registry)
        assert execute_run(registry, cfg, store, progress=False).status == "done"
        before = store.metrics([cfg.run_id]).reset_index(drop=True)
        claim = store.claim(cfg, force=True)
        store.log_metrics(claim, 2, {"test_acc": -1.0})
        assert store.status(cfg.run_id) == "done" and store.metrics([cfg.run_id]).reset_index(drop=True).equals(before)
        assert store.finish(claim, cfg, "failed", error="interrupted") == "done"  # a failed attempt keeps it
        assert store.metrics([cfg.run_id]).reset_index(drop=True).equals(before)
        # a worker dying mid --force keeps it too
        claim = store.claim(cfg, force=True, pid=os.getpid())
        store.abandon(cfg.run_id, os.getpid(), "worker died (signal 9)")
        assert store.status(cfg.run_id) == "done" and store.metrics([cfg.run_id]).reset_index(drop=True).equals(before)
        # and a forced attempt that diverges (a GPU, a torch upgrade) too: it is kept as an attempt only
        claim = store.claim(cfg, force=True)
        store.log_metrics(claim, 0, {"test_acc": 1.0})
        assert store.finish(claim, cfg, "diverged", error="loss is nan after round 1") == "done"
        assert store.status(cfg.run_id) == "done" and store.metrics([cfg.run_id]).reset_index(drop=True).equals(before)
        assert [o for (o,) in _rows(store.path, "SELECT outcome FROM attempts ORDER BY started")][-1] == "diverged"

    def test_force_on_a_missing_device_is_refused_before_anything_is_deleted(self, registry, tmp_path):
        db = tmp_path / "r.sqlite"
        cfg = _cfg(registry)
        execute_run(registry, cfg, ResultStore(db), progress=False)
        before = _rows(db, "SELECT run_id, round, name, value FROM metrics ORDER BY 1, 2, 3")
        for devices in ("cuda:7", "tpu:0"):
            proc = run_cli("run", "--dataset", "synthetic", "--method", "fedavg", "--seed", "0", "--force", "--devices", devices,
                           *[x for k, v in TINY.items() for x in ("--set", f"{k}={v}")], "--results", str(db))
            assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and devices in proc.stderr, proc.stderr
        assert _rows(db, "SELECT run_id, round, name, value FROM metrics ORDER BY 1, 2, 3") == before
        assert _rows(db, "SELECT status FROM runs") == [("done",)]

    def test_a_done_row_of_an_older_version_with_missing_metrics_is_repaired(self, registry, tmp_path):
        db = tmp_path / "old.sqlite"
        cfg = _cfg(registry)
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, eval_at_start=False))
        old = cfg.to_dict()
        del old["train"]["eval_at_start"]  # older versions had no such key (and no round-0 evaluation)
        con = sqlite3.connect(db)
        con.executescript(
            "CREATE TABLE runs (run_id TEXT PRIMARY KEY, dataset TEXT NOT NULL, method TEXT NOT NULL, seed INTEGER NOT NULL,"
            " rounds INTEGER NOT NULL, status TEXT NOT NULL, error TEXT, engine TEXT, config TEXT NOT NULL,"
            " version TEXT NOT NULL, started REAL NOT NULL, finished REAL);"
            "CREATE TABLE metrics (run_id TEXT NOT NULL, round INTEGER NOT NULL, name TEXT NOT NULL, value REAL,"
            " PRIMARY KEY (run_id, round, name));"
        )
        con.execute("INSERT INTO runs VALUES ('old1', 'synthetic', 'fedavg', 0, 4, 'done', NULL, NULL, ?, '0.1.0', 0, 1)",
                    (json.dumps(old, default=str),))
        con.execute("INSERT INTO metrics VALUES ('old1', 2, 'test_acc', 50.0)")  # one of two evaluations
        con.commit()
        con.close()
        store = ResultStore(db)
        row = store.runs().set_index("run_id").loc["old1"]
        assert row.status == "failed" and "1 of its 2 evaluations" in row.error
        assert row.config_id == cfg.config_id  # an old row is recognised as the same experiment


class TestInterruptAnywhere:
    """A Ctrl-C (or a worker's SIGTERM) can land between any two bytecodes: at none of them may the run's
    claim outlive the interrupted process (CI once caught one left by an interrupt just after a claim)."""

    def _interrupted(self, registry, tmp_path, monkeypatch, target: str, when) -> tuple[ResultStore, str]:  # noqa: ANN001
        import fedbench.runs.runner as runner
        import fedbench.reporting.store as store_module

        owner = runner if hasattr(runner, target) else store_module.ResultStore
        real = getattr(owner, target)

        def cut(*args, **kwargs):  # noqa: ANN002, ANN003
            if when(*args, **kwargs):
                raise KeyboardInterrupt
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, target, cut)
        store = ResultStore(tmp_path / "r.sqlite")
        cfg = _cfg(registry)
        with pytest.raises(KeyboardInterrupt):
            execute_run(registry, cfg, store, progress=False)
        return store, cfg.run_id

    @pytest.mark.parametrize("target, when", [
        ("Heartbeat", lambda *a, **k: True),  # just after the claim, before the run's own handlers
        ("_upsert_run", lambda self, cfg, status, *a: status == "done"),  # inside the final commit: it rolls back
    ])
    def test_no_claim_outlives_an_interrupt(self, registry, tmp_path, monkeypatch, target, when):
        store, run_id = self._interrupted(registry, tmp_path, monkeypatch, target, when)
        assert _rows(store.path, "SELECT count(*) FROM claims") == [(0,)]
        assert _rows(store.path, "SELECT status, error FROM runs") == [("failed", "interrupted")]
        assert _rows(store.path, "SELECT outcome FROM attempts") == [("interrupted",)]
        assert store.metrics([run_id]).empty

    def test_a_transaction_an_interrupt_left_open_does_not_block_the_next_write(self, registry, tmp_path):
        store = ResultStore(tmp_path / "r.sqlite")
        store._db.execute("BEGIN IMMEDIATE")  # as if interrupted between BEGIN and its try
        store._db.execute("DELETE FROM runs")
        outcome = execute_run(registry, _cfg(registry), store, progress=False)
        assert outcome.status == "done" and store.status(outcome.config.run_id) == "done"


class TestOwnership:
    def test_a_run_held_by_a_live_process_is_waited_for_never_computed_twice(self, registry, tmp_path):
        db = tmp_path / "r.sqlite"
        cfg = _cfg(registry)
        holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        try:
            store = ResultStore(db)
            claim = store.claim(cfg, pid=holder.pid)
            outcome = execute_run(registry, cfg, store, progress=False)
            assert outcome.status == "held" and str(holder.pid) in outcome.error

            def finish_later() -> None:  # the other process completes the run meanwhile
                time.sleep(1.5)
                other = ResultStore(db)
                for r in (2, 4):
                    other.log_metrics(claim, r, {"test_acc": 42.0})
                other.finish(claim, cfg, "done")

            thread = threading.Thread(target=finish_later)
            thread.start()
            outcomes = run_local([cfg], db, progress=False)
            thread.join()
            assert outcomes[0].status == "skipped"  # waited, then found done: not computed a second time
            assert _rows(db, "SELECT count(*) FROM attempts") == [(1,)]
        finally:
            holder.kill()
            holder.wait()

    def test_two_concurrent_sweeps_compute_every_run_exactly_once(self, tmp_path):
        suite = tmp_path / "s.toml"
        suite.write_text(SUITE)
        db = tmp_path / "r.sqlite"
        args = [sys.executable, "-m", "fedbench", "run", "--suite", str(suite), "--results", str(db), "--no-progress"]
        procs = [subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        errs = [p.communicate()[1] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], errs
        assert _rows(db, "SELECT status, count(*) FROM runs GROUP BY status") == [("done", 6)]
        assert _rows(db, "SELECT max(n) FROM (SELECT count(*) AS n FROM attempts GROUP BY run_id)") == [(1,)]
        assert {n for (n,) in _rows(db, "SELECT count(*) FROM metrics GROUP BY run_id")} == {5 * 7}


SUITE = """
description = "safety"
methods = ["fedem", "fedavg", "local"]
seeds = [1, 2]
[set]
rounds = 20
eval_every = 5
[datasets.synthetic]
n_clients = 20
n_test = 100
dim = 10
"""


def _claimed_pids(db: Path) -> list[int]:
    try:
        return [p for (p,) in _rows(db, "SELECT pid FROM claims")]
    except sqlite3.OperationalError:
        return []


def _wait_for(predicate, timeout: float = 1800.0) -> None:
    """Poll until ``predicate()``; the timeout only turns a hang into a failure (no speed is asserted)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


class TestWorkers:
    def test_a_killed_worker_fails_only_its_run(self, registry, tmp_path):
        db = tmp_path / "r.sqlite"
        configs = [_cfg(registry, method=m, seed=s, rounds=60, eval_every=20) for m in ("fedem", "fedavg") for s in (1, 2)]
        killed: list[int] = []

        def kill_first_worker() -> None:
            _wait_for(lambda: bool(_claimed_pids(db)))
            pid = _claimed_pids(db)[0]
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

        thread = threading.Thread(target=kill_first_worker)
        thread.start()
        outcomes = run_local(configs, db, jobs=2, progress=False)
        thread.join()
        assert killed
        failed = [o for o in outcomes if o.status == "failed"]
        assert len(failed) == 1 and "worker died (signal 9" in failed[0].error
        assert sorted(o.status for o in outcomes) == ["done", "done", "done", "failed"]
        assert _rows(db, "SELECT count(*) FROM claims") == [(0,)]
        assert _rows(db, "SELECT status, count(*) FROM runs GROUP BY status") == [("done", 3), ("failed", 1)]

    def _start_sweep(self, tmp_path, jobs: int = 2):
        suite = tmp_path / "s.toml"
        suite.write_text(SUITE.replace("rounds = 20", "rounds = 400"))
        db = tmp_path / "r.sqlite"
        proc = subprocess.Popen(
            [sys.executable, "-m", "fedbench", "run", "--suite", str(suite), "--results", str(db), "--no-progress", "--jobs", str(jobs)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
            # a terminal's sweep takes Ctrl-C and a hang-up; a shell's background job (e.g. CI started with nohup or &)
            # would pass SIGINT (and, under nohup, SIGHUP) on ignored, and the sweep would never see them: restore both,
            # as a terminal has them
            preexec_fn=lambda: (signal.signal(signal.SIGINT, signal.SIG_DFL), signal.signal(signal.SIGHUP, signal.SIG_DFL)),
        )
        _wait_for(lambda: len(_claimed_pids(db)) >= jobs)
        return proc, db, _claimed_pids(db)

    def test_ctrl_c_stops_a_two_worker_sweep_within_seconds_and_leaves_nothing_behind(self, tmp_path):
        proc, db, workers = self._start_sweep(tmp_path)
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
        err = proc.communicate()[1]
        # how fast it stops is measured by benchmarks/faults.py (results/faults.md), not asserted here
        assert proc.returncode == 130, err
        assert "interrupted:" in err and "run the same command again" in err
        assert not any(pid_alive(p, None) for p in workers)
        assert _rows(db, "SELECT count(*) FROM claims") == [(0,)]
        assert _rows(db, "SELECT count(*) FROM runs WHERE status = 'running'") == [(0,)]

    @pytest.mark.parametrize("gap", [0.0, 0.1, 0.4])
    def test_ctrl_c_twice_exits_130_whenever_the_second_comes(self, tmp_path, gap):
        proc, db, workers = self._start_sweep(tmp_path)
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(gap)
        os.killpg(proc.pid, signal.SIGINT)
        err = proc.communicate()[1]
        assert proc.returncode == 130, err  # never -2 (killed by SIGINT)
        _wait_for(lambda: not any(pid_alive(p, None) for p in workers))

    def test_a_closed_terminal_stops_like_sigterm_and_leaves_nothing_running(self, tmp_path):
        proc, db, workers = self._start_sweep(tmp_path)
        os.kill(proc.pid, signal.SIGHUP)
        err = proc.communicate()[1]
        assert proc.returncode == 130, err
        assert not any(pid_alive(p, None) for p in workers)
        assert _rows(db, "SELECT count(*) FROM runs WHERE status = 'running'") == [(0,)]
        assert _rows(db, "SELECT count(*) FROM claims") == [(0,)]

    def test_killing_the_parent_leaves_no_worker_and_the_rerun_completes(self, tmp_path):
        proc, db, workers = self._start_sweep(tmp_path)
        os.kill(proc.pid, signal.SIGKILL)  # the parent alone
        proc.wait()
        _wait_for(lambda: not any(pid_alive(p, None) for p in workers))
        store = ResultStore(db)  # opening repairs what the dead sweep left
        assert store.runs().status.isin(["done", "failed"]).all()


class TestBadInputFailsUpFront:
    @pytest.mark.parametrize("setting, words", [
        ("dataset.partitioner=nope", "unknown partitioner 'nope'"),
        ("dataset.n_clients=0", "n_clients must be >= 1"),
        ("dataset.n_clients=-5", "n_clients must be >= 1"),
        ("dataset.alpha=-1", "alpha must be > 0"),
        ("dataset.alpha=0", "alpha must be > 0"),
        ("client.mu=-1", "mu must be >= 0"),
    ])
    def test_bad_setting_is_one_line_and_exit_2_with_no_run(self, tmp_path, setting, words):
        db = tmp_path / "r.sqlite"
        proc = run_cli("run", "--dataset", "digits", "--method", "fedprox", "--set", setting, "--results", str(db))
        assert proc.returncode == 2 and words in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
        assert not db.exists()

    @pytest.mark.parametrize("body, words", [
        ('methods = []\nseeds = [1]\n[datasets.synthetic]\n', "methods is empty"),
        ('methods = ["fedavg"]\nseeds = []\n[datasets.synthetic]\n', "seeds is empty"),
        ('methods = ["fedavg"]\nseeds = [1]\n[datasets]\n', "datasets is empty"),
    ])
    def test_empty_suite_is_refused(self, registry, tmp_path, body, words):
        path = tmp_path / "s.toml"
        path.write_text(body)
        from fedbench.runs.suite import load_suite

        with pytest.raises(ConfigError, match=words):
            load_suite(registry, str(path))

    @pytest.mark.parametrize("content, words", [
        ("dataset,method,metric,value,source\nsynthetic,fedavg,test_acc,high,paper\n", "'high' in data row 1 is not a number"),
        ("", "is not a CSV"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", "is not a CSV"),
        ("dataset,method,metric,value,source\n", "has no rows"),
    ])
    def test_bad_reference_file_is_refused_at_load(self, tmp_path, content, words):
        path = tmp_path / "ref.csv"
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        with pytest.raises(ConfigError, match=words):
            load_references(path)


class TestForeignAndReadOnly:
    def test_another_programs_sqlite_file_is_refused_and_left_unchanged(self, tmp_path):
        db = tmp_path / "other.sqlite"
        con = sqlite3.connect(db)
        con.execute("CREATE TABLE users (id INTEGER, name TEXT)")
        con.commit()
        con.close()
        before = _sha(db)
        with pytest.raises(ResultsError, match="not a fedbench results file"):
            ResultStore(db)
        proc = run_cli("run", "--dataset", "synthetic", "--method", "fedavg", "--rounds", "1", "--results", str(db))
        assert proc.returncode == 2 and "not a fedbench results file" in proc.stderr
        assert _sha(db) == before and not Path(f"{db}-wal").exists()
        garbage = tmp_path / "garbage.sqlite"
        garbage.write_bytes(b"definitely not sqlite" * 100)
        with pytest.raises(ResultsError, match="not a fedbench results file"):
            ResultStore(garbage)

    def test_report_reads_without_writing(self, registry, tmp_path):
        db = tmp_path / "r.sqlite"
        execute_run(registry, _cfg(registry), ResultStore(db), progress=False)
        before = (_sha(db), db.stat().st_mtime_ns)
        proc = run_cli("report", "--results", str(db))
        assert proc.returncode == 0 and "fedavg" in proc.stdout, proc.stderr
        assert (_sha(db), db.stat().st_mtime_ns) == before
        store = ResultStore(db, readonly=True)
        with pytest.raises(ResultsError, match="read-only"):
            store.claim(_cfg(registry, seed=5))


class TestCodeFingerprint:
    PROBE = (
        "from fedbench.plugin.registry import get_registry; from fedbench.runs.build import resolve_run; "
        "c = resolve_run(get_registry(), dataset='synthetic', method='outside_avg', seed=0); print(c.config_id, c.run_id)"
    )

    def test_editing_an_outside_plugins_helper_changes_the_run_id_not_the_config_id(self, tmp_path):
        from tests.test_registry import make_dist

        (tmp_path / "outside_helpers.py").write_text("def scale(x):\n    return 1.0 * x\n")
        make_dist(
            tmp_path,
            "outside_method",
            """
            from fedbench import MethodSpec, hookimpl
            from outside_helpers import scale
            @hookimpl
            def fedbench_methods():
                return [MethodSpec(name="outside_avg", client="plain", aggregator="centralized")]
            """,
        )

        def probe() -> tuple[str, str]:
            proc = subprocess.run([sys.executable, "-c", self.PROBE], capture_output=True, text=True,
                                  env={**os.environ, "PYTHONPATH": str(tmp_path)})
            assert proc.returncode == 0, proc.stderr
            config_id, run_id = proc.stdout.split()
            return config_id, run_id

        first = probe()
        assert probe() == first  # stable for unchanged code
        (tmp_path / "outside_helpers.py").write_text("def scale(x):\n    return 2.0 * x\n")  # a numerics change in a helper
        second = probe()
        assert second[0] == first[0] and second[1] != first[1]

    def test_report_marks_results_of_other_code(self, registry, tmp_path):
        import dataclasses

        from fedbench.reporting.report import runs_table

        db = tmp_path / "r.sqlite"
        cfg = _cfg(registry)
        old = dataclasses.replace(cfg, code="0000000000000000")  # the same experiment by other code
        store = ResultStore(db)
        execute_run(registry, old, store, progress=False)
        table = runs_table(store, configs=[cfg])
        assert len(table) == 1 and bool(table.other_code.iloc[0])
        execute_run(registry, cfg, store, progress=False)
        table = runs_table(store, configs=[cfg])
        assert len(table) == 1 and not bool(table.other_code.iloc[0])  # the current code's result wins


class TestGridReports:
    def test_grid_points_are_columns_and_only_seeds_are_averaged(self, registry, tmp_path):
        from fedbench.reporting.report import comparison_table, human_bytes, runs_table

        db = tmp_path / "r.sqlite"
        configs = [_cfg(registry, seed=s, lr=lr) for s in (1, 2) for lr in (0.05, 0.1)]
        run_local(configs, db, progress=False)
        table = runs_table(ResultStore(db, readonly=True))
        assert "lr" in table.columns and sorted(set(table.lr)) == [0.05, 0.1]
        comp = comparison_table(table)
        assert list(comp.columns) == ["fedavg lr=0.05", "fedavg lr=0.1"]
        for lr in (0.05, 0.1):
            accs = table[table.lr == lr].test_acc
            cell = comp.loc["synthetic", f"fedavg lr={lr}"]
            assert cell == f"{accs.mean():.2f} ± {accs.std():.2f} (n=2)"
        assert human_bytes(24424800000.0) == "24.4 GB" and human_bytes(999) == "999 B" and human_bytes(1500) == "1.5 kB"

    def test_a_setting_only_one_method_has_labels_only_that_methods_columns(self, registry, tmp_path):
        from fedbench.reporting.report import comparison_table, runs_table

        db = tmp_path / "r.sqlite"
        configs = [_cfg(registry, method="fedprox", seed=1, **{"client.mu": mu}) for mu in (0.01, 1.0)]
        run_local([*configs, _cfg(registry, method="fedavg", seed=1)], db, progress=False)
        comp = comparison_table(runs_table(ResultStore(db, readonly=True)))
        assert list(comp.columns) == ["fedavg", "fedprox mu=0.01", "fedprox mu=1.0"]  # not "fedavg mu=nan"


class TestOutsidePartitioner:
    def test_an_outside_partitioners_own_settings_are_accepted_and_checked(self, tmp_path):
        from tests.test_registry import make_dist

        make_dist(
            tmp_path,
            "outside_split",
            """
            import numpy as np
            from fedbench import PartitionerSpec, hookimpl
            from fedbench.plugin.params import Param
            def halves(labels, n_clients, rng, skew=2.0):
                order = np.argsort(labels, kind="stable")
                return [np.sort(p) for p in np.array_split(order, n_clients)]
            @hookimpl
            def fedbench_partitioners():
                return [PartitionerSpec(name="halves", params={"skew": Param(2.0, low=1.0)}, partition=halves)]
            """,
        )
        env = {"PYTHONPATH": str(tmp_path)}
        ok = run_cli("data", "describe", "digits", "--set", "partitioner=halves", "--set", "skew=3.0",
                     "--set", "n_clients=4", env=env)
        assert ok.returncode == 0 and "digits: 4 clients" in ok.stdout, ok.stderr
        low = run_cli("data", "describe", "digits", "--set", "partitioner=halves", "--set", "skew=0.5", env=env)
        assert low.returncode == 2 and "skew must be >= 1" in low.stderr
        other = run_cli("data", "describe", "digits", "--set", "partitioner=halves", "--set", "alpha=0.3", env=env)
        assert other.returncode == 2 and "has no parameter 'alpha'" in other.stderr  # Dirichlet's, not used here


def test_fedbench_list_shows_each_parameters_valid_values():
    proc = run_cli("list", "method")
    assert proc.returncode == 0, proc.stderr
    assert "client.mu=0.1 (>= 0)" in proc.stdout  # fedprox, from the same Param the checks use
    assert "aggregator.unsampled=hold (one of 'hold', 'drop')" in proc.stdout


class TestHostile:
    """Issue 26: what a hostile user tried that the fault benchmark does not."""

    def test_the_expected_evaluation_count_is_closed_form_and_the_claim_of_an_absurd_run_is_short(self, registry, tmp_path):
        from fedbench.reporting.store import n_evaluations

        for rounds in range(1, 40):
            for every in (1, 2, 3, 5, 7, 10, 50):
                for start in (False, True):
                    train = dataclasses.replace(_cfg(registry).train, rounds=rounds, eval_every=every, eval_at_start=start)
                    loop = int(start) + sum(train.is_eval_round(r) for r in range(rounds))
                    assert n_evaluations(train) == loop, (rounds, every, start)
        store = ResultStore(tmp_path / "r.sqlite")
        cfg = _cfg(registry, rounds=2_000_000_000, eval_every=1)  # a typo: minutes of Python inside the lock before
        began = time.perf_counter()
        claim = store.claim(cfg)
        assert time.perf_counter() - began < 5
        assert _rows(store.path, "SELECT n_evals FROM runs") == [(2_000_000_001,)]
        store.finish(claim, cfg, "failed", error="interrupted")

    def test_a_read_only_store_with_runs_only_in_its_write_ahead_log_shows_them(self, registry, tmp_path):
        if os.geteuid() != 0 or shutil.which("unshare") is None:
            pytest.skip("needs root and unshare for a read-only mount")
        folder = tmp_path / "ro"
        folder.mkdir()
        db = folder / "r.sqlite"
        # a writer killed before it merged its log: every run is in r.sqlite-wal, and no -shm was copied along
        script = textwrap.dedent(f"""
            import os, sys
            from fedbench.plugin.registry import get_registry
            from fedbench.runs.runner import execute_run
            from fedbench.reporting.store import ResultStore
            from tests.test_store_safety import _cfg
            store = ResultStore({str(db)!r})
            store._db.execute("PRAGMA wal_autocheckpoint = 0")
            for seed in range(3):
                assert execute_run(get_registry(), _cfg(get_registry(), seed=seed), store, progress=False).status == "done"
            os._exit(0)
        """)
        subprocess.run([sys.executable, "-c", script], check=True, cwd=Path(__file__).resolve().parents[1])
        wal = db.with_name("r.sqlite-wal")
        assert wal.stat().st_size > 0
        db.with_name("r.sqlite-shm").unlink(missing_ok=True)
        inner = (f"mount --bind {folder} {folder} && mount -o remount,bind,ro {folder} && "
                 f"{sys.executable} -m fedbench export --results {db} --format csv --out {tmp_path / 'out.csv'}")
        proc = subprocess.run(["unshare", "-m", "sh", "-c", inner], capture_output=True, text=True)
        if "mount" in proc.stderr and proc.returncode != 0 and "fedbench" not in proc.stderr:
            pytest.skip(f"no read-only bind mount here: {proc.stderr.strip()}")
        assert proc.returncode == 0, proc.stderr
        import csv

        with open(tmp_path / "out.csv", newline="") as fh:
            assert len({row["run_id"] for row in csv.DictReader(fh)}) == 3  # three runs, not 0 rows

    def test_a_write_lock_held_elsewhere_is_waited_for_with_a_message_not_a_failed_run(self, registry, tmp_path):
        db = tmp_path / "r.sqlite"
        ResultStore(db).close()
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # a sqlite3 shell, or a sweep stopped with Ctrl-Z inside a transaction
        proc = subprocess.Popen(
            [sys.executable, "-m", "fedbench", "run", "--dataset", "synthetic", "--method", "fedavg", "--results", str(db),
             *[x for k, v in TINY.items() for x in ("--set", f"{k}={v}")]],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        # wait for its message, however long a loaded machine takes to start it (a fixed sleep raced the start-up)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)
        reader.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any("waiting for the results file" in line for line in lines):
            time.sleep(0.1)
        time.sleep(1.0)
        assert proc.poll() is None  # still waiting, not crashed
        holder.execute("ROLLBACK")
        holder.close()
        proc.wait(timeout=120)
        reader.join(timeout=10)
        err = "".join(lines)
        assert proc.returncode == 0, err
        assert "waiting for the results file" in err and "is free again" in err and "Traceback" not in err
        assert _rows(db, "SELECT status FROM runs") == [("done",)]


class TestOneLineErrors:
    def test_an_absurd_seed_is_one_line_and_exit_2_before_anything_is_written(self, tmp_path):
        db = tmp_path / "r.sqlite"
        proc = run_cli("run", "--dataset", "synthetic", "--method", "fedavg", "--seed", "1180591620717411303424",
                       "--results", str(db))
        assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
            "fedbench: error: seed must be an integer in [0, 2**63), got 1180591620717411303424"]
        assert not db.exists()

    def test_export_to_an_existing_folder_names_the_fix(self, registry, tmp_path):
        _one_done_run(registry, tmp_path / "r.sqlite")
        proc = run_cli("export", "--results", str(tmp_path / "r.sqlite"), "--format", "csv", "--out", str(tmp_path))
        assert proc.returncode == 2 and "is a folder; give a file name" in proc.stderr and "Traceback" not in proc.stderr


class TestClaimsCommand:
    def test_claims_are_listed_and_a_stuck_one_is_broken_by_hand(self, registry, tmp_path):
        db = tmp_path / "r.sqlite"
        store = ResultStore(db)
        cfg = _cfg(registry)
        store.claim(cfg)  # this (live) process: a claim that blocks every other sweep
        store.close()
        listed = run_cli("claims", "--results", str(db))
        assert listed.returncode == 0 and cfg.run_id in listed.stdout and f"pid {os.getpid()}" in listed.stdout
        assert "alive" in listed.stdout
        refused = run_cli("claims", "--results", str(db), "--release", cfg.run_id)
        assert refused.returncode == 2 and "looks alive" in refused.stderr and "--yes" in refused.stderr
        assert run_cli("claims", "--results", str(db), "--release", "nope").returncode == 2
        done = run_cli("claims", "--results", str(db), "--release", cfg.run_id, "--yes")
        assert done.returncode == 0, done.stderr
        assert _rows(db, "SELECT count(*) FROM claims") == [(0,)]
        assert _rows(db, "SELECT status FROM runs") == [("failed",)]
        assert "no claims" in run_cli("claims", "--results", str(db)).stdout

    def test_stale_breaks_only_claims_without_a_recent_heartbeat(self, registry, tmp_path):
        db = tmp_path / "r.sqlite"
        store = ResultStore(db)
        old, fresh = _cfg(registry, seed=1), _cfg(registry, seed=2)
        store.claim(old), store.claim(fresh)
        # silent for 90 s: past the hand-given --stale 60, not yet past STALE_AFTER (then any writer repairs it)
        store._db.execute("UPDATE claims SET heartbeat = heartbeat - 90 WHERE run_id = ?", (old.run_id,))
        store.close()
        proc = run_cli("claims", "--results", str(db), "--stale", "60")
        assert proc.returncode == 0 and "1 claim(s)" in proc.stdout
        assert _rows(db, "SELECT run_id FROM claims") == [(fresh.run_id,)]



class TestOneLineStops:
    """Bad input, plugin exits and a full disk: one line and a clear status, never tracebacks (issue 26, items 7-9)."""

    def test_a_suite_that_is_not_utf8_and_a_tensorboard_file_are_one_line_before_any_run(self, tmp_path):
        suite = tmp_path / "latin.toml"
        suite.write_bytes(b'methods = ["fedavg"]\nseeds = [0]\n# caf\xe9\n[datasets.synthetic]\n')
        db = tmp_path / "r.sqlite"
        proc = run_cli("run", "--suite", str(suite), "--results", str(db))
        assert proc.returncode == 2 and "not UTF-8 text" in proc.stderr and "Traceback" not in proc.stderr
        suite.write_text('methods = [1, 2]\nseeds = [0]\n[datasets.synthetic]\n')
        proc = run_cli("run", "--suite", str(suite), "--results", str(db))
        assert proc.returncode == 2 and "methods must be method names (strings), got 1" in proc.stderr
        board = tmp_path / "board"
        board.write_text("")
        proc = run_cli("run", "--dataset", "synthetic", "--method", "fedavg", "--results", str(db), "--tensorboard", str(board))
        assert proc.returncode == 2 and "is a file; it takes a folder" in proc.stderr
        assert not db.exists()  # nothing ran, nothing was stored

    def test_tensorboard_export_stays_inside_out_whatever_the_stored_names(self, registry, tmp_path):
        pytest.importorskip("tensorboard")
        db = tmp_path / "r.sqlite"
        _one_done_run(registry, db, "UPDATE runs SET dataset = '../../escaped', method = '/abs'")
        out = tmp_path / "deep" / "out"
        proc = run_cli("export", "--results", str(db), "--format", "tensorboard", "--out", str(out))
        assert proc.returncode == 0, proc.stderr
        written = [p for p in tmp_path.rglob("events.out.tfevents.*")]
        assert written and all(out in p.parents for p in written)
        assert not (tmp_path / "escaped").exists() and not Path("/abs").exists()

    def test_a_plugin_calling_sys_exit_fails_its_run_with_a_message(self, tmp_path):
        from tests.test_registry import make_dist

        make_dist(tmp_path, "exits_model", """
            import sys
            import torch
            from fedbench import ModelSpec, hookimpl

            class ExitsWhenTrained(torch.nn.Linear):
                def forward(self, x):
                    if torch.is_grad_enabled():  # training: the check before the run and evaluations pass
                        sys.exit(3)
                    return super().forward(x)

            def build_exits(input_shape, n_outputs):
                sys.exit(4)

            @hookimpl
            def fedbench_models():
                return [ModelSpec(name="exits", doc="calls sys.exit when trained",
                                  build=lambda input_shape, n_outputs: ExitsWhenTrained(input_shape[0], n_outputs)),
                        ModelSpec(name="exits-at-build", doc="calls sys.exit when built", build=build_exits)]
            """)
        db = tmp_path / "r.sqlite"
        sets = [x for k, v in TINY.items() if k.startswith("dataset.") for x in ("--set", f"{k}={v}")]
        proc = run_cli("run", "--dataset", "synthetic", "--method", "fedavg", "--model", "exits", "--results", str(db),
                       *sets, env={"PYTHONPATH": str(tmp_path)})
        assert proc.returncode == 1 and "called sys.exit(3)" in proc.stdout + proc.stderr
        assert _rows(db, "SELECT status FROM runs") == [("failed",)]  # not "interrupted", not silent
        early = run_cli("run", "--dataset", "synthetic", "--method", "fedavg", "--model", "exits-at-build", "--results",
                        str(tmp_path / "early.sqlite"), *sets, env={"PYTHONPATH": str(tmp_path)})
        assert early.returncode == 2 and early.stderr.count("\n") == 1 and "called sys.exit(4)" in early.stderr
        assert not (tmp_path / "early.sqlite").exists()  # refused before any run

    @pytest.mark.parametrize("jobs", [1, 2])
    def test_a_full_disk_stops_the_sweep_with_one_line_not_tracebacks(self, tmp_path, jobs):
        if os.geteuid() != 0 or shutil.which("unshare") is None:
            pytest.skip("needs root and unshare for a small tmpfs")
        suite = tmp_path / "s.toml"
        suite.write_text(SUITE.replace("rounds = 20", "rounds = 200").replace("eval_every = 5", "eval_every = 1"))
        small = tmp_path / "small"
        small.mkdir()
        inner = (f"mount -t tmpfs -o size=300k tmpfs {small} && {sys.executable} -m fedbench run --suite {suite} "
                 f"--results {small}/r.sqlite --no-progress --jobs {jobs}; echo rc=$?")
        proc = subprocess.run(["unshare", "-m", "sh", "-c", inner], capture_output=True, text=True, timeout=600,
                              cwd=Path(__file__).resolve().parents[1])
        assert "rc=2" in proc.stdout, proc.stderr[-3000:]
        errors = [line for line in proc.stderr.splitlines() if line.startswith("fedbench: error:")]
        assert len(errors) == 1 and "is full" in errors[0] and "run the same command again" in errors[0]
        assert "Traceback" not in proc.stderr, proc.stderr[-3000:]


class TestLiveness:
    def test_a_claim_from_another_pid_namespace_with_the_same_host_name_is_judged_by_its_heartbeat(self, registry, tmp_path):
        if os.geteuid() != 0 or shutil.which("unshare") is None:
            pytest.skip("needs root and unshare for a PID namespace")
        db = tmp_path / "r.sqlite"
        ResultStore(db).close()
        # a sweep in a container with the same host name: its own PID namespace, where it is pid 1 or so
        script = textwrap.dedent(f"""
            import sys, time
            from fedbench.plugin.registry import get_registry
            from fedbench.reporting.store import ResultStore
            from tests.test_store_safety import _cfg
            store = ResultStore({str(db)!r})
            store.claim(_cfg(get_registry()))
            print("claimed", flush=True)
            time.sleep(60)
        """)
        proc = subprocess.Popen(["unshare", "-p", "-f", "--kill-child", "--mount-proc", sys.executable, "-c", script], stdout=subprocess.PIPE,
                                text=True, cwd=Path(__file__).resolve().parents[1])
        try:
            assert proc.stdout.readline().strip() == "claimed"
            (pid,) = _rows(db, "SELECT pid FROM claims")[0]
            assert pid < 10  # its pid in its own namespace: in ours, another process or none
            held = ResultStore(db).claim(_cfg(registry))
            assert held is not None and not hasattr(held, "token"), "a live foreign claim was taken over"
            assert _rows(db, "SELECT count(*) FROM attempts") == [(1,)]  # not computed twice
        finally:
            proc.kill()
            proc.wait()

    def test_a_live_process_that_stopped_beating_on_this_host_loses_its_claim(self, registry, tmp_path):
        from fedbench.reporting.store import STALE_AFTER

        db = tmp_path / "r.sqlite"
        ResultStore(db).close()
        script = textwrap.dedent(f"""
            import time
            from fedbench.plugin.registry import get_registry
            from fedbench.reporting.store import ResultStore
            from tests.test_store_safety import _cfg
            ResultStore({str(db)!r}).claim(_cfg(get_registry()))
            print("claimed", flush=True)
            time.sleep(60)
        """)
        # a sweep stopped with SIGSTOP (or Ctrl-Z): its pid lives, its heartbeat does not move
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                                cwd=Path(__file__).resolve().parents[1])
        try:
            assert proc.stdout.readline().strip() == "claimed"
            store = ResultStore(db)
            assert store.holder(_cfg(registry).run_id) is not None  # beating recently: held
            store._db.execute("UPDATE claims SET heartbeat = heartbeat - ?", (STALE_AFTER + 1,))
            taken = store.claim(_cfg(registry))
            assert hasattr(taken, "token"), f"a claim silent for over STALE_AFTER was not taken over: {taken}"
            store.close()
        finally:
            proc.kill()
            proc.wait()

    def test_an_attempt_whose_claim_was_taken_over_stops_at_its_next_evaluation(self, registry, tmp_path):
        from fedbench.errors import ClaimLost
        from fedbench.reporting.store import STALE_AFTER

        db = tmp_path / "r.sqlite"
        stopped, other = ResultStore(db), ResultStore(db)
        cfg = _cfg(registry)
        old = stopped.claim(cfg)
        stopped.log_metrics(old, 0, {"test_acc": 50.0})
        # it stands still past STALE_AFTER (SIGSTOP); another sweep takes the run over
        stopped._db.execute("UPDATE claims SET heartbeat = heartbeat - ?", (STALE_AFTER + 1,))
        new = other.claim(cfg)
        assert hasattr(new, "token")
        with pytest.raises(ClaimLost, match="stopped at round 2"):  # continued: it learns at once, computes no further
            stopped.log_metrics(old, 2, {"test_acc": 60.0})
        other.log_metrics(new, 0, {"test_acc": 51.0})
        rows = dict(other._db.execute("SELECT token, outcome FROM attempts").fetchall())
        assert rows[old.token] == "claim lost (taken over as stale); stopped at round 2" and rows[new.token] is None
        assert other._db.execute("SELECT count(*) FROM live_metrics WHERE token = ?", (old.token,)).fetchone()[0] == 0
        assert other.holder(cfg.run_id) is not None  # the new owner's claim is untouched
        stopped.close()
        other.close()

    @pytest.mark.parametrize("skew", [3600, -3600])
    def test_a_heartbeat_from_a_clock_an_hour_off_counts_alive_until_it_stands_still(self, registry, tmp_path, monkeypatch, skew):
        # +3600: the other host's clock is ahead (it blocked every sweep for the hour); -3600: behind, or this
        # reader ahead (its live claims were taken over at once: 18 of 24 runs computed twice in faults.py)
        import fedbench.reporting.store as store_module

        db = tmp_path / "r.sqlite"
        store = ResultStore(db)
        cfg = _cfg(registry)
        store.claim(cfg)
        store._db.execute("UPDATE claims SET host = 'elsewhere', heartbeat = heartbeat + ?", (skew,))
        assert store.holder(cfg.run_id) is not None  # first seen: alive
        clock = [time.monotonic()]
        monkeypatch.setattr(store_module.time, "monotonic", lambda: clock[0])
        clock[0] += store_module.STALE_AFTER / 2
        assert store.holder(cfg.run_id) is not None  # still within the wait
        store._db.execute("UPDATE claims SET heartbeat = heartbeat + 5")  # it beats: alive, the wait restarts
        clock[0] += store_module.STALE_AFTER * 0.9
        assert store.holder(cfg.run_id) is not None
        clock[0] += store_module.STALE_AFTER  # stood still for STALE_AFTER of our clock, not for an hour
        assert store.holder(cfg.run_id) is None
        store.close()



class TestOldAndOddStores:
    def test_a_store_of_an_older_schema_reports_read_only(self, registry, tmp_path):
        db = tmp_path / "old.sqlite"
        cfg = _one_done_run(registry, db)
        con = sqlite3.connect(db)
        con.execute("DROP INDEX runs_config_id")
        for column in ("config_id", "code", "env", "n_evals", "seconds"):  # the columns added since the first schema
            con.execute(f"ALTER TABLE runs DROP COLUMN {column}")
        con.commit()
        con.close()
        runs = ResultStore(db, readonly=True).runs()
        assert list(runs.run_id) == [cfg.run_id] and runs.config_id.tolist() == [cfg.config_id]
        proc = run_cli("report", "--results", str(db))
        assert proc.returncode == 0 and "| synthetic | fedavg | 0 | 4 | done |" in proc.stdout, proc.stderr

    def test_plot_of_a_stored_name_with_a_slash_writes_inside_out(self, registry, tmp_path):
        pytest.importorskip("matplotlib")
        db = tmp_path / "r.sqlite"
        _one_done_run(registry, db, "UPDATE runs SET dataset = 'mine/v2'")
        proc = run_cli("plot", "--results", str(db), "--out", str(tmp_path / "plots"))
        assert proc.returncode == 0, proc.stderr
        assert (tmp_path / "plots" / "curves_mine_v2.png").is_file()

    def test_a_row_with_an_unreadable_configuration_does_not_make_the_store_unusable(self, registry, tmp_path):
        db = tmp_path / "r.sqlite"
        cfg = _one_done_run(registry, db, "UPDATE runs SET config_id = NULL, config = ?", (json.dumps({"dataset": "synthetic"}),))
        reopened = ResultStore(db)  # (it raised KeyError: 'train' on every open)
        assert reopened.status(cfg.run_id) == "done" and reopened.runs().config_id.tolist() == [None]  # (no id: no suite)
        assert run_cli("report", "--results", str(db)).returncode == 0


@pytest.mark.parametrize("setting, hint", [("mu=0.5", "did you mean 'client.mu'?"), ("round=2", "did you mean 'rounds'?"),
                                           ("alpha=0.3", "did you mean 'dataset.alpha'?")])
def test_an_unknown_setting_names_the_one_meant(registry, setting, hint):
    key, value = setting.split("=")
    with pytest.raises(ConfigError, match=hint.replace("?", r"\?")):
        resolve_run(registry, dataset="synthetic", method="fedprox", seed=0, overrides={key: float(value)})
