"""Both codes on the same real images: the paper's EMNIST protocol run on Fashion-MNIST, fedbench beside the authors'.

    apt install dataset-fashion-mnist                    # real images, no download at run time
    python benchmarks/fidelity_real.py --authors CHECKOUT --authors-python PYTHON --work DIR \
        [--s-frac 0.1] [--rounds 50] [--seeds 1,2,3] [--methods fedavg,fedem] [--out results/fidelity-real.md]

Runs go one at a time (a FedEM run of either code holds 8-10 GB here: two at once can exhaust a 24 GB
machine) and ``--work`` keeps every finished one (their output, our results file): run the same command again
to go on after an interruption; the table is written after every run, from the runs finished so far.

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
import time
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
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.stdout, time.perf_counter() - t


def prepare_authors(checkout: Path, python: str, work: Path, s_frac: float) -> tuple[Path, dict, str]:
    """Their checkout copied into ``work`` with the split written by their generate_data.py (once)."""
    code = work / "FedEM"
    env = {**os.environ, "PYTHONPATH": str(work / "shims"), "OMP_NUM_THREADS": "1"}
    split = ["--n_tasks", "100", "--n_components", "-1", "--alpha", "0.4", "--s_frac", f"{s_frac:g}", "--tr_frac", "0.8",
             "--seed", "12345"]
    if not (code / "data" / "emnist" / "all_data" / "train").is_dir():
        shutil.rmtree(code, ignore_errors=True)
        shutil.copytree(checkout, code, ignore=shutil.ignore_patterns(".git", "all_data", "logs"))
        (work / "shims").mkdir(exist_ok=True)
        (work / "shims" / "cvxpy.py").write_text(CVXPY)
        raw = code / "data" / "emnist" / "raw_data"
        raw.mkdir(parents=True, exist_ok=True)
        (raw / "EMNIST").symlink_to((work / "root" / "EMNIST").resolve())
        run([python, "generate_data.py", *split], cwd=code / "data" / "emnist", env=env)
    return code, env, f"(data/emnist) python generate_data.py {' '.join(split)}"


def authors_run(python: str, code: Path, env: dict, work: Path, method: str, seed: int, rounds: int) -> tuple[list[float], str]:
    """Their run_experiment.py (its stdout kept in ``work/authors-METHOD-SEED.txt``); the test accuracies it logged."""
    name, learners, lr = THEIRS[method]
    args = ["emnist", name, "--n_learners", str(learners), "--n_rounds", str(rounds), "--bz", "128", "--lr", f"{lr:g}",
            "--lr_scheduler", "multi_step", "--log_freq", "5", "--device", "cpu", "--optimizer", "sgd",
            "--seed", str(seed), "--verbose", "1"]
    log = work / f"authors-{method}-{seed}.txt"
    if not log.is_file():
        out, _ = run([python, "run_experiment.py", *args, "--logs_dir", str(work / "logs" / f"{method}-{seed}")], cwd=code, env=env)
        log.write_text(out)
    return [float(a) for a in re.findall(r"Test Acc: ([0-9.]+)%", log.read_text())], "python run_experiment.py " + " ".join(args)


def ours_run(work: Path, method: str, seed: int, rounds: int, s_frac: float) -> tuple[list[float], str]:
    """``fedbench run`` of the paper suite's cell into ``work/fedbench.sqlite`` (a finished run is not redone)."""
    db = work / "fedbench.sqlite"
    args = ["run", "--suite", "paper", "--datasets", "emnist", "--methods", method, "--rounds", str(rounds),
            "--seed", str(seed), "--set", f"dataset.fraction={s_frac:g}",
            # their --n_components -1 makes each of EMNIST's 62 labels a group; 52 are empty here, and our
            # partitioner wants only labels present: one group per present label, the same split rule
            "--set", "dataset.n_groups=10", "--data-root", str(work / "root"), "--results", str(db), "--no-progress",
            "--jobs", "1"]
    run([sys.executable, "-m", "fedbench", *args], env={**os.environ, "OMP_NUM_THREADS": "1"})
    con = sqlite3.connect(db)
    (run_id,) = con.execute("SELECT run_id FROM runs WHERE method = ? AND seed = ? AND status = 'done' AND rounds = ?",
                            (method, seed, rounds)).fetchone()
    accs = [v for (v,) in con.execute("SELECT value FROM metrics WHERE run_id = ? AND name = 'test_acc' ORDER BY round",
                                      (run_id,))]
    con.close()
    return accs, "fedbench " + " ".join(args).replace(str(work), "WORK")


def table(ours: dict, theirs: dict, methods: list[str], seeds: list[int]) -> list[str]:
    """The final-accuracy comparison and the mean curves, over the seeds finished so far in each code."""
    def finals(curves: dict, method: str) -> list[float]:
        return [curves[(method, s)][-1] for s in seeds if (method, s) in curves]

    def cell(values: list[float]) -> str:
        if not values:
            return "not run"
        sd = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
        return f"{statistics.mean(values):.2f}{sd} (n={len(values)}: {', '.join(f'{v:.2f}' for v in values)})"

    lines = ["| method | fedbench: mean ± std | authors: mean ± std | difference | beyond the seeds' spread? |",
             "|---|---|---|---|---|"]
    for m in methods:
        a, b = finals(ours, m), finals(theirs, m)
        diff, verdict = "", "n/a"
        if a and b:
            d = statistics.mean(a) - statistics.mean(b)
            spreads = [statistics.stdev(v) for v in (a, b) if len(v) > 1]
            diff = f"{d:+.2f}"
            verdict = ("**yes**" if abs(d) > max(spreads) else "no") if spreads else "n/a (one seed a side)"
        lines.append(f"| {m} | {cell(a)} | {cell(b)} | {diff} | {verdict} |")
    lines += ["", "Mean test accuracy (%) over the finished seeds at each evaluation (every 5 rounds, round 0 first):", ""]
    curves_all = [c for c in list(ours.values()) + list(theirs.values()) if len(c) > 1]
    if not curves_all:
        return lines
    n = max(len(c) for c in curves_all)
    lines += ["| method | code | " + " | ".join(str(5 * i) for i in range(n)) + " |", "|---|---|" + "---|" * n]
    for m in methods:
        for label, curves in (("fedbench", ours), ("authors", theirs)):
            rows = [curves[(m, s)] for s in seeds if len(curves.get((m, s), ())) > 1]  # (a final number has no curve)
            if rows:
                k = min(len(r) for r in rows)
                lines.append(f"| {m} | {label} | " + " | ".join(f"{statistics.mean(r[i] for r in rows):.1f}" for i in range(k)) + " |")
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
    p.add_argument("--work", type=Path, required=True, help="folder kept between invocations: data, their copy, runs")
    args = p.parse_args()
    methods, seeds = args.methods.split(","), [int(s) for s in args.seeds.split(",")]
    started = time.time()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "root" / "EMNIST" / "raw" / NAMES["t10k-labels-idx1-ubyte"]).is_file():
        write_root(args.fashion, work / "root")
    code, env, split_cmd = prepare_authors(args.authors, args.authors_python, work, args.s_frac)
    ours: dict = {}
    theirs: dict = {}
    commands = [split_cmd]
    failures = []
    for method in methods:
        for seed in seeds:
            for label, store, call in (
                ("fedbench", ours, lambda: ours_run(work, method, seed, args.rounds, args.s_frac)),
                ("authors", theirs, lambda: authors_run(args.authors_python, code, env, work, method, seed, args.rounds)),
            ):
                try:
                    accs, cmd = call()
                except RuntimeError as e:
                    failures.append(f"{label} {method} seed {seed}: {str(e).splitlines()[0]}")
                    print(failures[-1], flush=True)
                    continue
                store[(method, seed)] = accs
                commands.append(cmd)
                print(f"{label:<8} {method:<7} seed {seed}: {accs[-1]:.2f} % after {args.rounds} rounds", flush=True)
                write(args, ours, theirs, methods, seeds, commands, failures, time.time() - started)
    print(Path(args.out).read_text())


def write(args, ours: dict, theirs: dict, methods: list[str], seeds: list[int], commands: list[str],  # noqa: ANN001
          failures: list[str], seconds: float) -> None:
    lines = [
        "# Both codes on the same real images (Fashion-MNIST under EMNIST's protocol)",
        "",
        f"`python benchmarks/fidelity_real.py --authors CHECKOUT --authors-python PYTHON --work WORK --s-frac {args.s_frac:g} "
        f"--rounds {args.rounds} --seeds {args.seeds} --methods {args.methods}`, {seconds:.0f} s on this machine, one "
        "run at a time. The data: Debian's dataset-fashion-mnist (70,000 real images), under EMNIST's file names.",
        "",
        f"Final test accuracy (%) after {args.rounds} rounds, weighted by test-set size over clients:",
        "",
        *table(ours, theirs, methods, seeds),
        "",
        *([f"Not finished: {f}" for f in failures] + [""] if failures else []),
        "Commands (fedbench's into WORK/fedbench.sqlite; theirs in a copy of their checkout, with a stand-in cvxpy "
        "module on their path: their decentralised mixing matrix only, never called here):",
        "",
        *[f"- `{c}`" for c in dict.fromkeys(commands)],
    ]
    Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
