"""A small FER-2013-style CNN: face image [B, 3, H, W] in [0, 1] (48-64 px) -> features [B, out_dim].

Design lineage. FER-2013 (the ICML 2013 "Challenges in Representation Learning" facial expression task: 35,887
greyscale 48 x 48 faces, seven classes) was won by a convolutional network trained with an SVM loss (Tang, 2013),
and the strong single models reported on it since are VGG-like stacks: blocks of two 3 x 3 convolutions with
batch normalisation, a 2 x 2 max pool and dropout, widening as space shrinks (e.g. Pramerdorfer and Kampel, 2016;
Khaireddin and Chen, 2021, about 73 % test accuracy). This is that recipe at face-crop scale, with global average
pooling instead of the wide fully connected layers, so that any input size works and the package's heads classify.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from stress_lightning.models.backbones.spatial import SpatialBackbone
from stress_lightning.models.registry import SPATIAL_BACKBONES

# ITU-R BT.601 luma weights (R, G, B): how FER-2013's greyscale faces relate to colour pixels.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
# FER-2013 pixel statistics (mean 129.4, standard deviation 65.0 on a 0-255 scale), in [0, 1] units.
FER2013_MEAN = 129.4 / 255
FER2013_STD = 65.0 / 255


class Luminance(nn.Module):
    """[B, 3, H, W] -> [B, 1, H, W]: the BT.601 weighted sum of the channels (a fixed 1 x 1 projection)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("weights", torch.tensor(LUMA_WEIGHTS).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return (image * self.weights).sum(dim=1, keepdim=True)


@SPATIAL_BACKBONES.register("fer_cnn")
class FerCNN(SpatialBackbone):
    """Luminance, then `len(channels)` blocks of (conv3x3-BN-ReLU) x 2, 2 x 2 max pool and dropout, then global
    average pooling; out_dim = channels[-1] (256 by default, 1.2 M parameters).

    The input is reduced to luminance: FER-2013, the corpus this architecture is sized for, is greyscale, so
    weights trained there see no colour, and dropping it makes the features indifferent to the white balance and
    skin-tone rendering that differ between the corpora the package mixes. The same mean and standard deviation
    on all three channels (FER-2013's) make "normalise, then luminance" equal to "luminance, then normalise",
    because the luma weights sum to 1.

    Args:
        channels: widths of the blocks; four blocks take a 48 x 48 face to 3 x 3 (64 x 64 to 4 x 4).
        dropout: dropout after each block's pool (0.25 in the FER-2013 recipes).
    """

    def __init__(self, channels: Sequence[int] = (32, 64, 128, 256), dropout: float = 0.25) -> None:
        super().__init__(mean=(FER2013_MEAN,) * 3, std=(FER2013_STD,) * 3)
        if len(channels) == 0 or any(int(c) <= 0 for c in channels):
            raise ValueError(f"fer_cnn: channels must be positive block widths, got {list(channels)}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"fer_cnn: dropout must be in [0, 1), got {dropout}")
        layers: list[nn.Module] = [Luminance()]
        in_ch = 1
        for width in channels:
            for conv_in in (in_ch, width):
                layers += [nn.Conv2d(conv_in, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
            # ceil_mode keeps odd sizes (and inputs below 2^blocks px) from losing their last row and column.
            layers += [nn.MaxPool2d(2, ceil_mode=True), nn.Dropout(dropout)]
            in_ch = int(width)
        self.trunk = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.out_dim = in_ch
