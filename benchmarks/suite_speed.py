"""Wall time of a whole suite under two (or more) fedbench installs, run one after another here.

    python benchmarks/suite_speed.py --python before=/tmp/venv-before/bin/python --python now=.venv/bin/python \
        --suite baselines-synthetic --seed 1 --jobs 2 --out results/suite_speed.md

Each ``LABEL=INTERPRETER`` is a Python with some checkout of fedbench installed (for an older commit:
``git worktree add /tmp/before REV``, a virtual environment, ``pip install --no-deps /tmp/before``). Every
install runs ``fedbench run --suite SUITE --seed SEED --jobs JOBS`` (its own copy of the suite: methods
added or renamed since are listed as they are) into a fresh results file; the script times each
sweep's wall clock and reads per run, from the store, the seconds it took, the engine it used and its
last test accuracy. Printed: the sweeps' wall times and their ratio to the first install's, then per
method the seconds per round (a run's seconds / its rounds, evaluations included), each install's
engine, the ratio to the first install and to the headline method's round, and the accuracies.
``--repeat 2`` runs the installs alternately twice (timings on a shared machine are noisy).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def sweep(python: str, suite: str, seed: int, jobs: int, results: Path, extra: list[str]) -> float:
    """Run the suite with ``python``'s fedbench into ``results``; return its wall time in seconds. The sweep
    starts with an empty data cache of its own (an install that has one generates each data set once)."""
    cmd = [python, "-m", "fedbench", "run", "--suite", suite, "--seed", str(seed), "--jobs", str(jobs),
           "--results", str(results), *extra]
    start = time.perf_counter()
    # run outside any checkout: ``python -m`` puts the working directory first on sys.path
    env = {**os.environ, "FEDBENCH_DATA_CACHE": str(results.with_suffix(".cache"))}
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=results.parent, env=env)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    return wall


def runs(results: Path) -> dict[str, dict]:
    """Per method: seconds, rounds, engine, last test accuracy of its (one) done run."""
    con = sqlite3.connect(results)
    out = {}
    for run_id, method, rounds, engine, started, finished in con.execute(
        "SELECT run_id, method, rounds, engine, started, finished FROM runs WHERE status = 'done'"
    ):
        acc = con.execute(
            "SELECT value FROM metrics WHERE run_id = ? AND name = 'test_acc' ORDER BY round DESC LIMIT 1", (run_id,)
        ).fetchone()
        out[method] = {"seconds": finished - started, "rounds": rounds, "engine": (engine or "").split(" ")[0].rstrip(":"),
                       "acc": acc[0] if acc else float("nan")}
    con.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--python", action="append", required=True, help="LABEL=INTERPRETER (the first is the reference)")
    p.add_argument("--suite", default="baselines-synthetic")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--headline", default="fedem", help="the method whose round the others are compared with")
    p.add_argument("--out", help="also write the Markdown here")
    p.add_argument("extra", nargs="*", help="more arguments for fedbench run (after --)")
    args = p.parse_args()
    installs = [spec.split("=", 1) for spec in args.python]
    walls: dict[str, list[float]] = {label: [] for label, _ in installs}
    per_run: dict[str, list[dict]] = {label: [] for label, _ in installs}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeat):
            for label, python in installs:
                results = Path(tmp) / f"{label}-{rep}.sqlite"
                wall = sweep(python, args.suite, args.seed, args.jobs, results, args.extra)
                walls[label].append(wall)
                per_run[label].append(runs(results))
                print(f"{label} (repeat {rep + 1}): {wall:.0f} s", flush=True)
    ref = installs[0][0]
    lines = [f"`{args.suite}`, seed {args.seed}, `--jobs {args.jobs}`; sweeps run alternately, {args.repeat} time(s) each.", "",
             "| install | suite wall time (s) | x faster than " + ref + " |", "|---|---|---|"]
    for label, _ in installs:
        speed = [r / w for r, w in zip(walls[ref], walls[label])]
        lines.append(f"| {label} | {', '.join(f'{w:.0f}' for w in walls[label])} | "
                     f"{', '.join(f'{s:.2f}' for s in speed)} |")
    methods = sorted({m for label in per_run for rep in per_run[label] for m in rep})
    head = "| method | " + " | ".join(f"{label}: engine, s/round" for label, _ in installs)
    head += " | " + " | ".join(f"{label} x {ref}" for label, _ in installs[1:])
    head += " | " + " | ".join(f"{label}: x {args.headline}'s round" for label, _ in installs)
    head += " | " + " | ".join(f"{label}: test_acc" for label, _ in installs) + " |"
    lines += ["", head, "|" + "---|" * (1 + 4 * len(installs) - 1)]

    def s_round(label: str, method: str) -> list[float]:
        return [rep[method]["seconds"] / rep[method]["rounds"] for rep in per_run[label] if method in rep]

    for m in methods:
        cells = [m]
        for label, _ in installs:
            engines = {rep[m]["engine"] for rep in per_run[label] if m in rep}
            cells.append(f"{'/'.join(sorted(engines)) or '-'}, {', '.join(f'{v:.3f}' for v in s_round(label, m)) or '-'}")
        for label, _ in installs[1:]:
            a, b = s_round(ref, m), s_round(label, m)
            cells.append(f"{min(a) / max(b):.1f}-{max(a) / min(b):.1f}" if a and b else "-")
        for label, _ in installs:
            a, h = s_round(label, m), s_round(label, args.headline)
            cells.append(", ".join(f"{x / y:.1f}" for x, y in zip(a, h)) or "-")
        for label, _ in installs:
            cells.append(", ".join(f"{rep[m]['acc']:.2f}" for rep in per_run[label] if m in rep) or "-")
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    json.dump({"walls": walls, "runs": per_run}, sys.stderr if not args.out else open(Path(args.out).with_suffix(".json"), "w"))


if __name__ == "__main__":
    main()
