"""Seconds per round of the vectorised engine with and without its two per-client shortcuts, alternated in
one process on the paper's synthetic benchmark (300 clients):

* whole-data blocks: a client with at most B samples has one batch per epoch, all of its samples; the
  engine trains every such client from one padded block built once per run, its M learners reading the
  inputs once (``VectorizedEngine._whole_fits``; off: its batches are gathered every step like the others);
* batched E- and M-steps: the client type's ``update_weights`` for all clients at once (FedEM's pooled
  softmax; off: ``Client.update_weights``, client by client).

    python benchmarks/whole_batches.py
    python benchmarks/whole_batches.py --methods fedem,fedrep --repeat 7 --rounds 2

Per method, one simulation is built and warmed up (2 rounds); then ``--repeat`` times, each variant trains
``--rounds`` further rounds ("off" first on even repeats, "on" first on odd ones). Printed: the median
seconds per round of each variant, the ratio of the medians, the range of the per-repeat ratios and the
ratio of the fastest repeats. The variants sum gradients and posteriors in other orders, so they agree to
rounding (``tests/test_engine.py`` and ``tests/test_fedem_math.py`` check each against the reference).
"""

from __future__ import annotations

import argparse
import time

from alternation import compare


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default="fedem,fedavg,fedrep,ditto,d-fedem")
    p.add_argument("--repeat", type=int, default=6)
    p.add_argument("--rounds", type=int, default=2, help="rounds per variant and repeat")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    args = p.parse_args()
    import torch

    from fedbench import Client
    from fedbench.runs.build import build_simulation, resolve_run
    from fedbench.engine import VectorizedEngine
    from fedbench.plugin.registry import get_registry

    if args.threads:
        torch.set_num_threads(args.threads)
    registry = get_registry()
    fits = VectorizedEngine._whole_fits
    print(f"torch threads: {torch.get_num_threads()}\n")
    print("| method | off s/round | on s/round | off / on (range) | fastest off / fastest on |")
    print("|---|---|---|---|---|")
    for method in args.methods.split(","):
        cfg = resolve_run(registry, dataset="synthetic", method=method, seed=1, overrides={"rounds": 200}, engine="vectorized")
        agg = build_simulation(registry, cfg).aggregator
        cls = type(agg.clients[0])
        owner = next(k for k in cls.__mro__ if "update_weights" in vars(k))
        batched = vars(owner)["update_weights"]

        def variant(on: bool) -> None:
            VectorizedEngine._whole_fits = fits if on else (lambda self, batch: False)
            if owner is not Client:
                setattr(owner, "update_weights", batched if on else classmethod(Client.update_weights.__func__))

        r = 0
        for _ in range(2):
            agg.fit_round(r)
            r += 1
        times: dict[str, list[float]] = {"off": [], "on": []}
        for rep in range(args.repeat):
            for name in (("off", "on") if rep % 2 == 0 else ("on", "off")):
                variant(name == "on")
                start = time.perf_counter()
                for _ in range(args.rounds):
                    agg.fit_round(r)
                    r += 1
                times[name].append((time.perf_counter() - start) / args.rounds)
        variant(True)
        print(f"| {method} | {compare(times['off'], times['on'])} | {min(times['off']) / min(times['on']):.2f} |", flush=True)


if __name__ == "__main__":
    main()
