"""Tables made from the results store only (pandas)."""

from __future__ import annotations

import pandas as pd

from fedbench.store import ResultStore

METRICS = ("test_acc", "test_acc_mean", "test_acc_p10", "test_loss", "train_acc", "train_loss")


def runs_table(store: ResultStore, run_ids: list[str] | None = None) -> pd.DataFrame:
    """One row per run: its identity, status, and its last evaluation's metrics."""
    runs = store.runs()
    if run_ids is not None:
        runs = runs[runs.run_id.isin(run_ids)]
    metrics = store.metrics(list(runs.run_id))
    if len(metrics):
        last = metrics[metrics["round"] == metrics.groupby("run_id")["round"].transform("max")]
        wide = last.pivot(index="run_id", columns="name", values="value")
        wide["eval_round"] = last.groupby("run_id")["round"].max()
    else:
        wide = pd.DataFrame(columns=[*METRICS, "eval_round"])
    table = runs.set_index("run_id")[["dataset", "method", "seed", "rounds", "status"]].join(wide, how="left")
    cols = ["dataset", "method", "seed", "rounds", "status", *[m for m in METRICS if m in table], "eval_round"]
    return table.reset_index()[["run_id", *cols]].sort_values(["dataset", "method", "seed"]).reset_index(drop=True)


def comparison_table(runs: pd.DataFrame, metric: str = "test_acc") -> pd.DataFrame:
    """Rows data sets, columns methods: ``mean ± std (n=seeds)`` of ``metric`` over finished runs."""
    done = runs[runs.status == "done"]
    if done.empty:
        return pd.DataFrame()
    stats = done.groupby(["dataset", "method"])[metric].agg(["mean", "std", "count"])

    def cell(row: pd.Series) -> str:
        std = "" if row["count"] < 2 else f" ± {row['std']:.2f}"
        return f"{row['mean']:.2f}{std} (n={int(row['count'])})"

    return stats.apply(cell, axis=1).unstack("method").fillna("")


def to_markdown(df: pd.DataFrame, floatfmt: str = "{:.2f}", index: bool = False) -> str:
    """A GitHub-flavoured Markdown table (no extra dependency)."""
    if index:
        df = df.reset_index()
    header = [str(c) for c in df.columns]

    def fmt(v: object) -> str:
        if isinstance(v, float):
            return "" if pd.isna(v) else floatfmt.format(v)
        return str(v)

    rows = [[fmt(v) for v in row] for row in df.itertuples(index=False)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)
