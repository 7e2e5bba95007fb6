"""Learning curves and accuracy against communicated bytes, from the results store only.

matplotlib is an optional extra (``pip install 'fedbench-suite[plot]'``).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fedbench.errors import ConfigError
from fedbench.store import ResultStore


def curves(store: ResultStore, run_ids: list[str] | None = None, metric: str = "test_acc") -> pd.DataFrame:
    """Per (dataset, method, round): mean and std over the finished runs' seeds of ``metric``,
    and the mean cumulative ``bytes_sent`` at that round."""
    runs = store.runs()
    runs = runs[runs.status == "done"]
    if run_ids is not None:
        runs = runs[runs.run_id.isin(run_ids)]
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


def plot_curves(table: pd.DataFrame, out_dir: Path, metric: str = "test_acc") -> list[Path]:
    """One PNG per data set of ``metric`` vs round and one of ``metric`` vs bytes sent; returns the paths."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ConfigError("fedbench plot needs matplotlib: pip install 'fedbench-suite[plot]'") from e
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for dataset, by_ds in table.groupby("dataset"):
        axes = [("round", "round", "curves")]
        if by_ds["bytes_sent"].notna().all():
            axes.append(("bytes_sent", "bytes sent (cumulative)", "bytes"))
        for x, label, name in axes:
            fig, ax = plt.subplots(figsize=(8, 4.5))
            colours = plt.get_cmap("tab20").colors
            for k, (method, g) in enumerate(by_ds.groupby("method")):
                g = g.sort_values("round")
                ax.plot(g[x], g["mean"], label=f"{method} (n={int(g['n'].max())})", color=colours[k % 20],
                        linestyle=("-", "--", ":")[k // 20 % 3], marker=".")
                ax.fill_between(g[x], g["mean"] - g["std"], g["mean"] + g["std"], alpha=0.2, color=colours[k % 20])
            if x == "bytes_sent" and (by_ds["bytes_sent"] > 0).any():
                ax.set_xscale("symlog")
            ax.set_xlabel(label)
            ax.set_ylabel(f"{metric} (mean ± std over seeds)")
            ax.set_title(str(dataset))
            ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small")
            fig.tight_layout()
            path = out_dir / f"{name}_{dataset}.png"
            fig.savefig(path, dpi=120)
            plt.close(fig)
            written.append(path)
    return written
