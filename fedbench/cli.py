"""The ``fedbench`` command line: list, run, report.

A :class:`~fedbench.errors.FedbenchError` is printed as one line
(``fedbench: error: ...``) with exit code 2; a run that fails or diverges
gives exit code 1.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from tqdm.auto import tqdm

from fedbench import __version__
from fedbench.build import check_device, resolve_run
from fedbench.config import parse_assignments
from fedbench.data import default_data_root
from fedbench.errors import FedbenchError
from fedbench.registry import KIND_HOOKS, Registry, get_registry
from fedbench.executor import assign_devices, run_local, run_ray
from fedbench.report import (
    METRICS, comparison_table, human_bytes, init_note, reference_table, runs_table, to_latex, to_markdown,
)
from fedbench.runner import RunOutcome
from fedbench.store import DEFAULT_PATH, ResultStore
from fedbench.suite import load_suite, missing_data


def _warn_failures(registry: Registry) -> None:
    for name, why in sorted(registry.failures.items()):
        print(f"fedbench: warning: plugin {name!r} not loaded: {why}", file=sys.stderr)


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
            if params:  # each default with its valid values, from the one declaration the checks use
                print(f"  {'':<22} " + " ".join(
                    f"{k}={v}" + (f" ({rules[k].rule()})" if k in rules and rules[k].rule() != "any value" else "")
                    for k, v in sorted(params.items())
                ))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    registry = get_registry()
    _warn_failures(registry)
    check_device(args.device)
    devices = [d.strip() for d in args.devices.split(",") if d.strip()] if args.devices else None
    for device in devices or []:
        check_device(device)
    overrides = parse_assignments(args.set or [])
    for key, value in (("rounds", args.rounds), ("eval_every", args.eval_every), ("model", args.model)):
        if value is not None:
            overrides[key] = value
    suite = None
    if (args.methods or args.datasets) and not args.suite:
        raise FedbenchError("--methods/--datasets pick runs of a suite; use them with --suite (or --method/--dataset alone)")
    if args.suite:
        if args.dataset or args.method:
            raise FedbenchError("--suite runs the suite's own data sets and methods; drop --dataset/--method")
        seeds = [args.seed] if args.seed is not None else None
        suite = load_suite(
            registry, args.suite, extra=overrides, seeds=seeds, device=args.device, engine=args.engine,
            only_datasets=_names(args.datasets), only_methods=_names(args.methods),
        )
        configs = list(suite.runs)
        print(f"suite {suite.name}: {len(configs)} runs ({suite.description})", file=sys.stderr)
    else:
        if not args.dataset or not args.method:
            raise FedbenchError("fedbench run needs --dataset and --method (or --suite NAME)")
        seed = args.seed if args.seed is not None else 0
        configs = [
            resolve_run(
                registry, dataset=args.dataset, method=args.method, seed=seed, overrides=overrides,
                device=args.device, engine=args.engine,
            )
        ]
    if args.download:
        for name in dict.fromkeys(c.dataset for c in configs):
            spec = registry.get("dataset", name)
            if spec.download is not None and spec.check is not None and spec.check(data_root=args.data_root):
                print(f"downloading {name} into {args.data_root or default_data_root()} ...", file=sys.stderr)
                _download(name, spec, args.data_root)
    missing = missing_data(registry, configs, args.data_root)
    if missing and suite is None:
        raise FedbenchError(next(iter(missing.values())))
    for name, problem in missing.items():  # every missing data set up front; the other runs go ahead
        n = sum(c.dataset == name for c in configs)
        print(f"fedbench: skipping {n} run(s) of {name}: {problem}", file=sys.stderr)
    configs = [c for c in configs if c.dataset not in missing]
    if devices is not None:
        configs = assign_devices(configs, devices)
    for line, n in init_notes(registry, configs).items():  # e.g. a model started from scratch: said before any run
        print(f"fedbench: warning: {n} run(s): {line}", file=sys.stderr)
    ResultStore(args.results).close()  # a bad results path fails here, before any run

    def report(outcome: RunOutcome) -> None:
        tqdm.write(outcome.summary(), file=sys.stderr if suite else sys.stdout)  # keeps progress bars intact

    if args.executor == "ray":
        outcomes = run_ray(
            configs, args.results, address=args.address, data_root=args.data_root, force=args.force, on_outcome=report
        )
    else:
        outcomes = run_local(
            configs, args.results, jobs=args.jobs, data_root=args.data_root, force=args.force,
            progress=not args.no_progress, on_outcome=report,
        )
    if suite:
        store = ResultStore(args.results, readonly=True)
        table = runs_table(store, [c.run_id for c in configs], registry=registry)
        _print_comparison(table, suite.references, "test_acc", "md")
        if _has(table, "unseen_test_acc"):
            _print_comparison(table, None, "unseen_test_acc", "md")
    return 0 if all(o.ok for o in outcomes) and not missing else 1


def init_notes(registry: Registry, configs) -> dict[str, int]:  # noqa: ANN001
    """The distinct :attr:`ModelSpec.init_note` lines of ``configs``, with how many runs each concerns."""
    out: dict[str, int] = {}
    for c in configs:
        note = init_note(registry, c.model, dict(c.model_params))
        if note:
            out[note[1]] = out.get(note[1], 0) + 1
    return out


def _names(text: str | None) -> list[str] | None:
    """``"a, b"`` -> ``["a", "b"]``; None when not given."""
    return [n.strip() for n in text.split(",") if n.strip()] if text else None


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
    table = runs_table(store, configs=suite.runs if suite else None, registry=get_registry()).drop(columns=["run_id"])
    if table.empty:
        what = f"of suite {suite.name} " if suite else ""
        print(f"no runs {what}stored in {args.results} yet; `fedbench run ...` computes them", file=sys.stderr)
        return 0
    if args.metric not in table.columns:
        known = [c for c in table.columns if c in METRICS]
        raise FedbenchError(f"unknown metric {args.metric!r}; stored metrics are: {', '.join(known)}")
    if args.format == "csv":
        print(table.round(4).to_csv(index=False), end="")
        return 0
    shown = table.assign(bytes_sent=table.bytes_sent.map(human_bytes)) if "bytes_sent" in table else table
    print(to_markdown(shown) if args.format == "md" else to_latex(shown))
    if suite or args.compare:
        _print_comparison(table, suite.references if suite else None, args.metric, args.format, args.transpose)
        if args.metric == "test_acc" and _has(table, "unseen_test_acc"):
            _print_comparison(table, None, "unseen_test_acc", args.format, args.transpose)
    return 0


def _has(table, metric: str) -> bool:  # noqa: ANN001
    return metric in table.columns and bool(table[metric].notna().any())


def cmd_plot(args: argparse.Namespace) -> int:
    from fedbench.plot import curves, plot_curves

    path = Path(args.results)
    suite = load_suite(get_registry(), args.suite) if args.suite else None
    table = curves(ResultStore(path, readonly=True), [c.run_id for c in suite.runs] if suite else None, args.metric)
    if table.empty:
        raise FedbenchError(f"no finished runs in {str(path)!r} to plot")
    for written in plot_curves(table, Path(args.out), args.metric):
        print(written)
    return 0


def cmd_data_describe(args: argparse.Namespace) -> int:
    from fedbench.build import load_data
    from fedbench.partition import describe, plot_label_heatmap

    registry = get_registry()
    _warn_failures(registry)
    overrides = {f"dataset.{k}": v for k, v in parse_assignments(args.set or []).items()}
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


def _download(name: str, spec, data_root: Path | None) -> None:  # noqa: ANN001 - a DatasetSpec
    try:
        spec.download(data_root=data_root)
    except FedbenchError:
        raise
    except Exception as e:  # no internet, a moved mirror, a full disk: one line, not a traceback
        raise FedbenchError(
            f"downloading {name} failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); fetch the files on a "
            "machine with internet and pass --data-root (fedbench data check says where they go)"
        ) from e


def cmd_data_download(args: argparse.Namespace) -> int:
    registry = get_registry()
    spec = registry.get("dataset", args.dataset)
    if spec.download is None:
        problem = spec.check(data_root=args.data_root) if spec.check is not None else None
        raise FedbenchError(f"{args.dataset} cannot be downloaded by fedbench" + (f"; {problem}" if problem else " (it needs no files)"))
    _download(args.dataset, spec, args.data_root)
    print(f"{args.dataset}: downloaded into {args.data_root or default_data_root()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fedbench", description="Federated-learning benchmark suite.")
    p.add_argument("--version", action="version", version=f"fedbench {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    ls = sub.add_parser("list", help="list the registered plugins' components")
    ls.add_argument("kind", nargs="?", choices=list(KIND_HOOKS), help="only this kind")
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
    run.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    run.add_argument(
        "--engine", choices=["auto", "vectorized", "sequential"], default="auto",
        help="auto (default): vectorised when the model and method allow it, else one client at a time",
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
    run.add_argument("--executor", choices=["local", "ray"], default="local", help="local processes (default) or a Ray cluster")
    run.add_argument("--address", help="Ray cluster address (with --executor ray; default: start a local Ray)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    run.set_defaults(func=cmd_run)

    rep = sub.add_parser("report", help="print one row per stored run")
    rep.add_argument("--results", default=str(DEFAULT_PATH), help=f"SQLite results file (default {DEFAULT_PATH})")
    rep.add_argument("--format", choices=["md", "csv", "latex"], default="md")
    rep.add_argument("--suite", help="only the runs of this suite (name or TOML path), with its comparison tables")
    rep.add_argument("--metric", default="test_acc", help="metric of the comparison tables (default test_acc)")
    rep.add_argument("--compare", action="store_true", help="also print the methods x data sets comparison")
    rep.add_argument("--transpose", action="store_true", help="comparison with methods as rows, data sets as columns")
    rep.set_defaults(func=cmd_report)

    plot = sub.add_parser("plot", help="learning curves and accuracy vs communicated bytes as PNG")
    plot.add_argument("--results", default=str(DEFAULT_PATH), help=f"SQLite results file (default {DEFAULT_PATH})")
    plot.add_argument("--suite", help="only the runs of this suite (name or TOML path)")
    plot.add_argument("--metric", default="test_acc")
    plot.add_argument("--out", default="results/plots", help="folder for the PNG files (default results/plots)")
    plot.set_defaults(func=cmd_plot)

    data = sub.add_parser("data", help="inspect data sets")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    desc = data_sub.add_parser("describe", help="per-client sizes and label histograms of a data set")
    desc.add_argument("dataset", help="data set name (see `fedbench list dataset`)")
    desc.add_argument("--set", action="append", metavar="KEY=VALUE", help="a data-set parameter, e.g. alpha=0.1 or partitioner=shards")
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
    raise KeyboardInterrupt  # SIGTERM (timeout, a scheduler's stop): the same clean stop as Ctrl-C


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    try:
        return args.func(args)
    except FedbenchError as e:
        print(f"fedbench: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fedbench: interrupted; finished runs are kept in the results file", file=sys.stderr)
        return 130
