"""FedAvg+ (the FedEM paper's "FedAvg+", after Jiang et al. 2019): FedAvg, then local tuning.

Training is FedAvg. Before a client is evaluated, a copy of the global model
(with the client's own BatchNorm statistics) is fine-tuned on that client's own
train data (``tune_epochs`` epochs of SGD with the client's optimiser settings),
and the tuned copy, parameters *and* the statistics the tuning updated, is what
is scored. The tuned copy never reaches the server.

The authors' protocol (github omarfoq/FedEM) is the default: their tuned copy
has its own optimiser, whose scheduler steps only when it tunes, so it tunes at
the initial learning rate ``train.lr`` all run long (``tune_at = "initial"``),
and its momentum buffer carries over from one evaluation to the next
(``tune_momentum = "carried"``). The named options ``tune_at = "current"``
(the learning rate of the client's last training round, which the multistep
schedule divides by 100 by the end) and ``tune_momentum = "fresh"`` give the
behaviour of earlier fedbench versions; ``tune_lr > 0`` fixes the rate outright.
"""

from __future__ import annotations

import dataclasses

import torch

from fedbench.plugin.params import Param
from fedbench import Client, ClientSpec, EvalResult, MethodSpec, hookimpl
from fedbench.fl.seeding import generator, seed_global

#: stream tag of the tuning batches (distinct from the training streams)
STREAM_TUNE = 101


class TunedClient(Client):
    """A plain client that evaluates a locally fine-tuned copy of the parameters it is given."""

    PARAMS = {
        "tune_epochs": Param(1, low=0), "tune_lr": Param(0.0, low=0.0),
        "tune_at": Param("initial", choices=("initial", "current")),
        "tune_momentum": Param("carried", choices=("carried", "fresh")),
    }

    def __init__(self, *args, tune_epochs: int, tune_lr: float, tune_at: str, tune_momentum: str,  # noqa: ANN002
                 **kwargs) -> None:  # noqa: ANN003
        super().__init__(*args, **kwargs)
        self.tune_epochs, self.tune_lr, self.tune_at, self.tune_momentum = tune_epochs, tune_lr, tune_at, tune_momentum
        self.last_lr = self.train.lr
        self.evaluations = 0
        #: the tuning copy's own momentum buffers, carried between evaluations (``tune_momentum = "carried"``)
        self.tuning_momentum: list[torch.Tensor | None] | None = None
        #: the learning rate of the last tuning (for tests and logs)
        self.last_tune_lr: float | None = None

    def after_fit(self, ins, update) -> None:  # noqa: ANN001 - training stays the plain client's (both backends)
        self.last_lr = ins.lr

    def adapt(self, params: list[torch.Tensor], lr: float) -> None:
        # a new client tunes in evaluate(), like the others
        self.last_lr = lr

    def tuning_lr(self) -> float:
        if self.tune_lr > 0:
            return self.tune_lr
        return self.train.lr if self.tune_at == "initial" else self.last_lr

    def evaluate(self, params: list[torch.Tensor]) -> EvalResult:
        if self.tune_epochs == 0:
            return super().evaluate(params)
        self.load(params)
        self.last_tune_lr = self.tuning_lr()
        sgd = dataclasses.replace(self.sgd_config(self.last_tune_lr), epochs=self.tune_epochs)
        gen = generator(self.seed, STREAM_TUNE, self.evaluations, self.client_id)
        seed_global(self.seed, STREAM_TUNE, self.evaluations, self.client_id)
        self.evaluations += 1
        carried = self.tune_momentum == "carried"
        fits = self.ensemble.fit_epochs(
            self.data.train_x, self.data.train_y, self.samples_weights, sgd, gen,
            momentum=self.tuning_momentum if carried else None,
        )
        if carried:
            self.tuning_momentum = [fit.momentum for fit in fits]
        return self.score()  # the tuned parameters with the statistics the tuning left


@hookimpl
def fedbench_clients() -> list[ClientSpec]:
    return [
        ClientSpec(
            name="tuned",
            doc="plain client evaluated after fine-tuning a copy of the global model on its own data",
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
