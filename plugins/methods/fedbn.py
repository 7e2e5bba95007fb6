"""FedBN (Li et al., ICLR 2021): federated averaging with local batch normalisation.

Every BatchNorm layer stays with the client: its affine parameters (weight,
bias) and its running statistics (which FedAvg's server averages); everything
else is averaged as in FedAvg. On a model without BatchNorm, FedBN is FedAvg.
"""

from __future__ import annotations

import torch
from torch.nn.modules.batchnorm import _BatchNorm

from fedbench import ClientSpec, ClientUpdate, MethodSpec, hookimpl
from fedbench_plugins.methods.partial import PartlyPersonalClient


class LocalBNClient(PartlyPersonalClient):
    """A plain client that keeps its BatchNorm layers' weight, bias and running statistics."""

    def receive_buffers(self, buffers: list[torch.Tensor | None]) -> None:
        """Its BatchNorm statistics stay its own: the server's average is not taken..."""

    def sent_buffers(self) -> None:
        """...and its own are not sent."""
        return None

    def personal_tensors(self) -> list[bool]:
        learner = self.ensemble.learners[0]
        bn = {id(p) for m in learner.model.modules() if isinstance(m, _BatchNorm) for p in m.parameters()}
        return [id(p) in bn for p in learner._params]

    def receive(self, params: list[torch.Tensor]) -> list[torch.Tensor]:
        return self.merge(params)  # its own BatchNorm entries back in what it was sent

    def after_fit(self, ins, update: ClientUpdate) -> None:  # noqa: ANN001
        self.keep(update.params)


@hookimpl
def fedbench_clients() -> list[ClientSpec]:
    return [ClientSpec(name="local_bn", doc="plain client keeping its BatchNorm weights and biases local", cls=LocalBNClient)]


@hookimpl
def fedbench_methods() -> list[MethodSpec]:
    return [
        MethodSpec(
            name="fedbn",
            doc="FedBN: FedAvg with BatchNorm layers kept local (Li et al. 2021); FedAvg on models without BatchNorm",
            client="local_bn",
            aggregator="centralized",
        )
    ]
