"""Temporal (clip) backbones: frames [B, T, 3, H, W] in [0, 1] -> feature vector [B, out_dim].

Each backbone normalises its input itself. `r3d_18` takes `weights` like the spatial torchvision backbones
(None, a torchvision weight name such as "KINETICS400_V1", or a path to a local state dict).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torchvision
from torch import nn

from stress_lightning.models.backbones.spatial import IMAGENET_MEAN, IMAGENET_STD, build_torchvision_model
from stress_lightning.models.registry import TEMPORAL_BACKBONES

# Statistics torchvision's Kinetics-400 video models were trained with.
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)


class TemporalBackbone(nn.Module):
    """Base class: [B, T, 3, H, W] -> normalised [B, 3, T, H, W] -> `self.trunk` -> [B, out_dim]."""

    out_dim: int
    trunk: nn.Module

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("pixel_mean", torch.tensor(mean).view(1, 3, 1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(1, 3, 1, 1, 1), persistent=False)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """frames [B, T, 3, H, W] in [0, 1] -> features [B, out_dim]."""
        if frames.ndim != 5 or frames.shape[2] != 3:
            raise ValueError(f"{type(self).__name__}: expected frames [B, T, 3, H, W], got {tuple(frames.shape)}")
        video = frames.permute(0, 2, 1, 3, 4)
        return self.trunk((video - self.pixel_mean) / self.pixel_std)


@TEMPORAL_BACKBONES.register("c3d_small")
class C3DSmall(TemporalBackbone):
    """A compact C3D-style 3D CNN: strided 3x3x3 conv-BN-ReLU blocks, then global average pooling.

    The first two blocks downsample only in space so that short clips (T = 8) keep their time axis until the
    motion features are formed; the last two halve time too. About 60 M multiply-adds per 8x64x64 clip.

    Args:
        channels: output channels of the four blocks; out_dim is the last.
        dropout: dropout on the pooled features.
    """

    def __init__(self, channels: Sequence[int] = (16, 32, 64, 128), dropout: float = 0.0) -> None:
        super().__init__(IMAGENET_MEAN, IMAGENET_STD)
        if len(channels) != 4:
            raise ValueError(f"c3d_small: channels must list 4 block widths, got {list(channels)}")
        strides = ((1, 2, 2), (1, 2, 2), (2, 2, 2), (2, 2, 2))
        layers: list[nn.Module] = []
        in_ch = 3
        for out_ch, stride in zip(channels, strides, strict=True):
            layers += [
                nn.Conv3d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm3d(out_ch),
                nn.ReLU(inplace=True),
            ]
            in_ch = out_ch
        self.trunk = nn.Sequential(*layers, nn.AdaptiveAvgPool3d(1), nn.Flatten(1), nn.Dropout(dropout))
        self.out_dim = int(channels[-1])


@TEMPORAL_BACKBONES.register("r3d_18")
class R3D18(TemporalBackbone):
    """torchvision 3D ResNet-18 (Kinetics-400 architecture) without its classifier; out_dim 512."""

    def __init__(self, weights: str | None = None) -> None:
        super().__init__(KINETICS_MEAN, KINETICS_STD)
        model = build_torchvision_model(
            torchvision.models.video.r3d_18,
            torchvision.models.video.R3D_18_Weights,
            weights,
            head_prefix="fc.",
            owner="r3d_18",
        )
        model.fc = nn.Identity()
        self.trunk = model
        self.out_dim = 512
