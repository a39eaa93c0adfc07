"""Metrics torchmetrics does not define the way the field reports them."""

from __future__ import annotations

from typing import Any

import torch
from torchmetrics import Metric
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


class BatchWeightedMeans(Metric):
    """Means of several per-batch values (the epoch losses), each batch weighted by its size, over every rank.

    Both states are sums, which torchmetrics adds up over the ranks: the means stay exact when ranks see different
    numbers of samples (unlike Lightning's `self.log(..., sync_dist=True)` epoch mean, which floors an integer
    sample count then: Lightning issue #21859). A NaN value makes its mean NaN (a diverged loss must show).
    torchmetrics' `MeanMetric` averages one value, and with NaN kept (`nan_strategy="disable"`) it drops the weights
    (torchmetrics issue #3434).
    """

    full_state_update = False

    def __init__(self, size: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("weighted_sum", torch.zeros(size), dist_reduce_fx="sum")
        self.add_state("weight", torch.zeros(()), dist_reduce_fx="sum")

    def update(self, values: torch.Tensor, weight: float) -> None:
        """`values` [size] of one batch of `weight` samples."""
        self.weighted_sum += values.detach().to(self.weighted_sum.dtype) * weight
        self.weight += weight

    def compute(self) -> torch.Tensor:
        return self.weighted_sum / self.weight
