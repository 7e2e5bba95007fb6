"""Compare two methods on the paper's synthetic benchmark from Python and draw their learning curves.

    python examples/compare_two_methods.py                    # 50 clients, 50 rounds, 2 seeds (about 20 s on 2 cores)
    python examples/compare_two_methods.py --rounds 200 --clients 300 --out curves.png

Nothing is written but the PNG (``results=None`` keeps the runs in memory); pass ``--results FILE``
to store them like ``fedbench run`` does (runs already stored are read back, not recomputed).
"""

from __future__ import annotations

import argparse

import pandas as pd

import fedbench


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default="fedem,fedavg")
    p.add_argument("--rounds", type=int, default=50)
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--seeds", default="1,2")
    p.add_argument("--results", help="SQLite results file (default: in memory)")
    p.add_argument("--out", default="compare.png")
    args = p.parse_args()

    curves = []
    for method in args.methods.split(","):
        for seed in map(int, args.seeds.split(",")):
            result = fedbench.run("synthetic", method, seed=seed, results=args.results, rounds=args.rounds,
                                  dataset__n_clients=args.clients, progress=False)
            print(result)
            curves.append(result.history[["test_acc"]].assign(method=method, seed=seed).reset_index())
    table = pd.concat(curves)
    summary = table.groupby(["method", "round"]).test_acc.agg(["mean", "std"]).reset_index()
    last = summary[summary["round"] == summary["round"].max()]
    print(last.to_string(index=False, float_format="%.2f"))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for method, g in summary.groupby("method"):
        ax.plot(g["round"], g["mean"], marker=".", label=method)
        ax.fill_between(g["round"], g["mean"] - g["std"].fillna(0), g["mean"] + g["std"].fillna(0), alpha=0.2)
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy (%), mean ± std over seeds")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"curve: {args.out}")


if __name__ == "__main__":
    main()
