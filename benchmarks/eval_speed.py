"""Seconds per evaluation of every client on the paper's synthetic benchmark (300 clients) for methods whose
clients are scored with parameters of their own, with the vectorised engine scoring many such clients per
pass (``VectorizedEngine._evaluate_own``) against one pass per client (the engine before it), alternated
in one process.

    python benchmarks/eval_speed.py
    python benchmarks/eval_speed.py --methods local,d-fedem --repeat 7

Per method, one simulation is built, trained one round and evaluated once (warm-up); then ``--repeat``
times each variant evaluates every client ("per client" first on even repeats). Printed: the median
seconds of each variant, the ratio of the medians with the range of the per-repeat ratios, and the
mean test accuracy of both (the two sum in other orders: equal to rounding).
"""

from __future__ import annotations

import argparse
import time

from alternation import compare


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default="local,d-fedavg,d-fedem")
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    import torch

    from fedbench.runs.build import build_simulation, resolve_run
    from fedbench.engine import VectorizedEngine
    from fedbench.fl.metrics import summarise
    from fedbench.plugin.registry import get_registry

    registry = get_registry()
    batched = VectorizedEngine._evaluate_own

    def per_client(self, clients, params):  # noqa: ANN001, ANN202
        return [VectorizedEngine.evaluate(self, [c], [p])[0] for c, p in zip(clients, params)]

    print(f"torch threads: {torch.get_num_threads()}\n")
    print("| method | per client s | many per pass s | per client / many (range) | test_acc per client, many |")
    print("|---|---|---|---|---|")
    for method in args.methods.split(","):
        cfg = resolve_run(registry, dataset="synthetic", method=method, seed=1, overrides={"rounds": 200}, engine="vectorized")
        agg = build_simulation(registry, cfg).aggregator
        agg.fit_round(0)
        agg.evaluate()
        times: dict[str, list[float]] = {"per": [], "many": []}
        acc = {}
        for rep in range(args.repeat):
            for name in (("per", "many") if rep % 2 == 0 else ("many", "per")):
                VectorizedEngine._evaluate_own = per_client if name == "per" else batched
                start = time.perf_counter()
                results = agg.evaluate()
                times[name].append(time.perf_counter() - start)
                acc[name] = summarise(results)["test_acc"]
        VectorizedEngine._evaluate_own = batched
        print(f"| {method} | {compare(times['per'], times['many'])} | {acc['per']:.4f}, {acc['many']:.4f} |", flush=True)


if __name__ == "__main__":
    main()
