"""The paper's real cells, timed in whole rounds, fedbench beside the FedEM authors' code on the same files and device.

    python benchmarks/standin_data.py --root STANDIN --only cifar10,emnist
    python benchmarks/paper_speed.py --data-root STANDIN --device cuda --datasets emnist,cifar10 \
        --methods fedavg,fedem --rounds 2 [--engines auto,sequential,vectorized] \
        [--authors CHECKOUT --authors-python PYTHON] [--out results/paper-speed.md]

Per cell (data set x method, the paper suite's settings, seed 1), in a process of its own:

- **fedbench, in process**: load the data set through its loader, build the run (the engine that ``--engine``
  picks, and why), then ``rounds`` training rounds with an evaluation of every client before the first and
  after each (the authors' protocol with ``--log_freq 1``). Prints seconds to load and build (one
  ``build_simulation``, as a run does), per round and per evaluation, peak host RSS and (CUDA) peak device
  memory, and the final weighted test accuracy.
- **the authors' code** (``--authors``, a checkout of github.com/omarfoq/FedEM): their ``generate_data.py`` on
  the same stand-in files (the split of their README's Table 2 commands), then ``run_experiment.py`` with
  ``--n_rounds rounds-1 --log_freq 1`` (their loop runs ``n_rounds + 1`` rounds, and evaluates when built and
  after each: the same rounds and evaluations as ours), timed from outside: whole process, peak RSS; their
  seconds per evaluation and per round from the times of two lines the ``sitecustomize`` below prints when
  their ``Aggregator.write_logs`` (their evaluation) starts and ends (:func:`authors_times`).
  fedbench is timed the same way from outside (``wall``), so the two walls compare.

Two shims are put on their path, both written by this script into its scratch folder and named in the output (neither
changes their arithmetic):
a ``cvxpy`` module that fails on use (their ``utils/decentralized.py`` imports it at module level and their
centralised runs never call it), and, for CIFAR, a ``sitecustomize`` that skips torchvision's md5 check of the
batches (stand-ins are not the real files, so their checksums differ; the format is the same) and starts their
MobileNetV2 from scratch (their ``pretrained=True`` downloads ImageNet weights; nothing downloads here, and
fedbench's MobileNetV2 starts from scratch too unless given the weights file): the same arithmetic per step; the
same ``sitecustomize`` prints a line when their ``Aggregator.write_logs`` starts and when it ends.
FEMNIST: the authors make per-writer tensors from LEAF's raw images (``data_to_tensor.py``); this script writes
those tensors from the LEAF json stand-in (the same grey levels / 255, writers with more than 2 images), then
runs their ``generate_data.py``. Shakespeare: both codes read LEAF's per-role text files
(``by_play_and_character/*.txt``, which the stand-in writes beside its json); one round at the real size is
hours on a CPU (results/paper-cost.md), so what fits here is ``--window`` on the real-size files (each process
stopped after that many seconds, its peaks so far and how far it got reported) or a stand-in with fewer texts
(``standin_data.py --short-roles``: the paper's 778 clients, short texts; or ``--scale``).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: the authors' Table 2 split commands (their data/*/README.md) and run flags per (data set, method)
AUTHORS_SPLIT = {
    "emnist": ["--n_tasks", "100", "--n_components", "-1", "--alpha", "0.4", "--s_frac", "0.1", "--tr_frac", "0.8",
               "--seed", "12345"],
    "cifar10": ["--n_tasks", "80", "--n_components", "3", "--alpha", "0.4", "--s_frac", "1.0", "--tr_frac", "0.8",
                "--seed", "12345"],
    "cifar100": ["--n_tasks", "100", "--pachinko_allocation_split", "--alpha", "0.4", "--beta", "10", "--s_frac", "1.0",
                 "--tr_frac", "0.8", "--seed", "12345"],
    "femnist": ["--s_frac", "0.15", "--tr_frac", "0.8", "--seed", "12345"],
    "shakespeare": ["--s_frac", "1.0", "--tr_frac", "0.8", "--seed", "12345"],
}
#: where their data scripts find the raw files: (folder under data/<name>/raw_data, our stand-in folder)
AUTHORS_RAW = {"emnist": ("EMNIST", "EMNIST"), "cifar10": ("cifar-10-batches-py", "cifar-10-batches-py"),
               "cifar100": ("cifar-100-python", "cifar-100-python"),
               "shakespeare": ("by_play_and_character", "shakespeare/raw_data/by_play_and_character")}
AUTHORS_METHOD = {"fedavg": ("FedAvg", "1"), "fedem": ("FedEM", "3"), "local": ("local", "1")}

SITECUSTOMIZE = """\
# written by fedbench benchmarks/paper_speed.py: stand-ins are not the real CIFAR files, so their md5 differ
# and nothing downloads here: MobileNetV2 starts from scratch, as fedbench's does without model.weights_path
try:
    import torchvision.datasets.cifar as _cifar
    import torchvision.models as _models
    _cifar.check_integrity = lambda *args, **kwargs: True
    _build = _models.mobilenet_v2

    def _from_scratch(*args, pretrained=False, weights=None, **kwargs):
        return _build(*args, **kwargs)

    _models.mobilenet_v2 = _from_scratch
except Exception:  # noqa: BLE001
    pass

# ... and a print when their Aggregator.write_logs (their evaluation of every client) starts and ends, so that
# their seconds per round and per evaluation are read from the times these lines appear (their arithmetic is not
# touched: the method is wrapped once their module `aggregator` has run)
import importlib.abc
import importlib.util
import sys


class _TimeEvaluations(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "aggregator":
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            inner = module.Aggregator.write_logs

            def write_logs(self, *args, **kwargs):
                print("fedbench-shim: evaluation starts", flush=True)
                try:
                    return inner(self, *args, **kwargs)
                finally:
                    print("fedbench-shim: evaluation ends", flush=True)

            module.Aggregator.write_logs = write_logs

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _TimeEvaluations())
"""
CVXPY = """\
# written by fedbench benchmarks/paper_speed.py: their decentralised mixing matrix only, never called here
def __getattr__(name):
    raise ImportError("cvxpy stand-in: not installed on this machine")
"""


def child(dataset: str, method: str, engine: str, rounds: int, device: str, data_root: str,
          client_state: str = "auto", layout: str = "default") -> dict:
    """One cell in this process: load, build, ``rounds`` rounds with an evaluation before and after each."""
    import resource

    import torch

    torch.set_num_threads(int(os.environ.get("FEDBENCH_THREADS", torch.get_num_threads())))
    from fedbench.runs.build import build_simulation
    from fedbench.plugin.registry import get_registry
    from fedbench.runs.suite import load_suite

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def progress(what: str) -> None:  # stderr: what --window reports of a process it stops
        print(f"progress: {what}", file=sys.stderr, flush=True)

    registry = get_registry()
    suite = load_suite(registry, "paper", seeds=[1], device=device, engine=engine, only_datasets=[dataset],
                       only_methods=[method], client_state=client_state,
                       extra={"channels_last": True} if layout == "channels_last" else None)
    (cfg,) = suite.runs
    t = time.perf_counter()
    sim = build_simulation(registry, cfg, Path(data_root))  # loads the data set, as a run does, once
    sync()
    build_s = time.perf_counter() - t
    agg = sim.aggregator
    progress(f"loaded and built ({len(agg.clients)} clients, {sim.engine})")

    def evaluate() -> tuple[float, float]:
        t = time.perf_counter()
        res = agg.evaluate()
        sync()
        n = sum(r.n_test for r in res)
        progress("evaluated")
        return time.perf_counter() - t, 100 * sum(r.test_acc * r.n_test for r in res) / max(n, 1)

    evals, rounds_s, loss = [evaluate()], [], float("nan")
    for r in range(rounds):
        t = time.perf_counter()
        loss = agg.fit_round(r).train_loss
        sync()
        progress(f"round {r + 1} trained")
        rounds_s.append(time.perf_counter() - t)
        evals.append(evaluate())
    out = {
        "engine": sim.engine + ("; channels_last" if layout == "channels_last" else ""), "clients": len(agg.clients), "train_samples": int(sim.data.train_sizes().sum()),
        "build_s": build_s, "round_s": rounds_s, "eval_s": [e for e, _ in evals],
        "test_acc": evals[-1][1], "train_loss": loss,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if device.startswith("cuda"):
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def timed(cmd: list[str], cwd: str | Path | None = None, env: dict | None = None, timeout: float | None = None) -> dict:
    """``cmd`` in a process of its own: wall seconds, its peak RSS (MB), its peak anonymous memory (MB; RssAnon
    read from /proc every 0.2 s, so a peak shorter than that can be missed), return code and output tails, and
    ``marks``: ``(seconds since start, line)`` of each line of its stdout that :data:`MARK` matches.

    Peak RSS also counts the pages of shared libraries the process has mapped (``import torch`` maps 500-700 MB
    of them, more when the page cache holds them warm: fault-around maps cached neighbours), which no code
    chooses; the anonymous peak is what the run itself allocated: data, models, optimiser state, activations."""
    probe = (
        "import json, re, resource, subprocess, sys, time\n"
        f"MARK = re.compile({MARK.pattern!r})\n"
        "def anon(pid):\n"
        "    try:\n"
        "        for line in open(f'/proc/{pid}/status'):\n"
        "            if line.startswith('RssAnon:'): return int(line.split()[1]) / 1024\n"
        "    except OSError: return 0.0\n"
        "    return 0.0\n"
        "t = time.perf_counter(); limit = float(sys.argv[1]) or None; peak = 0.0\n"
        "p = subprocess.Popen(sys.argv[2:], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)\n"
        "import threading\n"
        "outs = {}; marks = []\n"
        "def read(name, f):\n"
        "    got = []\n"
        "    for line in f:\n"
        "        got.append(line)\n"
        "        if name == 'out' and MARK.match(line): marks.append((time.perf_counter() - t, line.strip()))\n"
        "    outs[name] = ''.join(got)\n"
        "readers = [threading.Thread(target=read, args=(n, f)) for n, f in (('out', p.stdout), ('err', p.stderr))]\n"
        "[r.start() for r in readers]\n"
        "while p.poll() is None:\n"
        "    peak = max(peak, anon(p.pid))\n"
        "    if limit and time.perf_counter() - t > limit: p.kill(); p.wait(); break\n"
        "    time.sleep(0.2)\n"
        "[r.join() for r in readers]\n"
        "rc, out, err = p.returncode, outs.get('out', ''), outs.get('err', '')\n"
        "stopped = bool(limit and time.perf_counter() - t > limit)\n"
        "if stopped: rc, err = -9, err[-3000:] + f'\\nstopped after {limit:.0f} s (--timeout)'\n"
        "wall = time.perf_counter() - t\n"
        "rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n"
        "print(json.dumps({'rc': rc, 'wall': wall, 'rss': rss, 'anon': peak, 'stopped': stopped, 'out': out[-6000:],"
        " 'err': err[-3000:], 'marks': marks}))\n"
    )
    try:
        proc = subprocess.run([sys.executable, "-c", probe, str(timeout or 0), *cmd], capture_output=True, text=True,
                              cwd=cwd, env=env, timeout=(timeout + 30) if timeout else None)
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (subprocess.TimeoutExpired, IndexError, json.JSONDecodeError) as e:
        return {"rc": -1, "wall": float("nan"), "rss": float("nan"), "anon": float("nan"), "out": "",
                "err": f"{type(e).__name__}: {e}"}


def ours(dataset: str, method: str, engine: str, rounds: int, device: str, data_root: Path, timeout: float,
         client_state: str = "auto", layout: str = "default") -> dict:
    res = timed([sys.executable, __file__, "--child", dataset, method, engine, str(rounds), device, str(data_root),
                 client_state, layout],
                env={**os.environ, "PYTHONUNBUFFERED": "1"}, timeout=timeout)
    row = {"code": "fedbench", "dataset": dataset, "method": method, "wall_s": res["wall"], "rss_mb": res["rss"],
           "anon_mb": res["anon"]}
    if res.get("stopped"):
        return {**row, "stopped": reached_ours(res["err"])}
    if res["rc"] != 0:
        return {**row, "error": (res["err"].strip().splitlines() or ["?"])[-1]}
    return {**row, **json.loads(res["out"].strip().splitlines()[-1])}


#: the lines of the authors' output whose times :func:`authors_times` reads: their first progress print ("===>
#: Building data iterators..") and the two lines the shim (:data:`SITECUSTOMIZE`) prints when their
#: ``Aggregator.write_logs`` starts and ends
MARK = re.compile(r"^(===> Building.*|fedbench-shim: evaluation (starts|ends))$")


def authors_times(marks: list) -> dict:
    """Their seconds per evaluation and per round, from the times of the shim's lines around each of their
    evaluations (``write_logs``: when the aggregator is built, then after each round with ``--log_freq 1``):
    an evaluation is from its start to its end, a round from the end of one evaluation to the start of the
    next (the clients' local steps and the aggregation; their mixing). ``build_s`` is from "===> Building data
    iterators.." to the first evaluation's start (data iterators, clients, models)."""
    starts = [t for t, line in marks if line.endswith("evaluation starts")]
    ends = [t for t, line in marks if line.endswith("evaluation ends")]
    ends = ends[:len(starts)]
    if not ends:
        return {}
    out = {"eval_s": [b - a for a, b in zip(starts, ends)], "round_s": [b - a for a, b in zip(ends, starts[1:])]}
    built = [t for t, line in marks if line.startswith("===> Building")]
    if built:
        out["build_s"] = starts[0] - built[0]
    return out


def reached_ours(err: str) -> str:
    """How far a stopped fedbench child got: its last ``progress:`` line on stderr, and its evaluations."""
    marks = re.findall(r"^progress: (.*)$", err, flags=re.M)
    return f"{marks[-1]}, {marks.count('evaluated')} evaluations" if marks else "loading, 0 evaluations"


def reached_authors(out: str) -> str:
    """How far a stopped run of the authors' code got, from its own prints: "===> Building data iterators..",
    "===> Initializing clients..", "==> Clients initialization..", "Training..", and "Global.." per evaluation."""
    marks = [m.strip("=> .") for m in re.findall(r"^(=+> .*|Training\.\.)$", out, flags=re.M)]
    return f"{marks[-1] if marks else 'starting'}, {out.count('Global..')} evaluations"


def prepare_authors(checkout: Path, python: str, scratch: Path, dataset: str, data_root: Path, timeout: float) -> dict:
    """A copy of their checkout with ``dataset`` split by their generate_data.py on our stand-in files."""
    work = scratch / "FedEM"
    if not work.exists():
        shutil.copytree(checkout, work, ignore=shutil.ignore_patterns(".git", "all_data", "logs"))
        shims = scratch / "shims"
        shims.mkdir(exist_ok=True)
        (shims / "cvxpy.py").write_text(CVXPY)
        (shims / "sitecustomize.py").write_text(SITECUSTOMIZE)
    if dataset == "femnist":
        femnist_tensors(data_root / "femnist" / "data" / "all_data",
                        work / "data" / "femnist" / "intermediate" / "data_as_tensor_by_writer")
    else:
        folder, ours_folder = AUTHORS_RAW[dataset]
        raw = work / "data" / dataset / "raw_data"
        raw.mkdir(parents=True, exist_ok=True)
        if not (raw / folder).exists():
            (raw / folder).symlink_to((data_root / ours_folder).resolve())
    res = timed([python, "generate_data.py", *AUTHORS_SPLIT[dataset]], cwd=work / "data" / dataset, env=authors_env(scratch),
                timeout=timeout)
    return {"wall_s": res["wall"], "rss_mb": res["rss"], "rc": res["rc"], "err": res["err"]}


def femnist_tensors(json_dir: Path, out: Path) -> None:
    """LEAF's FEMNIST json written as the authors' ``intermediate/data_as_tensor_by_writer/<writer>.pt`` files.

    Their ``data_to_tensor.py`` makes these from LEAF's raw images: per writer, the 28 x 28 grey levels / 255 as a
    float64 tensor and the labels as int64, writers with more than 2 images only. LEAF's json holds those same
    grey levels / 255 (its own preprocessing resizes the same way), so this is their next step's input for the
    same images; their ``generate_data.py`` then samples and splits it.
    """
    import numpy as np
    import torch

    out.mkdir(parents=True, exist_ok=True)
    for f in sorted(json_dir.glob("*.json")):
        doc = json.loads(f.read_text())
        for user in doc["users"]:
            d = doc["user_data"][user]
            if len(d["y"]) > 2:
                x = torch.from_numpy(np.asarray(d["x"], dtype=np.float64).reshape(-1, 28, 28))
                torch.save((x, torch.tensor(d["y"], dtype=torch.int64)), out / f"{user}.pt")
        del doc


def authors_env(scratch: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(scratch / "shims"), "PYTHONUNBUFFERED": "1"}


def theirs(python: str, scratch: Path, dataset: str, method: str, lr: float, rounds: int, device: str, timeout: float) -> dict:
    name, learners = AUTHORS_METHOD[method]
    work = scratch / "FedEM"
    cmd = [python, "run_experiment.py", dataset, name, "--n_learners", learners, "--n_rounds", str(rounds - 1),
           "--bz", "128", "--lr", f"{lr:g}", "--lr_scheduler", "multi_step", "--log_freq", "1", "--device",
           device.split(":")[0], "--optimizer", "sgd", "--seed", "1234", "--verbose", "1",
           "--logs_dir", str(scratch / "logs" / f"{dataset}-{method}")]
    res = timed(cmd, cwd=work, env=authors_env(scratch), timeout=timeout)
    row = {"code": "authors", "dataset": dataset, "method": method, "wall_s": res["wall"], "rss_mb": res["rss"],
           "anon_mb": res["anon"], "command": " ".join(cmd[1:])}
    if res.get("stopped"):
        return {**row, "stopped": reached_authors(res["out"])}
    if res["rc"] != 0:
        return {**row, "error": (res["err"].strip().splitlines() or ["?"])[-1]}
    accs = re.findall(r"Test Acc: ([0-9.]+)%", res["out"])
    return {**row, **authors_times(res.get("marks", [])), "test_acc": float(accs[-1]) if accs else float("nan"),
            "n_eval": len(accs) // 2 or None}


@functools.lru_cache(maxsize=None)
def suite_train(dataset: str, method: str):  # noqa: ANN201
    """The paper suite's training settings of a cell (its TrainConfig), read once a cell: the projection is
    rewritten after every row."""
    from fedbench.plugin.registry import get_registry
    from fedbench.runs.suite import load_suite

    (cfg,) = load_suite(get_registry(), "paper", seeds=[1], only_datasets=[dataset], only_methods=[method]).runs
    return cfg.train


def suite_lr(dataset: str, method: str) -> float:
    return suite_train(dataset, method).lr


def projection(rows: list[dict]) -> list[str]:
    """One paper run of each measured cell, projected from its measured rounds: the suite's rounds (200) at the
    row's fastest round, plus the suite's evaluations (every ``eval_every`` rounds, round 0 where the suite
    evaluates it) at its mean evaluation, plus its loading and building; both codes by the same rule, so the
    ratio compares them on the device the rows were measured on. Rows without both figures are left out."""
    from fedbench.reporting.store import n_evaluations

    out, totals = [], {}
    for r in rows:
        rs, es = r.get("round_s"), r.get("eval_s")
        if not rs or not es:
            continue
        train = suite_train(r["dataset"], r["method"])
        evals, best_round, mean_eval = n_evaluations(train), min(rs), sum(es) / len(es)
        hours = (train.rounds * best_round + evals * mean_eval + (r.get("build_s") or 0.0)) / 3600
        totals.setdefault((r["dataset"], r["method"], r["code"]), hours)  # a cell's first row of each code
        out.append(f"| {r['dataset']} | {r['method']} | {r['code']} | {train.rounds} x {best_round:.2f} | "
                   f"{evals} x {mean_eval:.2f} | {hours:.3f} | {3 * hours:.3f} |")
    if not out:
        return []
    lines = ["", "One paper run of each cell, projected from the rows above (the suite's rounds at the fastest measured "
             "round, its evaluations at the mean measured evaluation, plus loading and building; the first fedbench row "
             "of a cell is the one compared):", "",
             "| data set | method | code | rounds x s | evaluations x s | one run h | 3 seeds h |", "|---|---|---|---|---|---|---|", *out]
    both = sorted({k[:2] for k in totals if (*k[:2], "authors") in totals and (*k[:2], "fedbench") in totals})
    if both:
        ours_h = sum(totals[(*c, "fedbench")] for c in both)
        theirs_h = sum(totals[(*c, "authors")] for c in both)
        lines += ["", f"Cells measured in both codes ({', '.join('/'.join(c) for c in both)}), 3 seeds each: "
                      f"fedbench {3 * ours_h:.2f} h, the authors' code {3 * theirs_h:.2f} h: **{ours_h / theirs_h:.2f}x** "
                      "their time."]
    return lines


def fmt(rows: list[dict]) -> list[str]:
    lines = ["| data set | method | code | engine | clients | load + build s | s / round | s / evaluation | wall s | "
             "peak RSS MB | peak anon MB | peak GPU MB | test acc % |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def f(v: object, spec: str = ".1f") -> str:
        return "" if v is None or v != v else format(v, spec)

    for r in rows:
        if "stopped" in r:  # --window: the peaks of a process stopped on time, and how far it had got
            lines.append(f"| {r['dataset']} | {r['method']} | {r['code']} | stopped after {r['wall_s']:.0f} s, at: "
                         f"{r['stopped'].replace('|', '/')} |||||| {f(r['rss_mb'], '.0f')} | {f(r.get('anon_mb'), '.0f')} |||")
            continue
        if "error" in r:
            lines.append(f"| {r['dataset']} | {r['method']} | {r['code']} | failed: {r['error'][:160]} ||||||||||")
            continue
        rs, es = r.get("round_s"), r.get("eval_s")
        per_round = f"{min(rs):.2f} (first {rs[0]:.2f})" if rs else ""
        per_eval = f"{sum(es) / len(es):.2f}" if es else ""
        engine = r.get("engine", "their code").replace("|", "/")
        lines.append(f"| {r['dataset']} | {r['method']} | {r['code']} | {engine} | {r.get('clients', '')} | "
                     f"{f(r.get('build_s'))} | {per_round} | {per_eval} | {f(r['wall_s'])} | {f(r['rss_mb'], '.0f')} | {f(r.get('anon_mb'), '.0f')} | "
                     f"{f(r.get('peak_gpu_mb'), '.0f')} | {f(r.get('test_acc'), '.2f')} |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--child", nargs=8, help=argparse.SUPPRESS)
    p.add_argument("--data-root", type=Path)
    p.add_argument("--device", default="cpu")
    p.add_argument("--datasets", default="emnist,cifar10")
    p.add_argument("--methods", default="fedavg,fedem")
    p.add_argument("--engines", default="auto", help="comma-separated: auto, sequential, vectorized")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--client-states", default="auto",
                   help="comma-separated: auto, memory, disk (fedbench's --client-state; one row of ours each)")
    p.add_argument("--layouts", default="default",
                   help="comma-separated: default, channels_last (fedbench's train.channels_last; one row of ours each)")
    p.add_argument("--authors", type=Path, help="a checkout of github.com/omarfoq/FedEM")
    p.add_argument("--authors-python", default=sys.executable)
    p.add_argument("--timeout", type=float, default=1800, help="seconds per process before it is stopped")
    p.add_argument("--window", type=float,
                   help="stop every process (both codes) after this many seconds and report its peak memory so far "
                        "and how far it got (a real-size cell whose round takes hours on this CPU)")
    p.add_argument("--out", default="results/paper-speed.md")
    args = p.parse_args()
    if args.child:
        dataset, method, engine, rounds, device, root, client_state, layout = args.child
        print(json.dumps(child(dataset, method, engine, int(rounds), device, root, client_state, layout)))
        return
    if args.data_root is None:
        p.error("--data-root is required")
    limit = args.window or args.timeout  # a run's process; the authors' generate_data.py keeps --timeout
    started = time.time()
    rows: list[dict] = []
    lines_head = [
        "## " + time.strftime("%Y-%m-%d") + f": {args.device}",
        "",
        f"`python benchmarks/paper_speed.py --data-root STANDIN --device {args.device} --datasets {args.datasets} "
        f"--methods {args.methods} --engines {args.engines} --rounds {args.rounds} --client-states {args.client_states}"
        f" --layouts {args.layouts}{f' --window {args.window:g}' if args.window else ''}"
        f"{' --authors CHECKOUT' if args.authors else ''}` on {platform.machine()}, {os.cpu_count()} CPUs.",
        f"Every cell: {args.rounds} rounds and {args.rounds + 1} evaluations (before the first round, after each)"
        + (f"; every process stopped after {args.window:g} s at the latest (`--window`), its peaks so far reported."
           if args.window else "."),
        "",
    ]

    def write() -> None:
        device = args.device
        if device.startswith("cuda"):
            import torch

            device = f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
        text = "\n".join([*lines_head, f"Device: {device}; {time.time() - started:.0f} s in all.", "", *fmt(rows),
                          *projection(rows)]) + "\n"
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)

    scratch = Path(tempfile.mkdtemp(prefix="paper-speed-"))
    try:
        for dataset in args.datasets.split(","):
            prepared = None
            for method in args.methods.split(","):
                for engine in args.engines.split(","):
                    for state, layout in [(s, lay) for s in args.client_states.split(",") for lay in args.layouts.split(",")]:
                        row = ours(dataset, method, engine, args.rounds, args.device, args.data_root, limit, state,
                                   layout)
                        rows.append(row)
                        print(fmt([row])[-1], flush=True)
                        write()
                if args.authors and dataset in AUTHORS_SPLIT and method in AUTHORS_METHOD:
                    if prepared is None:
                        prepared = prepare_authors(args.authors, args.authors_python, scratch, dataset, args.data_root,
                                                   args.timeout)
                        print(f"authors' generate_data.py for {dataset}: {prepared['wall_s']:.1f} s, "
                              f"{prepared['rss_mb']:.0f} MB, rc {prepared['rc']} {prepared['err'][-300:] if prepared['rc'] else ''}",
                              flush=True)
                    if prepared["rc"] == 0:
                        row = theirs(args.authors_python, scratch, dataset, method, suite_lr(dataset, method),
                                     args.rounds, args.device, limit)
                        rows.append(row)
                        print(fmt([row])[-1], flush=True)
                        if "command" in row:
                            lines_head.append(f"- authors, {dataset} {method}: `{row['command']}`")
                        write()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    write()
    print(Path(args.out).read_text())


if __name__ == "__main__":
    main()
