"""The ``fedbench`` command line: list, run, report.

A :class:`~fedbench.errors.FedbenchError` is printed as one line
(``fedbench: error: ...``) with exit code 2; a run that fails or diverges
gives exit code 1.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import sys
import threading
from pathlib import Path

import pandas as pd

from tqdm.auto import tqdm

from fedbench import __version__
from fedbench.runs.build import resolve_run
from fedbench.fl.config import CLIENT_STATES, parse_assignments
from fedbench.fl.data import default_data_root
from fedbench.errors import FedbenchError
from fedbench.plugin.registry import KIND_HOOKS, Registry, get_registry
from fedbench.reporting.report import (
    METRICS, comparison_table, human_bytes, reference_table, runs_table, select_runs, to_latex, to_markdown,
)
from fedbench.runs.runner import RunOutcome
from fedbench.reporting.store import DEFAULT_PATH, ResultStore
from fedbench.runs.suite import load_suite


def _warn_failures(registry: Registry) -> None:
    for name, why in sorted(registry.failures.items()):
        print(f"fedbench: warning: plugin {name!r} not loaded: {why}", file=sys.stderr)


def _singular(kind: str) -> str:
    """``methods`` -> ``method`` (a kind named in the plural, as ``fedbench list`` prints it)."""
    return kind[:-1] if kind.endswith("s") and kind[:-1] in KIND_HOOKS else kind


def cmd_list(args: argparse.Namespace) -> int:
    registry = get_registry()
    _warn_failures(registry)
    kinds = [args.kind] if args.kind else list(KIND_HOOKS)
    for kind in kinds:
        entries = registry.entries(kind)
        print(f"{kind}s:")
        if not entries:
            print("  (none)")
        for e in entries:
            print(f"  {e.name:<22} {e.package:<18} {e.spec.doc}")
            params = dict(e.spec.params)
            rules = dict(e.spec.rules)
            if kind == "method":
                s = e.spec
                print(f"  {'':<22} client={s.client} aggregator={s.aggregator} n_learners={s.n_learners}")
                for group, name, own in (("client", s.client, s.client_params), ("aggregator", s.aggregator, s.aggregator_params)):
                    spec = registry.get(group, name) if name in registry.names(group) else None
                    defaults = dict(spec.params) if spec is not None else {}
                    params.update({f"{group}.{k}": v for k, v in {**defaults, **own}.items()})
                    rules.update({f"{group}.{k}": r for k, r in (spec.rules if spec is not None else {}).items()})
                params.update({f"method.{k}": v for k, v in s.shared.items()})
                rules.update({f"method.{k}": r for k, r in s.shared_rules.items()})
            if params:  # each default with its valid values, from the one declaration the checks use
                print(f"  {'':<22} " + " ".join(
                    f"{k}={v}" + (f" ({rules[k].rule()})" if k in rules and rules[k].rule() != "any value" else "")
                    for k, v in sorted(params.items())
                ))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from fedbench import api

    registry = get_registry()
    _warn_failures(registry)
    settings = parse_assignments(args.set or [])
    for key, value in (("rounds", args.rounds), ("eval_every", args.eval_every), ("model", args.model)):
        if value is not None:
            settings[key] = value
    if args.tensorboard and Path(args.tensorboard).exists() and not Path(args.tensorboard).is_dir():
        raise FedbenchError(f"--tensorboard {args.tensorboard} is a file; it takes a folder for the event files")
    if args.mlflow:  # checked before any run: where it goes, and that MLflow is installed
        from fedbench.reporting.export import mlflow_uri

        mlflow_uri(args.mlflow)
        if importlib.util.find_spec("mlflow") is None:
            raise FedbenchError("--mlflow needs MLflow: pip install 'fedbench-suite[mlflow]'")
    progress = False if args.no_progress else None  # None: bars on a terminal, plain lines in a log
    if (args.methods or args.datasets) and not args.suite:
        raise FedbenchError("--methods/--datasets pick runs of a suite; use them with --suite (or --method/--dataset alone)")
    if args.seeds is not None and not args.suite:
        raise FedbenchError("--seeds replaces a suite's seeds; use it with --suite (or --seed N for one run)")
    if args.seeds is not None and args.seed is not None:
        raise FedbenchError("--seed and --seeds both given; keep one (--seeds 1-3 runs seeds 1, 2 and 3)")
    if not args.suite:
        if not args.dataset or not args.method:
            raise FedbenchError("fedbench run needs --dataset and --method (or --suite NAME)")
        if args.executor != "local" or args.jobs != 1:
            raise FedbenchError("--jobs and --executor schedule the runs of a suite; drop them for one run")
        devices = _names(args.devices)
        result = api.run(
            args.dataset, args.method, args.seed if args.seed is not None else 0, results=args.results,
            settings=settings, data_root=args.data_root, device=devices[0] if devices else args.device,
            engine=args.engine, force=args.force, download=args.download, progress=progress,
            client_state=args.client_state,
        )
        outcome = RunOutcome(result.config, result.status, result.metrics, result.error, result.seconds, result.engine)
        print(outcome.summary())
        if args.tensorboard:
            _tensorboard(args.results, [outcome], args.tensorboard)
        if args.mlflow:
            _mlflow(args.results, [outcome], args.mlflow, args.mlflow_experiment or "fedbench")
        return 0 if outcome.ok else 1
    if args.dataset or args.method:
        raise FedbenchError("--suite runs the suite's own data sets and methods; drop --dataset/--method")
    seen = [0]

    def report(outcome: RunOutcome) -> None:
        seen[0] += 1
        tqdm.write(f"[{seen[0]}] {outcome.summary()}", file=sys.stderr)  # tqdm.write keeps progress bars intact
        if args.tensorboard:
            _tensorboard(args.results, [outcome], args.tensorboard)
        if args.mlflow:
            _mlflow(args.results, [outcome], args.mlflow, args.mlflow_experiment or Path(str(args.suite)).stem)

    result = api.run_suite(
        args.suite, results=args.results,
        seeds=[args.seed] if args.seed is not None else _seeds(args.seeds) if args.seeds is not None else None,
        datasets=_names(args.datasets), methods=_names(args.methods), jobs=args.jobs, executor=args.executor,
        address=args.address, devices=_names(args.devices), data_root=args.data_root, download=args.download,
        force=args.force, device=args.device, engine=args.engine, progress=progress, on_outcome=report,
        client_state=args.client_state,
        settings=settings, resources={k: v for k, v in (("cpus", args.cpus_per_run), ("gpus", args.gpus_per_run))
                                      if v is not None} or None, data_from=args.data_from,
    )
    _print_comparison(result.table, result.suite.references, "test_acc", "md")
    if _has(result.table, "unseen_test_acc"):
        _print_comparison(result.table, None, "unseen_test_acc", "md")
    return 0 if result.ok else 1


def _write_stored(results: str, outcomes: list[RunOutcome], statuses: tuple[str, ...], write) -> None:  # noqa: ANN001
    """``write(store, run_ids)`` for the stored runs among ``outcomes`` that ended in one of ``statuses``."""
    runs = [o.config.run_id for o in outcomes if o.status in statuses]
    if runs:
        store = ResultStore(results, readonly=True)
        try:
            write(store, runs)
        finally:
            store.close()


def _tensorboard(results: str, outcomes: list[RunOutcome], log_dir: str) -> None:
    from fedbench.reporting.export import write_tensorboard

    _write_stored(results, outcomes, ("done", "diverged", "skipped"),
                  lambda store, runs: write_tensorboard(store, runs, Path(log_dir)))


def _mlflow(results: str, outcomes: list[RunOutcome], target: str, experiment: str) -> None:
    from fedbench.reporting.export import write_mlflow

    _write_stored(results, outcomes, ("done", "diverged", "failed", "skipped"),
                  lambda store, runs: write_mlflow(store, runs, target, experiment))


def _names(text: str | None) -> list[str] | None:
    """``"a, b"`` -> ``["a", "b"]``; None when not given."""
    return [n.strip() for n in text.split(",") if n.strip()] if text else None


def _seeds(text: str) -> list[int]:
    """``"1,2,5"`` -> ``[1, 2, 5]``; ``"1-4"`` -> ``[1, 2, 3, 4]`` (parts may mix: ``"1-3,7"``)."""
    seeds: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        low, dash, high = part.partition("-") if not part.startswith("-") else (part, "", "")
        try:
            seeds += list(range(int(low), int(high) + 1)) if dash else [int(part)]
        except ValueError:
            raise FedbenchError(f"--seeds {text}: {part!r} is not a seed or a range; write e.g. --seeds 1,2,3 or --seeds 1-8") from None
        if dash and int(high) < int(low):
            raise FedbenchError(f"--seeds {text}: the range {part} is empty; write the low seed first, e.g. 1-8")
    if not seeds or len(set(seeds)) != len(seeds):
        raise FedbenchError(f"--seeds {text}: give each seed once, e.g. --seeds 1,2,3 or --seeds 1-8")
    return seeds


def _print_comparison(table, references, metric: str, fmt: str, transpose: bool = False) -> None:  # noqa: ANN001
    render = {"md": lambda df, **kw: to_markdown(df, **kw), "latex": to_latex}[fmt]
    comp = comparison_table(table, metric)
    if transpose and not comp.empty:
        comp = comp.T
    print(f"\n{metric}, last evaluated round, mean ± std over seeds\n")
    print(render(comp, index=True) if not comp.empty else "(no runs)")
    if references is not None:
        ref = reference_table(table, references, metric)
        if not ref.empty:
            print(f"\n{metric} beside the reference numbers\n")
            print(render(ref))


def cmd_report(args: argparse.Namespace) -> int:
    store = ResultStore(args.results, readonly=True)
    suite = load_suite(get_registry(), args.suite) if args.suite else None
    table = runs_table(store, configs=suite.runs if suite else None, registry=get_registry())
    if table.empty:
        what = f"of suite {suite.name} " if suite else ""
        print(f"no runs {what}stored in {args.results} yet; `fedbench run ...` computes them", file=sys.stderr)
        return 0
    if args.metric not in table.columns:
        known = [c for c in table.columns if c in METRICS]
        raise FedbenchError(f"unknown metric {args.metric!r}; stored metrics are: {', '.join(known)}")
    if args.format == "html":
        from fedbench.reporting.htmlreport import html_report

        out = Path(args.out or f"{suite.name if suite else Path(args.results).stem}-report.html")
        page = html_report(store, suite=suite, registry=get_registry(), metric=args.metric, headline=args.headline,
                           source=str(args.results))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(page, encoding="utf-8")
        print(out)
        return 0
    if args.out:
        raise FedbenchError("--out is for --format html; the other formats print to standard output (redirect it)")
    if args.format == "csv":  # full run ids, numbers rounded (no float noise such as 67.62599999999999)
        print(table.round(4).to_csv(index=False, float_format="%.10g"), end="")
        return 0
    shown = table.assign(run_id=table.run_id.str[:8])  # a prefix `fedbench show` accepts
    if "bytes_sent" in shown:
        shown = shown.assign(bytes_sent=shown.bytes_sent.map(human_bytes))
    if not shown.error.notna().any():
        shown = shown.drop(columns=["error"])
    shown = shown.rename(columns={"seconds": "wall_s"})
    print(to_markdown(shown) if args.format == "md" else to_latex(shown))
    if suite or args.compare:
        _print_comparison(table, suite.references if suite else None, args.metric, args.format, args.transpose)
        if args.metric == "test_acc" and _has(table, "unseen_test_acc"):
            _print_comparison(table, None, "unseen_test_acc", args.format, args.transpose)
    return 0


def _has(table, metric: str) -> bool:  # noqa: ANN001
    return metric in table.columns and bool(table[metric].notna().any())


def cmd_plot(args: argparse.Namespace) -> int:
    from fedbench.reporting.plot import curves, default_out_dir, plot_curves

    path = Path(args.results)
    registry = get_registry()
    suite = load_suite(registry, args.suite) if args.suite else None
    table = curves(ResultStore(path, readonly=True), metric=args.metric, configs=suite.runs if suite else None)
    if table.empty:
        what = f" of suite {suite.name}" if suite else ""
        raise FedbenchError(f"no finished runs{what} in {str(path)!r} to plot; `fedbench run` computes them")
    headline = args.headline or (suite.headline if suite else None)
    out = Path(args.out) if args.out else default_out_dir(path)
    for written in plot_curves(table, out, args.metric, methods=registry.names("method"), headline=headline):
        print(written)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    import json

    from fedbench.api import history_of

    store = ResultStore(args.results, readonly=True)
    runs = store.runs()
    found = runs[runs.run_id.str.startswith(args.run_id)]
    if found.empty:
        raise FedbenchError(f"no run {args.run_id!r} in {args.results}; `fedbench report` lists the stored runs and their ids")
    if len(found) > 1:
        raise FedbenchError(f"{args.run_id!r} matches {len(found)} runs ({', '.join(found.run_id)}); give more of the id")
    row = found.iloc[0]
    env = json.loads(row.env) if isinstance(row.env, str) and row.env else {}
    print(f"run {row.run_id}: {row.dataset} / {row.method} / seed {row.seed}: {row.status}")
    facts = [
        ("engine", row.engine or ""),
        ("wall time", f"{row.seconds:.1f} s" if pd.notna(row.seconds) else ""),
        ("started", _when(row.started)),
        ("finished", _when(row.finished)),
        ("config id", row.config_id or ""),
        ("code", row.code or ""),
        *[(k, str(v)) for k, v in env.items()],
        ("error", row.error or ""),
    ]
    for key, value in facts:
        if value:
            print(f"{key + ':':<12} {value}")
    print("config:")
    print(json.dumps(json.loads(row.config), indent=2, default=str))
    history = history_of(store, row.run_id)
    print("\nper-round metrics:")
    print(to_markdown(history.reset_index(), floatfmt="{:.4f}") if len(history) else "(none stored)")
    return 0


def _when(stamp: float | None) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp)) if stamp is not None and pd.notna(stamp) else ""


def cmd_export(args: argparse.Namespace) -> int:
    from fedbench.reporting.export import export, per_round, write_mlflow, write_tensorboard

    if args.format not in ("tensorboard", "mlflow") and Path(args.out).is_dir():
        raise FedbenchError(f"--out {args.out} is a folder; give a file name, e.g. --out {Path(args.out) / ('runs.' + args.format)}")
    store = ResultStore(args.results, readonly=True)
    suite = load_suite(get_registry(), args.suite) if args.suite else None
    run_ids = list(select_runs(store.runs(), suite.runs).run_id) if suite else None
    if args.format == "tensorboard":
        folders = write_tensorboard(store, run_ids if run_ids is not None else list(store.runs().run_id), Path(args.out))
        print(f"{len(folders)} runs written as TensorBoard events under {args.out} (tensorboard --logdir {args.out})")
        return 0
    if args.format == "mlflow":
        experiment = args.mlflow_experiment or (suite.name if suite else "fedbench")
        logged = write_mlflow(store, run_ids if run_ids is not None else list(store.runs().run_id), args.out, experiment)
        print(f"{len(logged)} runs logged to MLflow experiment {experiment!r} at {args.out}")
        return 0
    table = per_round(store, run_ids)
    written = export(table, Path(args.out), args.format)
    print(f"{len(table)} rows ({table.run_id.nunique()} runs) written to {written}")
    return 0


def cmd_claims(args: argparse.Namespace) -> int:
    """Show the claims on runs being computed, or break them (``--release RUN_ID``, ``--stale``)."""
    store = ResultStore(args.results, readonly=not (args.release or args.stale))
    table = store.claims()
    if args.release:
        missing = [r for r in args.release if r not in set(table.run_id)]
        if missing:
            raise FedbenchError(f"no claim on run(s) {', '.join(missing)}; `fedbench claims` lists the claims held")
        live = table[table.run_id.isin(args.release) & table.alive]
        if len(live) and not args.yes:
            who = ", ".join(f"{r.run_id} (pid {r.pid} on {r.host}, heartbeat {r.heartbeat_age_s:.0f} s ago)" for r in live.itertuples())
            raise FedbenchError(f"the owner of {who} looks alive; breaking its claim lets another sweep compute the run "
                                "twice: add --yes if you know it is stuck")
        for run_id in args.release:
            store.release_claim(run_id, "claim released by hand (fedbench claims --release)")
            print(f"released {run_id}")
        return 0
    if args.stale:
        stale = table[table.heartbeat_age_s > args.stale]
        for run_id in stale.run_id:
            store.release_claim(run_id, f"claim released by hand: no heartbeat for over {args.stale:g} s")
            print(f"released {run_id}")
        print(f"{len(stale)} claim(s) with no heartbeat for over {args.stale:g} s released")
        return 0
    if table.empty:
        print("no claims: no run is being computed on this results file")
        return 0
    for r in table.itertuples():
        print(f"{r.run_id}  {r.dataset} / {r.method} / seed {r.seed}  pid {r.pid} on {r.host}  started {_when(r.started)}  "
              f"heartbeat {r.heartbeat_age_s:.0f} s ago  {'alive' if r.alive else 'dead (taken over by the next sweep)'}")
    return 0


def cmd_data_describe(args: argparse.Namespace) -> int:
    from fedbench.runs.build import load_data
    from fedbench.runs.partition import describe, plot_label_heatmap

    registry = get_registry()
    _warn_failures(registry)
    overrides = {f"dataset.{k.removeprefix('dataset.')}": v for k, v in parse_assignments(args.set or []).items()}
    method = registry.names("method")[0]  # any method: only the data set's part of the config is used
    cfg = resolve_run(registry, dataset=args.dataset, method=method, seed=0, overrides=overrides)
    data = load_data(registry, cfg, args.data_root)
    table = describe(data)
    print(f"{args.dataset}: {data.n_clients} clients, {int(table.n_train.sum())} train and "
          f"{int(table.n_test.sum())} test samples, task {data.task}, {data.num_classes} classes")
    print(table.to_csv(index=False) if args.format == "csv" else to_markdown(table))
    if args.plot:
        plot_label_heatmap(table, args.plot, args.dataset)
        print(f"label heat map: {args.plot}", file=sys.stderr)
    return 0


def cmd_data_check(args: argparse.Namespace) -> int:
    registry = get_registry()
    names = args.datasets or registry.names("dataset")
    bad = 0
    for name in names:
        spec = registry.get("dataset", name)
        problem = spec.check(data_root=args.data_root) if spec.check is not None else None
        status = problem.removeprefix(f"{name}: ") if problem else ("ok" if spec.check is not None else "no files needed")
        print(f"{name:<20} {status}")
        bad += bool(problem)
    return 1 if bad else 0


def cmd_data_download(args: argparse.Namespace) -> int:
    from fedbench.api import fetch

    fetch(args.dataset, args.data_root)
    print(f"{args.dataset}: downloaded into {args.data_root or default_data_root()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fedbench", description="Federated-learning benchmark suite.")
    p.add_argument("--version", action="version", version=f"fedbench {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    ls = sub.add_parser("list", help="list the registered plugins' components")
    ls.add_argument("kind", nargs="?", type=_singular, choices=list(KIND_HOOKS), help="only this kind (or its plural)")
    ls.set_defaults(func=cmd_list)

    run = sub.add_parser("run", help="run one method on one data set, or a whole suite")
    run.add_argument("--dataset", help="data set name (see `fedbench list dataset`)")
    run.add_argument("--method", help="method name (see `fedbench list method`)")
    run.add_argument("--suite", help="suite name (see `fedbench list suite`) or path to a suite TOML file")
    run.add_argument("--methods", help="with --suite: only these of its methods (comma-separated)")
    run.add_argument("--datasets", help="with --suite: only these of its data sets (comma-separated)")
    run.add_argument("--model", help="model name; default: the data set's own")
    run.add_argument("--rounds", type=int, help="number of training rounds")
    run.add_argument("--eval-every", type=int, help="evaluate every N rounds (and at the last round)")
    run.add_argument("--seed", type=int, help="training seed (default 0; with --suite, replaces the suite's seeds)")
    run.add_argument("--seeds", help="with --suite: these seeds instead of the suite's, comma-separated or a range (1,2,3 or 1-8)")
    run.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    run.add_argument(
        "--engine", choices=["auto", "vectorized", "sequential"], default="auto",
        help="auto (default): vectorised when the model and method allow it, else one client at a time",
    )
    run.add_argument(
        "--client-state", choices=CLIENT_STATES, default="auto",
        help="where clients keep momentum and personal models between rounds: auto (default: disk when one client "
             "at a time trains and their state could pass this run's share of the memory: an eighth of the machine's "
             "over --jobs), memory, or disk (files under $FEDBENCH_STATE_DIR "
             "or the temp folder; the same numbers, one client's state in memory at a time)",
    )
    run.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a setting, e.g. lr=0.05 or dataset.n_clients=50")
    run.add_argument("--results", default=str(DEFAULT_PATH), help=f"SQLite results file (default {DEFAULT_PATH})")
    run.add_argument("--data-root", type=Path, help="where data sets live on disk (default $FEDBENCH_DATA_ROOT or ~/.cache/fedbench)")
    run.add_argument(
        "--download", action="store_true",
        help="fetch missing data sets with torchvision's downloader first (needs internet; not every data set can)",
    )
    run.add_argument("--force", action="store_true", help="recompute runs already finished in the results file")
    run.add_argument("--jobs", type=int, default=1, help="worker processes (each gets cores/jobs torch threads)")
    run.add_argument("--devices", help="comma-separated devices assigned to runs round-robin, e.g. cpu or cuda:0,cuda:1")
    run.add_argument(
        "--executor", default="local",
        help="local worker processes (default), ray (a Ray cluster), or a plugin's (see `fedbench list executor`)",
    )
    run.add_argument("--address", help="Ray cluster address (with --executor ray; default: start a local Ray)")
    run.add_argument("--cpus-per-run", type=float, help="with --executor ray: CPUs each run asks Ray for (default 1)")
    run.add_argument("--gpus-per-run", type=float,
                     help="with --executor ray: GPUs each run asks Ray for (default 1 for a cuda run; 0.25: four runs a GPU)")
    run.add_argument("--data-from", choices=("driver", "nodes"),
                     help="with --executor ray: driver (default) loads each data set once and shares it through Ray's "
                          "object store; nodes: each run reads --data-root on its own node")
    run.add_argument(
        "--no-progress", action="store_true",
        help="no progress output (default: bars on a terminal, a plain line per evaluation when stderr is a file)",
    )
    run.add_argument("--tensorboard", metavar="DIR", help="also write each finished run's curves as TensorBoard events under DIR")
    run.add_argument("--mlflow", metavar="URI", help="also log each finished run (config as params, per-round metrics) to "
                     "MLflow: a folder (MLflow's file store) or a tracking URI such as http://HOST:5000")
    run.add_argument("--mlflow-experiment", metavar="NAME", help="MLflow experiment (default: the suite's name, or fedbench)")
    run.set_defaults(func=cmd_run)

    rep = sub.add_parser("report", help="print one row per stored run")
    rep.add_argument("--results", default=str(DEFAULT_PATH), help=f"SQLite results file (default {DEFAULT_PATH})")
    rep.add_argument("--format", choices=["md", "csv", "latex", "html"], default="md",
                     help="md, csv, latex (printed), or html: one self-contained page with tables and figures")
    rep.add_argument("--out", help="the HTML file (default: SUITE-report.html, or RESULTS-report.html, here)")
    rep.add_argument("--headline", help="html: the method whose gap to the best other is shown (default: the suite's)")
    rep.add_argument("--suite", help="only the runs of this suite (name or TOML path), with its comparison tables")
    rep.add_argument("--metric", default="test_acc", help="metric of the comparison tables (default test_acc)")
    rep.add_argument("--compare", action="store_true", help="also print the methods x data sets comparison")
    rep.add_argument("--transpose", action="store_true", help="comparison with methods as rows, data sets as columns")
    rep.set_defaults(func=cmd_report)

    plot = sub.add_parser("plot", help="learning curves and accuracy vs communicated bytes as PNG")
    plot.add_argument("--results", default=str(DEFAULT_PATH), help=f"SQLite results file (default {DEFAULT_PATH})")
    plot.add_argument("--suite", help="only the runs of this suite (name or TOML path)")
    plot.add_argument("--metric", default="test_acc")
    plot.add_argument(
        "--out", help="folder for the PNG files (default: a new plots-<results>-<time> folder in the current one, or "
        "under ~/.cache/fedbench/plots when that is fedbench's source tree)",
    )
    plot.add_argument("--headline", help="method drawn in strong red on top (default: the suite's headline)")
    plot.set_defaults(func=cmd_plot)

    show = sub.add_parser("show", help="one stored run: config, engine, versions, wall time, error, per-round metrics")
    show.add_argument("run_id", help="a run id or a unique prefix of one (see `fedbench report`)")
    show.add_argument("--results", default=str(DEFAULT_PATH), help=f"SQLite results file (default {DEFAULT_PATH})")
    show.set_defaults(func=cmd_show)

    exp = sub.add_parser("export", help="per-round metrics of stored runs as CSV, Parquet, TensorBoard events or MLflow runs")
    exp.add_argument("--results", default=str(DEFAULT_PATH), help=f"SQLite results file (default {DEFAULT_PATH})")
    exp.add_argument("--format", choices=["csv", "parquet", "tensorboard", "mlflow"], default="csv")
    exp.add_argument("--out", required=True, help="output file (csv, parquet), folder (tensorboard) or MLflow folder/tracking URI")
    exp.add_argument("--mlflow-experiment", metavar="NAME", help="MLflow experiment (default: the suite's name, or fedbench)")
    exp.add_argument("--suite", help="only the runs of this suite (name or TOML path)")
    exp.set_defaults(func=cmd_export)

    cl = sub.add_parser("claims", help="the runs being computed on a results file (who, heartbeat), or break a stuck claim")
    cl.add_argument("--results", default=str(DEFAULT_PATH), help=f"SQLite results file (default {DEFAULT_PATH})")
    cl.add_argument("--release", nargs="+", metavar="RUN_ID", help="break these runs' claims (the runs are stored failed)")
    cl.add_argument("--stale", type=float, metavar="SECONDS", help="break every claim with no heartbeat for this long")
    cl.add_argument("--yes", action="store_true", help="with --release: also break a claim whose owner looks alive")
    cl.set_defaults(func=cmd_claims)

    data = sub.add_parser("data", help="inspect data sets")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    desc = data_sub.add_parser("describe", help="per-client sizes and label histograms of a data set")
    desc.add_argument("dataset", help="data set name (see `fedbench list dataset`)")
    desc.add_argument("--set", action="append", metavar="KEY=VALUE", help="a data-set parameter, e.g. dataset.alpha=0.1 (as in run; alpha=0.1 too) or partitioner=shards")
    desc.add_argument("--data-root", type=Path, help="where data sets live on disk")
    desc.add_argument("--format", choices=["md", "csv"], default="md")
    desc.add_argument("--plot", help="also save a clients x labels heat map PNG here")
    desc.set_defaults(func=cmd_data_describe)
    chk = data_sub.add_parser("check", help="which data sets' files are present under the data root, and where to put the rest")
    chk.add_argument("datasets", nargs="*", help="data set names (default: all)")
    chk.add_argument("--data-root", type=Path, help="where data sets live on disk")
    chk.set_defaults(func=cmd_data_check)
    dl = data_sub.add_parser("download", help="fetch a data set with torchvision's downloader (needs internet)")
    dl.add_argument("dataset", help="data set name")
    dl.add_argument("--data-root", type=Path, help="where data sets live on disk")
    dl.set_defaults(func=cmd_data_download)
    return p


def _terminate(signum: int, frame) -> None:  # noqa: ANN001
    raise KeyboardInterrupt  # SIGTERM, SIGHUP (timeout, a scheduler's stop, a closed terminal): the same clean stop as Ctrl-C


def _exit_now(signum: int, frame) -> None:  # noqa: ANN001
    os._exit(130)  # another Ctrl-C while the first one's stop is cleaning up: stop at once, with Ctrl-C's status


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    main_thread = threading.current_thread() is threading.main_thread()
    if main_thread:
        signal.signal(signal.SIGTERM, _terminate)
        if hasattr(signal, "SIGHUP") and signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:  # (nohup: left ignored)
            signal.signal(signal.SIGHUP, _terminate)
    try:
        return args.func(args)
    except FedbenchError as e:
        print(f"fedbench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if main_thread and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            # a second Ctrl-C during the rest of the stop (this message, the interpreter's exit) must not end
            # the process as killed by SIGINT (status -2) instead of 130
            signal.signal(signal.SIGINT, _exit_now)
        print("fedbench: interrupted; finished runs are kept in the results file", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head`: not an error
        sys.stderr.close()
        return 0


def entry() -> None:
    """The ``fedbench`` command: :func:`main`, then exit with its status. After Ctrl-C (status 130), every
    run is already stopped and stored; the interpreter's own exit is skipped, since a second Ctrl-C during
    it made the process end as killed by SIGINT (status -2), not 130, in half of the tries."""
    rc = main()
    if rc == 130:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    raise SystemExit(rc)
