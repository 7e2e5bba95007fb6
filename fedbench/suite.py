"""Suite files: TOML that expands into many runs (data sets x methods x seeds).

Format::

    description = "what this suite compares"
    methods = ["fedem", "fedavg"]        # or a table: [methods.fedem] lr = 0.03
    seeds = [1, 2, 3]
    [set]                                # --set style overrides for every run
    rounds = 50
    [datasets.synthetic]                 # one table per data set: its parameters
    n_clients = 50

Everything is validated before any run starts.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedbench.build import resolve_run
from fedbench.config import RunConfig
from fedbench.errors import ConfigError, FedbenchError
from fedbench.registry import Registry

KEYS = {"description", "methods", "seeds", "set", "datasets"}


@dataclass(frozen=True)
class Suite:
    name: str
    path: Path
    description: str
    runs: tuple[RunConfig, ...]


def find_suite(registry: Registry, name_or_path: str) -> Path:
    """A suite file from a path, or a suite name registered by a plugin."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise ConfigError(f"suite file {name_or_path!r} does not exist; give a TOML file or a suite name")
        return path
    return Path(registry.get("suite", name_or_path).path)


def _table(where: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a table, got {type(value).__name__} {value!r}")
    return value


def load_suite(
    registry: Registry,
    name_or_path: str,
    *,
    extra: dict[str, Any] | None = None,
    seeds: list[int] | None = None,
    device: str = "cpu",
    engine: str = "auto",
) -> Suite:
    """Parse and validate a suite, resolving every run up front.

    ``extra`` overrides (e.g. from ``--set``) apply on top of the suite's own;
    ``seeds`` replaces the suite's seeds.
    """
    path = find_suite(registry, name_or_path)
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"suite {path}: invalid TOML: {e}") from e
    unknown = sorted(set(doc) - KEYS)
    if unknown:
        raise ConfigError(f"suite {path}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(KEYS))}")
    for key in ("methods", "seeds", "datasets"):
        if key not in doc:
            raise ConfigError(f"suite {path}: missing key {key!r}")
    methods = doc["methods"]
    if isinstance(methods, list):
        methods = {m: {} for m in methods}
    methods = _table(f"suite {path}: methods", methods)
    seed_list = seeds if seeds is not None else doc["seeds"]
    if not isinstance(seed_list, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in seed_list):
        raise ConfigError(f"suite {path}: seeds must be a list of integers, got {seed_list!r}")
    common = _table(f"suite {path}: set", doc.get("set", {}))
    datasets = _table(f"suite {path}: datasets", doc["datasets"])
    runs = []
    for ds_name, ds_params in datasets.items():
        ds_over = {f"dataset.{k}": v for k, v in _table(f"suite {path}: datasets.{ds_name}", ds_params).items()}
        for method, m_over in methods.items():
            m_over = _table(f"suite {path}: methods.{method}", m_over)
            for seed in seed_list:
                overrides = {**common, **ds_over, **m_over, **(extra or {})}
                try:
                    runs.append(
                        resolve_run(
                            registry, dataset=ds_name, method=method, seed=seed, overrides=overrides,
                            device=device, engine=engine,
                        )
                    )
                except FedbenchError as e:
                    raise ConfigError(f"suite {path}: {e}") from e
    return Suite(path.stem, path, str(doc.get("description", "")), tuple(runs))
