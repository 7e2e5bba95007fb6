"""What the vectorised engine's per-round client check (fedbench.engine.ClientCheck) costs.

    python benchmarks/client_check.py [--methods fedprox,scaffold,apfl,pfedme,ditto] [--rounds 6] [--repeats 3]

On the paper's synthetic federation (300 clients), one torch thread: per method, the seconds a round takes
with the check and with it switched off (alternately, ``--repeats`` times each, rounds 1.. after a warm-up
round 0), and the check's own time in the last round. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from fedbench.runs.build import build_simulation, resolve_run
from fedbench.plugin.registry import get_registry


class _Off:
    def why_not(self, clients, instructions):  # noqa: ANN001, ANN201
        return None


def measure(method: str, rounds: int, check: bool) -> tuple[float, float]:
    reg = get_registry()
    sim = build_simulation(reg, resolve_run(reg, dataset="synthetic", method=method, seed=1, overrides={}, engine="vectorized"))
    agg = sim.aggregator
    spent = [0.0]
    if check:
        inner = agg.engine.check.why_not

        def timed(clients, instructions):  # noqa: ANN001, ANN202
            t = time.perf_counter()
            out = inner(clients, instructions)
            spent[0] = time.perf_counter() - t
            return out
        agg.engine.check.why_not = timed
    else:
        agg.engine.check = _Off()
    agg.fit_round(0)
    t = time.perf_counter()
    for r in range(1, rounds):
        agg.fit_round(r)
    assert not agg.engine.declined, agg.engine.declined  # the built-ins' clients are all alike
    return (time.perf_counter() - t) / (rounds - 1), spent[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default="fedprox,scaffold,apfl,pfedme,ditto")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(1)
    print("| method | round with the check (ms) | round without (ms) | ratio | the check, last round (ms) |")
    print("|---|---|---|---|---|")
    for method in args.methods.split(","):
        on, off, own = [], [], []
        for _ in range(args.repeats):
            a, c = measure(method, args.rounds, True)
            b, _ = measure(method, args.rounds, False)
            on.append(a), off.append(b), own.append(c)
        ratios = [x / y for x, y in zip(on, off)]
        print(f"| {method} | {1e3 * statistics.median(on):.1f} | {1e3 * statistics.median(off):.1f} | "
              f"{statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f}) | {1e3 * statistics.median(own):.2f} |",
              flush=True)


if __name__ == "__main__":
    main()
