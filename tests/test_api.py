"""The Python API (fedbench.load_dataset / run / run_suite / results) and the CLI commands built on it:
show, export (CSV, Parquet, TensorBoard), plain progress in logs, report formats, plot defaults."""

from __future__ import annotations

import json
import re
import sqlite3
import sys

import pandas as pd
import pytest
import torch

import fedbench
from fedbench.errors import ConfigError, FedbenchError
from tests.conftest import TINY, run_cli

SETTINGS = {**TINY}


def _suite_text(extra: str = "") -> str:
    return ('description = "tiny"\nheadline = "fedavg"\nmethods = ["fedavg", "local"]\nseeds = [1, 2]\n'
            "[set]\nrounds = 4\neval_every = 2\n[datasets.synthetic]\nn_clients = 8\nn_test = 60\ndim = 10\n" + extra)


def _suite(tmp_path, *, extra: str = "") -> str:
    path = tmp_path / "tiny.toml"
    path.write_text(_suite_text(extra))
    return str(path)


class TestLoadDataset:
    def test_parameters_reach_the_loader_and_bad_ones_are_refused(self):
        data = fedbench.load_dataset("synthetic", n_clients=7, n_test=50, dim=6)
        assert isinstance(data, fedbench.FederatedData) and data.n_clients == 7
        assert data.client(0).train_x.shape[1] == 6
        with pytest.raises(ConfigError, match="no parameter 'n_client'"):
            fedbench.load_dataset("synthetic", n_client=7)

    def test_missing_files_are_one_line_naming_where_they_go(self, tmp_path):
        with pytest.raises(FedbenchError) as e:
            fedbench.load_dataset("mnist", data_root=tmp_path)
        assert "\n" not in str(e.value) and str(tmp_path) in str(e.value)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Four finished runs of the tiny suite and one diverged run."""
    tmp = tmp_path_factory.mktemp("export")
    db = tmp / "r.sqlite"
    fedbench.run_suite(_suite(tmp), results=db, progress=False)
    fedbench.run("synthetic", "fedavg", seed=9, settings={**SETTINGS, "lr": 1e30, "momentum": 0.0}, results=db,
                 progress=False)
    return db


class TestRun:
    def test_in_memory_and_stored_runs_give_the_same_numbers(self, tmp_path):
        mem = fedbench.run("synthetic", "fedavg", seed=4, settings=SETTINGS, progress=False)
        assert mem.status == "done" and list(mem.history.index) == [0, 2, 4]
        assert mem.metrics == mem.history.loc[4].to_dict() and mem.metrics["test_acc"] > 0
        again = fedbench.run("synthetic", "fedavg", seed=4, settings=SETTINGS, progress=False)
        pd.testing.assert_frame_equal(mem.history, again.history)  # same config + seed = same numbers
        db = tmp_path / "r.sqlite"
        stored = fedbench.run("synthetic", "fedavg", seed=4, settings=SETTINGS, results=db, progress=False)
        assert stored.status == "done" and stored.run_id == mem.run_id
        pd.testing.assert_frame_equal(stored.history, mem.history[stored.history.columns], check_exact=False, rtol=1e-9)
        # a second call reads the stored run back instead of computing it again
        read = fedbench.run("synthetic", "fedavg", seed=4, settings=SETTINGS, results=db, progress=False)
        assert read.status == "skipped" and read.metrics == stored.metrics and read.engine == stored.engine
        assert sqlite3.connect(db).execute("SELECT count(*) FROM attempts").fetchone()[0] == 1

    def test_keyword_settings_with_double_underscores_equal_dotted_settings(self):
        a = fedbench.configure("synthetic", "fedavg", 1, dataset__n_clients=9, rounds=3)
        b = fedbench.configure("synthetic", "fedavg", 1, settings={"dataset.n_clients": 9, "rounds": 3})
        assert a == b and dict(a.dataset_params)["n_clients"] == 9 and a.train.rounds == 3

    def test_a_diverging_run_is_reported_not_raised(self):
        result = fedbench.run("synthetic", "fedavg", seed=0, settings={**SETTINGS, "lr": 1e30, "momentum": 0.0},
                              progress=False)
        assert result.status == "diverged" and "lower the learning rate" in result.error

    def test_run_suite_and_results(self, tmp_path):
        db = tmp_path / "r.sqlite"
        suite = _suite(tmp_path, extra="[datasets.mnist]\nn_clients = 4\n")
        out = fedbench.run_suite(suite, results=db, data_root=tmp_path / "nothing", progress=False)
        assert [o.status for o in out.outcomes] == ["done"] * 4
        assert set(out.missing) == {"mnist"} and not out.ok  # missing data is said, and the other runs ran
        comp = out.comparison()
        assert list(comp.index) == ["synthetic"] and "(n=2)" in comp.loc["synthetic", "fedavg"]
        table = fedbench.results(db, suite=suite)
        assert len(table) == 4 and set(table.status) == {"done"} and table.seconds.gt(0).all()
        again = fedbench.run_suite(suite, results=db, datasets=["synthetic"], progress=False)
        assert [o.status for o in again.outcomes] == ["skipped"] * 4 and again.ok


class TestShowAndExport:
    def test_show_prints_config_engine_versions_time_and_rounds(self, store):
        runs = fedbench.results(store)
        run_id = runs[runs.status == "done"].run_id.iloc[0]
        proc = run_cli("show", run_id[:6], "--results", str(store))
        assert proc.returncode == 0, proc.stderr
        out = proc.stdout
        assert run_id in out and "engine:" in out and "vectorized (" in out and "wall time:" in out
        assert f"torch:       {torch.__version__}" in out and '"eval_every": 2' in out
        assert re.search(r"^\| 4 \|", out, re.M) and re.search(r"^\| 0 \|", out, re.M)  # rounds 0 .. 4

    def test_show_gives_the_error_of_a_diverged_run_and_refuses_unknown_or_ambiguous_ids(self, store):
        runs = fedbench.results(store)
        bad = runs[runs.status == "diverged"].run_id.iloc[0]
        assert "diverged at round" in run_cli("show", bad, "--results", str(store)).stdout
        proc = run_cli("show", "zzzz", "--results", str(store))
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "fedbench report" in proc.stderr
        proc = run_cli("show", "", "--results", str(store))
        assert proc.returncode == 2 and "matches 5 runs" in proc.stderr

    def test_csv_export_has_every_round_of_every_run_rounded(self, store, tmp_path):
        proc = run_cli("export", "--results", str(store), "--out", str(tmp_path / "m.csv"))
        assert proc.returncode == 0, proc.stderr
        text = (tmp_path / "m.csv").read_text()
        assert not re.search(r"\d\.\d{7,}", text)  # no float noise such as 67.62599999999999
        table = pd.read_csv(tmp_path / "m.csv")
        db = sqlite3.connect(store)
        n_evals = db.execute("SELECT count(DISTINCT run_id || '/' || round) FROM metrics").fetchone()[0]
        assert len(table) == n_evals and {0, 2, 4} <= set(table["round"])
        value = db.execute("SELECT value FROM metrics WHERE name = 'test_acc' AND round = 4 LIMIT 1").fetchone()[0]
        assert table.test_acc.sub(value).abs().min() < 1e-6

    def test_parquet_without_pyarrow_is_one_line(self, store, tmp_path):
        if "pyarrow" in sys.modules or _importable("pyarrow"):
            pytest.skip("pyarrow is installed here")
        proc = run_cli("export", "--results", str(store), "--format", "parquet", "--out", str(tmp_path / "m.parquet"))
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "pyarrow" in proc.stderr

    def test_tensorboard_events_hold_each_runs_curve(self, store, tmp_path):
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        proc = run_cli("export", "--results", str(store), "--format", "tensorboard", "--out", str(tmp_path / "tb"))
        assert proc.returncode == 0, proc.stderr
        folders = sorted(p.parent for p in (tmp_path / "tb").rglob("events.out.tfevents.*"))
        assert len(folders) == 5
        done = [f for f in folders if f.parts[-2] == "fedavg" and f.name.startswith("seed1-")][0]
        acc = EventAccumulator(str(done))
        acc.Reload()
        steps = [(e.step, e.value) for e in acc.Scalars("test_acc")]
        run_id = done.name.split("-", 1)[1]
        stored = sqlite3.connect(store).execute(
            "SELECT round, value FROM metrics WHERE run_id = ? AND name = 'test_acc' ORDER BY round", (run_id,)).fetchall()
        assert [s for s, _ in steps] == [r for r, _ in stored] == [0, 2, 4]
        assert [v for _, v in steps] == pytest.approx([v for _, v in stored], rel=1e-6)

    def test_mlflow_file_store_holds_each_run_once_with_its_curve(self, store, tmp_path):
        pytest.importorskip("mlflow", reason="the mlflow extra (in the test extras) is not installed")
        from mlflow.tracking import MlflowClient

        target = tmp_path / "mlruns"
        for _ in range(2):  # written twice: still one MLflow run per stored run
            proc = run_cli("export", "--results", str(store), "--format", "mlflow", "--out", str(target),
                           "--mlflow-experiment", "tiny")
            assert proc.returncode == 0, proc.stderr
            assert "5 runs logged to MLflow experiment 'tiny'" in proc.stdout
        import os

        os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"  # reading MLflow 3's folder store back, as the exporter does
        try:
            client = MlflowClient(tracking_uri=target.as_uri())
            exp = client.get_experiment_by_name("tiny")
            logged = client.search_runs([exp.experiment_id])
            db = sqlite3.connect(store)
            stored = dict(db.execute("SELECT run_id, status FROM runs").fetchall())
            assert sorted(r.data.tags["fedbench.run_id"] for r in logged) == sorted(stored)
            for r in logged:
                run_id = r.data.tags["fedbench.run_id"]
                want = db.execute("SELECT round, value FROM metrics WHERE run_id = ? AND name = 'test_acc' ORDER BY round",
                                  (run_id,)).fetchall()
                got = sorted((m.step, m.value) for m in client.get_metric_history(r.info.run_id, "test_acc"))
                assert [s for s, _ in got] == [k for k, _ in want]
                assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-9)
                assert r.info.status == ("FINISHED" if stored[run_id] == "done" else "FAILED")
                assert r.data.params["train.lr"] == json.dumps(json.loads(
                    db.execute("SELECT config FROM runs WHERE run_id = ?", (run_id,)).fetchone()[0])["train"]["lr"])
        finally:
            os.environ.pop("MLFLOW_ALLOW_FILE_STORE", None)


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


class TestCliOutput:
    def test_a_log_gets_plain_progress_lines_and_no_terminal_codes(self, tmp_path):
        proc = run_cli("run", "--suite", _suite(tmp_path), "--results", str(tmp_path / "r.sqlite"))
        assert proc.returncode == 0, proc.stderr
        assert "\r" not in proc.stderr and "\x1b" not in proc.stderr
        assert "synthetic/fedavg/s1 round 0/4: test_acc" in proc.stderr and "[4] synthetic" in proc.stderr
        quiet = run_cli("run", "--suite", _suite(tmp_path), "--results", str(tmp_path / "r2.sqlite"), "--no-progress")
        assert "round 0/4" not in quiet.stderr

    def test_run_with_tensorboard_writes_each_finished_run(self, tmp_path):
        proc = run_cli("run", "--dataset", "synthetic", "--method", "fedavg", "--no-progress", "--results",
                       str(tmp_path / "r.sqlite"), "--tensorboard", str(tmp_path / "tb"),
                       *[x for k, v in TINY.items() for x in ("--set", f"{k}={v}")])
        assert proc.returncode == 0, proc.stderr
        assert len(list((tmp_path / "tb" / "synthetic" / "fedavg").glob("seed0-*/events.out.tfevents.*"))) == 1

    def test_run_with_mlflow_logs_each_finished_run_and_a_bad_target_is_refused_first(self, tmp_path):
        pytest.importorskip("mlflow", reason="the mlflow extra (in the test extras) is not installed")
        (tmp_path / "afile").write_text("x")
        bad = run_cli("run", "--suite", _suite(tmp_path), "--results", str(tmp_path / "bad.sqlite"), "--mlflow",
                      str(tmp_path / "afile"))
        assert bad.returncode == 2 and "--mlflow" in bad.stderr and "is a file" in bad.stderr
        assert not (tmp_path / "bad.sqlite").exists()  # refused before any run
        proc = run_cli("run", "--suite", _suite(tmp_path), "--no-progress", "--results", str(tmp_path / "r.sqlite"),
                       "--mlflow", str(tmp_path / "mlruns"))
        assert proc.returncode == 0, proc.stderr
        runs = [p for p in (tmp_path / "mlruns").glob("*/*/meta.yaml") if "experiment_id" in p.read_text()]
        assert len(runs) == 4  # 2 methods x 2 seeds, in the experiment named after the suite
        names = {p.read_text().split("name: ")[1].split()[0] for p in (tmp_path / "mlruns").glob("*/meta.yaml")}
        assert "tiny" in names

    def test_report_csv_latex_and_markdown(self, tmp_path):
        db = tmp_path / "r.sqlite"
        fedbench.run_suite(_suite(tmp_path), results=db, progress=False)
        csv = run_cli("report", "--results", str(db), "--format", "csv").stdout
        assert not re.search(r"\d\.\d{5,}", csv) and ",seconds," in csv
        table = pd.read_csv(pd.io.common.StringIO(csv))
        assert table.seed.dtype.kind == "i" and len(table.run_id.iloc[0]) == 16
        tex = run_cli("report", "--results", str(db), "--format", "latex", "--compare").stdout
        assert tex.startswith("% needs \\usepackage{booktabs}")
        specs = re.findall(r"\\begin\{tabular\}\{([lr]+)\}", tex)
        header = tex.splitlines()[3]
        cols = [c.strip() for c in header.removesuffix(r" \\").split("&")]
        aligned = dict(zip(cols, specs[0]))
        assert aligned["dataset"] == "l" and aligned["method"] == "l" and aligned["test\\_acc"] == "r"
        assert aligned["seed"] == "r" and aligned["wall\\_s"] == "r"
        assert specs[1] == "lrr"  # comparison: data set, then two "mean ± std (n=2)" columns
        md = run_cli("report", "--results", str(db)).stdout
        assert "| wall_s |" in md.splitlines()[0] and "| run_id |" in md.splitlines()[0]
        assert "error" not in md.splitlines()[0]  # no failed run: no error column

    def test_failed_runs_show_their_error_in_the_report(self, tmp_path):
        db = tmp_path / "r.sqlite"
        fedbench.run("synthetic", "fedavg", seed=0, settings={**SETTINGS, "lr": 1e30, "momentum": 0.0}, results=db,
                     progress=False)
        md = run_cli("report", "--results", str(db)).stdout
        assert "error" in md.splitlines()[0] and "diverged at round" in md


class TestPlotDefaults:
    def test_default_folder_is_new_and_outside_the_source_tree(self, tmp_path):
        from pathlib import Path

        pytest.importorskip("matplotlib")
        db = tmp_path / "r.sqlite"
        fedbench.run_suite(_suite(tmp_path), results=db, progress=False)
        source = Path(fedbench.__file__).resolve().parents[1]
        env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
        first = run_cli("plot", "--results", str(db), env=env, cwd=source)
        assert first.returncode == 0, first.stderr
        written = [Path(p) for p in first.stdout.split()]
        assert written and all(p.is_file() and source not in p.resolve().parents for p in written)
        assert all(str(tmp_path / "cache" / "fedbench" / "plots") in str(p) for p in written)
        elsewhere = run_cli("plot", "--results", str(db), env=env, cwd=tmp_path)
        second = [Path(p) for p in elsewhere.stdout.split()]
        assert all(p.resolve().parent.parent == tmp_path.resolve() for p in second)
        assert {p.parent for p in second}.isdisjoint({p.parent for p in written})

    def test_each_method_keeps_its_style_in_colour_blind_safe_colours_and_the_headline_stands_out(self):
        pytest.importorskip("matplotlib")
        from fedbench.reporting.plot import HEADLINE_COLOUR, PALETTE, styles

        everyone = fedbench.get_registry().names("method")
        a = styles(everyone, headline="fedem")
        b = styles([*everyone, "outside"], headline="fedem")
        assert a["fedem"].colour == HEADLINE_COLOUR and all(a[m].colour != HEADLINE_COLOUR for m in everyone if m != "fedem")
        assert all(a[m].colour in PALETTE for m in everyone if m != "fedem")
        assert len({a[m] for m in everyone}) == len(everyone)  # no two methods drawn alike
        many = styles([f"m{k:03d}" for k in range(63)])
        assert len({(s.colour, s.marker) for s in many.values()}) == 63  # alike in neither colour+marker
        assert all(a[m] == b[m] for m in everyone if m < "outside")  # adding a method moves only those after it

    def test_labels_say_how_many_seeds_and_the_bytes_axis_is_log_without_zero(self, tmp_path):
        pytest.importorskip("matplotlib")
        import matplotlib.image

        from fedbench.reporting.plot import curves, plot_curves, value_label
        from fedbench.reporting.store import ResultStore

        assert value_label("test_acc", [1, 1]) == "test_acc (one seed per method)"
        assert value_label("test_acc", [3, 3]) == "test_acc (mean ± std over 3 seeds)"
        assert "n in the legend" in value_label("test_acc", [1, 3])
        db = tmp_path / "r.sqlite"
        fedbench.run_suite(_suite(tmp_path), results=db, progress=False)
        table = curves(ResultStore(db, readonly=True))
        written = plot_curves(table, tmp_path / "svg", fmt="svg", headline="fedavg")
        assert sorted(p.name for p in written) == ["bytes_synthetic.svg", "curves_synthetic.svg"]
        svg = (tmp_path / "svg" / "bytes_synthetic.svg").read_text()
        assert "mean ± std over 2 seeds" in svg and "local: sends nothing" in svg and "log scale" in svg
        png = plot_curves(table, tmp_path / "png", headline="fedavg")[0]
        assert matplotlib.image.imread(png).shape[2] in (3, 4)

    def test_grid_points_are_separate_curves_and_gaps_never_averaged_together(self, tmp_path):
        from fedbench.reporting.htmlreport import headline_gaps
        from fedbench.reporting.plot import curves
        from fedbench.reporting.report import runs_table
        from fedbench.reporting.store import ResultStore

        suite = tmp_path / "grid.toml"
        suite.write_text('headline = "fedprox"\nseeds = [1]\n[set]\nrounds = 2\neval_every = 1\n[datasets.synthetic]\n'
                         'n_clients = 8\nn_test = 40\ndim = 10\n[methods.fedavg]\n[methods.fedprox]\nclient.mu = [0.01, 5.0]\n')
        db = tmp_path / "r.sqlite"
        fedbench.run_suite(str(suite), results=db, progress=False)
        store = ResultStore(db, readonly=True)
        table = curves(store)
        assert sorted(set(table.method)) == ["fedavg", "fedprox mu=0.01", "fedprox mu=5.0"] and set(table.n) == {1}
        runs = runs_table(store)
        gaps = headline_gaps(runs, "fedprox")
        fedavg = runs[runs.method == "fedavg"].test_acc.iloc[0]
        prox = {mu: acc for mu, acc in zip(runs[runs.method == "fedprox"]["client.mu"], runs[runs.method == "fedprox"].test_acc)}
        assert list(gaps.headline) == ["fedprox mu=0.01", "fedprox mu=5.0"] and set(gaps["best other"]) == {"fedavg"}
        for row, mu in zip(gaps.itertuples(index=False), (0.01, 5.0)):  # each grid point on its own, not their mean
            assert row.mean == pytest.approx(prox[mu]) and row.gap == pytest.approx(prox[mu] - fedavg)

    def test_round_zero_is_drawn(self, tmp_path):
        from fedbench.reporting.plot import curves
        from fedbench.reporting.store import ResultStore

        db = tmp_path / "r.sqlite"
        fedbench.run_suite(_suite(tmp_path), results=db, progress=False)
        table = curves(ResultStore(db, readonly=True))
        assert sorted(set(table["round"])) == [0, 2, 4]
        assert table[table["round"] == 0].bytes_sent.eq(0).all()


class TestDigitsNeedsScikitLearn:
    def test_without_scikit_learn_a_one_line_error_before_any_run(self, tmp_path):
        import subprocess

        code = ("import sys; sys.modules['sklearn'] = None\n"
                "from fedbench.cli import main\n"
                f"sys.exit(main(['run', '--dataset', 'digits', '--method', 'fedavg', '--results', {str(tmp_path / 'r.sqlite')!r}]))")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "scikit-learn" in proc.stderr, proc.stderr
        assert not (tmp_path / "r.sqlite").exists() or not sqlite3.connect(tmp_path / "r.sqlite").execute(
            "SELECT count(*) FROM runs").fetchone()[0]
        check = subprocess.run([sys.executable, "-c", code.replace(
            "['run', '--dataset', 'digits', '--method', 'fedavg', '--results', " + repr(str(tmp_path / "r.sqlite")) + "]",
            "['data', 'check', 'digits']")], capture_output=True, text=True)
        assert check.returncode == 1 and "pip install" in check.stdout and "no files needed" not in check.stdout


def test_the_public_names_are_exported():
    for name in ("load_dataset", "run", "run_suite", "results", "RunResult", "configure"):
        assert name in fedbench.__all__ and callable(getattr(fedbench, name))
    assert json.loads(json.dumps(fedbench.configure("synthetic", "fedem").to_dict(), default=str))["method"] == "fedem"


def test_the_example_compares_two_methods_and_draws_a_curve(tmp_path):
    import subprocess

    pytest.importorskip("matplotlib")
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "examples" / "compare_two_methods.py"
    proc = subprocess.run([sys.executable, str(script), "--rounds", "4", "--clients", "8", "--seeds", "1",
                           "--out", str(tmp_path / "c.png")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "c.png").stat().st_size > 1000
    last = {line.split()[0]: float(line.split()[2]) for line in proc.stdout.splitlines() if re.match(r"^\s*fed\w+\s+4\s", line)}
    direct = {m: fedbench.run("synthetic", m, seed=1, rounds=4, dataset__n_clients=8, progress=False).metrics["test_acc"]
              for m in ("fedem", "fedavg")}
    assert last == pytest.approx({m: round(v, 2) for m, v in direct.items()}, abs=0.006)


def test_a_suite_headline_is_checked_against_the_suites_own_methods(tmp_path):
    from fedbench.runs.suite import load_suite

    part = load_suite(fedbench.get_registry(), "quick", only_methods=["fedavg"])  # keeping part of the suite is fine
    assert part.headline == "fedem" and {c.method for c in part.runs} == {"fedavg"}
    bad = tmp_path / "bad.toml"
    bad.write_text(_suite_text().replace('headline = "fedavg"', 'headline = "fedem"'))
    with pytest.raises(ConfigError, match="headline 'fedem' is not one of its methods"):
        load_suite(fedbench.get_registry(), str(bad))


class TestOneSpelling:
    """One setting, one spelling (GROUP.KEY) everywhere: the CLI, suite TOML (quoted, unquoted, nested
    tables), the Python API (dotted, nested dicts, double underscores) and load_dataset (issue 29 item 2)."""

    def test_suite_toml_dotted_quoted_unquoted_and_nested_are_one_run(self, registry, tmp_path):
        from fedbench.runs.suite import load_suite

        head = 'seeds = [1]\n[set]\nrounds = 2\n[datasets.synthetic]\nn_clients = 4\n'
        ids = []
        for body in ('[methods.fedprox]\n"client.mu" = 0.5\n', "[methods.fedprox]\nclient.mu = 0.5\n",
                     "[methods.fedprox.client]\nmu = 0.5\n"):
            path = tmp_path / "s.toml"
            path.write_text(head + body)
            (cfg,) = load_suite(registry, str(path)).runs
            assert dict(cfg.client_params)["mu"] == 0.5
            ids.append(cfg.run_id)
        assert len(set(ids)) == 1

    def test_a_methods_list_beside_a_methods_table_says_what_to_write(self, registry, tmp_path):
        from fedbench.runs.suite import load_suite

        path = tmp_path / "s.toml"
        path.write_text('methods = ["fedprox"]\nseeds = [1]\n[methods.fedprox]\nclient.mu = 0.5\n[datasets.synthetic]\n')
        with pytest.raises(ConfigError, match=r"methods is both a list and a table \(\[methods.fedprox\]\); write the names as tables only"):
            load_suite(registry, str(path))

    def test_python_settings_dotted_nested_and_underscored_are_one_run(self):
        a = fedbench.configure("synthetic", "fedprox", settings={"dataset.alpha": 0.3, "client.mu": 0.2})
        b = fedbench.configure("synthetic", "fedprox", settings={"dataset": {"alpha": 0.3}, "client": {"mu": 0.2}})
        c = fedbench.configure("synthetic", "fedprox", dataset__alpha=0.3, client__mu=0.2)
        assert a.run_id == b.run_id == c.run_id and dict(a.dataset_params)["alpha"] == 0.3

    def test_load_dataset_takes_the_run_spelling_too(self):
        plain = fedbench.load_dataset("synthetic", n_clients=5, n_test=10, dim=4)
        for spelled in (fedbench.load_dataset("synthetic", dataset__n_clients=5, dataset__n_test=10, dataset__dim=4),
                        fedbench.load_dataset("synthetic", dataset={"n_clients": 5, "n_test": 10, "dim": 4})):
            assert spelled.n_clients == 5 and torch.equal(spelled.train_x, plain.train_x)

    def test_data_describe_takes_the_run_spelling_too(self):
        plain = run_cli("data", "describe", "synthetic", "--set", "n_clients=5", "--set", "n_test=10", "--set", "dim=4")
        dotted = run_cli("data", "describe", "synthetic", "--set", "dataset.n_clients=5", "--set", "dataset.n_test=10",
                         "--set", "dataset.dim=4")
        assert plain.returncode == 0 and dotted.returncode == 0, dotted.stderr
        assert dotted.stdout == plain.stdout and "5 clients" in dotted.stdout


def test_import_fedbench_is_light_for_plugins_and_the_api_loads_on_first_use():
    import subprocess
    import sys

    code = ("import sys, fedbench\n"
            "heavy = [m for m in ('pandas', 'fedbench.api', 'fedbench.reporting.store', 'fedbench.runs.runner', 'fedbench.runs.executor') if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "from fedbench import run, MethodSpec, hookimpl, Client\n"
            "assert run.__module__ == 'fedbench.api' and 'pandas' in sys.modules\n"
            "try:\n    fedbench.no_such_name\nexcept AttributeError as e:\n    assert 'no_such_name' in str(e)\n"
            "else:\n    raise SystemExit('no AttributeError')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
