"""FedRep (Collins et al., ICML 2021): a shared representation, a personal head per client.

The head is the last ``head_tensors`` parameter tensors of the model (2: the
final linear layer's weight and bias). Each round a client puts its own head on
the received body, trains the head alone for ``head_epochs`` epochs (body
frozen), then the body alone for ``local_epochs`` epochs (head frozen), keeps
its head and sends the body (the server averages whole vectors; the averaged
head is used only as the starting head of a client that never trained). Each
phase starts a fresh momentum buffer and draws its batch orders from its own
random stream. The two phases are :class:`fedbench.LossPhase` s, so both backends
run FedRep (vectorised by default). A client that never trained (an unseen
client) adapts by training a head on the received body, ``head_epochs`` epochs at
the last training round's learning rate.

Limit cases: with every tensor in the head, FedRep is Local (no body is
shared); with no head and ``head_epochs = 0`` it is FedAvg (without momentum).
"""

from __future__ import annotations

import torch

from fedbench.plugin.params import Param
from fedbench import ClientSpec, ClientUpdate, FitIns, FitPhase, LossPhase, MethodSpec, hookimpl
from fedbench.fl.seeding import STREAM_TRAIN
from fedbench_plugins.methods.partial import PartlyPersonalClient

#: stream of an unseen client's head training
STREAM_ADAPT = 102
#: stream of a training client's body phase when a head phase came first (which uses the standard one)
STREAM_BODY = 104


class RepresentationClient(PartlyPersonalClient):
    """Trains its personal head, then the shared body, each with the other frozen."""

    PARAMS = {"head_tensors": Param(2, low=0), "head_epochs": Param(10, low=0)}

    def __init__(self, *args, head_tensors: int, head_epochs: int, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        n = len(self.ensemble.learners[0]._params)
        if head_tensors > n:
            raise ValueError(f"need head_tensors <= {n} (the model's parameter tensors), got {head_tensors}")
        self.head_tensors, self.head_epochs = head_tensors, head_epochs

    def personal_tensors(self) -> list[bool]:
        n = len(self.ensemble.learners[0]._params)
        return [i >= n - self.head_tensors for i in range(n)]

    def head_phase(self, stream: int) -> LossPhase | None:
        """The head's fit (body frozen), or None without a head or head epochs."""
        head = self.personal_tensors()
        if not self.head_epochs or not any(head):
            return None
        return LossPhase(term=None, trainable=tuple(head), epochs=self.head_epochs, stream=stream, momentum=None)

    def fit_phases(self) -> tuple[FitPhase, ...]:
        # the first phase draws from the standard training stream (so that all-head FedRep is Local and
        # head-less FedRep is FedAvg, batch for batch), a body phase after a head phase from its own
        body = tuple(not f for f in self.personal_tensors())
        head = self.head_phase(STREAM_TRAIN)
        phases = [head] if head is not None else []
        if any(body):
            stream = STREAM_BODY if phases else STREAM_TRAIN
            phases.append(LossPhase(start="previous", term=None, trainable=body, stream=stream, momentum=None))
        return tuple(phases)

    def receive(self, params: list[torch.Tensor]) -> list[torch.Tensor]:
        return self.merge(params)  # its own head on the received body

    def after_fit(self, ins: FitIns, update: ClientUpdate) -> None:
        self.keep(update.params)

    def adapt(self, params: list[torch.Tensor], lr: float) -> None:
        self._own = None
        phase = self.head_phase(STREAM_ADAPT)
        if phase is not None:
            self.keep(self.fit(FitIns(params, {}, 0, lr), phases=[phase]).params)


@hookimpl
def fedbench_clients() -> list[ClientSpec]:
    return [
        ClientSpec(
            name="representation",
            doc="FedRep client: personal head (last head_tensors tensors) trained first, then the shared body",
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
