"""Forward and backward of a linear layer under ``vmap`` (one weight per row, as the vectorised engine
trains), in the plain form and in :class:`fedbench.engine.RowMajorLinear`'s, on this machine's CPU.

    python benchmarks/linear_layout.py
    python benchmarks/linear_layout.py --threads 2 --repeat 5

Printed per shape (rows K, batch B, inputs D, outputs O): milliseconds for the forward pass, the
loss's gradient with respect to every row's weight and bias, in each form (median of ``--repeat``
alternations), their ratio with its range, and the largest difference between the two gradients.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

SHAPES = [(900, 128, 150, 1), (300, 128, 150, 1), (50, 128, 150, 1), (300, 128, 150, 10), (300, 64, 784, 10),
          (300, 128, 150, 32), (300, 128, 784, 200)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    import torch
    from torch.func import vmap
    from torch.nn import functional as F

    from fedbench.engine import RowMajorLinear

    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    print(f"torch threads: {args.threads}\n")
    print("| K | B | D | O | plain ms | row-major ms | plain / row-major (range) | max grad diff |")
    print("|---|---|---|---|---|---|---|---|")
    for k, b, d, o in SHAPES:
        x, w, bias = (torch.randn(*s, generator=gen) for s in ((k, b, d), (k, o, d), (k, o)))
        g = torch.randn(k, b, o, generator=gen)

        def run(row_major: bool, x=x, w=w, bias=bias, g=g):  # noqa: ANN001, ANN202
            wr, br = w.detach().requires_grad_(True), bias.detach().requires_grad_(True)
            with RowMajorLinear() if row_major else contextlib.nullcontext():
                out = vmap(F.linear)(x, wr, br)
            return torch.autograd.grad((out * g).sum(), (wr, br))

        times: dict[bool, list[float]] = {False: [], True: []}
        for form in (False, True):
            run(form)  # warm-up
        for _ in range(args.repeat):
            for form in (False, True):
                start = time.perf_counter()
                run(form)
                times[form].append(time.perf_counter() - start)
        ratios = [a / c for a, c in zip(times[False], times[True])]
        diff = max((p - q).abs().max().item() for p, q in zip(run(False), run(True)))
        print(f"| {k} | {b} | {d} | {o} | {1e3 * statistics.median(times[False]):.2f} | "
              f"{1e3 * statistics.median(times[True]):.2f} | {statistics.median(ratios):.2f} "
              f"({min(ratios):.2f}-{max(ratios):.2f}) | {diff:.1e} |")


if __name__ == "__main__":
    main()
