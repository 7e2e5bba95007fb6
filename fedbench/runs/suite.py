"""Suite files: TOML that expands into many runs (data sets x methods x seeds).

Format::

    description = "what this suite compares"
    methods = ["fedem", "fedavg"]        # or a table: [methods.fedem] lr = 0.03
    seeds = [1, 2, 3]
    [set]                                # --set style overrides for every run
    rounds = 50
    [datasets.synthetic]                 # one table per data set: its parameters
    n_clients = 50
    [datasets.synthetic.set]             # optional: overrides for this data set's runs
    model = "linear"
    [datasets.synthetic.methods.fedem]   # optional: overrides for one method on this data set
    lr = 0.03
    references = "reference.csv"         # optional: numbers to print beside ours

Later layers win: ``set``, the data set's ``set``, its parameters, the
method's table, the data set's method table, then ``--set`` from the command
line. A list value in any of them is a grid:
``lr = [0.01, 0.03]`` expands into one run per value (the product over all
grids). The reference file (CSV, path relative to the suite file) has the
columns ``dataset, method, metric, value, source``.

Everything is validated before any run starts.
"""

from __future__ import annotations

import itertools
import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from fedbench.runs.build import resolve_run
from fedbench.fl.config import RunConfig, flat_settings
from fedbench.errors import ConfigError, FedbenchError
from fedbench.plugin.registry import Registry

KEYS = {"description", "methods", "seeds", "set", "datasets", "references", "headline"}


@dataclass(frozen=True)
class Suite:
    name: str
    path: Path
    description: str
    runs: tuple[RunConfig, ...]
    #: reference numbers (dataset, method, metric, value, source) or None
    references: pd.DataFrame | None = None
    #: the method the suite is about (drawn in a strong colour by ``fedbench plot``), or None
    headline: str | None = None


#: the most runs one suite expands to (the paper suite is 105); a bigger grid is refused before it is expanded
MAX_RUNS = 10_000


def grid_size(overrides: dict[str, Any]) -> int:
    """How many combinations :func:`expand_grid` gives, without making them."""
    return math.prod(len(v) for v in overrides.values() if isinstance(v, list))


def expand_grid(overrides: dict[str, Any]) -> list[dict[str, Any]]:
    """Every combination of the list-valued entries (grids); other entries are shared."""
    grids = {k: v for k, v in overrides.items() if isinstance(v, list)}
    for key, values in grids.items():
        if not values:
            raise ConfigError(f"grid {key!r} is empty; give at least one value")
    fixed = {k: v for k, v in overrides.items() if k not in grids}
    return [{**fixed, **dict(zip(grids, combo))} for combo in itertools.product(*grids.values())]


def load_references(path: Path) -> pd.DataFrame:
    """A reference-numbers CSV with the columns dataset, method, metric, value, source."""
    if not path.is_file():
        raise ConfigError(f"reference file {str(path)!r} does not exist; fix the suite's references key")
    try:
        df = pd.read_csv(path, comment="#", encoding="utf-8")
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(
            f"reference file {path} is not a CSV with the columns dataset, method, metric, value, source ({first}); fix or remove it"
        ) from e
    missing = {"dataset", "method", "metric", "value", "source"} - set(df.columns)
    if missing:
        raise ConfigError(f"reference file {path}: missing column(s) {', '.join(sorted(missing))}")
    if df.empty:
        raise ConfigError(f"reference file {path} has no rows; add reference numbers or remove the references key")
    values = pd.to_numeric(df["value"], errors="coerce")
    bad = df.index[values.isna()]
    if len(bad):
        row = int(bad[0])
        raise ConfigError(
            f"reference file {path}: value {df['value'].iloc[row]!r} in data row {row + 1} is not a number; fix it"
        )
    return df.assign(value=values.astype(float))


def find_suite(registry: Registry, name_or_path: str) -> Path:
    """A suite file from a path, or a suite name registered by a plugin (``fedbench list suite``)."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise ConfigError(f"suite file {name_or_path!r} does not exist; give a TOML file or a suite name")
        return path
    return Path(registry.get("suite", name_or_path).path)


def missing_data(registry: Registry, runs: list[RunConfig] | tuple[RunConfig, ...], data_root: Path | None) -> dict[str, str]:
    """Data set name -> one line saying which files are missing and how to get them, for the data sets
    of ``runs`` whose plugin can check (:attr:`fedbench.plugin.specs.DatasetSpec.check`) and finds them absent."""
    out = {}
    for name in dict.fromkeys(c.dataset for c in runs):
        check = registry.get("dataset", name).check
        problem = check(data_root=data_root) if check is not None else None
        if problem:
            out[name] = problem
    return out


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
    client_state: str = "auto",
    only_datasets: list[str] | None = None,
    only_methods: list[str] | None = None,
) -> Suite:
    """Parse and validate a suite, resolving every run up front.

    ``extra`` overrides (e.g. from ``--set``) apply on top of the suite's own;
    ``seeds`` replaces the suite's seeds; ``only_datasets``/``only_methods`` keep part of the suite
    (the overrides then need only fit that part, e.g. ``dataset.n_clients`` for a pooled data set).
    """
    path = find_suite(registry, name_or_path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        twice = re.search(r"Cannot declare \('(methods|datasets)', '([^']+)'\) twice", str(e))
        if twice:  # a list of names beside a [methods.NAME] table: TOML's own words do not say what to write
            kind, name = twice.groups()
            raise ConfigError(
                f"suite {path}: {kind} is both a list and a table ([{kind}.{name}]); write the names as tables only, "
                f"one [{kind}.NAME] per entry with its settings inside (an empty table for one without)"
            ) from e
        raise ConfigError(f"suite {path}: invalid TOML: {e}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"suite {path}: not UTF-8 text (byte {e.start}: {e.object[e.start:e.start + 1]!r}); "
                          "TOML files are UTF-8: save it as UTF-8") from e
    unknown = sorted(set(doc) - KEYS)
    if unknown:
        raise ConfigError(f"suite {path}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(KEYS))}")
    for key in ("methods", "seeds", "datasets"):
        if key not in doc:
            raise ConfigError(f"suite {path}: missing key {key!r}")
    methods = doc["methods"]
    if isinstance(methods, list):
        bad = [m for m in methods if not isinstance(m, str)]
        if bad:
            raise ConfigError(f"suite {path}: methods must be method names (strings), got {bad[0]!r}; "
                              'e.g. methods = ["fedavg", "fedem"]')
        methods = {m: {} for m in methods}
    methods = _table(f"suite {path}: methods", methods)
    headline = doc.get("headline")
    if headline is not None and headline not in methods:  # the suite's own methods, before --methods keeps part
        raise ConfigError(f"suite {path}: headline {headline!r} is not one of its methods ({', '.join(methods)})")
    seed_list = seeds if seeds is not None else doc["seeds"]
    if not isinstance(seed_list, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in seed_list):
        raise ConfigError(f"suite {path}: seeds must be a list of integers, got {seed_list!r}")
    common = _table(f"suite {path}: set", doc.get("set", {}))
    datasets = _table(f"suite {path}: datasets", doc["datasets"])
    for key, value in (("methods", methods), ("seeds", seed_list), ("datasets", datasets)):
        if not value:
            raise ConfigError(f"suite {path}: {key} is empty, so the suite has no runs; list at least one")
    for what, wanted, have in (("dataset", only_datasets, datasets), ("method", only_methods, methods)):
        unknown = [n for n in wanted or [] if n not in have]
        if unknown:
            raise ConfigError(f"suite {path.stem} has no {what} {', '.join(unknown)}; its {what}s: {', '.join(have)}")
    if only_datasets:
        datasets = {k: v for k, v in datasets.items() if k in only_datasets}
    suite_methods = set(methods)  # a per-data-set table is checked against these, then used for the kept ones
    if only_methods:
        methods = {k: v for k, v in methods.items() if k in only_methods}
    refs = load_references(path.parent / str(doc["references"])) if "references" in doc else None
    cells = []  # (data set, method, its settings before the grids are expanded)
    for ds_name, ds_params in datasets.items():
        ds_params = dict(_table(f"suite {path}: datasets.{ds_name}", ds_params))
        ds_set = _table(f"suite {path}: datasets.{ds_name}.set", ds_params.pop("set", {}))
        ds_methods = _table(f"suite {path}: datasets.{ds_name}.methods", ds_params.pop("methods", {}))
        stray = sorted(set(ds_methods) - suite_methods)
        if stray:
            raise ConfigError(
                f"suite {path}: datasets.{ds_name}.methods names {', '.join(stray)}, not in the suite's methods; "
                "add it to methods or remove the table"
            )
        ds_over = {**ds_set, **{f"dataset.{k}": v for k, v in ds_params.items()}}
        for method, m_over in methods.items():
            m_over = _table(f"suite {path}: methods.{method}", m_over)
            dm_over = _table(f"suite {path}: datasets.{ds_name}.methods.{method}", ds_methods.get(method, {}))
            # (settings in one spelling: a TOML table or unquoted dotted key, client.mu = 0.5, is "client.mu")
            cells.append((ds_name, method, flat_settings({**common, **ds_over, **m_over, **dm_over, **(extra or {})})))
    total = len(seed_list) * sum(grid_size(over) for _, _, over in cells)  # counted before anything is expanded
    if total > MAX_RUNS:
        raise ConfigError(f"suite {path}: {total:,} runs (data sets x methods x seeds x grid values), more than "
                          f"{MAX_RUNS:,}; narrow its grids or split it into suites")
    runs = []
    for ds_name, method, over in cells:
        for seed in seed_list:
            try:
                for overrides in expand_grid(over):
                    runs.append(
                        resolve_run(
                            registry, dataset=ds_name, method=method, seed=seed, overrides=overrides,
                            device=device, engine=engine, client_state=client_state,
                        )
                    )
            except FedbenchError as e:
                raise ConfigError(f"suite {path}: {e}") from e
    if refs is not None and (only_datasets or only_methods):  # the reference numbers of the kept cells only
        kept = {(c.dataset, c.method) for c in runs}
        refs = refs[[(d, m) in kept for d, m in zip(refs.dataset, refs.method)]]
    return Suite(path.stem, path, str(doc.get("description", "")), tuple(runs), refs, headline)
