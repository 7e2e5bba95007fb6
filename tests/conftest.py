from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from fedbench.plugin.registry import get_registry

# generated data sets are cached on disk (fedbench.runs.datacache): the tests, and the CLIs they start, use a
# fresh folder of their own, never the user's cache, removed when the session ends (tens of MB each)
_OWN_CACHE = None
if "FEDBENCH_DATA_CACHE" not in os.environ:
    _OWN_CACHE = os.environ["FEDBENCH_DATA_CACHE"] = tempfile.mkdtemp(prefix="fedbench-test-cache-")


def pytest_sessionfinish(session, exitstatus):  # noqa: ANN001, ANN201, ARG001
    if _OWN_CACHE is not None:
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)


#: a tiny synthetic federation that trains in well under a second
TINY = {"dataset.n_clients": 8, "dataset.n_test": 60, "dataset.dim": 10, "rounds": 4, "eval_every": 2}
#: the data-set part of TINY as CLI arguments
TINY_ARGS = [x for k, v in TINY.items() if k.startswith("dataset.") for x in ("--set", f"{k}={v}")]


@pytest.fixture(scope="session")
def registry():
    return get_registry()


def with_plugin(plugin: object, name: str):  # noqa: ANN201
    """The installed plugins (from their entry points) plus ``plugin`` registered under ``name``: real pluggy."""
    from fedbench.plugin.registry import Registry, load_plugins, new_plugin_manager

    pm = new_plugin_manager()
    failures, packages = load_plugins(pm)
    pm.register(plugin, name=name)
    return Registry(pm, failures, packages)


def benchmark_module(name: str):  # noqa: ANN201
    """The script ``benchmarks/<name>.py`` imported as a module (benchmarks/ is not a package)."""
    import importlib

    folder = str(Path(__file__).resolve().parents[1] / "benchmarks")
    sys.path.insert(0, folder)
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(folder)


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the real CLI in a fresh interpreter (plugins load from entry points there)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "fedbench", *args], capture_output=True, text=True, env=full_env, cwd=cwd
    )
