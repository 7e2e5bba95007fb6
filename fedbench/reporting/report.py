"""Tables made from the results store only (pandas)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import pandas as pd

from fedbench.fl.config import RunConfig
from fedbench.reporting.store import ResultStore

METRICS = (
    "test_acc", "best_test_acc", "test_acc_mean", "test_acc_p10", "test_loss", "train_acc", "train_loss", "bytes_sent",
    "unseen_test_acc", "unseen_test_acc_mean", "unseen_test_acc_p10",
)


def select_runs(runs: pd.DataFrame, configs: Sequence[RunConfig]) -> pd.DataFrame:
    """The stored runs of ``configs``, one per configuration: the one computed by the current code when
    there is one (``other_code`` False), else the latest by other code (``other_code`` True, so a
    report can say its numbers came from other code)."""
    current = {c.config_id: c.run_id for c in configs}
    runs = runs[runs.config_id.isin(current)].copy()
    runs["other_code"] = runs.run_id != runs.config_id.map(current)
    runs = runs.sort_values(["other_code", "finished"], ascending=[True, False], na_position="last")
    return runs.drop_duplicates("config_id")


def grid_columns(runs: pd.DataFrame) -> pd.DataFrame:
    """One column per setting that varies between runs of the same (dataset, method) other than the
    seed (a grid), named ``GROUP.KEY`` or the training key, holding each run's value."""
    flat = []
    for text in runs["config"]:
        cfg = json.loads(text)
        row = {"model": cfg.get("model"), "n_learners": cfg.get("n_learners")}
        row.update({k: v for k, v in cfg.get("train", {}).items()})
        for group in ("dataset", "model", "client", "aggregator"):
            row.update({f"{group}.{k}": v for k, v in cfg.get(f"{group}_params", {}).items()})
        flat.append({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in row.items()})
    settings = pd.DataFrame(flat, index=runs.index)
    keys = pd.concat([runs[["dataset", "method"]], settings], axis=1)
    varying = [
        col for col in settings.columns
        if (keys.groupby(["dataset", "method"])[col].nunique(dropna=False) > 1).any()
    ]
    return settings[varying]


def init_note(registry: Any, model: str, params: dict) -> tuple[str, str] | None:
    """``(tag, line)`` of the model's :attr:`~fedbench.plugin.specs.ModelSpec.init_note` for ``params``, or None
    (also for a model no longer installed: nothing to say)."""
    if model not in registry.names("model"):
        return None
    note_of = registry.get("model", model).init_note
    return note_of(params) if note_of is not None else None


def init_tags(runs: pd.DataFrame, registry: Any) -> pd.Series:
    """Per run, the tag of its model's init note (e.g. "from scratch"), or ""."""
    tags = []
    for text in runs["config"]:
        try:
            cfg = json.loads(text)
            note = init_note(registry, cfg["model"], cfg.get("model_params", {}))
        except (TypeError, ValueError, KeyError):  # a stored configuration that cannot be read: no note to give
            note = None
        tags.append(note[0] if note else "")
    return pd.Series(tags, index=runs.index, dtype=object)


def runs_table(store: ResultStore, run_ids: list[str] | None = None, *, configs: Sequence[RunConfig] | None = None,
               registry: Any = None) -> pd.DataFrame:
    """One row per run: its identity, any grid settings, status, its last evaluation's metrics, the best
    test accuracy over its evaluations (``best_test_acc``), its wall time in seconds, whether other code
    than the current one computed it (``other_code``, with ``configs``), and the error of a run that
    failed or diverged."""
    runs = store.runs()
    if configs is not None:
        runs = select_runs(runs, configs)
    else:
        runs = runs.assign(other_code=False)
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
    grid = grid_columns(runs) if len(runs) else pd.DataFrame(index=runs.index)
    runs = runs.assign(init=init_tags(runs, registry) if registry is not None and len(runs) else "")
    base = pd.concat([runs[["run_id", "dataset", "method"]], grid,
                      runs[["seed", "rounds", "status", "seconds", "other_code", "init", "error"]]], axis=1)
    table = base.set_index("run_id").join(wide, how="left")
    cols = ["dataset", "method", *grid.columns, "seed", "rounds", "status", *[m for m in METRICS if m in table],
            "eval_round", "seconds", "other_code", "init", "error"]
    order = ["dataset", "method", *grid.columns, "seed"]
    return table.reset_index()[["run_id", *cols]].sort_values(order).reset_index(drop=True)


#: columns of :func:`runs_table` that are not grid settings
FIXED = {"run_id", "dataset", "method", "seed", "rounds", "status", "eval_round", "seconds", "other_code", "init", "error", *METRICS}


def grid_label(method: str, names: Sequence[str], values: Sequence[object]) -> str:
    """A method at one grid point, as tables and plots name it: ``METHOD mu=0.01`` (a setting the method does
    not have, one that only another method of the grid declares, is missing and left out)."""
    return method + "".join(f" {g.split('.')[-1]}={v}" for g, v in zip(names, values) if not pd.isna(v))


def run_labels(runs: pd.DataFrame) -> pd.Series:
    """Per stored run (``ResultStore.runs()`` rows), its method and grid point (:func:`grid_label`): runs of
    one label differ only by seed, so only they are averaged together."""
    if runs.empty:
        return pd.Series([], index=runs.index, dtype=object)
    grid = grid_columns(runs)
    return pd.Series([grid_label(m, list(grid.columns), list(point)) for m, point in
                      zip(runs["method"], grid.itertuples(index=False))], index=runs.index, dtype=object)


def grid_names(runs: pd.DataFrame) -> list[str]:
    """The grid settings among :func:`runs_table`'s columns (those not :data:`FIXED`)."""
    return [c for c in runs.columns if c not in FIXED and not c.startswith("unseen_")]


def table_labels(runs: pd.DataFrame) -> pd.Series:
    """Per row of :func:`runs_table`, its method at its grid point (:func:`grid_label`)."""
    grid = grid_names(runs)
    return pd.Series([grid_label(m, grid, [row[g] for g in grid]) for m, (_, row) in zip(runs["method"], runs.iterrows())],
                     index=runs.index, dtype=object)


def comparison_table(runs: pd.DataFrame, metric: str = "test_acc") -> pd.DataFrame:
    """Rows data sets, columns methods (one per grid point: ``fedprox lr=0.01``): ``mean ± std (n=seeds)``
    of ``metric`` over finished runs. Only seeds are averaged.

    Runs that failed or diverged are not averaged; the cell says how many there were. A method
    that does not produce ``metric`` (e.g. unseen-client accuracy for Local) shows ``n/a``; a cell
    with results computed by other code than the current one says so (``other code``).
    """
    if runs.empty:
        return pd.DataFrame()
    grid = grid_names(runs)
    cells: dict[tuple[str, str], str] = {}
    for key, group in runs.groupby(["dataset", "method", *grid], dropna=False):
        dataset, method, *point = key
        label = grid_label(method, grid, point)
        finished = group[group.status == "done"]
        done = (finished[metric] if metric in group else pd.Series(dtype=float)).dropna()
        text = "n/a" if len(finished) and not len(done) else ""
        if len(done):
            std = f" ± {done.std():.2f}" if len(done) > 1 else ""
            text = f"{done.mean():.2f}{std} (n={len(done)})"
        bad = group[group.status != "done"].status.value_counts()
        if len(bad):
            text += " [" + ", ".join(f"{n} {status}" for status, n in sorted(bad.items())) + "]"
        if "other_code" in group and bool(group.other_code.fillna(False).astype(bool).any()):
            text += " [other code]"
        if "init" in group:
            text += "".join(f" [{tag}]" for tag in sorted(set(group.init.dropna()) - {""}))
        cells[(dataset, label)] = text.strip()
    table = pd.Series(cells).unstack()
    table.index.name, table.columns.name = "dataset", "method"
    return table.fillna("")


def human_bytes(value: float) -> str:
    """``24424800000.0`` -> ``24.4 GB`` (decimal units, as network traffic is counted)."""
    if pd.isna(value):
        return ""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return ""


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


_NUMBER = re.compile(r"^[-+]?\d[\d.,]*(e[-+]?\d+)?( ± [\d.]+)?( \(n=\d+\))?( ?[kMGT]?B| s)?( \[[^\]]*\])*$")


def numeric_column(values: pd.Series) -> bool:
    """A column of numbers or of ``mean ± std (n=k)`` cells (right-aligned in LaTeX)."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return True
    cells = [c for c in (_cell(v, "{}") for v in values) if c not in ("", "n/a")]
    return bool(cells) and all(_NUMBER.match(c) for c in cells)


def to_latex(df: pd.DataFrame, floatfmt: str = "{:.2f}", index: bool = False) -> str:
    """A LaTeX ``tabular`` with booktabs rules (the preamble needs ``\\usepackage{booktabs}``; the first line
    says so): numeric columns right-aligned, text left-aligned."""
    if index:
        df = df.reset_index()

    def esc(v: object) -> str:
        text = _cell(v, floatfmt)
        for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"), ("±", r"$\pm$")):
            text = text.replace(a, b)
        return text

    align = "".join("r" if numeric_column(df[c]) else "l" for c in df.columns)
    lines = [r"% needs \usepackage{booktabs} in the preamble", r"\begin{tabular}{" + align + "}", r"\toprule",
             " & ".join(esc(c) for c in df.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(esc(v) for v in row) + r" \\" for row in df.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines)


def _cell(v: object, floatfmt: str) -> str:
    """A table cell: floats formatted, missing values (None, NaN) empty."""
    if v is None or (isinstance(v, float) and pd.isna(v)):
        return ""
    return floatfmt.format(v) if isinstance(v, float) else str(v)


def to_markdown(df: pd.DataFrame, floatfmt: str = "{:.2f}", index: bool = False) -> str:
    """A GitHub-flavoured Markdown table (no extra dependency)."""
    if index:
        df = df.reset_index()
    header = [str(c) for c in df.columns]

    rows = [[_cell(v, floatfmt) for v in row] for row in df.itertuples(index=False)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)
