"""Per-round metrics out of the results store: a table, CSV or Parquet files, TensorBoard curves, MLflow runs."""

from __future__ import annotations

import json
import os
import re
from contextlib import contextmanager
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd

from fedbench.errors import ConfigError
from fedbench.reporting.store import ResultStore

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


def round_values(rows: pd.DataFrame) -> Iterator[tuple[int, str, float]]:
    """``(round, metric, value)`` of every stored value in :func:`per_round` rows (one run's)."""
    for row in rows.itertuples(index=False):
        for name, value in row._asdict().items():
            if name not in ("run_id", "dataset", "method", "seed", "status", "round") and pd.notna(value):
                yield int(row.round), name, float(value)


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
            for round_, name, value in round_values(rows):
                writer.add_scalar(name, value, round_)
        finally:
            writer.close()
        written.append(folder)
    return written


#: MLflow's limits per ``log_batch`` call (metrics, params)
_MLFLOW_METRICS, _MLFLOW_PARAMS = 1000, 100
#: the tag that ties an MLflow run to the stored run it was written from
MLFLOW_TAG = "fedbench.run_id"


def flat_config(config: dict) -> dict[str, str]:
    """A stored configuration as ``GROUP.KEY`` -> text (``train.lr``, ``client_params.mu``): MLflow params."""
    out: dict[str, str] = {}

    def walk(prefix: str, value: object) -> None:
        if isinstance(value, dict) and value:
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            out[prefix] = value if isinstance(value, str) else json.dumps(value, default=str)

    walk("", config)
    return out


@contextmanager
def _file_store_allowed(uri: str) -> Iterator[None]:
    """MLflow 3 keeps its folder store (``./mlruns``, ``file://...``) in maintenance mode and refuses it unless
    ``MLFLOW_ALLOW_FILE_STORE`` is set; a user who names a folder asked for it, so allow it for this call."""
    local = urlparse(uri).scheme in ("", "file")
    before = os.environ.get("MLFLOW_ALLOW_FILE_STORE")
    if local and before is None:
        os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    try:
        yield
    finally:
        if local and before is None:
            os.environ.pop("MLFLOW_ALLOW_FILE_STORE", None)


def mlflow_uri(target: str) -> str:
    """A tracking URI for ``target``: a URI as given (``http://...``, ``sqlite:///...``, ``file:///...``), a
    plain folder as its absolute path (MLflow's folder store)."""
    if urlparse(target).scheme and len(urlparse(target).scheme) > 1:  # (a Windows drive letter is not a scheme)
        return target
    path = Path(target).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--mlflow {target} is a file; give a folder for MLflow's file store or a tracking URI "
                          "(http://HOST:PORT, sqlite:///FILE.db)")
    return path.as_uri()


def write_mlflow(store: ResultStore, run_ids: list[str], target: str, experiment: str = "fedbench") -> list[str]:
    """Each stored run as one MLflow run in ``experiment`` at ``target`` (a tracking URI or a folder): the
    flattened configuration as params, every evaluated round's metrics (step = round), the status, engine
    and fedbench run id as tags. A run written before (same ``fedbench.run_id`` tag) is replaced, so writing
    again after a re-run leaves one MLflow run per stored run. Returns the MLflow run ids."""
    try:
        from mlflow.entities import Metric, Param, RunStatus
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient
    except ImportError as e:
        raise ConfigError("--mlflow needs MLflow: pip install 'fedbench-suite[mlflow]' (mlflow-skinny; a "
                          "sqlite:/// tracking URI needs the full mlflow package)") from e
    uri = mlflow_uri(target)
    by_run = dict(tuple(per_round(store, run_ids).groupby("run_id")))
    runs = store.runs().set_index("run_id")
    written = []
    with _file_store_allowed(uri):
        try:
            client = MlflowClient(tracking_uri=uri)
            found = client.get_experiment_by_name(experiment)
            exp_id = found.experiment_id if found is not None else client.create_experiment(experiment)
        except MlflowException as e:
            raise ConfigError(f"MLflow at {uri} cannot be used: {str(e).splitlines()[0]}") from e
        for run_id in [r for r in run_ids if r in runs.index]:
            row = runs.loc[run_id]
            for old in client.search_runs([exp_id], filter_string=f"tags.`{MLFLOW_TAG}` = '{run_id}'"):
                client.delete_run(old.info.run_id)
            started = int(float(row.started) * 1000)
            tags = {MLFLOW_TAG: run_id, "fedbench.status": row.status, "fedbench.dataset": row.dataset,
                    "fedbench.method": row.method, "fedbench.seed": str(row.seed)}
            if isinstance(row.engine, str):
                tags["fedbench.engine"] = row.engine
            if isinstance(row.error, str):
                tags["fedbench.error"] = row.error[:5000]
            made = client.create_run(exp_id, start_time=started, tags=tags,
                                     run_name=f"{row.dataset} {row.method} seed{row.seed}")
            params = [Param(k, v[:6000]) for k, v in flat_config(json.loads(row.config)).items()]
            rows = by_run.get(run_id)
            metrics = [] if rows is None else [Metric(name, value, started, round_) for round_, name, value in round_values(rows)]
            mid = made.info.run_id
            for k in range(0, len(params), _MLFLOW_PARAMS):
                client.log_batch(mid, params=params[k:k + _MLFLOW_PARAMS])
            for k in range(0, len(metrics), _MLFLOW_METRICS):
                client.log_batch(mid, metrics=metrics[k:k + _MLFLOW_METRICS])
            ended = {"done": RunStatus.FINISHED, "running": RunStatus.RUNNING}.get(row.status, RunStatus.FAILED)
            if ended != RunStatus.RUNNING:
                finished = row.finished if pd.notna(row.finished) else None
                client.set_terminated(mid, RunStatus.to_string(ended),
                                      end_time=int(float(finished) * 1000) if finished is not None else None)
            written.append(mid)
    return written
