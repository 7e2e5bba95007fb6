"""Both codes on the same real images: the paper's EMNIST protocol run on Fashion-MNIST, fedbench beside the authors'.

    apt install dataset-fashion-mnist                    # real images, no download at run time
    python benchmarks/fidelity_real.py --authors CHECKOUT --authors-python PYTHON \
        [--s-frac 0.1] [--rounds 50] [--seeds 1,2,3] [--methods fedavg,fedem] [--out results/fidelity-real.md]

Debian's four Fashion-MNIST IDX files are written, uncompressed, under the names of EMNIST ByClass
(``ROOT/EMNIST/raw/emnist-byclass-*``), where both codes read EMNIST: torchvision's loader in theirs,
``plugins/datasets/idx.py`` in ours. Then, per method and seed:

- **the authors' code** (github.com/omarfoq/FedEM): their ``data/emnist/generate_data.py`` with the README's
  Table 2 split (``--n_tasks 100 --n_components -1 --alpha 0.4 --tr_frac 0.8 --seed 12345``) and ``--s_frac``,
  then ``run_experiment.py emnist METHOD ... --n_rounds R --log_freq 5 --seed S`` with the paper scripts' flags
  and learning rates (their loop runs one round more than ``--n_rounds`` and logs every 5th: the last log is
  after round R, where ours ends);
- **fedbench**: ``fedbench run --suite paper --datasets emnist --methods METHODS --rounds R --seed S
  --set dataset.fraction=S_FRAC``, the same protocol (the suite's learning rates, evaluation every 5 rounds).

Both use the same 70,000 real images and the same split rule, not the same draw (each code its own random
generator), so only the means over seeds compare: a difference in mean final accuracy larger than the seeds'
spread is a protocol difference to find. Prints and writes the table with every command.
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

DEBIAN = Path("/usr/share/datasets/fashion-mnist")
NAMES = {
    "train-images-idx3-ubyte": "emnist-byclass-train-images-idx3-ubyte",
    "train-labels-idx1-ubyte": "emnist-byclass-train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte": "emnist-byclass-test-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte": "emnist-byclass-test-labels-idx1-ubyte",
}
#: their method name and learners per fedbench method, and the learning rate of their paper script (emnist)
THEIRS = {"fedavg": ("FedAvg", 1, 0.01), "fedem": ("FedEM", 3, 0.05)}
CVXPY = "def __getattr__(name):\n    raise ImportError('cvxpy stand-in: not installed here; only decentralised runs use it')\n"


def write_root(source: Path, root: Path) -> None:
    raw = root / "EMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for theirs, emnist in NAMES.items():
        path = next((source / (theirs + ext) for ext in (".gz", "") if (source / (theirs + ext)).is_file()), None)
        if path is None:
            raise SystemExit(f"{source}: no {theirs}[.gz]; apt install dataset-fashion-mnist, or pass --fashion")
        data = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
        (raw / emnist).write_bytes(data)


def run(cmd: list[str], cwd: Path | None = None, env: dict | None = None) -> tuple[str, float]:
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.stdout, time.perf_counter() - t


def authors_runs(checkout: Path, python: str, root: Path, scratch: Path, methods: list[str], seeds: list[int],
                 rounds: int, s_frac: float) -> tuple[dict, list[str]]:
    work = scratch / "FedEM"
    shutil.copytree(checkout, work, ignore=shutil.ignore_patterns(".git", "all_data", "logs"))
    (scratch / "shims").mkdir()
    (scratch / "shims" / "cvxpy.py").write_text(CVXPY)
    raw = work / "data" / "emnist" / "raw_data"
    raw.mkdir(parents=True, exist_ok=True)
    (raw / "EMNIST").symlink_to((root / "EMNIST").resolve())
    env = {**os.environ, "PYTHONPATH": str(scratch / "shims"), "OMP_NUM_THREADS": "1"}
    split = ["--n_tasks", "100", "--n_components", "-1", "--alpha", "0.4", "--s_frac", f"{s_frac:g}", "--tr_frac", "0.8",
             "--seed", "12345"]
    commands = [f"(data/emnist) python generate_data.py {' '.join(split)}"]
    run([python, "generate_data.py", *split], cwd=work / "data" / "emnist", env=env)
    curves: dict = {}
    for method in methods:
        name, learners, lr = THEIRS[method]
        for seed in seeds:
            args = ["emnist", name, "--n_learners", str(learners), "--n_rounds", str(rounds), "--bz", "128", "--lr", f"{lr:g}",
                    "--lr_scheduler", "multi_step", "--log_freq", "5", "--device", "cpu", "--optimizer", "sgd",
                    "--seed", str(seed), "--verbose", "1", "--logs_dir", str(scratch / "logs" / f"{method}-{seed}")]
            out, wall = run([python, "run_experiment.py", *args], cwd=work, env=env)
            accs = [float(a) for a in re.findall(r"Test Acc: ([0-9.]+)%", out)]
            curves[(method, seed)] = (accs, wall)
            commands.append(f"python run_experiment.py {' '.join(args[:-2])}")
            print(f"authors  {method:<7} seed {seed}: {accs[-1]:.2f} % after {5 * (len(accs) - 1)} rounds ({wall:.0f} s)",
                  flush=True)
    return curves, commands


def ours_runs(root: Path, scratch: Path, methods: list[str], seeds: list[int], rounds: int, s_frac: float
              ) -> tuple[dict, list[str]]:
    db = scratch / "fedbench.sqlite"
    curves: dict = {}
    commands = []
    for seed in seeds:
        args = ["run", "--suite", "paper", "--datasets", "emnist", "--methods", ",".join(methods), "--rounds", str(rounds),
                "--seed", str(seed), "--set", f"dataset.fraction={s_frac:g}",
                # their --n_components -1 makes each of EMNIST's 62 labels a group; 52 are empty here, and our
                # partitioner wants only labels present: one group per present label, the same split rule
                "--set", "dataset.n_groups=10", "--data-root", str(root),
                "--results", str(db), "--no-progress", "--jobs", "1"]
        _, wall = run([sys.executable, "-m", "fedbench", *args], env={**os.environ, "OMP_NUM_THREADS": "1"})
        commands.append("fedbench " + " ".join(args).replace(str(root), "ROOT").replace(str(db), "DB"))
        con = sqlite3.connect(db)
        for method in methods:
            (run_id,) = con.execute("SELECT run_id FROM runs WHERE method = ? AND seed = ? AND status = 'done'",
                                    (method, seed)).fetchone()
            accs = [v for (v,) in con.execute("SELECT value FROM metrics WHERE run_id = ? AND name = 'test_acc' "
                                                    "ORDER BY round", (run_id,))]
            curves[(method, seed)] = (accs, wall / len(methods))
            print(f"fedbench {method:<7} seed {seed}: {accs[-1]:.2f} % after {rounds} rounds", flush=True)
        con.close()
    return curves, commands


def table(ours: dict, theirs: dict, methods: list[str], seeds: list[int]) -> list[str]:
    def stats(curves: dict, method: str) -> tuple[float, float, list[float]]:
        finals = [curves[(method, s)][0][-1] for s in seeds]
        sd = statistics.stdev(finals) if len(finals) > 1 else float("nan")
        return statistics.mean(finals), sd, finals

    lines = ["| method | fedbench: mean ± std (seeds) | authors: mean ± std (seeds) | difference | larger than the spread? |",
             "|---|---|---|---|---|"]
    for m in methods:
        a, sa, fa = stats(ours, m)
        b, sb, fb = stats(theirs, m)
        spread = max(sa, sb)
        lines.append(f"| {m} | {a:.2f} ± {sa:.2f} ({', '.join(f'{v:.2f}' for v in fa)}) | {b:.2f} ± {sb:.2f} "
                     f"({', '.join(f'{v:.2f}' for v in fb)}) | {a - b:+.2f} | {'**yes**' if abs(a - b) > spread else 'no'} |")
    lines += ["", "Mean test accuracy (%) over seeds at each evaluation (every 5 rounds, round 0 first):", "",
              "| method | code | " + " | ".join(str(5 * i) for i in range(len(next(iter(ours.values()))[0]))) + " |",
              "|---|---|" + "---|" * len(next(iter(ours.values()))[0])]
    for m in methods:
        for label, curves in (("fedbench", ours), ("authors", theirs)):
            rows = [curves[(m, s)][0] for s in seeds]
            n = min(len(r) for r in rows)
            lines.append(f"| {m} | {label} | " + " | ".join(f"{statistics.mean(r[i] for r in rows):.1f}" for i in range(n)) + " |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--authors", type=Path, required=True, help="a checkout of github.com/omarfoq/FedEM")
    p.add_argument("--authors-python", required=True, help="a Python with their requirements (torch, sklearn, tqdm, ...)")
    p.add_argument("--fashion", type=Path, default=DEBIAN, help="folder of the four Fashion-MNIST IDX files")
    p.add_argument("--s-frac", type=float, default=0.1)
    p.add_argument("--rounds", type=int, default=50)
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--methods", default="fedavg,fedem")
    p.add_argument("--out", default="results/fidelity-real.md")
    args = p.parse_args()
    methods, seeds = args.methods.split(","), [int(s) for s in args.seeds.split(",")]
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="fidelity-real-") as tmp:
        scratch = Path(tmp)
        root = scratch / "root"
        write_root(args.fashion, root)
        with ThreadPoolExecutor(2) as pool:  # one process of each code at a time, one thread each
            theirs_f = pool.submit(authors_runs, args.authors, args.authors_python, root, scratch / "authors", methods,
                                   seeds, args.rounds, args.s_frac)
            ours_f = pool.submit(ours_runs, root, scratch, methods, seeds, args.rounds, args.s_frac)
            theirs, their_cmds = theirs_f.result()
            ours, our_cmds = ours_f.result()
    lines = [
        "# Both codes on the same real images (Fashion-MNIST under EMNIST's protocol)",
        "",
        f"`python benchmarks/fidelity_real.py --authors CHECKOUT --authors-python PYTHON --s-frac {args.s_frac:g} "
        f"--rounds {args.rounds} --seeds {args.seeds} --methods {args.methods}`, {time.time() - started:.0f} s on this "
        "machine. The data: Debian's dataset-fashion-mnist (70,000 real images), under EMNIST's file names.",
        "",
        f"Final test accuracy (%) after {args.rounds} rounds, weighted by test-set size over clients:",
        "",
        *table(ours, theirs, methods, seeds),
        "",
        "Commands (fedbench's in its own results file DB; theirs in a copy of their checkout, a stand-in cvxpy module "
        "on their path: their decentralised mixing matrix only, never called here):",
        "",
        *[f"- `{c}`" for c in our_cmds + their_cmds],
    ]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
