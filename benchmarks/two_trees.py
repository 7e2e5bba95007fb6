"""Two checkouts of fedbench side by side: do they compute the same numbers, and at what speed?

    git worktree add /tmp/before REV
    python benchmarks/two_trees.py numbers /tmp/before .          # every built-in method, both engines
    python benchmarks/two_trees.py speed /tmp/before . [--repeats 3] [--steps 40]
    python benchmarks/two_trees.py synthetic /tmp/before . [--repeats 3] [--steps 20]

Each tree runs in processes of its own with its own core *and* its own built-in plugins: an editable install
maps the module ``fedbench_plugins`` to one checkout's ``plugins/`` whatever ``PYTHONPATH`` says about
``fedbench``, so a worktree would otherwise run its core with the installed checkout's plugins. Here each child
gets a scratch folder with ``fedbench_plugins`` linked to that tree's ``plugins/``, first on its path.

``numbers``: every registered method for 3 rounds on a tiny synthetic federation (8 clients, batch 7, so short
batches are padded), with the default training settings (momentum 0.9, weight decay 5e-4) and with momentum and
weight decay of its own, on each engine; prints, per (method, settings, engine), whether the global parameters,
round losses and evaluations are bit-identical between the trees, else the largest difference; and how far the
two engines are apart in each tree.

``speed``: the one-at-a-time training loop with the paper's EMNIST CNN on CPU (``Learner.fit_epochs``, batches
of 128, momentum and weight decay), one torch thread, the trees alternated ``--repeats`` times; prints
milliseconds per step per run and the ratio of the medians.

``synthetic``: the paper's synthetic FedEM cell (300 clients, 3 learners) on the vectorised engine, ``--steps``
training rounds after one warm-up round, one torch thread, the trees alternated: milliseconds per round.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

DUMP = r'''
import sys, torch
from fedbench.runs.build import build_simulation, resolve_run
from fedbench.plugin.registry import get_registry
torch.set_num_threads(1)
reg, out = get_registry(), {}
tiny = {"dataset.n_clients": 8, "dataset.n_test": 40, "dataset.dim": 10, "rounds": 3, "batch_size": 7}
for method in sorted(reg.names("method")):
    for label, extra in [("defaults", {}), ("mom+wd", {"momentum": 0.5, "weight_decay": 1e-3})]:
        for engine in ("sequential", "vectorized"):
            try:
                cfg = resolve_run(reg, dataset="synthetic", method=method, seed=5, overrides={**tiny, **extra}, engine=engine)
                agg = build_simulation(reg, cfg).aggregator
            except Exception as e:  # a method the engine or these settings refuse: compared as its message
                out[(method, label, engine)] = type(e).__name__
                continue
            losses = [agg.fit_round(r).train_loss for r in range(3)]
            scores = [(r.client_id, r.train_loss, r.test_acc) for r in agg.evaluate()]
            out[(method, label, engine)] = (torch.cat([p.reshape(-1) for p in agg.global_params]), losses, scores)
torch.save(out, sys.argv[1])
'''

SPEED = r'''
import sys, time, torch
from fedbench.fl.learner import Learner, SGDConfig, epoch_orders
from fedbench.fl.seeding import generator
from fedbench.fl.tasks import MulticlassTask
from fedbench_plugins.models.networks import femnist_cnn
torch.set_num_threads(1)
steps = int(sys.argv[1])
torch.manual_seed(0)
learner = Learner(femnist_cnn((1, 28, 28), 62), MulticlassTask())
x, y = torch.randn(128 * steps, 1, 28, 28), torch.randint(0, 62, (128 * steps,))
sgd = SGDConfig(lr=0.01, momentum=0.9, weight_decay=5e-4, batch_size=128)
orders = epoch_orders(generator(0), 1, len(y))
learner.fit_epochs(x[:256], y[:256], None, sgd, epoch_orders(generator(1), 1, 256))  # warm-up
t = time.perf_counter()
learner.fit_epochs(x, y, None, sgd, orders)
print(1000 * (time.perf_counter() - t) / steps)
'''

SYNTHETIC = r'''
import sys, time, torch
from fedbench.runs.build import build_simulation, resolve_run
from fedbench.plugin.registry import get_registry
torch.set_num_threads(1)
rounds, reg = int(sys.argv[1]), get_registry()
agg = build_simulation(reg, resolve_run(reg, dataset="synthetic", method="fedem", seed=1, engine="vectorized")).aggregator
agg.fit_round(0)
t = time.perf_counter()
for r in range(1, rounds + 1):
    agg.fit_round(r)
print(1000 * (time.perf_counter() - t) / rounds)
'''


def _child(tree: Path, code: str, *args: str) -> str:
    """Run ``code`` with ``tree``'s core and built-in plugins; its stdout."""
    with tempfile.TemporaryDirectory() as scratch:
        os.symlink(tree.resolve() / "plugins", Path(scratch) / "fedbench_plugins")
        env = {**os.environ, "PYTHONPATH": f"{scratch}{os.pathsep}{tree.resolve()}"}
        proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=scratch)
    if proc.returncode:
        raise SystemExit(f"{tree}: {proc.stderr.strip().splitlines()[-1]}")
    return proc.stdout


def numbers(a: Path, b: Path) -> None:
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        files = [Path(tmp) / "a.pt", Path(tmp) / "b.pt"]
        for tree, file in zip((a, b), files):
            _child(tree, DUMP, str(file))
        first, second = (torch.load(f, weights_only=False) for f in files)
    print(f"| method | settings | engine | {a} vs {b} | engines apart in {a} | in {b} |\n|---|---|---|---|---|---|")
    for key in sorted(first):
        x, y = first[key], second.get(key)
        if isinstance(x, str) or isinstance(y, str):
            same = "same refusal" if x == y else f"{x!r} vs {y!r}"
        elif torch.equal(x[0], y[0]) and x[1] == y[1] and x[2] == y[2]:
            same = "bit-identical"
        else:
            evals = max(abs(u - v) for r, t in zip(x[2], y[2]) for u, v in zip(r[1:], t[1:]))
            same = (f"params differ by {float((x[0] - y[0]).abs().max()):.2e}, losses by "
                    f"{max(abs(p - q) for p, q in zip(x[1], y[1])):.2e}, evaluations by {evals:.2e}")
        apart = []
        if key[2] == "vectorized":
            for run in (first, second):
                seq, vec = run.get((key[0], key[1], "sequential")), run[key]
                ok = not isinstance(seq, str) and not isinstance(vec, str)
                apart.append(f"{float((seq[0] - vec[0]).abs().max()):.2e}" if ok else "-")
        print(f"| {key[0]} | {key[1]} | {key[2]} | {same} | {' | '.join(apart) or ' | '} |")


def speed(a: Path, b: Path, repeats: int, steps: int, code: str = SPEED, unit: str = "step") -> None:
    times: dict[Path, list[float]] = {a: [], b: []}
    for _ in range(repeats):
        for tree in (a, b):
            times[tree].append(float(_child(tree, code, str(steps))))
    for tree, ms in times.items():
        print(f"{tree}: {', '.join(f'{t:.1f}' for t in ms)} ms per {unit} (median {statistics.median(ms):.1f})")
    print(f"ratio {b} / {a}: {statistics.median(times[b]) / statistics.median(times[a]):.3f} "
          f"(runs alternated, {repeats} each, {steps} {unit}s)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("what", choices=("numbers", "speed", "synthetic"))
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=40)
    args = p.parse_args()
    if args.what == "numbers":
        numbers(args.a, args.b)
    elif args.what == "speed":
        speed(args.a, args.b, args.repeats, args.steps)
    else:
        speed(args.a, args.b, args.repeats, args.steps, SYNTHETIC, "round")


if __name__ == "__main__":
    main()
