"""The CLI end to end (real subprocesses, real SQLite file) and its one-line errors."""

from __future__ import annotations

import io

import pandas as pd
import pytest

from tests.conftest import TINY_ARGS, run_cli



class TestRunAndReport:
    def test_run_then_report(self, tmp_path):
        db = tmp_path / "r.sqlite"
        proc = run_cli(
            "run", "--dataset", "synthetic", "--method", "fedem", "--rounds", "3", "--eval-every", "2",
            "--seed", "5", "--results", str(db), "--no-progress", *TINY_ARGS,
        )
        assert proc.returncode == 0, proc.stderr
        assert "synthetic / fedem / seed 5" in proc.stdout and "test_acc" in proc.stdout
        report = run_cli("report", "--results", str(db), "--format", "csv")
        assert report.returncode == 0, report.stderr
        df = pd.read_csv(io.StringIO(report.stdout))
        assert {"dataset", "method", "seed", "rounds", "test_acc", "test_acc_mean", "test_acc_p10", "train_loss"} <= set(df.columns)
        row = df.iloc[0]
        assert (row.dataset, row.method, row.seed, row.rounds, row.status, row.eval_round) == ("synthetic", "fedem", 5, 3, "done", 3)
        assert 0 <= row.test_acc <= 100
        md = run_cli("report", "--results", str(db))
        assert md.stdout.startswith("| run_id | dataset | method | seed | rounds |")

    def test_suite_file_prints_comparison(self, tmp_path):
        suite = tmp_path / "tiny.toml"
        suite.write_text(
            'description = "tiny"\nmethods = ["fedem", "fedavg", "local"]\nseeds = [1, 2]\n'
            "[set]\nrounds = 2\neval_every = 1\n"
            "[datasets.synthetic]\nn_clients = 6\nn_test = 40\ndim = 8\n"
        )
        db = tmp_path / "r.sqlite"
        proc = run_cli("run", "--suite", str(suite), "--results", str(db), "--no-progress")
        assert proc.returncode == 0, proc.stderr
        assert "| dataset | fedavg | fedem | local |" in proc.stdout
        assert proc.stdout.count("(n=2)") == 3
        # a second invocation recomputes nothing
        again = run_cli("run", "--suite", str(suite), "--results", str(db), "--no-progress")
        assert again.stderr.count("already in the results store") == 6

    def test_seeds_replace_the_suites_seeds(self, tmp_path):
        suite = tmp_path / "tiny.toml"
        suite.write_text(
            'description = "tiny"\nmethods = ["fedavg"]\nseeds = [1]\n'
            "[set]\nrounds = 1\neval_every = 1\n"
            "[datasets.synthetic]\nn_clients = 4\nn_test = 20\ndim = 8\n"
        )
        db = tmp_path / "r.sqlite"
        proc = run_cli("run", "--suite", str(suite), "--seeds", "2-3,7", "--results", str(db), "--no-progress")
        assert proc.returncode == 0, proc.stderr
        assert "(n=3)" in proc.stdout
        report = run_cli("report", "--results", str(db), "--format", "csv")
        assert sorted(pd.read_csv(io.StringIO(report.stdout)).seed) == [2, 3, 7]

    def test_list_shows_kinds_packages_and_params(self):
        proc = run_cli("list", "method")
        assert proc.returncode == 0
        assert "fedem" in proc.stdout and "fedbench-suite" in proc.stdout and "n_learners=3" in proc.stdout
        plural = run_cli("list", "methods")  # the plural, as list prints the heading, is the same kind
        assert plural.returncode == 0 and plural.stdout == proc.stdout


class TestBadInput:
    @pytest.mark.parametrize(
        "args, message",
        [
            (["run", "--dataset", "synthetic", "--method", "fedemm"], "unknown method 'fedemm'; did you mean 'fedem'?"),
            (["run", "--dataset", "cifar", "--method", "fedem"], "unknown dataset 'cifar'"),
            (["run", "--dataset", "synthetic", "--method", "fedem", "--set", "lr"], "--set expects key=value"),
            (["run", "--dataset", "synthetic", "--method", "fedem", "--set", "lr=abc"], "lr expects float"),
            (["run", "--suite", "nosuch"], "unknown suite 'nosuch'"),
            (["run", "--suite", "quick", "--seeds", "1-x"], "'1-x' is not a seed or a range"),
            (["run", "--suite", "quick", "--seeds", "5-2"], "the range 5-2 is empty"),
            (["run", "--suite", "quick", "--seeds", "1,1"], "give each seed once"),
            (["run", "--suite", "quick", "--seeds", "1", "--seed", "2"], "--seed and --seeds both given"),
            (["run", "--dataset", "synthetic", "--method", "fedem", "--seeds", "1-3"], "use it with --suite"),
            (["report", "--results", "/nonexistent/x.sqlite"], "no results file"),
        ],
    )
    def test_one_line_error(self, args, message):
        proc = run_cli(*args)
        assert proc.returncode == 2
        assert message in proc.stderr
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1

    def test_unwritable_results_path(self, tmp_path):
        blocker = tmp_path / "file"
        blocker.write_text("")
        proc = run_cli(
            "run", "--dataset", "synthetic", "--method", "fedavg", "--results", str(blocker / "r.sqlite"), *TINY_ARGS
        )
        assert proc.returncode == 2 and "cannot open results file" in proc.stderr and "--results" in proc.stderr
        assert "Traceback" not in proc.stderr

    @pytest.mark.parametrize(
        "body, message",
        [
            ("methods = [", "invalid TOML"),
            ('methods = ["fedem"]\nseeds = [1]\ncolour = 1\n[datasets.synthetic]\n', "unknown key(s) colour"),
            ('methods = ["fedemx"]\nseeds = [1]\n[datasets.synthetic]\n', "unknown method 'fedemx'"),
            ('methods = ["fedem"]\nseeds = "1"\n[datasets.synthetic]\n', "seeds must be a list of integers"),
            ('methods = ["fedem"]\nseeds = [1]\n[set]\nrounds = "many"\n[datasets.synthetic]\n', "rounds expects int"),
        ],
    )
    def test_malformed_suite(self, tmp_path, body, message):
        suite = tmp_path / "bad.toml"
        suite.write_text(body)
        proc = run_cli("run", "--suite", str(suite), "--results", str(tmp_path / "r.sqlite"))
        assert proc.returncode == 2 and message in proc.stderr and str(suite) in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
