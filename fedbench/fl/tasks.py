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
    """One logit per class, integer labels; cross-entropy; predict the arg-max.

    Labels may be one per sample (``y``: ``(n,)``, logits ``(n, C)``) or a sequence per sample (``y``:
    ``(n, L)``, logits ``(n, L, C)``: every position of a window is predicted, as the FedEM authors'
    Shakespeare model does); a sample's loss and correctness are then the means over its positions.
    ``class_weights`` (``(C,)``) weight each label's cross-entropy, as ``torch.nn.CrossEntropyLoss(weight=...,
    reduction="none")`` does (no renormalisation), in training and in the E-step; the evaluation loss
    (:meth:`score`) is unweighted, as the FedEM authors' evaluation (``nn.NLLLoss()`` without weights,
    ``learners_ensemble.py:224``) is.
    """

    def __init__(self, class_weights: torch.Tensor | None = None) -> None:
        self.class_weights = class_weights

    def _weights(self, like: torch.Tensor) -> torch.Tensor | None:
        w = self.class_weights
        return None if w is None else w.to(device=like.device, dtype=like.dtype)

    @staticmethod
    def _per_sample(values: torch.Tensor) -> torch.Tensor:
        return values.flatten(1).mean(dim=1) if values.dim() > 1 else values

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        y = y.long()
        per_label = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), weight=self._weights(logits), reduction="none")
        return self._per_sample(per_label.view(y.shape))

    def proba(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits, dim=-1)

    def score(self, proba: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = y.long()
        p_true = proba.gather(-1, y.unsqueeze(-1)).squeeze(-1)
        loss = -torch.log(p_true.clamp_min(_EPS))
        correct = (proba.argmax(dim=-1) == y).to(proba.dtype)
        return self._per_sample(loss), self._per_sample(correct)


def make_task(kind: str, class_weights: torch.Tensor | None = None) -> Task:
    """The task object for a data set's ``task`` field (and its class weights, multiclass only)."""
    if kind == "multiclass":
        return MulticlassTask(class_weights)
    if class_weights is not None:
        raise ValueError(f"class weights need a multiclass task, not {kind!r}")
    return {"binary": BinaryTask}[kind]()
