"""The built-in suite files (shipped inside the package so they work from any folder)."""

from __future__ import annotations

from pathlib import Path

from fedbench import SuiteSpec, hookimpl

HERE = Path(__file__).parent


@hookimpl
def fedbench_suites() -> list[SuiteSpec]:
    return [
        SuiteSpec(name="quick", doc="FedEM vs FedAvg vs Local on a small synthetic federation (minutes on a laptop)", path=str(HERE / "quick.toml")),
        SuiteSpec(name="synthetic-paper", doc="FedEM vs FedAvg vs Local on the paper's synthetic setting, 3 seeds", path=str(HERE / "synthetic-paper.toml")),
        SuiteSpec(
            name="paper", doc="the paper's Table 2: CIFAR-10/100, EMNIST, FEMNIST, Shakespeare x 7 methods, 3 seeds (needs the files)",
            path=str(HERE / "paper.toml"),
        ),
        SuiteSpec(
            name="unseen-synthetic", doc="FedEM, FedAvg, FedAvg+ scored on 20 % held-out clients (Table 3 protocol), synthetic, 3 seeds",
            path=str(HERE / "unseen-synthetic.toml"),
        ),
        SuiteSpec(
            name="fashion-mnist", doc="Fashion-MNIST (torchvision's or Debian's files) split like the paper's CIFAR-10, MLP, 3 seeds",
            path=str(HERE / "fashion-mnist.toml"),
        ),
        SuiteSpec(name="fedprox-grid", doc="a grid example: FedProx's mu against FedAvg, small synthetic federation", path=str(HERE / "fedprox-grid.toml")),
        SuiteSpec(name="baselines-synthetic", doc="every baseline on the paper's synthetic setting, 3 seeds", path=str(HERE / "baselines-synthetic.toml")),
    ]
