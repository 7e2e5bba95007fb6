"""FedRep (Collins et al., ICML 2021): a shared representation, a personal head per client.

The head is the last ``head_tensors`` parameter tensors of the model (2: the
final linear layer's weight and bias). Each round a client puts its own head on
the received body, trains the head alone for ``head_epochs`` epochs (body
frozen), then the body alone for ``local_epochs`` epochs (head frozen), keeps
its head and sends the body (the server averages whole vectors; the averaged
head is used only as the starting head of a client that never trained). Each
phase starts a fresh momentum buffer. A client that never trained (an unseen
client) adapts by training a head on the received body, ``head_epochs`` epochs at
the last training round's learning rate.

Limit cases: with every tensor in the head, FedRep is Local (no body is
shared); with no head and ``head_epochs = 0`` it is FedAvg (without momentum).
"""

from __future__ import annotations

import dataclasses

import torch

from fedbench.params import Param
from fedbench import ClientSpec, ClientUpdate, MethodSpec, hookimpl
from fedbench.learner import epoch_orders
from fedbench.seeding import STREAM_TRAIN, generator
from fedbench_plugins.partial import PartlyPersonalClient

#: stream of an unseen client's head training
STREAM_ADAPT = 102


class RepresentationClient(PartlyPersonalClient):
    """Trains its personal head, then the shared body, each with the other frozen."""

    def __init__(self, *args, head_tensors: int = 2, head_epochs: int = 10, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        n = len(self.ensemble.learners[0]._params)
        if not 0 <= head_tensors <= n or head_epochs < 0:
            raise ValueError(f"need 0 <= head_tensors <= {n} (the model's parameter tensors) and head_epochs >= 0, got {head_tensors}, {head_epochs}")
        self.head_tensors, self.head_epochs = head_tensors, head_epochs

    def personal_tensors(self) -> list[bool]:
        n = len(self.ensemble.learners[0]._params)
        return [i >= n - self.head_tensors for i in range(n)]

    def _train(self, params: list[torch.Tensor], lr: float, gen: torch.Generator, body: bool) -> float:
        self.load(params)
        head = self.personal_tensors()
        sgd = self.sgd_config(lr)
        m, n = len(self.ensemble), self.n_train
        head_orders = epoch_orders(gen, m * self.head_epochs, n).view(m, self.head_epochs, n) if self.head_epochs else None
        body_orders = epoch_orders(gen, m * sgd.epochs, n).view(m, sgd.epochs, n) if body else None
        losses = []
        d = self.data
        for k, learner in enumerate(self.ensemble.learners):
            if head_orders is not None and any(head):
                h = dataclasses.replace(sgd, epochs=self.head_epochs)
                losses.append(learner.fit_epochs(d.train_x, d.train_y, self.samples_weights[k], h, head_orders[k], trainable=head).loss)
            if body_orders is not None and not all(head):
                rest = [not f for f in head]
                losses.append(learner.fit_epochs(d.train_x, d.train_y, self.samples_weights[k], sgd, body_orders[k], trainable=rest).loss)
        self.buffers = self.ensemble.get_buffers()
        self.keep(self.ensemble.get_params())
        return sum(losses) / max(len(losses), 1)

    def step(self, params: list[torch.Tensor], round_: int, lr: float, extras=None) -> ClientUpdate:  # noqa: ANN001
        loss = self._train(self.merge(params), lr, generator(self.seed, STREAM_TRAIN, round_, self.client_id), body=True)
        return ClientUpdate(self.client_id, self.ensemble.get_params(), float(self.n_train), loss)

    def adapt(self, params: list[torch.Tensor], lr: float) -> None:
        self._own = None
        self._train(params, lr, generator(self.seed, STREAM_ADAPT, 0, self.client_id), body=False)


@hookimpl
def fedbench_clients() -> list[ClientSpec]:
    return [
        ClientSpec(
            name="representation",
            doc="FedRep client: personal head (last head_tensors tensors) trained first, then the shared body",
            params={"head_tensors": Param(2, low=0), "head_epochs": Param(10, low=0)},
            cls=RepresentationClient,
        )
    ]


@hookimpl
def fedbench_methods() -> list[MethodSpec]:
    return [
        MethodSpec(
            name="fedrep",
            doc="FedRep: shared body averaged, personal head kept by each client (Collins et al. 2021)",
            client="representation",
            aggregator="centralized",
        )
    ]
