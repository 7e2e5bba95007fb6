"""The paper suite: per-(data set, method) settings in data, and missing data reported up front."""

from __future__ import annotations

import pytest

from fedbench.errors import ConfigError
from fedbench.reporting.store import ResultStore
from fedbench.runs.suite import load_suite, missing_data
from tests.conftest import run_cli


def _lr(suite, dataset, method):
    return {c.train.lr for c in suite.runs if c.dataset == dataset and c.method == method}


def test_paper_suite_holds_the_authors_settings(registry):
    suite = load_suite(registry, "paper")
    assert len(suite.runs) == 5 * 7 * 3
    assert _lr(suite, "cifar10", "fedem") == {0.03} and _lr(suite, "emnist", "fedem") == {0.05}
    assert _lr(suite, "cifar10", "clustered") == {0.003} and _lr(suite, "femnist", "fedavg") == {0.03}
    prox = [c for c in suite.runs if c.dataset == "femnist" and c.method == "fedprox"]
    assert {dict(c.client_params)["mu"] for c in prox} == {0.05} and {c.train.lr for c in prox} == {0.05}
    assert {c.train.momentum for c in prox} == {0.0}  # the preset's, not overridden by the suite
    models = {c.dataset: c.model for c in suite.runs}
    assert models == {"cifar10": "mobilenet_v2", "cifar100": "mobilenet_v2", "emnist": "femnist_cnn",
                      "femnist": "femnist_cnn", "shakespeare": "next_char_lstm"}
    assert {c.train.rounds for c in suite.runs} == {200}
    refs = suite.references
    assert float(refs[(refs.dataset == "cifar10") & (refs.method == "fedem")].value.iloc[0]) == 84.3


def _write(tmp_path, body):
    path = tmp_path / "s.toml"
    path.write_text(body)
    return str(path)


BASE = 'methods = ["fedavg", "local"]\nseeds = [1]\n[set]\nrounds = 2\nlr = 0.1\n'


def test_layers_apply_in_order(registry, tmp_path):
    body = BASE + (
        "[datasets.synthetic]\nn_clients = 4\nn_test = 10\n"
        "[datasets.synthetic.set]\nlr = 0.2\nrounds = 3\n"
        '[datasets.synthetic.methods.fedavg]\nlr = 0.3\n'
    )
    suite = load_suite(registry, _write(tmp_path, body))
    assert _lr(suite, "synthetic", "fedavg") == {0.3} and _lr(suite, "synthetic", "local") == {0.2}
    assert {c.train.rounds for c in suite.runs} == {3}
    cli = load_suite(registry, _write(tmp_path, body), extra={"lr": 0.5})
    assert _lr(cli, "synthetic", "fedavg") == {0.5}  # the command line wins


@pytest.mark.parametrize(
    "tail, message",
    [
        ("[datasets.synthetic.methods.fedem]\nlr = 0.3\n", "names fedem, not in the suite's methods"),
        ("[datasets.synthetic.methods.fedavg]\ncolour = 1\n", "unknown setting 'colour'"),
        ("[datasets.synthetic]\nset = 3\n", "datasets.synthetic.set must be a table"),
    ],
)
def test_bad_dataset_tables(registry, tmp_path, tail, message):
    body = BASE + ("[datasets.synthetic]\nn_clients = 4\n" if not tail.startswith("[datasets.synthetic]\n") else "") + tail
    with pytest.raises(ConfigError, match=message):
        load_suite(registry, _write(tmp_path, body))


def test_missing_data_sets_are_named_up_front_and_the_rest_run(registry, tmp_path):
    body = BASE + "[datasets.synthetic]\nn_clients = 4\nn_test = 10\n[datasets.mnist]\n[datasets.femnist]\n"
    path = _write(tmp_path, body)
    missing = missing_data(registry, load_suite(registry, path).runs, tmp_path / "empty")
    assert set(missing) == {"mnist", "femnist"} and all("\n" not in m for m in missing.values())
    db = tmp_path / "r.sqlite"
    proc = run_cli("run", "--suite", path, "--data-root", str(tmp_path / "empty"), "--results", str(db), "--no-progress")
    assert proc.returncode == 1  # not every run could go ahead
    lines = proc.stderr.splitlines()
    skips = [i for i, line in enumerate(lines) if line.startswith("fedbench: skipping")]
    assert len(skips) == 2 and "skipping 2 run(s) of mnist" in proc.stderr and "train-images-idx3-ubyte" in proc.stderr
    done = [i for i, line in enumerate(lines) if "synthetic / " in line and ": done" in line]
    assert len(done) == 2 and max(skips) < min(done)  # reported before any run
    assert len(ResultStore(db).runs()) == 2


def test_single_run_on_missing_data_is_one_line(tmp_path):
    proc = run_cli("run", "--dataset", "cifar10", "--method", "fedavg", "--data-root", str(tmp_path), "--results", str(tmp_path / "r.sqlite"))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "download=True" in proc.stderr and "cifar-10-batches-py" in proc.stderr


def test_data_check_lists_each_data_set(tmp_path):
    proc = run_cli("data", "check", "--data-root", str(tmp_path))
    assert proc.returncode == 1
    rows = {line.split()[0]: line for line in proc.stdout.splitlines()}
    assert "no files needed" in rows["synthetic"] and "missing train, test" in rows["cifar100"]
    assert "no LEAF json files" in rows["shakespeare"]
    proc = run_cli("data", "download", "synthetic")
    assert proc.returncode == 2 and "cannot be downloaded" in proc.stderr


@pytest.mark.slow  # 14 runs through the CLI, ~37 s: the default run keeps under 10 minutes on 2 cores
def test_paper_suite_runs_as_is_on_the_data_sets_present(tmp_path):
    # a user with only the LEAF files: FEMNIST and Shakespeare run with the paper's models and
    # learning rates (one round), the three others are named up front and skipped
    from tests.test_leaf import make_leaf, make_shakespeare

    make_leaf(tmp_path, writers=12)
    make_shakespeare(tmp_path, roles=1, lengths=[410])  # one role just long enough for a test window after the 80/20 cut
    db = tmp_path / "r.sqlite"
    proc = run_cli(
        "run", "--suite", "paper", "--seed", "1", "--set", "rounds=1", "--set", "dataset.fraction=1.0",
        "--data-root", str(tmp_path), "--results", str(db), "--no-progress",
    )
    assert proc.returncode == 1  # three data sets missing
    assert proc.stderr.count("fedbench: skipping 7 run(s)") == 3
    done = [line for line in proc.stderr.splitlines() if ": done after 1 rounds" in line]
    assert len(done) == 14, proc.stderr[-3000:]
    assert "| femnist |" in proc.stdout and "| shakespeare |" in proc.stdout


def test_a_failed_download_is_one_line(tmp_path):
    from fedbench import DatasetSpec
    from fedbench.api import fetch
    from fedbench.errors import FedbenchError

    def offline(data_root=None):
        raise OSError("[Errno 101] Network is unreachable\nmore lines")

    spec = DatasetSpec(name="x", load=lambda **_: None, default_model="linear", download=offline)
    with pytest.raises(FedbenchError) as err:
        fetch("x", tmp_path, spec=spec)
    assert "\n" not in str(err.value) and "Network is unreachable" in str(err.value) and "--data-root" in str(err.value)


def test_methods_and_datasets_pick_runs_of_a_suite(tmp_path):
    path = _write(tmp_path, BASE + "[datasets.synthetic]\nn_clients = 4\nn_test = 10\n[datasets.digits]\nn_clients = 3\n")
    db = tmp_path / "r.sqlite"
    proc = run_cli("run", "--suite", path, "--methods", "local", "--datasets", "synthetic", "--results", str(db), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "suite s: 1 runs" in proc.stderr and ResultStore(db).runs().method.tolist() == ["local"]
    bad = run_cli("run", "--suite", path, "--methods", "fedem", "--results", str(db))
    assert bad.returncode == 2 and "suite s has no method fedem; its methods: fedavg, local" in bad.stderr
