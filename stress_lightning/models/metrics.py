"""Metrics torchmetrics does not define the way the field reports them."""

from __future__ import annotations

import torch
from torchmetrics.classification import MulticlassConfusionMatrix


class BalancedAccuracy(MulticlassConfusionMatrix):
    """Mean per-class recall over the classes present in the targets (sklearn's `balanced_accuracy_score`).

    torchmetrics' macro accuracy also averages classes that are only predicted, never true (recall 0/0 counted as
    0), which understates the figure on a split where a rare class is absent.
    """

    def compute(self) -> torch.Tensor:
        cm = super().compute().float()
        support = cm.sum(dim=1)
        present = support > 0
        if not present.any():
            return torch.tensor(0.0, device=cm.device)
        return (cm.diagonal()[present] / support[present]).mean()
