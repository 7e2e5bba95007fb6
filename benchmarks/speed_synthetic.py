"""Speed benchmark: the vectorised engine against the one-at-a-time path.

Each measurement runs in its own process (so that peak RSS is its own) and
prints one JSON line; the parent prints a comparison table and, with --out,
writes it as Markdown.

Workloads:
  synthetic  the FedEM paper's synthetic setting (300 clients, d = 150, M = 3 for
             FedEM, 201 rounds, evaluation every 20 rounds), FedEM and FedAvg;
             wall time includes data generation
  scale      one FedEM round on 10,000 synthetic clients (n_test = 50), vectorised
  cnn        CIFAR10CNN on CIFAR-shaped random tensors, 80 clients x 64 samples,
             M = 3, 2 rounds
  headline   the paper's synthetic FedEM run as a user starts it, timed from outside
             (process start, imports, data, 200 rounds, 11 evaluations, the results
             file): `fedbench run --dataset synthetic --method fedem`, first with an
             empty data cache (the data are generated), then again (read from the
             content-addressed cache); wall time and peak RSS of the process
  authors    with --authors PATH (a checkout of github.com/omarfoq/FedEM): their
             generate_data.py and run_experiment.py for the same run (FedEM, 3
             learners, 200 rounds - or --authors-rounds -, batch 128, lr 0.1,
             multi_step schedule, evaluation every 20 rounds) in a copy of the
             checkout, with --authors-python (an interpreter with their
             requirements; default this one); wall time and peak RSS

Usage:
  python benchmarks/speed_synthetic.py                      # everything (several minutes)
  python benchmarks/speed_synthetic.py --only synthetic --rounds 21
  python benchmarks/speed_synthetic.py --device cuda --out results/speed_gpu.md
  python benchmarks/speed_synthetic.py --only headline,authors --authors ../FedEM --authors-rounds 20
By default (--device auto) every workload also runs on CUDA when a GPU is present.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path


def _registry_with_bench_data():  # noqa: ANN202
    """The installed plugins plus an in-script plugin providing CIFAR-shaped random data."""
    import torch

    from fedbench import DatasetSpec, FederatedData, hookimpl
    from fedbench.plugin.registry import Registry, load_plugins, new_plugin_manager

    def load(data_root=None, n_clients=80, n_train=64, n_test=64, seed=0):  # noqa: ANN001, ANN202
        g = torch.Generator().manual_seed(seed)
        n = n_clients * (n_train + n_test)
        x = torch.randn(n, 3, 32, 32, generator=g)
        y = torch.randint(0, 10, (n,), generator=g)
        tr = [(x[i * n_train : (i + 1) * n_train], y[i * n_train : (i + 1) * n_train]) for i in range(n_clients)]
        base = n_clients * n_train
        te = [(x[base + i * n_test : base + (i + 1) * n_test], y[base + i * n_test : base + (i + 1) * n_test]) for i in range(n_clients)]
        return FederatedData.from_clients(tr, te, task="multiclass", num_classes=10)

    class BenchPlugin:
        @hookimpl
        def fedbench_datasets(self):  # noqa: ANN202
            return [
                DatasetSpec(
                    name="bench-cifar-shaped",
                    doc="random 3x32x32 tensors, 10 classes (benchmark only)",
                    params={"n_clients": 80, "n_train": 64, "n_test": 64, "seed": 0},
                    load=load,
                    default_model="cifar10cnn",
                )
            ]

    pm = new_plugin_manager()
    failures, packages = load_plugins(pm)
    pm.register(BenchPlugin(), name="bench")
    return Registry(pm, failures, packages)


def child(workload: str, method: str, engine: str, rounds: int, device: str) -> dict:
    import torch

    from fedbench.runs.build import build_simulation, load_data, resolve_run
    from fedbench.fl.metrics import summarise

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", torch.get_num_threads())))
    registry = _registry_with_bench_data()
    if workload == "synthetic":
        dataset, over = "synthetic", {"rounds": rounds, "eval_every": 20}
    elif workload == "scale":
        dataset, over = "synthetic", {"rounds": rounds, "dataset.n_clients": 10_000, "dataset.n_test": 50}
    else:
        dataset, over = "bench-cifar-shaped", {"rounds": rounds, "lr": 0.01, "eval_every": rounds}
    cfg = resolve_run(registry, dataset=dataset, method=method, seed=1, overrides=over, device=device, engine=engine)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    start = time.perf_counter()
    load_data(registry, cfg)
    data_s = time.perf_counter() - start
    sim = build_simulation(registry, cfg)
    train_s = eval_s = 0.0
    metrics: dict = {}
    n_eval = 0
    for r in range(cfg.train.rounds):
        t = time.perf_counter()
        sim.aggregator.fit_round(r)
        sync()
        train_s += time.perf_counter() - t
        if workload != "scale" and cfg.train.is_eval_round(r):
            t = time.perf_counter()
            metrics = summarise(sim.aggregator.evaluate())
            sync()
            eval_s += time.perf_counter() - t
            n_eval += 1
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = {
        "workload": workload, "method": method, "engine": sim.engine, "device": device, "rounds": cfg.train.rounds,
        "clients": sim.data.n_clients, "data_s": data_s, "s_per_round": train_s / cfg.train.rounds,
        "eval_s": eval_s, "n_eval": n_eval, "wall_s": wall, "peak_rss_mb": peak,
        "test_acc": metrics.get("test_acc"),
    }
    if device.startswith("cuda"):
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def _timed(cmd: list[str], cwd: str | Path | None = None, env: dict | None = None) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MB) and stdout of ``cmd``, run in a process of its own that reports them."""
    probe = (
        "import json, resource, subprocess, sys, time\n"
        "t = time.perf_counter()\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "wall = time.perf_counter() - t\n"
        "rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024\n"
        "print(json.dumps({'rc': p.returncode, 'wall': wall, 'rss': rss, 'out': p.stdout[-4000:], 'err': p.stderr[-2000:]}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe, *cmd], capture_output=True, text=True, cwd=cwd, env=env)
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    if res["rc"] != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({res['rc']}):\n{res['err']}")
    return res["wall"], res["rss"], res["out"]


def headline(rounds: int, device: str = "cpu") -> list[dict]:
    """``fedbench run`` of the paper's synthetic FedEM run on ``device``, timed from outside: cold then warm data cache."""
    import sqlite3
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "FEDBENCH_DATA_CACHE": str(Path(tmp) / "cache")}
        for label in ("cold data cache", "warm data cache"):
            results = Path(tmp) / f"{label.split()[0]}.sqlite"
            cmd = [sys.executable, "-m", "fedbench", "run", "--dataset", "synthetic", "--method", "fedem", "--seed", "1",
                   "--rounds", str(rounds - 1), "--eval-every", "20", "--results", str(results), "--no-progress",
                   "--device", device]
            wall, rss, _ = _timed(cmd, cwd=tmp, env=env)
            con = sqlite3.connect(results)
            (engine,) = con.execute("SELECT engine FROM runs").fetchone()
            acc = con.execute("SELECT value FROM metrics WHERE name = 'test_acc' ORDER BY round DESC LIMIT 1").fetchone()
            n_eval = con.execute("SELECT COUNT(*) FROM metrics WHERE name = 'test_acc'").fetchone()[0]
            con.close()
            rows.append({"workload": f"headline ({label})", "method": "fedem", "engine": engine, "device": device,
                         "rounds": rounds - 1, "clients": 300, "data_s": float("nan"), "s_per_round": float("nan"),
                         "eval_s": float("nan"), "n_eval": n_eval, "wall_s": wall, "peak_rss_mb": rss, "test_acc": acc[0]})
    return rows


def authors(checkout: str, python: str, rounds: int, device: str = "cpu") -> dict:
    """The FedEM authors' code on the same run, in a copy of their checkout (it writes data and logs there)."""
    import re
    import shutil
    import tempfile

    src = Path(checkout)
    if not (src / "run_experiment.py").is_file() or not (src / "data" / "synthetic" / "generate_data.py").is_file():
        raise SystemExit(f"--authors {checkout}: not a checkout of github.com/omarfoq/FedEM (no run_experiment.py); "
                         "clone it and pass its folder")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "FedEM"
        shutil.copytree(src, work, ignore=shutil.ignore_patterns(".git", "all_data", "logs"))
        gen_wall, gen_rss, _ = _timed(
            [python, "generate_data.py", "--n_tasks", "300", "--n_classes", "2", "--n_components", "3", "--dimension", "150",
             "--noise_level", "0.1", "--n_test", "5000", "--alpha", "0.4", "--seed", "12345"], cwd=work / "data" / "synthetic")
        wall, rss, out = _timed(
            [python, "run_experiment.py", "synthetic", "FedEM", "--n_learners", "3", "--n_rounds", str(rounds), "--bz", "128",
             "--lr", "0.1", "--lr_scheduler", "multi_step", "--log_freq", "20", "--device", device, "--optimizer", "sgd",
             "--seed", "1234", "--input_dimension", "150", "--output_dimension", "2", "--verbose", "1",
             "--logs_dir", str(work / "logs")], cwd=work)
    accs = re.findall(r"Test Acc: ([0-9.]+)%", out)
    return {"workload": f"authors' code ({rounds} rounds)", "method": "FedEM", "engine": "their code", "device": device,
            "rounds": rounds, "clients": 300, "data_s": gen_wall, "s_per_round": float("nan"), "eval_s": float("nan"),
            "n_eval": len(accs), "wall_s": gen_wall + wall, "peak_rss_mb": max(gen_rss, rss),
            "test_acc": float(accs[-1]) if accs else None}


def run_child(*args: str) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )
    if proc.returncode != 0:
        raise SystemExit(f"benchmark child {args} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fmt(rows: list[dict]) -> str:
    head = "| workload | method | engine | device | clients | rounds | data s | s/round | eval s (n) | wall s | peak RSS MB | test acc |"
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        acc = "" if r["test_acc"] is None else f"{r['test_acc']:.2f}"
        if math.isnan(r["s_per_round"]):  # timed from outside: only wall time and peak RSS
            data = "" if math.isnan(r["data_s"]) else f"{r['data_s']:.1f}"
            lines.append(f"| {r['workload']} | {r['method']} | {r['engine'].split(' ')[0]} | {r['device']} | {r['clients']} "
                         f"| {r['rounds']} | {data} | | ({r['n_eval']}) | {r['wall_s']:.1f} | {r['peak_rss_mb']:.0f} | {acc} |")
            continue
        lines.append(
            f"| {r['workload']} | {r['method']} | {r['engine'].split(' ')[0]} | {r['device']} | {r['clients']} | {r['rounds']} "
            f"| {r['data_s']:.2f} | {r['s_per_round']:.4f} | {r['eval_s']:.2f} ({r['n_eval']}) | {r['wall_s']:.1f} "
            f"| {r['peak_rss_mb']:.0f} | {acc} |"
        )
    return "\n".join(lines)


def ratios(rows: list[dict]) -> list[str]:
    out = []
    by = {(r["workload"], r["method"], r["engine"].split(" ")[0], r["device"]): r for r in rows}
    for (w, m, e, d), r in by.items():
        if e != "vectorized":
            continue
        s = by.get((w, m, "sequential", d))
        if s:
            out.append(
                f"- {w}/{m} on {d}: vectorised is {s['s_per_round'] / r['s_per_round']:.1f}x faster per round, "
                f"{s['wall_s'] / r['wall_s']:.1f}x in wall time; test accuracy {r['test_acc']} vs {s['test_acc']}"
            )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default="synthetic,scale,cnn", help="comma-separated workloads")
    p.add_argument("--rounds", type=int, default=201, help="rounds of the synthetic workload (default 201, as the reference)")
    p.add_argument("--device", default="auto", help="cpu, cuda, or auto: cpu and, when present, cuda")
    p.add_argument("--engines", default="vectorized,sequential")
    p.add_argument("--out", help="also write the table as Markdown here")
    p.add_argument("--authors", help="a checkout of github.com/omarfoq/FedEM: also time their code (workload authors)")
    p.add_argument("--authors-python", default=sys.executable, help="an interpreter with the authors' requirements")
    p.add_argument("--authors-rounds", type=int, default=200, help="rounds of the authors' run (default 200, the whole run)")
    p.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        w, m, e, r, d = args.child
        print(json.dumps(child(w, m, e, int(r), d)))
        return
    rows = []
    engines = args.engines.split(",")
    if args.device == "auto":
        import torch

        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    else:
        devices = [args.device]
    for device, workload in ((d, w) for d in devices for w in args.only.split(",")):
        if workload == "synthetic":
            jobs = [("synthetic", m, e, args.rounds) for m in ("fedem", "fedavg") for e in engines]
        elif workload == "scale":
            jobs = [("scale", "fedem", "vectorized", 1)]
        elif workload == "cnn":
            jobs = [("cnn", "fedem", e, 2) for e in engines]
        elif workload in ("headline", "authors"):
            if workload == "headline":
                found = headline(args.rounds, device)
            elif not args.authors:
                raise SystemExit("workload authors needs --authors PATH (a checkout of github.com/omarfoq/FedEM)")
            else:
                found = [authors(args.authors, args.authors_python, args.authors_rounds, device)]
            for row in found:
                print(json.dumps(row), file=sys.stderr)
            rows.extend(found)
            continue
        else:
            raise SystemExit(f"unknown workload {workload!r}; choose from synthetic, scale, cnn, headline, authors")
        for w, m, e, r in jobs:
            row = run_child(w, m, e, str(r), device)
            print(json.dumps(row), file=sys.stderr)
            rows.append(row)
    table = fmt(rows)
    notes = ratios(rows)
    print(table)
    print("\n".join(notes))
    if args.out:
        cpu = platform.processor() or platform.machine()
        header = (
            f"# Speed: vectorised engine vs one-at-a-time\n\nMade by `python benchmarks/speed_synthetic.py "
            f"{' '.join(sys.argv[1:])}` on {os.cpu_count()} cores ({cpu}), torch threads per process: default.\n\n"
        )
        Path(args.out).write_text(header + table + "\n\n" + "\n".join(notes) + "\n")


if __name__ == "__main__":
    main()
