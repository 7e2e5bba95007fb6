"""FedAvg+ (the FedEM paper's "FedAvg+", after Jiang et al. 2019): FedAvg, then local tuning.

Training is FedAvg. Before a client is evaluated, a copy of the global model is
fine-tuned on that client's own train data (``tune_epochs`` epochs of SGD, the
client's optimiser settings, at ``tune_lr``, or at the learning rate of the
client's last training round when ``tune_lr = 0``, as the authors' clients do
with their current optimiser) and the tuned copy is what is evaluated. The
tuned copy is thrown away: it never reaches the server. Deviation: the tuning
starts with a fresh momentum buffer (the authors' copy inherits the client's).
"""

from __future__ import annotations

import dataclasses

import torch

from fedbench.params import Param
from fedbench import Client, ClientSpec, EvalResult, MethodSpec, hookimpl
from fedbench.seeding import generator

#: stream tag of the tuning batches (distinct from the training streams)
STREAM_TUNE = 101


class TunedClient(Client):
    """A plain client that evaluates a locally fine-tuned copy of the parameters it is given."""

    def __init__(self, *args, tune_epochs: int = 1, tune_lr: float = 0.0, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        if tune_epochs < 0 or tune_lr < 0:
            raise ValueError(f"need tune_epochs >= 0 and tune_lr >= 0, got {tune_epochs}, {tune_lr}")
        self.tune_epochs, self.tune_lr = tune_epochs, tune_lr
        self.last_lr = self.train.lr
        self.evaluations = 0

    def step(self, params, round_, lr):  # noqa: ANN001, ANN201
        self.last_lr = lr
        return super().step(params, round_, lr)

    def adapt(self, params: list[torch.Tensor], lr: float) -> None:
        # a new client tunes in evaluate(), like the others, at the last training round's rate
        self.last_lr = lr

    def evaluate(self, params: list[torch.Tensor]) -> EvalResult:
        if self.tune_epochs == 0:
            return super().evaluate(params)
        self.load(params)
        sgd = dataclasses.replace(self.sgd_config(self.tune_lr or self.last_lr), epochs=self.tune_epochs)
        gen = generator(self.seed, STREAM_TUNE, self.evaluations, self.client_id)
        self.evaluations += 1
        self.ensemble.fit_epochs(self.data.train_x, self.data.train_y, self.samples_weights, sgd, gen)
        return super().evaluate(self.ensemble.get_params())


@hookimpl
def fedbench_clients() -> list[ClientSpec]:
    return [
        ClientSpec(
            name="tuned",
            doc="plain client evaluated after fine-tuning a copy of the global model on its own data",
            params={"tune_epochs": Param(1, low=0), "tune_lr": Param(0.0, low=0.0)},
            cls=TunedClient,
        )
    ]


@hookimpl
def fedbench_methods() -> list[MethodSpec]:
    return [
        MethodSpec(
            name="fedavg+",
            doc="FedAvg+: FedAvg with local fine-tuning before evaluation (Jiang et al. 2019)",
            client="tuned",
            aggregator="centralized",
        )
    ]
