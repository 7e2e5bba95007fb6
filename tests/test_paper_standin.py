"""Every (data set, method) cell of the paper suite runs, on format-exact stand-in files (slow).

The stand-ins come from ``benchmarks/standin_data.py`` (torchvision's and LEAF's formats) at a
small scale; the real-size run of the same loaders and cells is ``benchmarks/paper_cost.py``."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import benchmark_module, run_cli

ROOT = Path(__file__).resolve().parents[1]

#: per data set: the stand-in scale and the settings that make one round small enough for a test
CELLS = {
    "cifar10": (0.02, ["dataset.n_clients=10"]),
    "cifar100": (0.02, ["dataset.n_clients=10", "dataset.samples_per_client=60"]),
    "emnist": (0.01, ["dataset.n_clients=10"]),
    "femnist": (0.05, []),
    "shakespeare": (0.0005, []),
}


@pytest.mark.slow
def test_every_paper_cell_runs_one_round_on_standin_files(tmp_path):
    data = tmp_path / "standin"
    for name, (scale, _) in CELLS.items():
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "standin_data.py"), "--root", str(data),
                        "--only", name, "--scale", str(scale)], check=True, capture_output=True, timeout=600)
    db = tmp_path / "paper.sqlite"
    for name, (_, settings) in CELLS.items():
        sets = [x for s in ["rounds=1", "eval_every=1", *settings] for x in ("--set", s)]
        proc = run_cli("run", "--suite", "paper", "--datasets", name, "--seed", "1", *sets,
                       "--data-root", str(data), "--results", str(db), "--no-progress")
        assert proc.returncode == 0, proc.stderr[-3000:]
    rows = sqlite3.connect(db).execute("SELECT dataset, method, status FROM runs").fetchall()
    assert len(rows) == 5 * 7 and {s for *_, s in rows} == {"done"}, rows


def test_short_roles_standin_keeps_the_papers_778_clients_with_one_batch_each(tmp_path):
    """``standin_data.py --short-roles``: the real role count (1,129 files), and the authors' line cut plus the
    80-character rule (fedbench's Shakespeare loader) keep exactly 778 of them, each with one batch or less."""
    from fedbench_plugins.datasets.leaf import load_shakespeare

    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "standin_data.py"), "--root", str(tmp_path),
                    "--only", "shakespeare", "--short-roles"], check=True, capture_output=True, timeout=300)
    assert len(list((tmp_path / "shakespeare" / "raw_data" / "by_play_and_character").glob("*.txt"))) == 1129
    data = load_shakespeare(tmp_path)
    sizes = data.train_sizes()
    assert len(sizes) == 778 and 0 < sizes.min() and sizes.max() <= 128
    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "standin_data.py"), "--root", str(tmp_path),
                          "--only", "cifar10", "--short-roles"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--only shakespeare" in bad.stderr


def test_paper_speed_window_reports_a_stopped_process_peaks_and_progress(tmp_path):
    """``paper_speed.py --window``: a process stopped on time is a row with its peak memory so far and the last
    progress mark it printed, not a failure."""
    paper_speed = benchmark_module("paper_speed")
    script = tmp_path / "slow.py"
    script.write_text("import sys, time\nx = bytearray(200 * 2**20)\nfor i in range(200 * 2**20 // 4096): x[i * 4096] = 1\n"
                      "print('progress: loaded and built (3 clients, sequential)', file=sys.stderr, flush=True)\n"
                      "print('progress: evaluated', file=sys.stderr, flush=True)\ntime.sleep(60)\n")
    res = paper_speed.timed([sys.executable, str(script)], timeout=4)
    assert res["stopped"] and res["rc"] == -9 and 4 <= res["wall"] < 30
    assert res["rss"] >= 200 and res["anon"] >= 190
    assert "progress: evaluated" in res["err"]
    row = {"code": "fedbench", "dataset": "d", "method": "m", "wall_s": res["wall"], "rss_mb": res["rss"],
           "anon_mb": res["anon"], "stopped": "evaluated, 1 evaluations"}
    line = paper_speed.fmt([row])[-1]
    assert line.count("|") == paper_speed.fmt([])[0].count("|") and f"| {res['rss']:.0f} |" in line
    assert paper_speed.reached_ours(res["err"]) == "evaluated, 1 evaluations"
    assert paper_speed.reached_ours("Traceback\n") == "loading, 0 evaluations"
    out = "===> Building data iterators..\n===> Initializing clients..\n 40%|####\n==> Clients initialization..\n"
    assert paper_speed.reached_authors(out) == "Clients initialization, 0 evaluations"
    out += "++++\nGlobal..\nTrain Loss: 4.1 | Train Acc: 2.0% |Test Loss: 4.2 | Test Acc: 2.1% |\nTraining..\n"
    assert paper_speed.reached_authors(out) == "Training, 1 evaluations"


def test_paper_speed_reads_the_authors_rounds_and_evaluations_from_their_print_times(tmp_path):
    """The authors' seconds per round and per evaluation come from when the shim's lines around their
    ``Aggregator.write_logs`` are printed: a module named ``aggregator`` run under the shim (the real
    ``sitecustomize`` the script writes) with known pauses in and between its evaluations gives those back."""
    paper_speed = benchmark_module("paper_speed")
    shims = tmp_path / "shims"
    shims.mkdir()
    (shims / "sitecustomize.py").write_text(paper_speed.SITECUSTOMIZE)
    work = tmp_path / "work"
    work.mkdir()
    (work / "aggregator.py").write_text(
        "import time\nclass Aggregator:\n"
        "    def write_logs(self):\n        time.sleep(0.6)\n        print('#' * 80)\n"  # an evaluation: 0.6 s
        "    def mix(self):\n        time.sleep(1.0)\n        self.write_logs()\n")  # a round: 1.0 s
    (work / "run.py").write_text(
        "import time\nprint('===> Building data iterators..')\ntime.sleep(0.5)\n"  # loading and building: 0.5 s
        "from aggregator import *\na = Aggregator()\na.write_logs()\nprint('Training..')\na.mix()\na.mix()\n")
    res = paper_speed.timed([sys.executable, "run.py"], cwd=work, timeout=30, env=paper_speed.authors_env(tmp_path))
    assert res["rc"] == 0, res["err"]
    assert [line for _, line in res["marks"]].count("fedbench-shim: evaluation starts") == 3
    got = paper_speed.authors_times(res["marks"])
    assert got["build_s"] == pytest.approx(0.5, abs=0.3)  # the shim's import of torchvision is not in it
    assert got["eval_s"] == [pytest.approx(0.6, abs=0.15)] * 3
    assert got["round_s"] == [pytest.approx(1.0, abs=0.15)] * 2
    assert paper_speed.authors_times([(1.0, "===> Building data iterators..")]) == {}  # stopped before any evaluation


@pytest.mark.parametrize("engine", ["sequential", "vectorized"])
def test_paper_cost_times_the_runs_own_engine_and_projects_its_rounds_and_evaluations(tmp_path, engine):
    """``paper_cost.py`` times a cell through the engine the run uses (the vectorised one too), and a run's
    projection is 200 rounds plus the suite's evaluations (EMNIST: at the start and every 5th round: 41)."""
    from fedbench.plugin.registry import get_registry
    from fedbench.runs.suite import load_suite

    paper_cost = benchmark_module("paper_cost")
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "standin_data.py"), "--root", str(tmp_path),
                    "--only", "emnist", "--scale", "0.01"], check=True, capture_output=True, timeout=300)
    (cfg,) = load_suite(get_registry(), "paper", seeds=[1], engine=engine, extra={"dataset.n_clients": 10},
                        only_datasets=["emnist"], only_methods=["fedavg"]).runs
    r = paper_cost.measure(cfg, tmp_path, samples=64)
    assert r["engine"] == engine and r["clients"] == 10 and r["measured samples"] >= 64
    evals = sum(cfg.train.is_eval_round(k) for k in range(cfg.train.rounds)) + int(cfg.train.eval_at_start)
    assert cfg.train.rounds == 200 and evals == 41
    assert r["run h"] == pytest.approx((200 * r["round s"] + evals * r["eval s"]) / 3600)
    assert r["round s"] > 0 and r["eval s"] > 0


def test_paper_speed_projects_a_paper_run_of_each_code_by_one_rule():
    """A paper run projected from measured rows: 200 rounds at the fastest round, the suite's evaluations at the
    mean one, plus loading; EMNIST evaluates at the start and every 5th round (41). Hand-computed for both codes and their ratio."""
    paper_speed = benchmark_module("paper_speed")
    rows = [
        {"dataset": "emnist", "method": "fedavg", "code": "fedbench", "round_s": [3.0, 2.0], "eval_s": [1.0, 2.0, 3.0],
         "build_s": 36.0},
        {"dataset": "emnist", "method": "fedavg", "code": "fedbench", "round_s": [9.0], "eval_s": [9.0]},  # a second row
        {"dataset": "emnist", "method": "fedavg", "code": "authors", "round_s": [4.0, 5.0], "eval_s": [6.0]},
        {"dataset": "emnist", "method": "fedem", "code": "fedbench", "error": "failed"},
    ]
    lines = paper_speed.projection(rows)
    ours_h = (200 * 2.0 + 41 * 2.0 + 36.0) / 3600
    theirs_h = (200 * 4.0 + 41 * 6.0) / 3600
    assert f"| emnist | fedavg | fedbench | 200 x 2.00 | 41 x 2.00 | {ours_h:.3f} | {3 * ours_h:.3f} |" in lines
    assert f"| emnist | fedavg | authors | 200 x 4.00 | 41 x 6.00 | {theirs_h:.3f} | {3 * theirs_h:.3f} |" in lines
    assert sum("| fedem |" in line for line in lines) == 0
    assert f"**{ours_h / theirs_h:.2f}x**" in lines[-1] and "emnist/fedavg" in lines[-1]
    assert paper_speed.projection([rows[-1]]) == []
