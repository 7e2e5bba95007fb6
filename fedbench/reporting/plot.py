"""Learning curves and accuracy against communicated bytes, from the results store only.

matplotlib is an optional extra (``pip install 'fedbench-suite[plot]'``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from fedbench.fl.config import RunConfig
from fedbench.errors import ConfigError
from fedbench.reporting.report import human_bytes, run_labels, select_runs
from fedbench.reporting.store import ResultStore



def _file_part(name: object) -> str:
    """A stored name as part of one file name in the output folder (no separators: a data set stored as
    ``a/b`` or ``../x`` is written inside ``--out``, not into a folder that may not exist)."""
    return re.sub(r"[/\\\x00]", "_", str(name)).lstrip(".") or "_"

def curves(store: ResultStore, run_ids: list[str] | None = None, metric: str = "test_acc", *,
           configs: Sequence[RunConfig] | None = None) -> pd.DataFrame:
    """Per (dataset, method, round): mean and std over the finished runs' seeds of ``metric``,
    and the mean cumulative ``bytes_sent`` at that round. ``method`` is the method at its grid point
    (``METHOD mu=0.01``, :func:`fedbench.reporting.report.grid_label`): only seeds are averaged, never grid points;
    ``base`` is the method's own name. ``configs`` (a suite's runs) picks one stored run per configuration as
    reports do (the current code's, else the latest by other code)."""
    runs = store.runs()
    runs = runs[runs.status == "done"]
    if configs is not None:
        runs = select_runs(runs, configs)
    if run_ids is not None:
        runs = runs[runs.run_id.isin(run_ids)]
    if runs.empty:
        return pd.DataFrame(columns=["dataset", "method", "round", "mean", "std", "n", "bytes_sent", "base"])
    runs = runs.assign(label=run_labels(runs), base=runs["method"])
    m = store.metrics(list(runs.run_id))
    wide = m.pivot_table(index=["run_id", "round"], columns="name", values="value").reset_index()
    if metric not in wide:
        raise ConfigError(f"no metric {metric!r} in the results; stored: {', '.join(sorted(set(m.name)))}")
    wide = wide.merge(runs[["run_id", "dataset", "label", "base"]], on="run_id").rename(columns={"label": "method"})
    if "bytes_sent" not in wide:  # stores written before fedbench recorded communication
        wide["bytes_sent"] = float("nan")
    agg = wide.groupby(["dataset", "method", "round"]).agg(
        mean=(metric, "mean"), std=(metric, "std"), n=(metric, "size"), bytes_sent=("bytes_sent", "mean"),
        base=("base", "first"),
    )
    return agg.reset_index().fillna({"std": 0.0})


#: Okabe & Ito's colour-blind-safe palette (Color Universal Design), less its vermillion (the headline's) and
#: its yellow (too faint on white), with a mid grey
PALETTE = ("#000000", "#E69F00", "#56B4E9", "#009E73", "#0072B2", "#CC79A7", "#999999")
HEADLINE_COLOUR = "#D55E00"  # Okabe-Ito vermillion
LINES = ("-", "--", ":")
MARKERS = ("s", "^", "D", "v", "P", "X", "<", ">", "*")


class Style(NamedTuple):
    colour: str
    line: str
    marker: str


def styles(methods: list[str], headline: str | None = None) -> dict[str, Style]:
    """A :class:`Style` per method, the same in every plot of an installation: methods in sorted order take
    the colour-blind-safe :data:`PALETTE` in turn, a line style per round of it and a marker of their own
    (colour and marker cycle over 7 and 9, so no two of the first 63 methods look alike, in colour or in
    grey); ``headline`` alone is drawn in vermillion with round markers."""
    out = {m: Style(PALETTE[k % len(PALETTE)], LINES[k // len(PALETTE) % len(LINES)], MARKERS[k % len(MARKERS)])
           for k, m in enumerate(sorted(set(methods) - {headline}))}
    if headline is not None:
        out[headline] = Style(HEADLINE_COLOUR, "-", "o")
    return out


def value_label(metric: str, counts: Sequence[int]) -> str:
    """The y label: what is drawn, over how many seeds (``n`` per method in the legend when they differ)."""
    counts = sorted(set(int(n) for n in counts))
    if counts == [1]:
        return f"{metric} (one seed per method)"
    if len(counts) == 1:
        return f"{metric} (mean ± std over {counts[0]} seeds)"
    return f"{metric} (mean ± std; n in the legend)"


def bytes_ticks(ax: Any) -> None:
    """Decimal units on a log bytes axis (1 MB, 10 MB, ...) instead of powers of ten."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.xaxis.set_major_locator(LogLocator(base=10))
    label = FuncFormatter(lambda v, _: human_bytes(v).replace(".0 ", " "))
    ax.xaxis.set_major_formatter(label)
    narrow = ax.get_xlim()[1] / max(ax.get_xlim()[0], 1e-12) < 100  # under two decades: label the minor ticks too
    if narrow:  # 2 and 5 of each decade labelled; all eight would overlap
        ax.xaxis.set_minor_locator(LogLocator(base=10, subs=(2.0, 5.0)))
    ax.xaxis.set_minor_formatter(label if narrow else NullFormatter())


def default_out_dir(results: Path) -> Path:
    """A new folder for a plot command's PNGs: ``plots-<results name>-<time>`` in the current folder, or
    under ``~/.cache/fedbench/plots`` when the current folder is inside fedbench's own source tree (so
    tracked files are never overwritten)."""
    import time

    import fedbench

    here = Path.cwd().resolve()
    source = Path(fedbench.__file__).resolve().parents[1]
    root = here
    if here == source or source in here.parents:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fedbench" / "plots"
    name = f"plots-{results.stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    out, k = root / name, 1
    while out.exists():
        k += 1
        out = root / f"{name}-{k}"
    return out


def plot_curves(table: pd.DataFrame, out_dir: Path, metric: str = "test_acc", *, methods: list[str] | None = None,
                headline: str | None = None, fmt: str = "png") -> list[Path]:
    """One figure per data set of ``metric`` vs round and one of ``metric`` vs bytes sent; returns the paths.

    ``methods`` (e.g. every registered method) fixes each method's style across plots; ``headline`` is
    drawn thicker, in vermillion, on top. The bytes axis is logarithmic: points at 0 bytes (round 0, and
    every point of a method that sends nothing) cannot stand on it and are left out, the
    legend saying so. ``fmt``: ``png`` or ``svg``.
    """
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    out_dir.mkdir(parents=True, exist_ok=True)
    # the headline is emphasised when it is one curve; at several grid points none of them is singled out
    heads = sorted(set(table.loc[table["base"] == headline, "method"])) if "base" in table else [headline]
    headline = heads[0] if len(heads) == 1 else None
    palette = styles(sorted(set(methods or []) | set(table["method"])), headline)
    written = []
    for dataset, by_ds in table.groupby("dataset"):
        axes = [("round", "round", "curves")]
        if by_ds["bytes_sent"].notna().all() and (by_ds["bytes_sent"] > 0).any():
            axes.append(("bytes_sent", "bytes sent (cumulative, log scale)", "bytes"))
        for x, label, name in axes:
            fig, ax = plt.subplots(figsize=(8, 4.5))
            for method, g in by_ds.groupby("method"):
                g = g.sort_values("round")
                n = int(g["n"].max())
                text = f"{method} (n={n})"
                if x == "bytes_sent":
                    g = g[g["bytes_sent"] > 0]
                    if g.empty:
                        ax.plot([], [], " ", label=f"{method}: sends nothing, not on a log axis")
                        continue
                strong = method == headline
                style = palette[method]
                ax.plot(g[x], g["mean"], label=text, color=style.colour, linestyle=style.line, marker=style.marker,
                        markersize=5 if strong else 4, linewidth=2.8 if strong else 1.4, zorder=3 if strong else 2)
                if n > 1:
                    ax.fill_between(g[x], g["mean"] - g["std"], g["mean"] + g["std"], alpha=0.15, color=style.colour,
                                    linewidth=0)
            if x == "bytes_sent":
                ax.set_xscale("log")
                bytes_ticks(ax)
            else:
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds are whole
            ax.set_xlabel(label)
            ax.set_ylabel(value_label(metric, by_ds.groupby("method")["n"].max()))
            ax.set_title(str(dataset))
            ax.grid(True, alpha=0.3)
            ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small")
            fig.tight_layout()
            path = out_dir / f"{name}_{_file_part(dataset)}.{fmt}"
            fig.savefig(path, dpi=120)
            plt.close(fig)
            written.append(path)
    return written


def pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ConfigError("fedbench plot needs matplotlib: pip install 'fedbench-suite[plot]'") from e
    return plt
