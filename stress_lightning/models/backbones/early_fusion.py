"""Early-fusion temporal backbone: the T frames stacked on the channel axis into one 2D CNN -> [B, out_dim].

The first of the four video models compared in the slides the project follows (early fusion 42.5 %, late fusion
52.9 %, CNN-LSTM 60.4 %, 3D CNN 62.1 % on RAVDESS, 10 frames, actor-wise split): time is mixed by the first
convolution alone, so the clip length is part of the architecture.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from stress_lightning.models.backbones.spatial import IMAGENET_MEAN, IMAGENET_STD, Conv4
from stress_lightning.models.backbones.temporal import TemporalBackbone
from stress_lightning.models.registry import TEMPORAL_BACKBONES


@TEMPORAL_BACKBONES.register("early_fusion")
class EarlyFusion(TemporalBackbone):
    """A `conv4` trunk (conv3x3-BN-ReLU-maxpool blocks, global pooling) whose first convolution takes the
    3 * num_frames channels of the whole clip; out_dim = channels[-1].

    Args:
        num_frames: clip length T the first convolution is built for; another length is an error.
        channels: widths of the four blocks (wider than conv4's default: the first block sees T frames at once).
    """

    def __init__(self, num_frames: int = 8, channels: Sequence[int] = (32, 64, 128, 128)) -> None:
        super().__init__(IMAGENET_MEAN, IMAGENET_STD)
        if num_frames < 1:
            raise ValueError(f"early_fusion: num_frames must be >= 1, got {num_frames}")
        if len(channels) == 0:
            raise ValueError("early_fusion: channels must list the block widths, got none")
        self.num_frames = int(num_frames)
        trunk = Conv4(channels).trunk
        first = trunk[0]
        # conv4's blocks unchanged but for the input width of their first convolution.
        trunk[0] = nn.Conv2d(3 * self.num_frames, first.out_channels, 3, padding=1, bias=False)
        self.trunk = trunk
        self.out_dim = int(channels[-1])

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """frames [B, num_frames, 3, H, W] in [0, 1] -> features [B, out_dim]."""
        if frames.ndim != 5 or frames.shape[2] != 3:
            raise ValueError(f"early_fusion: expected frames [B, T, 3, H, W], got {tuple(frames.shape)}")
        if frames.shape[1] != self.num_frames:
            raise ValueError(
                f"early_fusion: built for clips of num_frames={self.num_frames} frames (its first convolution takes "
                f"3 x {self.num_frames} channels), got frames of shape {tuple(frames.shape)}; set "
                "temporal_kwargs.num_frames to the clip length"
            )
        mean = self.pixel_mean.view(1, 1, 3, 1, 1)
        std = self.pixel_std.view(1, 1, 3, 1, 1)
        # [B, T, 3, H, W] -> [B, T*3, H, W]: channel 3t + c is colour c of frame t.
        return self.trunk(((frames - mean) / std).flatten(1, 2))
