"""Ditto (Li et al., ICML 2021): fair and robust FL through personalisation.

The global model is trained exactly as in FedAvg. Each client also keeps a
personal model v, trained each round on its own data with the proximal
objective f(v) + lambda/2 * ||v - w||^2 toward the global model w it received,
and is evaluated with v. lambda = 0 gives purely local personal models (the
``local`` method, batch for batch: the personal fit draws the batch orders
Local draws); a large lambda keeps v close to w.
"""

from __future__ import annotations


import torch

from fedbench.params import Param
from fedbench import Client, ClientSpec, ClientUpdate, EvalResult, MethodSpec, hookimpl
from fedbench.seeding import STREAM_TRAIN, generator

#: stream of the global model's local fit (the personal fit uses the standard training stream)
STREAM_DITTO_GLOBAL = 301


class DittoClient(Client):
    """A plain client that also trains and is evaluated with a personal, proximally regularised model."""

    #: its predictor involves a personal model that only training produces
    serves_new_clients = False

    def __init__(self, *args, lam: float = 0.1, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        if lam < 0:
            raise ValueError(f"Ditto lambda must be >= 0, got {lam}")
        self.lam = lam
        self.personal: list[torch.Tensor] | None = None
        self.personal_momentum: list[torch.Tensor | None] = [None] * len(self.ensemble)

    def step(self, params: list[torch.Tensor], round_: int, lr: float, extras=None) -> ClientUpdate:  # noqa: ANN001
        if self.personal is None:
            self.personal = [p.clone() for p in params]
        # 1. the global model: one FedAvg local fit, on its own random stream
        update = self.fit(params, lr, generator(self.seed, STREAM_DITTO_GLOBAL, round_, self.client_id))
        # 2. the personal model: proximal fit toward the received global model
        self.load(self.personal)
        pull = [lambda theta, w=w: self.lam / 2 * (theta - w).pow(2).sum() for w in params] if self.lam > 0 else None
        personal = self.ensemble.fit_epochs(
            self.data.train_x, self.data.train_y, self.samples_weights, self.sgd_config(lr),
            generator(self.seed, STREAM_TRAIN, round_, self.client_id),
            momentum=self.personal_momentum if self.train.keep_optimizer_state else None,
            terms=pull,
        )
        if self.train.keep_optimizer_state:
            self.personal_momentum = [f.momentum for f in personal]
        self.personal = self.ensemble.get_params()
        return update

    def evaluate(self, params: list[torch.Tensor]) -> EvalResult:
        return super().evaluate(self.personal if self.personal is not None else params)


@hookimpl
def fedbench_clients() -> list[ClientSpec]:
    return [
        ClientSpec(
            name="ditto",
            doc="trains the global model as FedAvg and a personal model pulled toward it (lambda)",
            params={"lam": Param(0.1, low=0.0)},
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
