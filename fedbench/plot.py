"""Learning curves and accuracy against communicated bytes, from the results store only.

matplotlib is an optional extra (``pip install 'fedbench-suite[plot]'``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from fedbench.config import RunConfig
from fedbench.errors import ConfigError
from fedbench.report import select_runs
from fedbench.store import ResultStore



def _file_part(name: object) -> str:
    """A stored name as part of one file name in the output folder (no separators: a data set stored as
    ``a/b`` or ``../x`` is written inside ``--out``, not into a folder that may not exist)."""
    return re.sub(r"[/\\\x00]", "_", str(name)).lstrip(".") or "_"

def curves(store: ResultStore, run_ids: list[str] | None = None, metric: str = "test_acc", *,
           configs: Sequence[RunConfig] | None = None) -> pd.DataFrame:
    """Per (dataset, method, round): mean and std over the finished runs' seeds of ``metric``,
    and the mean cumulative ``bytes_sent`` at that round. ``configs`` (a suite's runs) picks one stored
    run per configuration as reports do (the current code's, else the latest by other code)."""
    runs = store.runs()
    runs = runs[runs.status == "done"]
    if configs is not None:
        runs = select_runs(runs, configs)
    if run_ids is not None:
        runs = runs[runs.run_id.isin(run_ids)]
    if runs.empty:
        return pd.DataFrame(columns=["dataset", "method", "round", "mean", "std", "n", "bytes_sent"])
    m = store.metrics(list(runs.run_id))
    wide = m.pivot_table(index=["run_id", "round"], columns="name", values="value").reset_index()
    if metric not in wide:
        raise ConfigError(f"no metric {metric!r} in the results; stored: {', '.join(sorted(set(m.name)))}")
    wide = wide.merge(runs[["run_id", "dataset", "method"]], on="run_id")
    if "bytes_sent" not in wide:  # stores written before fedbench recorded communication
        wide["bytes_sent"] = float("nan")
    agg = wide.groupby(["dataset", "method", "round"]).agg(
        mean=(metric, "mean"), std=(metric, "std"), n=(metric, "size"), bytes_sent=("bytes_sent", "mean")
    )
    return agg.reset_index().fillna({"std": 0.0})


def styles(methods: list[str], headline: str | None = None) -> dict[str, tuple[tuple, str]]:
    """``(colour, line style)`` per method, the same in every plot of an installation: methods in sorted
    order over 17 strong colours with no red (tab10 without its red, then Dark2), dashed after the
    first 17; ``headline`` alone is drawn in strong red."""
    import matplotlib

    base = [c for i, c in enumerate(matplotlib.colormaps["tab10"].colors) if i != 3]
    base += list(matplotlib.colormaps["Dark2"].colors)
    out = {m: (base[k % len(base)], ("-", "--", ":")[k // len(base) % 3])
           for k, m in enumerate(sorted(set(methods) - {headline}))}
    if headline is not None:
        out[headline] = ((0.84, 0.0, 0.0), "-")
    return out


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
                headline: str | None = None) -> list[Path]:
    """One PNG per data set of ``metric`` vs round and one of ``metric`` vs bytes sent; returns the paths.

    ``methods`` (e.g. every registered method) fixes each method's colour across plots; ``headline`` is
    drawn in strong red on top. The bytes axis is symmetric-log with its linear part up to the smallest
    non-zero byte count, so a method that sends nothing (Local, at 0) is on the plot without empty decades.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ConfigError("fedbench plot needs matplotlib: pip install 'fedbench-suite[plot]'") from e
    out_dir.mkdir(parents=True, exist_ok=True)
    palette = styles(sorted(set(methods or []) | set(table["method"])), headline)
    written = []
    for dataset, by_ds in table.groupby("dataset"):
        axes = [("round", "round", "curves")]
        if by_ds["bytes_sent"].notna().all():
            axes.append(("bytes_sent", "bytes sent (cumulative)", "bytes"))
        for x, label, name in axes:
            fig, ax = plt.subplots(figsize=(8, 4.5))
            for method, g in by_ds.groupby("method"):
                g = g.sort_values("round")
                strong = method == headline
                colour, line = palette[method]
                ax.plot(g[x], g["mean"], label=f"{method} (n={int(g['n'].max())})", color=colour, linestyle=line,
                        linewidth=2.5 if strong else 1.4, zorder=3 if strong else 2, marker=".")
                ax.fill_between(g[x], g["mean"] - g["std"], g["mean"] + g["std"], alpha=0.2, color=colour)
            positive = by_ds.loc[by_ds["bytes_sent"] > 0, "bytes_sent"] if x == "bytes_sent" else []
            if len(positive):
                low = float(positive.min())
                ax.set_xscale("symlog", linthresh=low)
                ax.set_xlim(left=-0.3 * low)  # a method at 0 bytes stands clear of the axis
            ax.set_xlabel(label)
            ax.set_ylabel(f"{metric} (mean ± std over seeds)")
            ax.set_title(str(dataset))
            ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small")
            fig.tight_layout()
            path = out_dir / f"{name}_{_file_part(dataset)}.png"
            fig.savefig(path, dpi=120)
            plt.close(fig)
            written.append(path)
    return written
