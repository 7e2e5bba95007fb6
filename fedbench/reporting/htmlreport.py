"""One self-contained HTML page for a suite's results (``fedbench report --format html``).

The page needs nothing but a browser: styles are inline, figures are inline SVG drawn by matplotlib, no
script and no file or address outside it is referenced. It holds the comparison table (mean ± std over
seeds), the paper's numbers beside ours, the headline method's gap to the best other method, the learning
curves, accuracy against bytes sent, and the per-client spread (mean and 10th percentile).
"""

from __future__ import annotations

import datetime
import html
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from fedbench.reporting.plot import curves, pyplot, plot_curves, styles, value_label
from fedbench.reporting.report import comparison_table, reference_table, runs_table, table_labels
from fedbench.reporting.store import ResultStore

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25em 0.7em; text-align: left; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f4f4f4; } .headline { font-weight: bold; background: #fdf0e8; }
.note { color: #555; font-size: 0.9em; } svg { max-width: 100%; height: auto; }
.wide { overflow-x: auto; }
"""


def headline_gaps(runs: pd.DataFrame, headline: str | None, metric: str = "test_acc") -> pd.DataFrame:
    """Per data set and grid point of the headline method: its mean over finished seeds, the best other
    method (at its best grid point) and its mean, and the gap (headline minus best other; positive when the
    headline leads). Only seeds are averaged. Empty without a headline."""
    cols = ["dataset", "headline", "mean", "best other", "its mean", "gap"]
    if not headline or metric not in runs:
        return pd.DataFrame(columns=cols)
    done = runs[(runs.status == "done") & runs[metric].notna()]
    done = done.assign(label=table_labels(done))
    rows = []
    for dataset, group in done.groupby("dataset"):
        means = group.groupby("label")[metric].mean()
        base = group.groupby("label")["method"].first()
        others = means[base != headline]
        if others.empty:
            continue
        best = others.idxmax()
        for label in means[base == headline].index:
            rows.append({"dataset": dataset, "headline": label, "mean": means[label], "best other": best,
                         "its mean": others[best], "gap": means[label] - others[best]})
    return pd.DataFrame(rows, columns=cols)


def _table(df: pd.DataFrame, table_id: str, *, index: bool = False, headline: str | None = None) -> str:
    """``df`` as an HTML table (cells escaped; numbers right-aligned, 2 decimals); the headline's column or
    rows marked."""
    if index:
        df = df.reset_index()
    head = "".join(f'<th class="{_kind(df[c])}{_mark(c, headline)}">{html.escape(str(c))}</th>' for c in df.columns)
    body = []
    for row in df.itertuples(index=False):
        marked = headline is not None and any(str(v).split(" ")[0] == headline for v in row)
        cells = "".join(
            f'<td class="{_kind(df[c])}{_mark(c, headline)}">{html.escape(_text(v))}</td>' for c, v in zip(df.columns, row)
        )
        body.append(f'<tr class="{"headline" if marked else ""}">{cells}</tr>')
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _kind(values: pd.Series) -> str:
    from fedbench.reporting.report import numeric_column

    return "num" if numeric_column(values) else "text"


def _mark(column: object, headline: str | None) -> str:
    return " headline" if headline is not None and str(column).split(" ")[0] == headline else ""


def _text(v: object) -> str:
    if v is None or (isinstance(v, float) and pd.isna(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


def _svg(path: Path) -> str:
    """An SVG file's ``<svg>`` element, for inlining (the XML prolog and DOCTYPE dropped)."""
    text = path.read_text(encoding="utf-8")
    text = text[text.index("<svg"):]
    start, end = text.find("<metadata>"), text.find("</metadata>")
    return text[:start] + text[end + len("</metadata>"):] if 0 <= start < end else text


def spread_figure(runs: pd.DataFrame, out: Path, *, methods: list[str], headline: str | None) -> list[Path]:
    """Per data set, one SVG: each method's per-client accuracy as the segment from its 10th percentile
    (``test_acc_p10``) to its mean over clients (``test_acc_mean``), each a mean over finished seeds."""
    plt = pyplot()
    need = {"test_acc_p10", "test_acc_mean"}
    if not need <= set(runs.columns):
        return []
    done = runs[(runs.status == "done") & runs.test_acc_p10.notna() & runs.test_acc_mean.notna()]
    done = done.assign(method=table_labels(done))  # one row per grid point: only seeds are averaged
    heads = [m for m in set(done.method) if m.split(" ")[0] == headline]
    headline = heads[0] if len(heads) == 1 else None
    palette = styles(sorted(set(methods) | set(done.method)), headline)
    written = []
    for dataset, group in done.groupby("dataset"):
        agg = group.groupby("method").agg(p10=("test_acc_p10", "mean"), mean=("test_acc_mean", "mean"),
                                          n=("test_acc_mean", "size")).sort_values("mean")
        fig, ax = plt.subplots(figsize=(8, 0.45 * len(agg) + 1.4))
        for y, (method, row) in enumerate(agg.iterrows()):
            style = palette[method]
            strong = method == headline
            ax.plot([row.p10, row["mean"]], [y, y], color=style.colour, linewidth=3.5 if strong else 2)
            ax.plot(row.p10, y, marker="|", markersize=12, color=style.colour)
            ax.plot(row["mean"], y, marker=style.marker, markersize=8 if strong else 6, color=style.colour)
        ax.set_yticks(range(len(agg)), [f"{m} (n={int(r.n)})" for m, r in agg.iterrows()])
        ax.set_xlabel("per-client test accuracy: 10th percentile | to mean over clients "
                      + value_label("", agg.n).strip())
        ax.set_title(f"{dataset}: per-client spread")
        ax.grid(True, axis="x", alpha=0.3)
        fig.tight_layout()
        path = out / f"spread_{len(written)}.svg"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written


def html_report(store: ResultStore, *, suite: Any = None, registry: Any = None, metric: str = "test_acc",
                headline: str | None = None, source: str = "") -> str:
    """The page for ``store`` (only ``suite``'s runs when given) as one HTML string."""
    import matplotlib

    import fedbench

    configs = suite.runs if suite is not None else None
    headline = headline or (suite.headline if suite is not None else None)
    runs = runs_table(store, configs=configs, registry=registry)
    title = f"fedbench: suite {suite.name}" if suite is not None else "fedbench results"
    parts = [f"<h1>{html.escape(title)}</h1>"]
    meta = [f"results: {source}" if source else "",
            f"fedbench {fedbench.__version__}, written {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}",
            f"{len(runs)} runs: " + ", ".join(f"{n} {s}" for s, n in runs.status.value_counts().items()) if len(runs) else "no runs"]
    if suite is not None and getattr(suite, "description", ""):
        parts.append(f"<p>{html.escape(suite.description)}</p>")
    parts.append(f'<p class="note">{" · ".join(html.escape(m) for m in meta if m)}</p>')
    if runs.empty:
        parts.append("<p>No runs stored yet: <code>fedbench run</code> computes them.</p>")
        return _page(title, parts)
    parts.append(f"<h2>{html.escape(metric)}, last evaluated round, mean ± std over seeds</h2>")
    parts.append(_table(comparison_table(runs, metric), "comparison", index=True, headline=headline))
    if suite is not None and suite.references is not None:
        refs = reference_table(runs, suite.references, metric)
        if not refs.empty:
            parts.append("<h2>Beside the reference numbers</h2>")
            parts.append('<p class="note">delta = ours minus the reference.</p>')
            parts.append(_table(refs, "references", headline=headline))
    gaps = headline_gaps(runs, headline, metric)
    if not gaps.empty:
        parts.append(f"<h2>The headline method ({html.escape(headline)}) against the best other method</h2>")
        parts.append('<p class="note">gap = headline mean minus the best other method\'s mean, over finished seeds.</p>')
        parts.append(_table(gaps.assign(gap=gaps.gap.map("{:+.2f}".format)), "gaps", headline=headline))
    with tempfile.TemporaryDirectory() as tmp, matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "fedbench"}):
        methods = registry.names("method") if registry is not None else []
        table = curves(store, metric=metric, configs=configs)
        figures = plot_curves(table, Path(tmp), metric, methods=methods, headline=headline, fmt="svg") if len(table) else []
        learning = [f for f in figures if f.name.startswith("curves_")]
        by_bytes = [f for f in figures if f.name.startswith("bytes_")]
        if learning:
            parts.append("<h2>Learning curves</h2>")
            parts += [f'<figure class="curve">{_svg(f)}</figure>' for f in learning]
        if by_bytes:
            parts.append(f"<h2>{html.escape(metric)} against bytes sent</h2>")
            parts += [f'<figure class="bytes">{_svg(f)}</figure>' for f in by_bytes]
        spread = spread_figure(runs, Path(tmp), methods=methods, headline=headline)
        if spread:
            parts.append("<h2>Per-client accuracy</h2>")
            parts += [f'<figure class="spread">{_svg(f)}</figure>' for f in spread]
    shown = runs.drop(columns=[c for c in ("error",) if c in runs and not runs[c].notna().any()])
    parts.append("<h2>Every run</h2>")
    parts.append(f'<div class="wide">{_table(shown.assign(run_id=shown.run_id.str[:8]), "runs", headline=headline)}</div>')
    return _page(title, parts)


def _page(title: str, parts: list[str]) -> str:
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n")
