"""Where a paper cell's clients keep their state between rounds, and what a round costs for each place.

    python benchmarks/standin_data.py --root /tmp/standin --only emnist
    python benchmarks/client_state_rounds.py --data-root /tmp/standin [--dataset emnist] [--method fedavg]
        [--places memory,disk,disk@/dev/shm] [--rounds 4]

Builds the cell (paper suite, seed 1) once per place in this one process (``memory``; ``disk``: files under
``$FEDBENCH_STATE_DIR`` or the temporary folder; ``disk@FOLDER``: files under FOLDER) and trains the same
rounds on each, the places alternated round by round (forward, then backward) so that the machine's drift
falls on all of them alike. Prints each round's seconds with the process's user and system CPU seconds and
minor page faults over it, then each place's mean over the rounds after the first (the first pays one-time
costs). Nothing is written: the figures go to results/ by hand, with this command.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-root", type=Path, required=True)
    p.add_argument("--dataset", default="emnist")
    p.add_argument("--method", default="fedavg")
    p.add_argument("--places", default="memory,disk,disk@/dev/shm")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from fedbench.plugin.registry import get_registry
    from fedbench.runs.build import build_simulation
    from fedbench.runs.suite import load_suite

    registry = get_registry()
    aggregators = {}
    for place in args.places.split(","):
        mode, _, folder = place.partition("@")
        if folder:
            os.environ["FEDBENCH_STATE_DIR"] = folder
        else:
            os.environ.pop("FEDBENCH_STATE_DIR", None)
        (cfg,) = load_suite(registry, "paper", seeds=[1], only_datasets=[args.dataset], only_methods=[args.method],
                            client_state=mode).runs
        sim = build_simulation(registry, cfg, args.data_root)
        aggregators[place] = sim.aggregator
        print(f"{place}: {sim.engine}", flush=True)
    seconds: dict[str, list[float]] = {place: [] for place in aggregators}
    for r in range(args.rounds):
        order = list(aggregators.items())
        for place, agg in order if r % 2 == 0 else order[::-1]:
            before, t = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            agg.fit_round(r)
            seconds[place].append(time.perf_counter() - t)
            after = resource.getrusage(resource.RUSAGE_SELF)
            print(f"{place} round {r}: {seconds[place][-1]:.2f} s (user {after.ru_utime - before.ru_utime:.2f} s, "
                  f"system {after.ru_stime - before.ru_stime:.2f} s, minor faults {after.ru_minflt - before.ru_minflt:,})",
                  flush=True)
    print(f"\nmean s / round over rounds 2..{args.rounds} ({args.dataset} {args.method}, {args.threads} threads):")
    for place, ts in seconds.items():
        later = ts[1:] or ts
        print(f"  {place}: {sum(later) / len(later):.2f} (min {min(later):.2f}, max {max(later):.2f}; all "
              f"{', '.join(f'{x:.2f}' for x in ts)})")


if __name__ == "__main__":
    main()
