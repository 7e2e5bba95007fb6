"""Runs end to end through the real engine and SQLite store: determinism, resume, failure states."""

from __future__ import annotations

import sqlite3

import pytest

from fedbench.runs.build import resolve_run
from fedbench.runs.runner import execute_run
from fedbench.reporting.store import ResultStore
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

    def test_an_unset_evaluation_schedule_gives_a_curve_about_20_points(self, registry):
        from fedbench.reporting.store import n_evaluations

        def every(**over):
            return resolve_run(registry, dataset="synthetic", method="fedavg", seed=0, overrides=over).train

        assert every().eval_every == 10  # 200 rounds: the schedule (and the run ids) of before
        for rounds, want in ((50, 2), (20, 1), (3, 1), (1000, 50)):
            train = every(rounds=rounds)
            assert train.eval_every == want and min(rounds + 1, 20) <= n_evaluations(train) <= 26
        assert every(rounds=50, eval_every=7).eval_every == 7  # set: kept
        # the run stores the number it used: the same run as one that sets it
        ids = [resolve_run(registry, dataset="synthetic", method="fedavg", seed=0, overrides=o).run_id
               for o in ({"rounds": 50}, {"rounds": 50, "eval_every": 2}, {"rounds": 50, "eval_every": 10})]
        assert ids[0] == ids[1] != ids[2]

    @pytest.mark.parametrize(
        "overrides, message",
        [
            ({"lrr": 0.1}, "unknown setting 'lrr'"),
            ({"dataset.n_client": 3}, "has no parameter 'n_client'"),
            ({"lr": "fast"}, "lr expects float"),
            ({"rounds": 0}, "^rounds must be an integer >= 1, got 0$"),  # the key and its value, not the whole configuration
            ({"lr": float("inf")}, "^lr must be a finite number > 0, got inf$"),
            ({"dataset.noise": float("inf")}, "noise must be a finite number >= 0, got inf"),
            ({"n_learners": 1_000_000}, "n_learners=1000000 is more than 1000"),
            ({"eval_every": "often"}, "^eval_every must be an integer >= 1, got 'often'$"),
        ],
    )
    def test_bad_overrides(self, registry, overrides, message):
        from fedbench.errors import ConfigError

        with pytest.raises(ConfigError, match=message):
            resolve_run(registry, dataset="synthetic", method="fedem", seed=0, overrides=overrides)


class TestBounds:
    """Sizes that would exhaust the machine are refused at once, with the fix (issue 26 item 9)."""

    def test_a_synthetic_federation_larger_than_memory_is_one_line_before_anything_is_drawn(self, registry):
        import time

        from fedbench.runs.build import load_data
        from fedbench.errors import DataError

        cfg = resolve_run(registry, dataset="synthetic", method="fedavg", seed=0,
                          overrides={"dataset.n_clients": 100_000_000})
        start = time.perf_counter()
        with pytest.raises(DataError, match=r"needs at least [\d,.]+ GiB in memory, more than this machine's .*lower n_clients"):
            load_data(registry, cfg)
        assert time.perf_counter() - start < 5  # (it drew for 62 s, then an empty MemoryError)

    def test_more_clients_than_samples_names_both(self, registry):
        from fedbench.runs.build import load_data
        from fedbench.errors import DataError

        cfg = resolve_run(registry, dataset="digits", method="fedavg", seed=0, overrides={"dataset.n_clients": 10**8})
        with pytest.raises(DataError, match="n_clients=100000000 is more than the 1,797 samples kept"):
            load_data(registry, cfg)

    def test_a_huge_grid_is_refused_before_it_is_expanded(self, registry, tmp_path):
        import time

        from fedbench.errors import ConfigError
        from fedbench.runs.suite import load_suite

        grid = ", ".join(str(0.001 * (i + 1)) for i in range(1000))
        suite = tmp_path / "huge.toml"
        suite.write_text(f'methods = ["fedavg"]\nseeds = [1]\n[set]\nlr = [{grid}]\nbatch_size = [{", ".join(map(str, range(1, 1001)))}]\n'
                         "[datasets.synthetic]\n")
        start = time.perf_counter()
        with pytest.raises(ConfigError, match="1,000,000 runs .* more than 10,000; narrow its grids"):
            load_suite(registry, str(suite))
        assert time.perf_counter() - start < 5
        suite.write_text('methods = ["fedavg"]\nseeds = [1, 2]\n[set]\nlr = [0.1, 0.2]\n[datasets.synthetic]\n')
        assert len(load_suite(registry, str(suite)).runs) == 4  # (the count is the expansion's)

    def test_a_parameter_bound_at_infinity_accepts_it(self):
        import math

        from fedbench.errors import ConfigError
        from fedbench.plugin.params import Param

        Param(1.0, low=0.0, high=math.inf).check("x", "clip", math.inf)
        with pytest.raises(ConfigError, match="clip must be a finite number >= 0, got inf"):
            Param(1.0, low=0.0).check("x", "clip", math.inf)
        with pytest.raises(ConfigError, match="must be a finite number, got -inf"):
            Param(1.0).check("x", "clip", -math.inf)


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
