"""Seconds per round of every method on the paper's synthetic benchmark: the engine ``auto`` picks
against one client at a time, in one process, each timed over the same rounds.

    python benchmarks/methods_speed.py --rounds 10 --out results/methods_speed.md
    python benchmarks/methods_speed.py --methods fedavg+,fedprox --rounds 5
    python benchmarks/methods_speed.py --methods fedavg,fedem --set model=mlp --set model.batch_norm=true

Each (method, engine) is built afresh (data generation not timed), trained ``--rounds`` rounds
(the first one, with torch's warm-up, is not counted), then evaluated once. Printed per method: the
engine auto chose, s/round with auto and with the sequential path, their ratio, and the test
accuracy both reach after the same rounds (they must agree: the engines compute the same numbers).
For a method the vectorised engine newly runs, the sequential column is its speed before.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

METHODS = ["fedem", "fedavg", "local", "fedprox", "fedavg+", "fedavgm", "fedadam", "fedyogi", "clustered", "d-fedavg",
           "d-fedem", "ditto", "scaffold", "apfl", "pfedme", "qffl", "fedrep", "fedbn", "afl", "l2sgd"]


def time_method(registry, method: str, engine: str, rounds: int, clients: int, extra: dict | None = None):  # noqa: ANN001, ANN201
    from fedbench.runs.build import build_simulation, resolve_run
    from fedbench.fl.metrics import summarise

    cfg = resolve_run(registry, dataset="synthetic", method=method, seed=1,
                      overrides={"dataset.n_clients": clients, "rounds": 200, **(extra or {})}, engine=engine)
    sim = build_simulation(registry, cfg)
    times = []
    for r in range(rounds):
        start = time.perf_counter()
        sim.aggregator.fit_round(r)
        times.append(time.perf_counter() - start)
    acc = summarise(sim.aggregator.evaluate())["test_acc"]
    return sim.engine, statistics.median(times[1:] or times), acc


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--clients", type=int, default=300, help="synthetic clients (the paper: 300)")
    p.add_argument("--out", help="also write the table here (Markdown)")
    p.add_argument("--auto-only", action="store_true", help="time only the engine auto picks (e.g. for an older checkout)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting for every run, as fedbench run --set (e.g. model=mlp)")
    args = p.parse_args()
    import torch

    from fedbench.plugin.registry import get_registry

    torch.set_num_threads(max(1, torch.get_num_threads()))
    from fedbench.fl.config import parse_assignments

    registry = get_registry()
    extra = parse_assignments(args.set)
    rows = []
    for method in args.methods.split(","):
        auto_engine, auto_s, auto_acc = time_method(registry, method, "auto", args.rounds, args.clients, extra)
        if auto_engine.startswith("sequential") or args.auto_only:
            seq_s, seq_acc = auto_s, auto_acc
        else:
            _, seq_s, seq_acc = time_method(registry, method, "sequential", args.rounds, args.clients, extra)
        row = (method, auto_engine.split(" ")[0], auto_s, seq_s, seq_s / auto_s, auto_acc, seq_acc)
        rows.append(row)
        print(f"{method:<10} {row[1]:<11} auto {auto_s:7.3f} s/round  sequential {seq_s:7.3f} s/round  "
              f"x{row[4]:5.2f}  test_acc {auto_acc:.2f} / {seq_acc:.2f}", flush=True)
    total_auto, total_seq = sum(r[2] for r in rows), sum(r[3] for r in rows)
    fedem = next((r[2] for r in rows if r[0] == "fedem"), None)
    lines = [
        f"Synthetic benchmark, {args.clients} clients, median s/round over rounds 2-{args.rounds} "
        f"(torch {torch.__version__}, {torch.get_num_threads()} threads)" + (f", settings {extra}" if extra else ""),
        "",
        "| method | engine (auto) | s/round auto | s/round sequential | speed-up | x FedEM's round | test_acc auto | test_acc sequential |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m, eng, a, s, ratio, acc_a, acc_s in rows:
        rel = f"{a / fedem:.1f}" if fedem else ""
        lines.append(f"| {m} | {eng} | {a:.3f} | {s:.3f} | {ratio:.2f} | {rel} | {acc_a:.2f} | {acc_s:.2f} |")
    lines += ["", f"Sum of s/round over these methods: auto {total_auto:.2f}, sequential {total_seq:.2f} "
              f"({total_seq / total_auto:.2f}x)."]
    print("\n".join(lines))
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
