"""Shared by Ditto and pFedMe: a client that keeps a personal model and is scored with it.

The personal model is what a :class:`fedbench.FitPhase` keeps (``keep="personal"``) or carries
(``carry=("personal",)``) under the name ``personal``; before its first training the client is scored
with the parameters it receives.
"""

from __future__ import annotations

import torch

from fedbench import Client


class PersonalModelClient(Client):
    """A client scored with its kept ``personal`` model, once it has one."""

    @property
    def personal(self) -> list[torch.Tensor] | None:
        return self.kept.get("personal")

    def predictor(self, params: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        return super().predictor(self.personal if self.personal is not None else params)
