"""Shared by FedRep and FedBN: clients that keep part of each model's parameters to themselves.

A method marks, per learner, which parameter tensors are personal; the
client substitutes its own values for those entries in whatever it receives,
trains, and keeps the new values. The server still receives whole vectors
(it averages the personal entries too, but no client ever uses that
average), so the bytes counted include them.
"""

from __future__ import annotations

import torch

from fedbench import Client


class PartlyPersonalClient(Client):
    """A client whose learners' parameter tensors flagged by :meth:`personal_tensors` never leave it."""

    def personal_tensors(self) -> list[bool]:
        """One flag per parameter tensor of a learner: True for the tensors this client keeps."""
        raise NotImplementedError

    def _mask(self) -> torch.Tensor:
        learner = self.ensemble.learners[0]
        flags = self.personal_tensors()
        sizes = [p.numel() for p in learner._params]
        if len(flags) != len(sizes):
            raise ValueError(f"personal_tensors() gave {len(flags)} flags for {len(sizes)} parameter tensors")
        return torch.cat([torch.full((n,), f, dtype=torch.bool) for n, f in zip(sizes, flags)]).to(learner._params[0].device)

    def merge(self, params: list[torch.Tensor]) -> list[torch.Tensor]:
        """``params`` with this client's own values in the personal entries (the received ones on first contact)."""
        own = getattr(self, "_own", None)
        if own is None:
            return params
        return [torch.where(self._mask_cache, mine, theirs) for mine, theirs in zip(own, params)]

    def keep(self, params: list[torch.Tensor]) -> None:
        """Remember the personal entries of ``params``."""
        self._own = [p.clone() for p in params]

    @property
    def _mask_cache(self) -> torch.Tensor:
        mask = getattr(self, "_mask_tensor", None)
        if mask is None:
            mask = self._mask_tensor = self._mask()
        return mask

    def evaluate(self, params: list[torch.Tensor]):  # noqa: ANN201 - EvalResult
        return super().evaluate(self.merge(params))
