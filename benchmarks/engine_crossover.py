"""Where the vectorised engine stops paying on a CPU: both engines on one model at growing sizes.

Runs FedEM (M = 3) on a pooled data set with an MLP of increasing hidden width,
once per engine, in this process, and prints seconds per round and parameters
per learner. `fedbench.engine.CPU_SEQUENTIAL_PARAMS` (the size above which
`--engine auto` runs one client at a time on a CPU) is read off this table.

Usage (Fashion-MNIST from Debian's dataset-fashion-mnist or --data-root):
  python benchmarks/engine_crossover.py [--dataset fashion-mnist] [--hidden 16,64,128,256] [--rounds 10]
"""

from __future__ import annotations

import argparse
import time

import torch

from fedbench.runs.build import build_simulation, load_data, resolve_run
from fedbench.engine import CPU_SEQUENTIAL_PARAMS
from fedbench.plugin.registry import get_registry


def seconds_per_round(registry, dataset: str, hidden: int, engine: str, rounds: int) -> tuple[float, int]:  # noqa: ANN001
    over = {
        "model": "mlp", "model.hidden": hidden, "lr": 0.05, "rounds": rounds, "dataset.n_clients": 100,
        "dataset.partitioner": "label_groups", "dataset.n_groups": 3, "dataset.alpha": 0.4,
    }
    cfg = resolve_run(registry, dataset=dataset, method="fedem", seed=1, overrides=over, engine=engine)
    load_data(registry, cfg)  # loading is not timed
    sim = build_simulation(registry, cfg)
    start = time.perf_counter()
    for r in range(rounds):
        sim.aggregator.fit_round(r)
    return (time.perf_counter() - start) / rounds, sim.n_params


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--hidden", default="16,32,64,128,256")
    p.add_argument("--rounds", type=int, default=10)
    args = p.parse_args()
    registry = get_registry()
    print(f"FedEM (M = 3), {args.dataset}, 100 clients, MLP, {args.rounds} rounds, {torch.get_num_threads()} torch threads; "
          f"auto switches to sequential above {CPU_SEQUENTIAL_PARAMS:,} parameters per learner on a CPU\n")
    print("| hidden | parameters per learner | vectorized s/round | sequential s/round | faster |")
    print("|---|---|---|---|---|")
    for hidden in (int(h) for h in args.hidden.split(",")):
        vec, n = seconds_per_round(registry, args.dataset, hidden, "vectorized", args.rounds)
        seq, _ = seconds_per_round(registry, args.dataset, hidden, "sequential", args.rounds)
        print(f"| {hidden} | {n:,} | {vec:.2f} | {seq:.2f} | {'vectorized' if vec < seq else 'sequential'} ({max(vec, seq) / min(vec, seq):.2f}x) |")


if __name__ == "__main__":
    main()
