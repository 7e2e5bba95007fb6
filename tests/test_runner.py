"""Runs end to end through the real engine and SQLite store: determinism, resume, failure states."""

from __future__ import annotations

import sqlite3

import pytest

from fedbench.build import resolve_run
from fedbench.runner import execute_run
from fedbench.store import ResultStore
from tests.conftest import TINY


def _run(registry, store, method="fedem", seed=0, **extra):
    cfg = resolve_run(registry, dataset="synthetic", method=method, seed=seed, overrides={**TINY, **extra})
    return execute_run(registry, cfg, store, progress=False)


class TestDeterminism:
    def test_same_config_and_seed_give_identical_metrics(self, registry, tmp_path):
        a = _run(registry, ResultStore(tmp_path / "a.sqlite"))
        b = _run(registry, ResultStore(tmp_path / "b.sqlite"))
        assert a.status == b.status == "done"
        assert a.metrics == b.metrics
        ma = ResultStore(tmp_path / "a.sqlite").metrics().drop(columns="run_id")
        mb = ResultStore(tmp_path / "b.sqlite").metrics().drop(columns="run_id")
        assert ma.equals(mb) and len(ma) == 3 * 7  # eval at rounds 0, 2 and 4, seven metrics each

    def test_other_seed_gives_other_numbers(self, registry, tmp_path):
        store = ResultStore(tmp_path / "r.sqlite")
        assert _run(registry, store, seed=0).metrics != _run(registry, store, seed=1).metrics


class TestStore:
    def test_finished_run_is_not_recomputed_unless_forced(self, registry, tmp_path):
        store = ResultStore(tmp_path / "r.sqlite")
        first = _run(registry, store, method="fedavg")
        assert first.status == "done"
        assert _run(registry, store, method="fedavg").status == "skipped"
        cfg = first.config
        again = execute_run(registry, cfg, store, progress=False, force=True)
        assert again.status == "done" and again.metrics == first.metrics
        rows = sqlite3.connect(tmp_path / "r.sqlite").execute("SELECT count(*) FROM runs").fetchone()[0]
        assert rows == 1

    def test_diverging_run_is_stored_as_diverged(self, registry, tmp_path):
        store = ResultStore(tmp_path / "r.sqlite")
        good = _run(registry, store, method="fedavg")
        bad = _run(registry, store, method="fedavg", lr=1e38, momentum=0.0, lr_schedule="constant")
        assert bad.status == "diverged" and "diverged at round" in bad.error
        assert store.status(bad.config.run_id) == "diverged"
        assert store.status(good.config.run_id) == "done"

    def test_failing_run_is_stored_with_its_error_and_keeps_others(self, registry, tmp_path):
        store = ResultStore(tmp_path / "r.sqlite")
        good = _run(registry, store, method="local")
        cfg = resolve_run(registry, dataset="digits", method="fedavg", seed=0,
                          overrides={"dataset.n_clients": 1797, "dataset.partitioner": "iid", "rounds": 2})
        bad = execute_run(registry, cfg, store, progress=False)
        # one sample a client: floor(0.8 * 1) = 0 train samples (the authors' sklearn cut), so the run fails
        assert bad.status == "failed" and "got no training sample" in bad.error
        runs = store.runs().set_index("run_id")
        assert runs.loc[bad.config.run_id, "status"] == "failed"
        assert runs.loc[good.config.run_id, "status"] == "done"


class TestRunId:
    def test_stable_and_sensitive(self, registry):
        a = resolve_run(registry, dataset="synthetic", method="fedem", seed=0, overrides=TINY)
        b = resolve_run(registry, dataset="synthetic", method="fedem", seed=0, overrides=dict(TINY))
        c = resolve_run(registry, dataset="synthetic", method="fedem", seed=0, overrides={**TINY, "lr": 0.05})
        d = resolve_run(registry, dataset="synthetic", method="fedem", seed=0, overrides=TINY, device="cuda")
        assert a.run_id == b.run_id == d.run_id != c.run_id
        assert len(a.run_id) == 16

    @pytest.mark.parametrize(
        "overrides, message",
        [
            ({"lrr": 0.1}, "unknown setting 'lrr'"),
            ({"dataset.n_client": 3}, "has no parameter 'n_client'"),
            ({"lr": "fast"}, "lr expects float"),
            ({"rounds": 0}, "rounds must be >= 1"),
        ],
    )
    def test_bad_overrides(self, registry, overrides, message):
        from fedbench.errors import ConfigError

        with pytest.raises(ConfigError, match=message):
            resolve_run(registry, dataset="synthetic", method="fedem", seed=0, overrides=overrides)


class TestCommunication:
    def test_bytes_sent_closed_form(self, registry, tmp_path):
        store = ResultStore(tmp_path / "r.sqlite")
        fedem = _run(registry, store, method="fedem")
        local = _run(registry, store, method="local")
        # d = 10 inputs + 1 bias = 11 float32 parameters per learner; 8 clients, 4 rounds, down + up
        assert fedem.metrics["bytes_sent"] == 4 * 8 * 2 * 3 * 11 * 4
        assert local.metrics["bytes_sent"] == 0
        partial = _run(registry, store, method="fedavg", participation=0.5)
        assert partial.metrics["bytes_sent"] == 4 * 4 * 2 * 1 * 11 * 4
