"""What `fedbench run --suite paper` costs on this machine: every (data set, method) cell, on real-size data.

    python benchmarks/standin_data.py --root /tmp/standin          # format-exact stand-ins, real sizes
    python benchmarks/paper_cost.py --data-root /tmp/standin [--device cpu] [--samples 512]

For every cell of the paper suite (seed 1, the suite's own settings), this
loads the data set through its real loader from the on-disk files, builds the
run exactly as `fedbench run` does (model, client type, aggregator, engine),
then times local training and evaluation of randomly drawn clients holding at
least ``--samples`` training samples between them, through the run's own engine
(the one `fedbench run` picks for this model on this device: one client at a
time, or the drawn clients batched) with the instructions the aggregator sends. A round's cost is that
time scaled by (all clients' training samples / the measured clients'); the
suite's projected cost is, per cell, 200 rounds of training plus its
evaluations (at the start and every ``eval_every`` rounds of the suite: 10 or 5), times 3 seeds.
The batched engine runs the drawn clients at once, so on a GPU give ``--samples``
enough for many clients: fewer clients a pass than a real round overstates its cost. On a CPU one real round of a
MobileNetV2 or LSTM cell takes tens of minutes to hours, so measuring whole
rounds of every cell is out of reach here: the projection is linear in samples
(per-batch costs are what dominate), and the measured samples are printed.

Writes ``results/paper-cost.md`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from fedbench.fl.messages import EvaluateIns
from fedbench.reporting.store import n_evaluations
from fedbench.runs.build import build_simulation, load_data
from fedbench.plugin.registry import get_registry
from fedbench.runs.suite import load_suite


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(cfg, data_root: Path, samples: int, seed: int = 0) -> dict:  # noqa: ANN001
    registry = get_registry()
    start = time.perf_counter()
    load_data(registry, cfg, data_root)
    loaded = time.perf_counter() - start
    sim = build_simulation(registry, cfg, data_root)
    agg = sim.aggregator
    clients = agg.clients
    order = torch.randperm(len(clients), generator=torch.Generator().manual_seed(seed)).tolist()
    chosen, have = [], 0
    for i in order:  # skip giant clients so that one measurement stays minutes, not hours
        if clients[i].n_train <= 4 * samples:
            chosen.append(clients[i])
            have += clients[i].n_train
        if have >= samples:
            break
    lr = cfg.train.learning_rate(0)
    device = torch.device(cfg.device)
    # the run's own engine (the one `fedbench run` picks: one client at a time, or all chosen clients batched)
    # on the round's FitIns and EvaluateIns, as the round loop and the evaluation build them; twice, the second
    # timed (the first pays one-time costs: kernel choice, allocator growth, CUDA's start)
    for _ in range(2):
        instructions = [agg.instructions(0, lr, c) for c in chosen]
        _sync(device)
        t = time.perf_counter()
        agg.engine.fit(chosen, instructions)
        _sync(device)
        train_s = time.perf_counter() - t
        del instructions
        scoring = [EvaluateIns(agg.configure_evaluate(c), buffers=agg.buffers_for(c)) for c in chosen]
        t = time.perf_counter()
        agg.engine.evaluate(chosen, scoring)
        _sync(device)
        eval_s = time.perf_counter() - t
    total_train = sum(c.n_train for c in clients)
    total_eval = sum(c.n_train + c.data.n_test for c in clients)
    measured_eval = sum(c.n_train + c.data.n_test for c in chosen)
    round_s = train_s * total_train / max(have, 1)
    eval_round_s = eval_s * total_eval / max(measured_eval, 1)
    evals = n_evaluations(cfg.train)  # the run's evaluations, the one at the start included
    return {
        "clients": len(clients), "train samples": total_train, "measured samples": have,
        "load s": loaded, "round s": round_s, "eval s": eval_round_s,
        "run h": (cfg.train.rounds * round_s + evals * eval_round_s) / 3600, "engine": sim.engine.split(" (")[0],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", type=Path, required=True)
    p.add_argument("--device", default="cpu")
    p.add_argument("--samples", type=int, default=512, help="training samples to time per cell (at least)")
    p.add_argument("--datasets", help="comma-separated subset of the paper suite's data sets")
    p.add_argument("--methods", help="comma-separated subset of the paper suite's methods")
    p.add_argument("--out", default="results/paper-cost.md")
    args = p.parse_args()
    suite = load_suite(get_registry(), "paper", seeds=[1], device=args.device)
    runs = [c for c in suite.runs
            if (not args.datasets or c.dataset in args.datasets.split(","))
            and (not args.methods or c.method in args.methods.split(","))]
    seeds = 3
    rows = []
    started = time.time()
    for cfg in runs:
        r = measure(cfg, args.data_root, args.samples)
        rows.append((cfg.dataset, cfg.method, cfg.model, r))
        print(f"{cfg.dataset:<12} {cfg.method:<10} round {r['round s']:9.1f}s  eval {r['eval s']:8.1f}s  "
              f"run {r['run h']:7.2f}h  (measured {r['measured samples']} of {r['train samples']} samples)", flush=True)
    total_h = seeds * sum(r["run h"] for *_, r in rows)
    device = args.device if args.device == "cpu" else torch.cuda.get_device_name(torch.device(args.device))
    lines = [
        "# What the paper suite costs",
        "",
        f"`python benchmarks/paper_cost.py --data-root STANDIN --device {args.device} --samples {args.samples}` on "
        f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} torch threads, device {device}), "
        f"{time.time() - started:.0f} s, on the real-size stand-ins of `benchmarks/standin_data.py`. "
        "Per cell (seed 1, the suite's own settings): local training and evaluation timed on random clients "
        "holding at least the measured samples, through the engine a run picks (the second of two passes), "
        "scaled linearly to all clients' samples; a run is 200 rounds plus an evaluation at the start and every "
        "`eval_every` rounds (10 on CIFAR-10, 5 on the others). Projections, not measurements of whole rounds.",
        "",
        "| data set | method | model | engine | clients | train samples | measured | load (s) | round (s) | eval (s) | one run (h) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for dataset, method, model, r in rows:
        lines.append(
            f"| {dataset} | {method} | {model} | {r['engine']} | {r['clients']} | {r['train samples']:,} | {r['measured samples']:,} | "
            f"{r['load s']:.1f} | {r['round s']:.1f} | {r['eval s']:.1f} | {r['run h']:.2f} |"
        )
    lines += ["", f"Whole suite ({len(rows)} cells x {seeds} seeds), projected: **{total_h:,.0f} hours** "
              f"({total_h / 24:,.1f} days) on this device, one run at a time."]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
