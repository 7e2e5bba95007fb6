"""Both engines on each of the paper's real models, and which one ``--engine auto`` picks on this device.

For the paper's three real models (the (F)EMNIST CNN, CIFAR's MobileNetV2 and Shakespeare's LSTM), one
FedAvg round of a small random federation of the data set's shape (``--clients`` clients of
``--samples`` samples, batch ``--batch``), trained by the one-at-a-time and by the batched engine in turn,
``--repeats`` times (alternating, after one untimed warm-up round each, so that both see the same machine).
Prints seconds per round (median and spread), the ratio, the engine ``auto`` picks here and why, and
whether that is the faster one: the check behind "auto never picks the slower engine" (issue 28).

    python benchmarks/paper_models_engines.py [--device cpu|cuda] [--models femnist_cnn,mobilenet_v2,next_char_lstm]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from fedbench.runs.build import build_simulation, resolve_run
from fedbench.fl.data import FederatedData
from fedbench.plugin.registry import get_registry
from fedbench_plugins.datasets.pooled import image_table

#: model -> (the data set whose shape it takes, input shape, classes, labels per sample)
CELLS = {
    "femnist_cnn": ("emnist", (1, 28, 28), 62, ()),
    "mobilenet_v2": ("cifar10", (3, 32, 32), 10, ()),
    "next_char_lstm": ("shakespeare", (80,), 100, (80,)),
}


def federation(model: str, clients: int, samples: int, seed: int = 0) -> FederatedData:
    """Random uint8 inputs of the data set's shape (images through the usual [0, 1] table, characters as ids)."""
    _, shape, classes, label_shape = CELLS[model]
    g = torch.Generator().manual_seed(seed)
    high = 256 if len(shape) == 3 else classes

    def part(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randint(0, high, (n, *shape), generator=g, dtype=torch.uint8)
        y = torch.randint(0, classes, (n, *label_shape), generator=g)
        return x, y.to(torch.uint8) if label_shape else y

    table = image_table(shape[0]) if len(shape) == 3 else None
    return FederatedData.from_clients([part(samples) for _ in range(clients)], [part(max(1, samples // 4)) for _ in range(clients)],
                                      task="multiclass", num_classes=classes, input_table=table)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--models", default=",".join(CELLS))
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--samples", type=int, default=64)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    registry = get_registry()
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, {args.clients} clients x {args.samples} samples, "
          f"batch {args.batch}, {args.repeats} timed rounds per engine (alternating)")
    print("| model | sequential s / round | vectorized s / round | vectorized / sequential | auto picks | the faster? |")
    print("|---|---|---|---|---|---|")
    for model in args.models.split(","):
        dataset = CELLS[model][0]
        data = federation(model, args.clients, args.samples)
        over = {"model": model, "batch_size": args.batch, "lr": 0.01}
        sims = {e: build_simulation(registry, resolve_run(registry, dataset=dataset, method="fedavg", seed=1, overrides=over,
                                                          engine=e, device=args.device), data=data)
                for e in ("sequential", "vectorized")}
        auto = build_simulation(registry, resolve_run(registry, dataset=dataset, method="fedavg", seed=1, overrides=over,
                                                      device=args.device), data=data).engine
        times: dict[str, list[float]] = {e: [] for e in sims}
        for r in range(args.repeats + 1):
            for e, sim in sims.items():
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                start = time.perf_counter()
                sim.aggregator.fit_round(r)
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                if r:  # the first round of each warms up
                    times[e].append(time.perf_counter() - start)
        med = {e: statistics.median(t) for e, t in times.items()}
        spread = {e: f"{med[e]:.3f} ({min(t):.3f}-{max(t):.3f})" for e, t in times.items()}
        faster = min(med, key=med.get)
        picked = auto.split(" ")[0]
        print(f"| {model} | {spread['sequential']} | {spread['vectorized']} | {med['vectorized'] / med['sequential']:.2f} | "
              f"{auto} | {'yes' if picked == faster else 'NO'} |", flush=True)


if __name__ == "__main__":
    main()
