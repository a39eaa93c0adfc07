"""ResNet-50 spatial backbone: image [B, 3, H, W] in [0, 1] -> pooled features [B, 2048]."""

from __future__ import annotations

import torchvision
from torch import nn

from stress_lightning.models.backbones.spatial import SpatialBackbone, build_torchvision_model
from stress_lightning.models.registry import SPATIAL_BACKBONES


@SPATIAL_BACKBONES.register("resnet50")
class ResNet50(SpatialBackbone):
    """torchvision ResNet-50 trunk (four bottleneck stages, 23.5 M parameters) with global average pooling;
    out_dim 2048.

    Space is reduced 32 times, so a 32 x 32 face leaves one position at the last stage and 64 x 64 leaves 2 x 2;
    the adaptive pool takes any size from 32 px up.

    Args:
        weights: None (random init), a `torchvision.models.ResNet50_Weights` member name ("IMAGENET1K_V1",
            "IMAGENET1K_V2", "DEFAULT"; torchvision downloads it into the hub cache) or a path to a local
            `.pth`/`.pt` state dict of torchvision's ResNet-50 (its `fc.` classifier keys, if any, are dropped).
    """

    def __init__(self, weights: str | None = None) -> None:
        super().__init__()
        model = build_torchvision_model(
            torchvision.models.resnet50, torchvision.models.ResNet50_Weights, weights, "fc.", "resnet50"
        )
        # The 1000-way ImageNet classifier is replaced by the package's heads; what it read is the feature.
        self.out_dim = model.fc.in_features
        model.fc = nn.Identity()
        self.trunk = model
