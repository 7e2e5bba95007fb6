"""Runs at once on one machine or one GPU: the same runs with --jobs 1, 2, 4, ... (runs per hour, memory).

Each setting runs the same runs from scratch into a fresh results file through the real CLI
(``fedbench run --suite ... --jobs N``), and the script prints wall time, runs per hour, the speed-up over
the first setting, the peak host memory of the whole process tree (the CLI and its workers, summed RSS,
sampled every 0.2 s) and, when ``--devices`` names a CUDA device and ``nvidia-smi`` is there, the peak GPU
memory in use (the whole GPU's, sampled the same way):

  python benchmarks/speed_jobs.py                                   # the quick suite, jobs 1 vs 2 (CPU)
  python benchmarks/speed_jobs.py --suite paper --datasets emnist --methods fedavg --seeds 1-8 \\
      --set rounds=2 --data-root STANDIN --devices cuda:0 --jobs-list 1,2,4,8     # several paper runs on one GPU

``--seeds`` gives a suite's cell as many runs as the largest ``--jobs`` (one per worker). Every run must
finish (a failed one stops the script with its error): runs per hour count finished runs only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def tree_rss_mb(pid: int) -> float:
    """Summed resident memory (MB) of ``pid`` and every process below it (Linux /proc)."""
    kids, todo, total = _children(), [pid], 0
    while todo:
        p = todo.pop()
        todo += kids.get(p, [])
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def gpu_used_mb() -> float:
    """Memory in use on the first GPU nvidia-smi lists (MB), or NaN."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10).stdout
        return float(out.split()[0])
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return float("nan")


def run(cli: list[str], jobs: int, gpu: bool) -> dict:
    """One setting: ``fedbench run`` with ``--jobs jobs`` into a fresh results file."""
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "r.sqlite"
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "fedbench", "run", *cli, "--jobs", str(jobs), "--results", str(db), "--no-progress"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        peaks = {"host": 0.0, "gpu": float("nan")}
        gpu_base = gpu_used_mb() if gpu else float("nan")

        def sample() -> None:
            while proc.poll() is None:
                peaks["host"] = max(peaks["host"], tree_rss_mb(proc.pid))
                if gpu:
                    used = gpu_used_mb()
                    peaks["gpu"] = used if peaks["gpu"] != peaks["gpu"] else max(peaks["gpu"], used)
                time.sleep(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        out, err = proc.communicate()
        wall = time.perf_counter() - start
        sampler.join()
        if proc.returncode != 0:
            raise SystemExit(f"--jobs {jobs} failed (rc {proc.returncode}):\n{err[-4000:]}")
        with sqlite3.connect(db) as con:
            done = con.execute("SELECT COUNT(*) FROM runs WHERE status = 'done'").fetchone()[0]
    return {"jobs": jobs, "wall": wall, "done": done, "host_mb": peaks["host"], "gpu_mb": peaks["gpu"] - gpu_base}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", default="quick")
    p.add_argument("--datasets", help="only these of the suite's data sets (fedbench run --datasets)")
    p.add_argument("--methods", help="only these of the suite's methods (fedbench run --methods)")
    p.add_argument("--seeds", help="these seeds instead of the suite's (fedbench run --seeds), e.g. 1-8")
    p.add_argument("--jobs-list", default="1,2")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--engine", default="auto", choices=["auto", "vectorized", "sequential"])
    p.add_argument("--devices", help="fedbench run --devices, e.g. cuda:0 (every worker on that GPU)")
    p.add_argument("--data-root", help="fedbench run --data-root")
    p.add_argument("--out", help="also write the table to this markdown file")
    args = p.parse_args()
    cli = ["--suite", args.suite, "--engine", args.engine] + [x for kv in args.set for x in ("--set", kv)]
    for flag, value in (("--datasets", args.datasets), ("--methods", args.methods), ("--seeds", args.seeds),
                        ("--devices", args.devices), ("--data-root", args.data_root)):
        if value:
            cli += [flag, value]
    gpu = bool(args.devices and "cuda" in args.devices and shutil.which("nvidia-smi"))
    rows = []
    for j in (int(x) for x in args.jobs_list.split(",")):
        rows.append(run(cli, j, gpu))
        r = rows[-1]
        print(f"--jobs {j}: {r['done']} runs in {r['wall']:.1f} s", flush=True)
    base = rows[0]["done"] / rows[0]["wall"]
    lines = [
        f"`python benchmarks/speed_jobs.py {' '.join(sys.argv[1:])}` on {os.cpu_count()} cores"
        f"{', GPU memory from nvidia-smi (in use, less what was in use before)' if gpu else ''}: "
        f"`fedbench run {' '.join(cli)} --jobs N`, a fresh results file each time, wall time with start-up",
        "",
        "| jobs | runs | wall s | runs per hour | speed-up vs first | peak host MB (all processes) | peak GPU MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        per_hour = r["done"] * 3600 / r["wall"]
        gpu_mb = f"{r['gpu_mb']:,.0f}" if r["gpu_mb"] == r["gpu_mb"] else ""
        lines.append(f"| {r['jobs']} | {r['done']} | {r['wall']:.1f} | {per_hour:,.0f} | "
                     f"{r['done'] / r['wall'] / base:.2f}x | {r['host_mb']:,.0f} | {gpu_mb} |")
    print("\n".join(lines))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
