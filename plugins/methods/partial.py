"""Shared by FedRep and FedBN: clients that keep part of each model's parameters to themselves.

A method marks which parameter tensors are personal; the client substitutes
its own values for those entries in whatever it receives, trains, and keeps
the new values. The arithmetic still moves whole vectors (the server averages
the personal entries too, but no client that has trained uses that average);
the bytes counted are only the shared entries', both ways.
"""

from __future__ import annotations

import functools

import torch

from fedbench import Client


class PartlyPersonalClient(Client):
    """A client whose learners' parameter tensors flagged by :meth:`personal_tensors` never leave it."""

    _own: list[torch.Tensor] | None = None

    def personal_tensors(self) -> list[bool]:
        """One flag per parameter tensor of a learner: True for the tensors this client keeps."""
        raise NotImplementedError

    @functools.cached_property
    def personal_mask(self) -> torch.Tensor:
        """The personal entries of a learner's flat parameter vector."""
        params = self.ensemble.learners[0]._params
        flags = self.personal_tensors()
        if len(flags) != len(params):
            raise ValueError(f"personal_tensors() gave {len(flags)} flags for {len(params)} parameter tensors")
        return torch.cat([torch.full((p.numel(),), f, dtype=torch.bool, device=p.device) for p, f in zip(params, flags)])

    def merge(self, params: list[torch.Tensor]) -> list[torch.Tensor]:
        """``params`` with this client's own values in the personal entries (the received ones on first contact)."""
        if self._own is None:
            return params
        return [torch.where(self.personal_mask, mine, theirs) for mine, theirs in zip(self._own, params)]

    def keep(self, params: list[torch.Tensor]) -> None:
        """Remember the personal entries of ``params`` (the whole vectors are kept; only those entries are used)."""
        self._own = [p.clone() for p in params]

    def exchanged_bytes(self, params: list[torch.Tensor]) -> int:
        shared = int((~self.personal_mask).sum())
        return sum(shared * p.element_size() for p in params)

    def predictor(self, params: list[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
        return super().predictor(self.merge(params))
