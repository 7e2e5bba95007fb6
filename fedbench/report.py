"""Tables made from the results store only (pandas)."""

from __future__ import annotations

import pandas as pd

from fedbench.store import ResultStore

METRICS = (
    "test_acc", "best_test_acc", "test_acc_mean", "test_acc_p10", "test_loss", "train_acc", "train_loss", "bytes_sent",
    "unseen_test_acc", "unseen_test_acc_mean", "unseen_test_acc_p10",
)


def runs_table(store: ResultStore, run_ids: list[str] | None = None) -> pd.DataFrame:
    """One row per run: its identity, status, its last evaluation's metrics, and the best
    test accuracy over its evaluations (``best_test_acc``)."""
    runs = store.runs()
    if run_ids is not None:
        runs = runs[runs.run_id.isin(run_ids)]
    metrics = store.metrics(list(runs.run_id))
    if len(metrics):
        last = metrics[metrics["round"] == metrics.groupby("run_id")["round"].transform("max")]
        wide = last.pivot(index="run_id", columns="name", values="value")
        wide["eval_round"] = last.groupby("run_id")["round"].max()
        acc = metrics[metrics["name"] == "test_acc"]
        if len(acc):
            wide["best_test_acc"] = acc.groupby("run_id")["value"].max()
    else:
        wide = pd.DataFrame(columns=[*METRICS, "eval_round"])
    table = runs.set_index("run_id")[["dataset", "method", "seed", "rounds", "status"]].join(wide, how="left")
    cols = ["dataset", "method", "seed", "rounds", "status", *[m for m in METRICS if m in table], "eval_round"]
    return table.reset_index()[["run_id", *cols]].sort_values(["dataset", "method", "seed"]).reset_index(drop=True)


def comparison_table(runs: pd.DataFrame, metric: str = "test_acc") -> pd.DataFrame:
    """Rows data sets, columns methods: ``mean ± std (n=seeds)`` of ``metric`` over finished runs.

    Runs that failed or diverged are not averaged; the cell says how many there were. A method
    that does not produce ``metric`` (e.g. unseen-client accuracy for Local) shows ``n/a``.
    """
    if runs.empty:
        return pd.DataFrame()
    cells: dict[tuple[str, str], str] = {}
    for (dataset, method), group in runs.groupby(["dataset", "method"]):
        finished = group[group.status == "done"]
        done = (finished[metric] if metric in group else pd.Series(dtype=float)).dropna()
        text = "n/a" if len(finished) and not len(done) else ""
        if len(done):
            std = f" ± {done.std():.2f}" if len(done) > 1 else ""
            text = f"{done.mean():.2f}{std} (n={len(done)})"
        bad = group[group.status != "done"].status.value_counts()
        if len(bad):
            text += " [" + ", ".join(f"{n} {status}" for status, n in sorted(bad.items())) + "]"
        cells[(dataset, method)] = text.strip()
    table = pd.Series(cells).unstack()
    table.index.name, table.columns.name = "dataset", "method"
    return table.fillna("")


def reference_table(runs: pd.DataFrame, references: pd.DataFrame, metric: str = "test_acc") -> pd.DataFrame:
    """Ours (mean ± std over finished seeds) beside each reference number for ``metric``, with the delta."""
    refs = references[references.metric == metric]
    done = runs[runs.status == "done"]
    rows = []
    for ref in refs.itertuples(index=False):
        ours = done[(done.dataset == ref.dataset) & (done.method == ref.method)][metric] if metric in done else []
        mean = float(ours.mean()) if len(ours) else float("nan")
        rows.append({
            "dataset": ref.dataset,
            "method": ref.method,
            "ours": f"{mean:.2f} ± {ours.std():.2f}" if len(ours) > 1 else (f"{mean:.2f}" if len(ours) else "not run"),
            "n": len(ours),
            "reference": float(ref.value),
            "delta": mean - float(ref.value) if len(ours) else float("nan"),
            "source": ref.source,
        })
    return pd.DataFrame(rows)


def to_latex(df: pd.DataFrame, floatfmt: str = "{:.2f}", index: bool = False) -> str:
    """A booktabs LaTeX table (no extra dependency)."""
    if index:
        df = df.reset_index()

    def esc(v: object) -> str:
        text = ("" if pd.isna(v) else floatfmt.format(v)) if isinstance(v, float) else str(v)
        for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"), ("±", r"$\pm$")):
            text = text.replace(a, b)
        return text

    lines = [r"\begin{tabular}{" + "l" * len(df.columns) + "}", r"\toprule", " & ".join(esc(c) for c in df.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(esc(v) for v in row) + r" \\" for row in df.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines)


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
