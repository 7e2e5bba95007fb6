"""FedProx (Li et al., MLSys 2020): FedAvg whose local objective adds mu/2 * ||w - w_global||^2.

The proximal term is the client type's local term (``Client.local_term``), so
both backends run it (the vectorised one under ``vmap`` over every client of a
round). As in the FedEM authors' runs, FedProx uses SGD without momentum.
With mu = 0 it is FedAvg exactly.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from fedbench import Client, ClientSpec, MethodSpec, hookimpl
from fedbench.plugin.params import Param


def proximal(theta: torch.Tensor, anchor: torch.Tensor, weight: float) -> torch.Tensor:
    """``weight / 2 * ||theta - anchor||^2``: the pull toward a model that FedProx, Ditto and pFedMe add."""
    return weight / 2 * (theta - anchor).pow(2).sum()


class ProximalClient(Client):
    """A plain client whose local loss adds mu/2 * ||w - w_received||^2."""

    PARAMS = {"mu": Param(0.1, low=0.0)}

    def __init__(self, *args, mu: float, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.mu = mu

    def local_term(self, theta: torch.Tensor, ctx: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return proximal(theta, ctx["received"], self.mu)


@hookimpl
def fedbench_clients() -> list[ClientSpec]:
    return [
        ClientSpec(
            name="proximal",
            doc="plain client with a proximal term mu/2 ||w - w_received||^2 in local training",
            cls=ProximalClient,
        )
    ]


@hookimpl
def fedbench_methods() -> list[MethodSpec]:
    return [
        MethodSpec(
            name="fedprox",
            doc="FedProx: FedAvg with a proximal local objective (Li et al. 2020); no momentum",
            client="proximal",
            aggregator="centralized",
            n_learners=1,
            params={"momentum": 0.0},
        )
    ]
