"""Losses and scores for the two task types a data set can declare.

Training uses per-sample losses on logits (``reduction="none"``) so that the
caller can weight samples. Evaluation scores *probabilities*, because a
personalised predictor may be a mixture of several models' probabilities.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_EPS = 1e-7


class Task:
    """Per-sample loss on logits; probabilities; loss and correctness of probabilities."""

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def proba(self, logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def score(self, proba: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample (loss, correct as 0/1 float) of predicted probabilities."""
        raise NotImplementedError


class BinaryTask(Task):
    """One logit per sample, labels 0/1; BCE-with-logits; predict 1 when p > 0.5."""

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits.reshape(-1), y.to(logits.dtype), reduction="none")

    def proba(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits.reshape(-1))

    def score(self, proba: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = y.to(proba.dtype)
        loss = F.binary_cross_entropy(proba.clamp(_EPS, 1 - _EPS), y, reduction="none")
        correct = ((proba > 0.5).to(proba.dtype) == y).to(proba.dtype)
        return loss, correct


class MulticlassTask(Task):
    """One logit per class, integer labels; cross-entropy; predict the arg-max."""

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y.long(), reduction="none")

    def proba(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits, dim=-1)

    def score(self, proba: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = y.long()
        p_true = proba.gather(-1, y.unsqueeze(-1)).squeeze(-1)
        loss = -torch.log(p_true.clamp_min(_EPS))
        correct = (proba.argmax(dim=-1) == y).to(proba.dtype)
        return loss, correct


def make_task(kind: str) -> Task:
    """The task object for a data set's ``task`` field."""
    return {"binary": BinaryTask, "multiclass": MulticlassTask}[kind]()
