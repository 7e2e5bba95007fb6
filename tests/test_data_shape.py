"""A data set's declared shape (``DatasetSpec.shape``): every built-in declares the shape its loader returns;
a model that does not fit is refused before any run, in one line; a plugin whose declaration does not say
what it loads fails its run naming the plugin."""

from __future__ import annotations

import pytest
import fedbench
from fedbench.runs.build import declared_shape, load_data, resolve_run
from fedbench.fl.data import DataShape
from fedbench.errors import PluginError
from tests.conftest import TINY, run_cli, with_plugin
from tests.test_cifar import make_cifar
from tests.test_idx import make_mnist_like
from tests.test_leaf import make_leaf, make_shakespeare


def _emnist(root):
    from tests.test_idx import TestEmnist

    TestEmnist().write(root / "EMNIST" / "raw")


CASES = [
    ("synthetic", None, {"dataset.n_clients": 4, "dataset.n_test": 10, "dataset.dim": 7}),
    ("synthetic-corrected", None, {"dataset.n_clients": 4, "dataset.n_test": 10, "dataset.dim": 7}),
    ("digits", None, {}),
    ("mnist", lambda r: make_mnist_like(r / "MNIST" / "raw"), {"dataset.n_clients": 4, "dataset.fraction": 1.0}),
    ("emnist", _emnist, {"dataset.n_clients": 4, "dataset.fraction": 0.5}),
    ("cifar10", lambda r: make_cifar(r, "cifar10"), {"dataset.n_clients": 4, "dataset.partitioner": "dirichlet"}),
    ("cifar100", lambda r: make_cifar(r, "cifar100", per_file=100), {"dataset.n_clients": 4,
                                                                     "dataset.samples_per_client": 20}),
    ("femnist", make_leaf, {"dataset.fraction": 0.5}),
    ("shakespeare", make_shakespeare, {}),
    ("shakespeare", make_shakespeare, {"dataset.targets": "next"}),
]


@pytest.mark.filterwarnings("ignore:shakespeare")
@pytest.mark.parametrize("name, make, settings", CASES, ids=[f"{c[0]}-{len(c[2])}" for c in CASES])
def test_each_built_in_declares_what_it_loads(registry, tmp_path, name, make, settings):
    if make is not None:
        make(tmp_path)
    if name == "digits":
        pytest.importorskip("sklearn")
    cfg = resolve_run(registry, dataset=name, method="fedavg", seed=0, overrides=settings)
    declared = declared_shape(registry, cfg)
    loaded = DataShape.of(load_data(registry, cfg, tmp_path, keep=False))
    assert declared == loaded


def test_every_built_in_data_set_declares_a_shape(registry):
    built_in = [n for n in registry.names("dataset") if registry.entry("dataset", n).package == "fedbench-suite"]
    assert len(built_in) >= 10 and all(registry.get("dataset", n).shape is not None for n in built_in)


def test_a_model_that_does_not_fit_is_one_line_before_any_run(tmp_path):
    sets = [x for k, v in TINY.items() for x in ("--set", f"{k}={v}")]
    one = run_cli("run", "--dataset", "synthetic", "--method", "fedavg", "--set", "model=cifar10cnn", *sets,
                  "--results", str(tmp_path / "one.sqlite"), "--no-progress")
    assert one.returncode == 2 and one.stderr.count("\n") == 1, one.stderr
    assert "model 'cifar10cnn' does not fit data set 'synthetic' (inputs (10,), 1 logit)" in one.stderr
    assert "the default for 'synthetic' is 'linear'" in one.stderr
    assert not (tmp_path / "one.sqlite").exists()
    suite = tmp_path / "s.toml"
    suite.write_text('methods = ["fedavg", "fedem"]\nseeds = [1]\n[set]\nrounds = 2\n[datasets.synthetic]\nn_clients = 4\n'
                     'n_test = 10\ndim = 6\n')
    many = run_cli("run", "--suite", str(suite), "--set", "model=femnist_cnn", "--results", str(tmp_path / "s.sqlite"))
    assert many.returncode == 2 and "does not fit data set 'synthetic'" in many.stderr
    assert not (tmp_path / "s.sqlite").exists()


def _lying_registry(shape: DataShape):
    from fedbench import DatasetSpec, hookimpl

    base = fedbench.load_dataset("synthetic", n_clients=4, n_test=10, dim=6)

    class Lying:
        @hookimpl
        def fedbench_datasets(self):  # noqa: ANN202
            return [DatasetSpec(name="lying", load=lambda data_root=None, seed=0: base, params={"seed": 0},
                                default_model="linear", shape=lambda **p: shape)]

    return with_plugin(Lying(), "lying-plugin")


def test_a_declaration_that_is_not_what_loads_fails_the_run_naming_the_plugin(tmp_path):
    from fedbench.runs.build import build_simulation, check_model_fits

    honest = _lying_registry(DataShape((6,), 1, task="binary"))
    cfg = resolve_run(honest, dataset="lying", method="fedavg", seed=0, overrides={"rounds": 1})
    check_model_fits(honest, cfg)
    build_simulation(honest, cfg)  # says what it loads: builds
    wrong = _lying_registry(DataShape((7,), 1, task="binary"))  # the linear model is built for 7 inputs and fits
    cfg = resolve_run(wrong, dataset="lying", method="fedavg", seed=0, overrides={"rounds": 1})
    check_model_fits(wrong, cfg)
    with pytest.raises(PluginError, match=r"data set 'lying' \(plugin 'lying-plugin'\) declares inputs \(7,\), 1 logit "
                                          r"but loaded inputs \(6,\), 1 logit"):
        build_simulation(wrong, cfg)
    not_a_shape = _lying_registry((6,))  # type: ignore[arg-type]
    cfg = resolve_run(not_a_shape, dataset="lying", method="fedavg", seed=0, overrides={"rounds": 1})
    with pytest.raises(PluginError, match="shape\\(\\) must return a fedbench.fl.data.DataShape, got tuple"):
        check_model_fits(not_a_shape, cfg)


def test_the_lstm_is_probed_with_byte_ids_and_the_window_labels(registry):
    from fedbench.runs.build import check_model_fits
    from fedbench.errors import ConfigError

    cfg = resolve_run(registry, dataset="shakespeare", method="fedavg", seed=0, overrides={"model.hidden": 8})
    assert str(declared_shape(registry, cfg)) == "inputs (80,) uint8, 100 logits, labels (80,)"
    check_model_fits(registry, cfg)  # no files needed: the declaration is enough
    last = resolve_run(registry, dataset="shakespeare", method="fedavg", seed=0,
                       overrides={"model.hidden": 8, "model.positions": "last"})
    with pytest.raises(ConfigError, match=r"gives logits of shape \(100,\) per sample but data set 'shakespeare' needs \(80, 100\)"):
        check_model_fits(registry, last)
