"""Ditto (Li et al., ICML 2021): fair and robust FL through personalisation.

The global model is trained exactly as in FedAvg. Each client also keeps a
personal model v, trained each round on its own data with the proximal
objective f(v) + lambda/2 * ||v - w||^2 toward the global model w it received,
and is evaluated with v. lambda = 0 gives purely local personal models (the
``local`` method, batch for batch: the personal fit draws the batch orders
Local draws); a large lambda keeps v close to w.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from fedbench import ClientSpec, FitPhase, LossPhase, MethodSpec, hookimpl
from fedbench.plugin.params import Param
from fedbench.fl.seeding import STREAM_TRAIN
from fedbench_plugins.methods.fedprox import proximal
from fedbench_plugins.methods.personal import PersonalModelClient

#: stream of the global model's local fit (the personal fit uses the standard training stream)
STREAM_DITTO_GLOBAL = 301


class DittoClient(PersonalModelClient):
    """A plain client that also trains and is evaluated with a personal, proximally regularised model.

    Two phases a round (:class:`fedbench.LossPhase`), so both backends run it: the global model's FedAvg
    fit (sent), then the personal model's fit toward the received global model (kept)."""

    PARAMS = {"lam": Param(0.1, low=0.0)}

    #: its predictor involves a personal model that only training produces
    serves_new_clients = False

    def __init__(self, *args, lam: float, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.lam = lam

    def fit_phases(self) -> tuple[FitPhase, ...]:
        return (
            # 1. the global model: one FedAvg local fit, on its own random stream
            LossPhase(term=None, stream=STREAM_DITTO_GLOBAL),
            # 2. the personal model: proximal fit toward the received global model, with its own momentum
            LossPhase(start="personal", keep="personal", term=type(self).pull if self.lam > 0 else None, stream=STREAM_TRAIN,
                     momentum="personal"),
        )

    def pull(self, theta: torch.Tensor, ctx: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return proximal(theta, ctx["received"], self.lam)


@hookimpl
def fedbench_clients() -> list[ClientSpec]:
    return [
        ClientSpec(
            name="ditto",
            doc="trains the global model as FedAvg and a personal model pulled toward it (lambda)",
            cls=DittoClient,
        )
    ]


@hookimpl
def fedbench_methods() -> list[MethodSpec]:
    return [
        MethodSpec(
            name="ditto",
            doc="Ditto: FedAvg plus personal models regularised toward the global one (Li et al. 2021)",
            client="ditto",
            aggregator="centralized",
        )
    ]
