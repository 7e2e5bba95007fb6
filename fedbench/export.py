"""Per-round metrics out of the results store: a table, CSV or Parquet files, TensorBoard curves."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from fedbench.errors import ConfigError
from fedbench.store import ResultStore

#: digits kept in exported CSV files (accuracies in %, losses): enough to tell runs apart, no float noise
CSV_DECIMALS = 6


def per_round(store: ResultStore, run_ids: list[str] | None = None) -> pd.DataFrame:
    """One row per (run, evaluated round): the run's identity and status, then one column per metric."""
    runs = store.runs()
    if run_ids is not None:
        runs = runs[runs.run_id.isin(run_ids)]
    m = store.metrics(list(runs.run_id))
    ident = ["run_id", "dataset", "method", "seed", "status"]
    if m.empty:
        return pd.DataFrame(columns=[*ident, "round"])
    wide = m.pivot_table(index=["run_id", "round"], columns="name", values="value", aggfunc="first").reset_index()
    wide.columns.name = None
    out = runs[ident].merge(wide, on="run_id")
    return out.sort_values(["dataset", "method", "seed", "run_id", "round"]).reset_index(drop=True)


def export(table: pd.DataFrame, path: Path, fmt: str) -> Path:
    """Write :func:`per_round`'s table as ``csv`` (rounded to :data:`CSV_DECIMALS`) or ``parquet``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        table.round(CSV_DECIMALS).to_csv(path, index=False, float_format="%.12g")
    elif fmt == "parquet":
        try:
            table.to_parquet(path, index=False)
        except ImportError as e:
            raise ConfigError("--format parquet needs pyarrow: pip install 'fedbench-suite[parquet]' (or use --format csv)") from e
    else:
        raise ConfigError(f"unknown export format {fmt!r}; use csv or parquet")
    return path


def _part(name: object) -> str:
    """A stored name as one folder name inside the output folder: separators and a leading dot replaced
    (a data set or method stored as ``../../x`` or ``/abs`` must not write outside ``--out``)."""
    text = re.sub(r"[/\\\x00]", "_", str(name)).strip() or "_"
    return "_" + text[1:] if text.startswith(".") else text


def write_tensorboard(store: ResultStore, run_ids: list[str], log_dir: Path) -> list[Path]:
    """TensorBoard event files, one folder per run (``DATASET/METHOD/seedN-RUNID``), one scalar per
    metric (step = round). Written again from the store on every call, so a re-run replaces a folder."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise ConfigError("--tensorboard needs the tensorboard package: pip install 'fedbench-suite[tensorboard]'") from e
    table = per_round(store, run_ids)
    written = []
    runs = store.runs().set_index("run_id")
    for run_id, rows in table.groupby("run_id"):
        first = rows.iloc[0]
        folder = log_dir / _part(first.dataset) / _part(first.method) / _part(f"seed{first.seed}-{run_id}")
        for old in folder.glob("events.out.tfevents.*"):
            old.unlink()
        writer = SummaryWriter(str(folder))
        try:
            config = json.loads(runs.loc[run_id, "config"])
            writer.add_text("config", "```\n" + json.dumps(config, indent=2, default=str) + "\n```", 0)
            for row in rows.itertuples(index=False):
                for name, value in row._asdict().items():
                    if name not in ("run_id", "dataset", "method", "seed", "status", "round") and pd.notna(value):
                        writer.add_scalar(name, float(value), int(row.round))
        finally:
            writer.close()
        written.append(folder)
    return written
