"""Seconds per round of the vectorised engine with a step's short-batch rows in a row set of their own
(``SET_COST = 0``, the engine before it merged them) and merged into the full rows' set where that pays
(the engine's ``SET_COST``), alternated in one process on the paper's synthetic benchmark (300 clients).

    python benchmarks/row_sets.py
    python benchmarks/row_sets.py --methods fedem,fedrep --repeat 7 --rounds 2

Per method, one simulation is built and warmed up (2 rounds); then ``--repeat`` times, each variant trains
``--rounds`` further rounds. Printed: the median seconds per round of each variant, the ratio of the
medians and the range of the per-repeat ratios, and the row sets per round each variant ran. The two
variants pad short batches differently, so their numbers agree to rounding, not bit for bit
(``tests/test_engine.py`` checks both against the one-at-a-time path).
"""

from __future__ import annotations

import argparse
import time

from alternation import compare


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default="fedem,fedavg,fedrep,ditto,d-fedem")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--rounds", type=int, default=2, help="rounds per variant and repeat")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    args = p.parse_args()
    import torch

    import fedbench.engine as engine
    from fedbench.runs.build import build_simulation, resolve_run
    from fedbench.plugin.registry import get_registry

    if args.threads:
        torch.set_num_threads(args.threads)
    merged = engine.SET_COST
    real = engine._buckets
    sets = {"split": 0, "merged": 0}
    current = ["split"]

    def counting(*a):  # noqa: ANN002, ANN202
        out = real(*a)
        sets[current[0]] += len(out)
        return out

    engine._buckets = counting
    registry = get_registry()
    print(f"torch threads: {torch.get_num_threads()}; SET_COST {merged}\n")
    print("| method | split s/round | merged s/round | split / merged (range) | row sets per round split, merged |")
    print("|---|---|---|---|---|")
    for method in args.methods.split(","):
        cfg = resolve_run(registry, dataset="synthetic", method=method, seed=1, overrides={"rounds": 200}, engine="vectorized")
        agg = build_simulation(registry, cfg).aggregator
        r = 0
        for _ in range(2):
            agg.fit_round(r)
            r += 1
        times = {"split": [], "merged": []}
        sets.update(split=0, merged=0)
        for _ in range(args.repeat):
            for name, cost in (("split", 0), ("merged", merged)):
                engine.SET_COST, current[0] = cost, name
                start = time.perf_counter()
                for _ in range(args.rounds):
                    agg.fit_round(r)
                    r += 1
                times[name].append((time.perf_counter() - start) / args.rounds)
        engine.SET_COST = merged
        per_round = {k: v / (args.repeat * args.rounds) for k, v in sets.items()}
        print(f"| {method} | {compare(times['split'], times['merged'])} | {per_round['split']:.0f}, {per_round['merged']:.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
