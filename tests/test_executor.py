"""Sweeps: worker processes sharing one SQLite store, resume after SIGKILL, grids, Ray."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from fedbench.fl.memory import memory_bytes
from fedbench.runs import client_state
from fedbench.runs.build import resolve_run
from fedbench.errors import ConfigError
from fedbench.runs.executor import assign_devices, run_local, threads_per_worker
from fedbench.reporting.report import runs_table
from fedbench.reporting.store import ResultStore
from fedbench.runs.suite import expand_grid, load_suite
from tests.conftest import TINY, run_cli


def _configs(registry, methods=("fedem", "fedavg"), seeds=(1, 2), **extra):
    return [
        resolve_run(registry, dataset="synthetic", method=m, seed=s, overrides={**TINY, **extra})
        for m in methods
        for s in seeds
    ]


class TestLocalExecutor:
    def test_two_workers_share_one_store_and_match_one_worker(self, registry, tmp_path):
        configs = _configs(registry)
        two = run_local(configs, tmp_path / "two.sqlite", jobs=2, progress=False)
        one = run_local(configs, tmp_path / "one.sqlite", jobs=1, progress=False)
        assert [o.status for o in two] == ["done"] * 4
        # workers run with 1 torch thread, this process with all cores: float sums may differ in the last bits
        for a, b in zip(two, one):
            assert a.metrics == pytest.approx(b.metrics, rel=1e-6)
        db = sqlite3.connect(tmp_path / "two.sqlite")
        assert db.execute("SELECT count(*), count(DISTINCT run_id) FROM runs WHERE status = 'done'").fetchone() == (4, 4)
        # three evaluations (round 0 and two trained) x seven metrics per run, all written by the workers
        assert db.execute("SELECT count(*) FROM metrics").fetchone()[0] == 4 * 3 * 7

    def test_devices_round_robin_and_threads(self, registry):
        configs = assign_devices(_configs(registry), ["cpu", "cuda:0"])
        assert [c.device for c in configs] == ["cpu", "cuda:0", "cpu", "cuda:0"]
        assert len({c.run_id for c in configs}) == 4  # the device does not change a run's id
        assert threads_per_worker(os.cpu_count() or 1) == 1 and threads_per_worker(1) == (os.cpu_count() or 1)
        with pytest.raises(ConfigError, match="--devices"):
            assign_devices(configs, [])

    def test_failing_and_diverging_runs_among_good_ones(self, registry, tmp_path):
        good = _configs(registry, methods=("fedavg",), seeds=(1,))
        diverging = _configs(registry, methods=("fedavg",), seeds=(1,), lr=1e38, momentum=0.0, lr_schedule="constant")
        # 1797 one-sample clients leave no test sample: the data set fails to build inside the run
        failing = [resolve_run(registry, dataset="digits", method="local", seed=1,
                               overrides={"dataset.n_clients": 1797, "dataset.partitioner": "iid", "rounds": 2})]
        outcomes = run_local(good + diverging + failing, tmp_path / "r.sqlite", jobs=2, progress=False)
        assert [o.status for o in outcomes] == ["done", "diverged", "failed"]
        table = runs_table(ResultStore(tmp_path / "r.sqlite"))
        assert sorted(table.status) == ["diverged", "done", "failed"]


SUITE = """
description = "kill test"
methods = ["fedem", "fedavg", "local"]
seeds = [1, 2]
[set]
rounds = 40
eval_every = 5
[datasets.synthetic]
n_clients = 30
n_test = 200
dim = 20
"""


class TestResume:
    def test_sigkill_mid_sweep_then_rerun_completes_each_run_once(self, tmp_path):
        suite = tmp_path / "kill.toml"
        suite.write_text(SUITE)
        db = tmp_path / "r.sqlite"
        args = [sys.executable, "-m", "fedbench", "run", "--suite", str(suite), "--results", str(db), "--no-progress"]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        done_before = 0
        while proc.poll() is None:
            time.sleep(0.2)
            if db.exists():
                try:
                    done_before = sqlite3.connect(db).execute("SELECT count(*) FROM runs WHERE status='done'").fetchone()[0]
                except sqlite3.OperationalError:
                    continue
                if done_before >= 2:
                    break
        assert proc.poll() is None, "the sweep finished before it could be killed; make the suite longer"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        statuses = dict(sqlite3.connect(db).execute("SELECT run_id, status FROM runs").fetchall())
        assert 2 <= list(statuses.values()).count("done") < 6
        rerun = run_cli("run", "--suite", str(suite), "--results", str(db), "--no-progress")
        assert rerun.returncode == 0, rerun.stderr
        assert rerun.stderr.count("already in the results store") == list(statuses.values()).count("done")
        rows = sqlite3.connect(db).execute("SELECT status, count(*) FROM runs GROUP BY status").fetchall()
        assert rows == [("done", 6)]
        per_run = sqlite3.connect(db).execute("SELECT run_id, count(*) FROM metrics GROUP BY run_id").fetchall()
        assert len(per_run) == 6 and {n for _, n in per_run} == {9 * 7}  # round 0 + 8 evaluations x 7 metrics, no duplicates


class TestGrids:
    def test_expand_grid(self):
        assert expand_grid({"lr": [0.1, 0.2], "rounds": 3, "momentum": [0.0, 0.9]}) == [
            {"rounds": 3, "lr": 0.1, "momentum": 0.0},
            {"rounds": 3, "lr": 0.1, "momentum": 0.9},
            {"rounds": 3, "lr": 0.2, "momentum": 0.0},
            {"rounds": 3, "lr": 0.2, "momentum": 0.9},
        ]
        with pytest.raises(ConfigError, match="grid 'lr' is empty"):
            expand_grid({"lr": []})

    def test_suite_grid_gives_distinct_stable_ids(self, registry, tmp_path):
        suite = tmp_path / "grid.toml"
        suite.write_text(
            'methods = ["fedavg"]\nseeds = [1, 2]\n[set]\nrounds = 2\nlr = [0.01, 0.03]\n'
            "[datasets.synthetic]\nn_clients = 4\nn_test = 10\ndim = [5, 6]\n"
        )
        a, b = load_suite(registry, str(suite)), load_suite(registry, str(suite))
        assert len(a.runs) == 2 * 2 * 2
        assert len({c.run_id for c in a.runs}) == 8
        assert [c.run_id for c in a.runs] == [c.run_id for c in b.runs]
        assert {c.train.lr for c in a.runs} == {0.01, 0.03} and {dict(c.dataset_params)["dim"] for c in a.runs} == {5, 6}


class TestReferences:
    def test_builtin_suite_carries_reference_numbers(self, registry):
        suite = load_suite(registry, "synthetic-paper")
        refs = suite.references.set_index("method")
        assert refs.loc["fedem", "value"] == 76.0 and refs.loc["local", "metric"] == "test_acc"

    def test_report_prints_ours_beside_reference(self, tmp_path):
        suite = tmp_path / "s.toml"
        (tmp_path / "ref.csv").write_text("dataset,method,metric,value,source\nsynthetic,fedavg,test_acc,50.0,made up for the test\n")
        suite.write_text(
            'methods = ["fedavg"]\nseeds = [1, 2]\nreferences = "ref.csv"\n[set]\nrounds = 2\n'
            "[datasets.synthetic]\nn_clients = 4\nn_test = 10\ndim = 5\n"
        )
        db = tmp_path / "r.sqlite"
        assert run_cli("run", "--suite", str(suite), "--results", str(db), "--no-progress").returncode == 0
        out = run_cli("report", "--suite", str(suite), "--results", str(db)).stdout
        assert "beside the reference numbers" in out and "| synthetic | fedavg |" in out and "made up for the test" in out
        latex = run_cli("report", "--suite", str(suite), "--results", str(db), "--format", "latex").stdout
        assert r"\begin{tabular}" in latex and r"$\pm$" in latex and r"\bottomrule" in latex


class TestRay:
    def test_ray_executor_matches_local_with_the_driver_as_the_only_writer(self, registry, tmp_path, monkeypatch):
        pytest.importorskip("ray")
        from fedbench.runs.executor import run_ray
        from fedbench.reporting.store import n_evaluations

        configs = _configs(registry, methods=("fedem",), seeds=(1, 2))
        # a run that fails in its task (a model that does not fit the data): one failed run, the sweep goes on
        bad = resolve_run(registry, dataset="synthetic", method="fedavg", seed=1, overrides={**TINY, "model": "cifar10cnn"})
        # one client at a time: its client state's budget is its share of the node (2 CPUs, 1 a task: half)
        one_at_a_time = resolve_run(registry, dataset="synthetic", method="fedavg", seed=3, overrides=TINY,
                                    engine="sequential")
        monkeypatch.chdir(tmp_path)  # a relative results path is the driver's, not a Ray worker's
        ray_out = run_ray([*configs, bad, one_at_a_time], "rel/ray.sqlite", num_cpus=2)
        local_out = run_local(configs, tmp_path / "local.sqlite", jobs=1, progress=False)
        assert [o.status for o in ray_out] == ["done", "done", "failed", "done"]
        assert "cifar10cnn" in ray_out[2].error and "\n" not in ray_out[2].error
        half = max(client_state.MEMORY_BUDGET_MIN, int(memory_bytes() * client_state.MEMORY_SHARE / 2))
        assert f"within {half / 2**20:,.0f} MB (this run's share of the memory)" in ray_out[3].engine, ray_out[3].engine
        for a, b in zip(ray_out, local_out):
            assert a.metrics == pytest.approx(b.metrics, rel=1e-6)
        db = tmp_path / "rel" / "ray.sqlite"
        # every attempt was claimed and stored by this process, the driver: no task opened the file
        assert {pid for (pid,) in _rows(db, "SELECT pid FROM attempts")} == {os.getpid()}
        stored = ResultStore(db, readonly=True)
        for cfg in configs:  # each evaluation arrived from its task and was stored
            assert stored.metrics([cfg.run_id])["round"].nunique() == n_evaluations(cfg.train)
        assert _rows(db, "SELECT count(*) FROM claims") == [(0,)]


    def test_data_loaded_once_by_the_driver_gives_the_numbers_a_node_computes_from_its_own_copy(self, registry, tmp_path):
        pytest.importorskip("ray")
        import ray

        from fedbench.runs.executor import run_ray

        configs = _configs(registry, methods=("fedavg", "fedem"), seeds=(1,))
        # a data set the driver cannot load (no files under its data root): its run fails with the reason
        missing = resolve_run(registry, dataset="mnist", method="fedavg", seed=1, overrides={"rounds": 1})
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            shipped = run_ray([*configs, missing], tmp_path / "a.sqlite", data_root=tmp_path / "empty")
            local = run_ray(configs, tmp_path / "b.sqlite", data_root=tmp_path / "empty", data_from="nodes")
            with pytest.raises(ConfigError, match="data_from='disk'"):
                run_ray(configs, tmp_path / "c.sqlite", data_from="disk")
        finally:
            ray.shutdown()
        assert [o.status for o in shipped] == ["done", "done", "failed"] and [o.status for o in local] == ["done", "done"]
        assert shipped[2].error.startswith("the driver could not load the data: ") and "\n" not in shipped[2].error
        for a, b in zip(shipped, local):  # same configuration, same seed: the same numbers, wherever the data came from
            assert a.metrics == b.metrics


def _rows(db, sql: str) -> list[tuple]:  # noqa: ANN001
    import sqlite3

    con = sqlite3.connect(db)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _hammer(path: str, worker: int, n: int) -> None:
    from fedbench.plugin.registry import get_registry

    cfg = resolve_run(get_registry(), dataset="synthetic", method="fedavg", seed=worker, overrides=dict(TINY))
    store = ResultStore(path)
    claim = store.claim(cfg)
    for r in range(n):
        store.log_metrics(claim, r, {"a": float(r), "b": float(worker)})
    store.finish(claim, cfg, "done")


class TestStoreConcurrency:
    def test_processes_opening_and_writing_one_new_file_at_once(self, tmp_path):
        import multiprocessing as mp

        path = str(tmp_path / "new.sqlite")
        ctx = mp.get_context("spawn")
        procs = [ctx.Process(target=_hammer, args=(path, w, 200)) for w in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
        assert [p.exitcode for p in procs] == [0, 0, 0, 0]
        db = sqlite3.connect(path)
        rows = db.execute("SELECT seed, count(*) FROM metrics JOIN runs USING (run_id) GROUP BY seed").fetchall()
        assert rows == [(w, 400) for w in range(4)]
        assert db.execute("SELECT count(*) FROM live_metrics").fetchone()[0] == 0


class TestPlot:
    def test_curves_are_means_over_seeds_and_pngs_are_written(self, registry, tmp_path):
        db = tmp_path / "r.sqlite"
        outcomes = run_local(_configs(registry, methods=("fedavg", "local"), seeds=(1, 2)), db, progress=False)
        from fedbench.reporting.plot import curves

        table = curves(ResultStore(db))
        assert set(table["round"]) == {0, 2, 4} and set(table.n) == {2}
        stored = ResultStore(db).metrics()
        fedavg_ids = [o.config.run_id for o in outcomes if o.config.method == "fedavg"]
        at4 = stored[(stored.run_id.isin(fedavg_ids)) & (stored["round"] == 4) & (stored.name == "test_acc")].value
        row = table[(table.method == "fedavg") & (table["round"] == 4)].iloc[0]
        assert row["mean"] == pytest.approx(at4.mean()) and row["std"] == pytest.approx(at4.std())
        assert table[table.method == "local"].bytes_sent.max() == 0
        pytest.importorskip("matplotlib")
        proc = run_cli("plot", "--results", str(db), "--out", str(tmp_path / "plots"))
        assert proc.returncode == 0, proc.stderr
        for name in ("curves_synthetic.png", "bytes_synthetic.png"):
            png = (tmp_path / "plots" / name).read_bytes()
            assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


class TestSourceTreeSuites:
    def test_benchmarks_suites_are_found_by_name_and_expand(self, registry, monkeypatch):
        from pathlib import Path

        monkeypatch.chdir(Path(__file__).resolve().parents[1])
        suite = load_suite(registry, "fedprox-grid")
        mus = sorted(dict(c.client_params)["mu"] for c in suite.runs if c.method == "fedprox")
        assert mus == [0.0, 0.0, 0.01, 0.01, 0.1, 0.1, 1.0, 1.0]
        assert len(suite.runs) == 2 + 8


class TestStartMethod:
    def test_fork_only_without_other_threads_and_with_one_torch_thread_per_worker(self):
        import subprocess
        import sys

        if sys.platform != "linux":
            pytest.skip("fork is only chosen on Linux")
        code = (
            "import os, threading\n"
            "from fedbench.runs.executor import start_method\n"
            "cores = os.cpu_count() or 1\n"
            "print(start_method(cores), start_method(1) if cores > 1 else 'spawn')\n"
            "stop = threading.Event(); t = threading.Thread(target=stop.wait); t.start()\n"
            "print(start_method(cores)); stop.set(); t.join()\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
        # one torch thread per worker, no other thread: fork; a worker with several threads, or a
        # process with another thread (forking it can deadlock the child): spawn
        assert out == ["fork", "spawn", "spawn"]


class TestRayResources:
    @pytest.mark.parametrize("share, at_once", [pytest.param(0.5, 2, marks=pytest.mark.slow), (0.25, 4)])
    def test_gpus_per_run_places_runs_by_ray_resources(self, registry, tmp_path, share, at_once):
        pytest.importorskip("ray")
        import ray

        from fedbench.runs.executor import run_ray

        # a fake GPU on a CPU machine, four CPUs free: a run asks for `share` of it, so `at_once` share the GPU
        ray.init(num_cpus=4, num_gpus=1, include_dashboard=False, log_to_driver=False)
        try:
            @ray.remote(num_cpus=0)
            class Here:  # how many GPU tasks run at once, and the most there were
                def __init__(self) -> None:
                    self.now = self.peak = 0

                def add(self, k: int) -> int:
                    self.now += k
                    self.peak = max(self.peak, self.now)
                    return self.peak

            here = Here.remote()

            @ray.remote(num_cpus=0, num_gpus=share)
            def holds(here) -> tuple[int, list]:  # noqa: ANN001
                peak = ray.get(here.add.remote(1))
                deadline = time.monotonic() + 30
                while peak < at_once and time.monotonic() < deadline:  # until the others Ray admits are beside it
                    time.sleep(0.05)
                    peak = ray.get(here.add.remote(0))
                ray.get(here.add.remote(-1))
                return peak, ray.get_gpu_ids()

            placed = ray.get([holds.remote(here) for _ in range(at_once + 1)])
            configs = [resolve_run(registry, dataset="synthetic", method="fedavg", seed=s, overrides={**TINY, "rounds": 40})
                       for s in range(6)]
            out = run_ray(configs, tmp_path / "r.sqlite", cpus_per_run=0.5, gpus_per_run=share)
        finally:
            ray.shutdown()
        assert all(ids == [0] for _, ids in placed)  # every task on the one GPU,
        assert max(seen for seen, _ in placed) == at_once  # `at_once` of them on it together, never more
        assert [o.status for o in out] == ["done"] * 6
        spans = _rows(tmp_path / "r.sqlite", "SELECT started, started + seconds FROM runs")
        most = max(sum(a <= t < b for a, b in spans) for t, _ in spans)
        assert most <= at_once, spans  # Ray's resource model, not the CPUs, decided

    def test_resources_per_run_are_refused_outside_ray_before_any_run(self, tmp_path):
        proc = run_cli("run", "--suite", "quick", "--results", str(tmp_path / "r.sqlite"), "--gpus-per-run", "0.25")
        assert proc.returncode == 2 and "--executor ray" in proc.stderr and not (tmp_path / "r.sqlite").exists()
        proc = run_cli("run", "--suite", "quick", "--results", str(tmp_path / "r.sqlite"), "--data-from", "nodes")
        assert proc.returncode == 2 and "--executor ray" in proc.stderr and not (tmp_path / "r.sqlite").exists()
