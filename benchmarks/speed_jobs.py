"""Speed benchmark: a suite with --jobs 1 against --jobs 2 (and more with --jobs-list).

Each setting runs the whole suite from scratch into its own fresh results file,
through the real CLI, and the script prints wall times and the speed-up.

Usage:
  python benchmarks/speed_jobs.py                        # the quick suite, jobs 1 vs 2
  python benchmarks/speed_jobs.py --suite benchmarks/suites/jobs.toml --jobs-list 1,2,4
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(suite: str, jobs: int, extra: list[str]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "r.sqlite"
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "fedbench", "run", "--suite", suite, "--jobs", str(jobs), "--results", str(db), "--no-progress", *extra],
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"--jobs {jobs} failed:\n{proc.stderr}")
    return wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", default="quick")
    p.add_argument("--jobs-list", default="1,2")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--engine", default="auto", choices=["auto", "vectorized", "sequential"])
    args = p.parse_args()
    extra = [x for kv in args.set for x in ("--set", kv)] + ["--engine", args.engine]
    rows = [(int(j), run(args.suite, int(j), extra)) for j in args.jobs_list.split(",")]
    base = rows[0][1]
    print(
        f"suite {args.suite} ({' '.join(extra)}) on {os.cpu_count()} cores "
        "(fresh results file each time, wall time incl. start-up)"
    )
    print("| jobs | wall s | speed-up vs first |")
    print("|---|---|---|")
    for jobs, wall in rows:
        print(f"| {jobs} | {wall:.1f} | {base / wall:.2f}x |")


if __name__ == "__main__":
    main()
