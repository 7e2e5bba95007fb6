"""Plugin loading through real entry points, lookups, and isolation of broken plugins."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from fedbench.plugin import hookspecs
from fedbench.errors import UnknownPluginError
from fedbench.plugin.registry import KIND_HOOKS, Registry, new_plugin_manager
from tests.conftest import TINY, run_cli

ROOT = Path(__file__).resolve().parents[1]


def make_dist(root: Path, module: str, source: str, entry_name: str | None = None) -> None:
    """A minimal installed distribution (module + .dist-info with an entry point) under ``root``."""
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[fedbench]\n{entry_name or module} = {module}\n")


class TestBuiltins:
    def test_builtins_come_from_entry_points(self, registry):
        for kind, names in {
            "dataset": {"synthetic", "synthetic-corrected"},
            "model": {"linear"},
            "client": {"plain", "mixture"},
            "aggregator": {"centralized", "no_communication"},
            "method": {"fedem", "fedavg", "local"},
            "suite": {"quick"},
            "partitioner": {"iid", "dirichlet", "label_groups", "shards", "quantity"},
        }.items():
            assert names <= set(registry.names(kind)), kind
        entry = registry.entry("method", "fedem")
        assert entry.plugin == "fedem" and entry.package == "fedbench-suite"
        assert registry.get("method", "fedem").n_learners == 3
        # an outside plugin installed beside ours may add failures of its own, never one of a built-in
        from importlib.metadata import entry_points

        builtin = {ep.name for ep in entry_points(group="fedbench") if ep.value.startswith("fedbench_plugins")}
        assert not set(registry.failures) & builtin


class TestLookupFailure:
    def test_unknown_name_lists_known_and_closest(self, registry):
        with pytest.raises(UnknownPluginError) as err:
            registry.get("method", "fedemm")
        msg = str(err.value)
        assert "did you mean 'fedem'" in msg and "fedavg, fedavg+, fedavgm, fedbn, fedem, fedprox" in msg

    def test_unknown_kind(self, registry):
        with pytest.raises(UnknownPluginError, match="kinds are"):
            registry.names("optimizer")


class TestBrokenPlugins:
    def test_import_error_is_reported_by_name_and_others_load(self, tmp_path):
        make_dist(tmp_path, "broken_import", "raise ImportError('no module named nothing')\n")
        make_dist(
            tmp_path,
            "broken_hook",
            """
            from fedbench import hookimpl
            @hookimpl
            def fedbench_methods():
                raise RuntimeError("boom")
            """,
        )
        proc = run_cli("list", "method", env={"PYTHONPATH": str(tmp_path)})
        assert proc.returncode == 0, proc.stderr
        assert "plugin 'broken_import' not loaded" in proc.stderr and "no module named nothing" in proc.stderr
        assert "plugin 'broken_hook' not loaded" in proc.stderr and "boom" in proc.stderr
        assert "fedem" in proc.stdout and "fedavg" in proc.stdout

    def test_a_plugin_that_hangs_at_import_is_skipped_by_name_after_the_timeout(self, tmp_path):
        import time

        make_dist(tmp_path, "hangs_at_import", "import time\ntime.sleep(3600)\n")
        start = time.monotonic()
        proc = run_cli("list", "method", env={"PYTHONPATH": str(tmp_path), "FEDBENCH_IMPORT_TIMEOUT": "2"})
        assert time.monotonic() - start < 60
        assert proc.returncode == 0, proc.stderr
        assert "plugin 'hangs_at_import' not loaded" in proc.stderr and "did not finish in 2 s" in proc.stderr
        assert "FEDBENCH_DISABLE_PLUGINS=hangs_at_import" in proc.stderr and "fedavg" in proc.stdout
        run = run_cli("run", "--dataset", "synthetic", "--method", "fedavg", "--rounds", "1", "--set", "dataset.n_clients=4",
                      "--set", "dataset.n_test=20", "--set", "dataset.dim=5", "--results", str(tmp_path / "r.sqlite"),
                      "--no-progress", env={"PYTHONPATH": str(tmp_path), "FEDBENCH_IMPORT_TIMEOUT": "2"})
        assert run.returncode == 0 and "done after 1 rounds" in run.stdout, run.stderr  # the other plugins run

    def test_unknown_hook_and_name_clash_are_reported(self, tmp_path):
        make_dist(
            tmp_path,
            "typo_hook",
            """
            from fedbench import hookimpl
            @hookimpl
            def fedbench_method():
                return []
            """,
        )
        make_dist(
            tmp_path,
            "clash",
            """
            from fedbench import MethodSpec, hookimpl
            @hookimpl
            def fedbench_methods():
                return [MethodSpec(name="fedavg", client="plain", aggregator="centralized")]
            """,
        )
        proc = run_cli("list", "method", env={"PYTHONPATH": str(tmp_path)})
        assert "plugin 'typo_hook' not loaded" in proc.stderr and "fedbench_method" in proc.stderr
        # the impostor is blamed, by name, and the built-in fedavg is kept
        assert "plugin 'clash' not loaded: method 'fedavg' is provided by" in proc.stderr
        assert "the built-in one is kept" in proc.stderr and "plugin 'fedavg' not loaded" not in proc.stderr
        line = next(l for l in proc.stdout.splitlines() if l.strip().startswith("fedavg "))
        assert "fedbench-suite" in line

    def test_outside_entry_point_named_like_a_builtin_does_not_shadow_it(self, tmp_path):
        make_dist(
            tmp_path,
            "outside_models",
            """
            from fedbench import ModelSpec, hookimpl
            import torch
            @hookimpl
            def fedbench_models():
                return [ModelSpec(name="outside_linear", build=lambda shape, n: torch.nn.Linear(shape[0], n))]
            """,
            entry_name="models",
        )
        proc = run_cli("list", "model", env={"PYTHONPATH": str(tmp_path)})
        assert proc.returncode == 0, proc.stderr
        assert "entry point 'models' is registered by" in proc.stderr and "the built-in one is loaded" in proc.stderr
        assert "linear " in proc.stdout and "outside_linear" not in proc.stdout
        proc = run_cli("list", "model", env={"PYTHONPATH": str(tmp_path), "FEDBENCH_OVERRIDE": "models"})
        assert "outside_linear" in proc.stdout  # the explicit opt-in

    def test_method_naming_a_missing_client_type_is_reported_at_load(self, tmp_path):
        make_dist(
            tmp_path,
            "dangling",
            """
            from fedbench import MethodSpec, hookimpl
            @hookimpl
            def fedbench_methods():
                return [MethodSpec(name="ghost", client="no_such_client", aggregator="centralized")]
            """,
        )
        proc = run_cli("list", "method", env={"PYTHONPATH": str(tmp_path)})
        assert "plugin 'dangling' not loaded: method 'ghost' names unknown client 'no_such_client'" in proc.stderr
        assert "ghost" not in proc.stdout

    def test_disable_plugins_env(self):
        proc = run_cli("list", "method", env={"FEDBENCH_DISABLE_PLUGINS": "fedem,local"})
        names = {line.split()[0] for line in proc.stdout.splitlines()[1:] if line.startswith("  ") and not line.startswith("   ")}
        assert "fedavg" in names and "fedem" not in names and "local" not in names


class TestHookContract:
    """Every hook is documented in docs/plugins.md and has a test_hook_<name> below."""

    HOOKS = sorted(n for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if n.startswith("fedbench_"))

    def test_every_kind_has_a_hook_and_back(self):
        assert sorted(KIND_HOOKS.values()) == self.HOOKS

    @pytest.mark.parametrize("hook", HOOKS)
    def test_documented_and_tested(self, hook):
        assert f"`{hook}`" in (ROOT / "docs" / "plugins.md").read_text(), f"{hook} missing from docs/plugins.md"
        assert hasattr(TestHookImplementations, f"test_hook_{hook}"), f"no test_hook_{hook}"


class _Plugin:
    """An in-process plugin implementing every hook once, to check what each hook feeds."""

    from fedbench import (
        AggregatorSpec, CentralizedAggregator, Client, ClientSpec, DatasetSpec, ExecutorSpec, MethodSpec, ModelSpec,
        PartitionerSpec, SuiteSpec, hookimpl,
    )

    @hookimpl
    def fedbench_datasets(self):
        return [self.DatasetSpec(name="d", load=lambda **_: None, default_model="m", params={"k": 1})]

    @hookimpl
    def fedbench_models(self):
        return [self.ModelSpec(name="m", build=lambda *a: None)]

    @hookimpl
    def fedbench_clients(self):
        return [self.ClientSpec(name="c", cls=self.Client)]

    @hookimpl
    def fedbench_aggregators(self):
        return [self.AggregatorSpec(name="a", cls=self.CentralizedAggregator)]

    @hookimpl
    def fedbench_methods(self):
        return [self.MethodSpec(name="x", client="c", aggregator="a", n_learners=2)]

    @hookimpl
    def fedbench_suites(self):
        return [self.SuiteSpec(name="s", path="s.toml")]

    @hookimpl
    def fedbench_partitioners(self):
        return [self.PartitionerSpec(name="half", partition=lambda labels, n, rng: [labels[: n // 2], labels[n // 2 :]])]

    @hookimpl
    def fedbench_executors(self):
        return [self.ExecutorSpec(name="e", run=lambda configs, results, **kw: [len(configs), results])]


@pytest.fixture()
def one_plugin_registry():
    pm = new_plugin_manager()
    pm.register(_Plugin(), name="p")
    return Registry(pm, packages={"p": "pkg"})


class TestHookImplementations:
    def test_hook_fedbench_datasets(self, one_plugin_registry):
        entry = one_plugin_registry.entry("dataset", "d")
        assert entry.plugin == "p" and entry.package == "pkg" and entry.spec.params["k"] == 1

    def test_hook_fedbench_models(self, one_plugin_registry):
        assert one_plugin_registry.names("model") == ["m"]

    def test_hook_fedbench_clients(self, one_plugin_registry):
        assert one_plugin_registry.get("client", "c").cls.__name__ == "Client"

    def test_hook_fedbench_aggregators(self, one_plugin_registry):
        assert one_plugin_registry.get("aggregator", "a").cls.__name__ == "CentralizedAggregator"

    def test_hook_fedbench_methods(self, one_plugin_registry):
        spec = one_plugin_registry.get("method", "x")
        assert (spec.client, spec.aggregator, spec.n_learners) == ("c", "a", 2)

    def test_hook_fedbench_suites(self, one_plugin_registry):
        assert one_plugin_registry.get("suite", "s").path == "s.toml"

    def test_hook_fedbench_partitioners(self, one_plugin_registry):
        spec = one_plugin_registry.get("partitioner", "half")
        assert [p.tolist() for p in spec.partition(np.arange(4), 4, None)] == [[0, 1], [2, 3]]

    def test_hook_fedbench_executors(self, one_plugin_registry):
        assert one_plugin_registry.get("executor", "e").run([1, 2], "r.sqlite", jobs=3) == [2, "r.sqlite"]

    def test_non_spec_return_is_a_failure_not_a_crash(self):
        from fedbench import hookimpl

        class Bad:
            @hookimpl
            def fedbench_models(self):
                return ["not a spec"]

        pm = new_plugin_manager()
        pm.register(Bad(), name="bad")
        reg = Registry(pm)
        assert "expected a fedbench spec" in reg.failures["bad"] and reg.names("model") == []


class TestCoreComponents:
    def test_the_core_registers_plain_and_centralized_through_the_hooks(self):
        from fedbench.plugin import components
        from fedbench.plugin.registry import CORE_PLUGIN, get_registry

        reg = get_registry()
        assert reg.entry("client", "plain").plugin == CORE_PLUGIN
        assert reg.entry("aggregator", "centralized").plugin == CORE_PLUGIN
        assert reg.pm.get_plugin(CORE_PLUGIN) is components

    def test_disabling_the_fedavg_plugin_leaves_fedem_running(self, tmp_path):
        env = {"FEDBENCH_DISABLE_PLUGINS": "fedavg"}
        listed = run_cli("list", "method", env=env)
        assert listed.returncode == 0 and "\n  fedavg " not in listed.stdout and "\n  fedem " in listed.stdout
        proc = run_cli("run", "--dataset", "synthetic", "--method", "fedem", "--set", "dataset.n_clients=6",
                       "--set", "rounds=2", "--results", str(tmp_path / "r.sqlite"), "--no-progress", env=env)
        assert proc.returncode == 0 and ": done after 2 rounds" in proc.stdout, proc.stderr


class TestOutsideExecutor:
    def test_a_plugin_executor_runs_a_suite_and_its_runs_are_stored_once(self, tmp_path):
        make_dist(
            tmp_path,
            "reverse_executor",
            """
            from fedbench import ExecutorSpec, hookimpl

            def run(configs, results, *, jobs=1, data_root=None, force=False, progress=True, on_outcome=None, address=None):
                from fedbench.plugin.registry import get_registry
                from fedbench.runs.runner import execute_run
                from fedbench.reporting.store import ResultStore

                store = ResultStore(results)
                outcomes = {}
                for i in reversed(range(len(configs))):  # its own order: last run first
                    outcomes[i] = execute_run(get_registry(), configs[i], store, data_root=data_root, force=force,
                                              progress=False)
                    print("reverse_executor ran", configs[i].seed, flush=True)
                    if on_outcome:
                        on_outcome(outcomes[i])
                return [outcomes[i] for i in range(len(configs))]

            @hookimpl
            def fedbench_executors():
                return [ExecutorSpec(name="reverse", doc="runs a sweep last run first", run=run)]
            """,
        )
        suite = tmp_path / "s.toml"
        suite.write_text('methods = ["fedavg"]\nseeds = [1, 2, 3]\n[set]\nrounds = 2\n'
                         '[datasets.synthetic]\nn_clients = 6\nn_test = 30\ndim = 5\n')
        env = {"PYTHONPATH": str(tmp_path)}
        db = tmp_path / "r.sqlite"
        assert "reverse " in run_cli("list", "executor", env=env).stdout
        proc = run_cli("run", "--suite", str(suite), "--executor", "reverse", "--results", str(db), "--no-progress", env=env)
        assert proc.returncode == 0, proc.stderr
        assert [line.split()[-1] for line in proc.stdout.splitlines() if line.startswith("reverse_executor ran")] == ["3", "2", "1"]
        again = run_cli("run", "--suite", str(suite), "--results", str(db), "--no-progress", env=env)  # the local executor
        assert again.returncode == 0 and again.stderr.count("already in the results store") == 3


def _doc_block(first_line: str) -> str:
    """The fenced python block of docs/plugins.md that starts with ``first_line``: the docs' code is what runs."""
    text = (ROOT / "docs" / "plugins.md").read_text()
    start = text.index("```python\n" + first_line) + len("```python\n")
    return text[start:text.index("```", start)]


def installed_registry(tmp_path: Path, monkeypatch, module: str, source: str, *, method: str) -> Registry:  # noqa: ANN001
    """The registry of the installed plugins plus ``source`` installed as the distribution ``module`` under
    ``tmp_path`` (loaded through its entry point), which must register ``method``."""
    from fedbench.plugin.registry import load_plugins

    make_dist(tmp_path, module, source)
    monkeypatch.syspath_prepend(str(tmp_path))
    pm = new_plugin_manager()
    reg = Registry(pm, *load_plugins(pm))
    assert method in reg.names("method"), reg.failures
    return reg


#: FedDyn as an outside plugin module: the complete example of docs/plugins.md
FEDDYN = _doc_block("# feddyn_plugin.py")


def _doc_toml(first_line: str) -> str:
    text = (ROOT / "docs" / "plugins.md").read_text()
    start = text.index("```toml\n" + first_line) + len("```toml\n")
    return text[start:text.index("```", start)]


class TestPooledDataSetExample:
    """docs/plugins.md's pooled data set, partitioner and suite, installed through an entry point and run."""

    def test_the_docs_suite_runs_through_the_cli_and_the_partitioner_deals_label_blocks(self, tmp_path):
        import sqlite3

        make_dist(tmp_path, "blobs_plugin", _doc_block("# blobs_plugin.py"))
        (tmp_path / "blobs.toml").write_text(_doc_toml("# blobs.toml"))
        env = {"PYTHONPATH": str(tmp_path)}
        listed = run_cli("list", "partitioner", env=env)
        assert "label_blocks" in listed.stdout, listed.stderr
        db = tmp_path / "r.sqlite"
        proc = run_cli("run", "--suite", "blobs", "--results", str(db), "--no-progress", env=env)
        assert proc.returncode == 0, proc.stderr
        rows = sqlite3.connect(db).execute("SELECT method, status, config FROM runs").fetchall()
        assert len(rows) == 8 and all(status == "done" for _, status, _ in rows)
        assert {json.loads(c)["dataset_params"]["partitioner"] for _, _, c in rows} == {"label_blocks", "dirichlet"}
        check = ("import sys; sys.path.insert(0, %r)\n"
                 "import numpy as np, fedbench\n"
                 "d = fedbench.load_dataset('blobs', n_clients=4)\n"
                 "ys = [np.concatenate([d.client(i).train_y.numpy(), d.client(i).test_y.numpy()]) for i in range(4)]\n"
                 "print(d.n_clients, sum(map(len, ys)), int(all(ys[i].max() <= ys[i + 1].min() for i in range(3))))"
                 % str(tmp_path))
        out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, env={**os.environ, **env})
        n, total, sorted_blocks = out.stdout.split()
        # every sample dealt once, and the blocks follow the label order (each client's labels <= the next one's)
        assert (int(n), int(total), int(sorted_blocks)) == (4, 600, 1), out.stderr


class TestSharedMethodParameters:
    """A method's own parameter reaches its client type and its aggregator (an outside FedDyn, loaded through
    its entry point)."""

    @pytest.fixture
    def feddyn_registry(self, tmp_path, monkeypatch):
        return installed_registry(tmp_path, monkeypatch, "feddyn_plugin", FEDDYN, method="feddyn")

    def test_the_docs_example_passes_the_conformance_check(self, feddyn_registry):
        from fedbench.testing import check_method

        report = check_method("feddyn", registry=feddyn_registry)
        assert {"bounds", "determinism", "both backends", "partial participation", "stored run"} <= set(report.passed)
        assert not report.declined  # a local term and a client's state: batched, with the same numbers

    def test_one_setting_reaches_both_and_the_server_update_uses_it(self, feddyn_registry):
        from fedbench.runs.build import build_simulation, resolve_run


        cfg = resolve_run(feddyn_registry, dataset="synthetic", method="feddyn", seed=0, overrides={**TINY, "method.alpha": 0.05})
        assert dict(cfg.client_params)["alpha"] == 0.05 == dict(cfg.aggregator_params)["alpha"]
        sim = build_simulation(feddyn_registry, cfg)
        agg = sim.aggregator
        assert sim.engine.startswith("vectorized") and agg.alpha == 0.05 and all(c.alpha == 0.05 for c in agg.clients)
        w0 = agg.global_params[0].clone()
        agg.fit_round(0)
        # every client trained once from w0: g_i = -alpha (theta_i - w0), so theta_i = w0 - g_i / alpha; the server's
        # h = -alpha/m sum_i (theta_i - w0) = mean_i g_i, and its model sum_i n_i/n theta_i - h / alpha
        g = torch.stack([c.g[0] for c in agg.clients])
        n = torch.tensor([float(c.n_train) for c in agg.clients])
        expected = w0 - (n / n.sum()) @ g / 0.05 - g.mean(dim=0) / 0.05
        torch.testing.assert_close(agg.global_params[0], expected, rtol=1e-4, atol=1e-5)
        # and a different alpha gives a different run
        other = resolve_run(feddyn_registry, dataset="synthetic", method="feddyn", seed=0, overrides={**TINY, "method.alpha": 0.1})
        assert other.run_id != cfg.run_id

    @pytest.mark.parametrize("key, value, words", [
        ("method.alpha", -1.0, "alpha must be > 0"),
        ("method.beta", 1.0, "method 'feddyn' has no parameter 'beta'; its parameters are: alpha"),
        ("client.alpha", 1.0, "client 'feddyn' has no parameter 'alpha'"),
    ])
    def test_bad_settings_are_one_line_errors(self, feddyn_registry, key, value, words):
        from fedbench.runs.build import resolve_run
        from fedbench.errors import ConfigError

        with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")):
            resolve_run(feddyn_registry, dataset="synthetic", method="feddyn", seed=0, overrides={key: value})

    def test_built_in_methods_keep_their_run_ids(self, registry):
        # no built-in method shares a parameter: the new group changes no existing id
        assert all(not registry.get("method", m).shared for m in registry.names("method"))


class TestPluginContract:
    """A plugin written against a previous plugin API is refused with its replacement, never run as something else."""

    OLD_FEDDYN = """
        import torch
        from fedbench import Client, ClientSpec, MethodSpec, hookimpl

        class OldDynClient(Client):
            # the API-1 way: declarative attributes the engine used to read
            def __init__(self, *args, alpha=0.1, **kwargs):
                super().__init__(*args, **kwargs)
                self.proximal_mu = alpha

        class OldShiftClient(Client):
            gradient_shift = None

        @hookimpl
        def fedbench_clients():
            return [ClientSpec(name="olddyn", doc="API 1", cls=OldDynClient),
                    ClientSpec(name="oldshift", doc="API 1", cls=OldShiftClient)]

        @hookimpl
        def fedbench_methods():
            return [MethodSpec(name="olddyn", doc="API 1", client="olddyn", aggregator="centralized"),
                    MethodSpec(name="oldshift", doc="API 1", client="oldshift", aggregator="centralized")]
        """

    def test_removed_client_attributes_refuse_the_client_at_load_with_the_replacement(self, tmp_path):
        make_dist(tmp_path, "old_feddyn", self.OLD_FEDDYN)
        env = {"PYTHONPATH": str(tmp_path)}
        proc = run_cli("list", "method", env=env)
        assert proc.returncode == 0, proc.stderr
        warning = [line for line in proc.stderr.splitlines() if "old_feddyn" in line]
        assert len(warning) == 1, proc.stderr  # one line for the plugin
        assert "client 'olddyn' not loaded" in warning[0] and "'proximal_mu'" in warning[0]
        assert "local_term(theta, ctx)" in warning[0] and "plugin API 2" in warning[0]
        assert "client 'oldshift' not loaded" in warning[0] and "'gradient_shift'" in warning[0]
        assert "olddyn" not in proc.stdout and "fedavg" in proc.stdout
        run = run_cli("run", "--dataset", "synthetic", "--method", "olddyn", "--results", str(tmp_path / "r.sqlite"), env=env)
        assert run.returncode == 2 and "unknown method 'olddyn'" in run.stderr and "old_feddyn" in run.stderr
        assert not (tmp_path / "r.sqlite").exists() or "olddyn" not in (tmp_path / "r.sqlite").read_bytes().decode("latin-1")

    def test_a_client_setting_a_removed_name_at_run_time_fails_there(self):
        from fedbench import Client
        from fedbench.errors import PluginError

        made = type("Made", (Client,), {"__init__": lambda self: setattr(self, "gradient_shift", [])})  # no source to read
        with pytest.raises(PluginError, match="gradient_shift.*local_term"):
            made()

    def test_a_plugin_for_a_newer_api_is_refused_and_the_version_is_exported(self, tmp_path):
        import fedbench

        make_dist(tmp_path, "from_the_future", f"FEDBENCH_PLUGIN_API = {fedbench.PLUGIN_API + 1}\n")
        make_dist(tmp_path, "of_today", f"FEDBENCH_PLUGIN_API = {fedbench.PLUGIN_API}\n")
        proc = run_cli("list", "model", env={"PYTHONPATH": str(tmp_path)})
        assert "plugin 'from_the_future' not loaded" in proc.stderr and "upgrade fedbench" in proc.stderr
        assert "of_today" not in proc.stderr


def test_a_method_may_name_the_model_it_needs(tmp_path):
    make_dist(tmp_path, "needs_mlp", """
        from fedbench import MethodSpec, hookimpl

        @hookimpl
        def fedbench_methods():
            return [MethodSpec(name="needs_mlp", doc="FedAvg on an MLP", client="plain", aggregator="centralized",
                               params={"model": "mlp", "lr": 0.05})]
        """)
    db = tmp_path / "r.sqlite"
    proc = run_cli("run", "--dataset", "synthetic", "--method", "needs_mlp", "--rounds", "1", "--results", str(db),
                   "--set", "dataset.n_clients=4", "--set", "dataset.n_test=20", env={"PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    import sqlite3

    (config,) = sqlite3.connect(db).execute("SELECT config FROM runs").fetchone()
    assert '"model": "mlp"' in config and '"lr": 0.05' in config


class TestDeclaredOnce:
    """A component's parameters are declared once, in its class's PARAMS: the spec offers them, and every
    construction (a run's or a direct one from Python) fills the missing ones and checks the given ones."""

    def test_the_spec_offers_what_the_class_declares(self, registry):
        from fedbench.plugin.params import Param

        spec = registry.get("aggregator", "agnostic")
        assert dict(spec.params) == {"lr_lambda": 0.01, "variant": "authors", "lambda_pairing": "own"}
        assert spec.rules["variant"] == Param("authors", choices=("authors", "local"))
        # inherited declarations come with a subclass's own, the base's first, where its constructor takes them
        assert list(registry.get("client", "pfedme").params) == ["lam", "k_steps", "personal_lr"]
        assert list(registry.get("aggregator", "centralized").params) == ["unsampled"]
        assert list(registry.get("aggregator", "server_opt").params) == ["optimizer", "server_lr", "beta1", "beta2", "tau"]

    def test_direct_construction_fills_defaults_and_refuses_typos(self, registry):
        from fedbench.runs.build import build_simulation, resolve_run
        from fedbench.errors import ConfigError

        sim = build_simulation(registry, resolve_run(registry, dataset="synthetic", method="afl", seed=0, overrides=dict(TINY)))
        agg = sim.aggregator
        cls = type(agg)
        args = (agg.clients, agg.global_params, agg.train)
        assert cls(*args, seed=0).variant == "authors"  # the declared default, with no constructor default written
        with pytest.raises(ConfigError, match=r"AgnosticAggregator: variant must be one of 'authors', 'local', got 'autors'"):
            cls(*args, seed=0, variant="autors")  # ran the "local" variant silently before
        fedem = registry.get("client", "mixture").cls
        c = sim.aggregator.clients[0]
        with pytest.raises(ConfigError, match="MixtureClient: adapt_from must be one of 'last', 'uniform', got 'uniformm'"):
            fedem(0, c.data, c.ensemble, c.train, seed=0, adapt_from="uniformm")
        prox = registry.get("client", "proximal").cls
        assert prox(0, c.data, c.ensemble, c.train, seed=0).mu == 0.1
        with pytest.raises(ConfigError, match="ProximalClient: mu must be >= 0, got -1"):
            prox(0, c.data, c.ensemble, c.train, seed=0, mu=-1)
