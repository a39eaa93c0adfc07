"""VGG-16 spatial backbone, the architecture of the "VGG-Face" baseline: image [B, 3, H, W] in [0, 1] -> [B, 512].

VGG-Face (Parkhi, Vedaldi and Zisserman, "Deep Face Recognition", BMVC 2015) is VGG-16 (configuration D: 13
conv3x3 layers in five max-pooled blocks) trained to recognise 2,622 identities. Its weights are released for
non-commercial research use only, so this package neither ships nor downloads them: the backbone is torchvision's
plain VGG-16 (no batch norm) with the package's own heads in place of the fully connected layers, and takes
ImageNet weights by name or any state dict of the same layout from a local file, such as a VGG-Face conversion
you are entitled to use.
"""

from __future__ import annotations

import torchvision
from torch import nn
from torchvision.models import vgg

from stress_lightning.models.backbones.spatial import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    SpatialBackbone,
    build_torchvision_model,
)
from stress_lightning.models.registry import SPATIAL_BACKBONES

# VGG-Face subtracts its training set's mean face colour from 0-255 RGB pixels and does not divide:
# (129.1863, 104.7624, 93.5940) / 255 as mean and 1 / 255 as scale in the [0, 1] units the backbones receive.
VGGFACE_MEAN = (129.1863 / 255, 104.7624 / 255, 93.5940 / 255)
VGGFACE_STD = (1 / 255, 1 / 255, 1 / 255)
PIXEL_STATS = {"imagenet": (IMAGENET_MEAN, IMAGENET_STD), "vggface": (VGGFACE_MEAN, VGGFACE_STD)}


def _vgg16(weights: torchvision.models.VGG16_Weights | None = None) -> nn.Module:
    """torchvision's VGG-16; without pretrained weights, only its convolutional part, under the same state-dict
    names (`features.<i>.*`) and initialisation: the classifier (124 M parameters, half a gigabyte) would be built
    and initialised only to be dropped."""
    if weights is not None:
        return torchvision.models.vgg16(weights=weights)
    model = nn.Module()
    model.features = vgg.make_layers(vgg.cfgs["D"], batch_norm=False)
    for layer in model.features.modules():
        if isinstance(layer, nn.Conv2d):
            # torchvision's VGG initialisation of its convolutions.
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(layer.bias)
    return model


@SPATIAL_BACKBONES.register("vgg16")
class VGG16(SpatialBackbone):
    """torchvision VGG-16 convolutional features (14.7 M parameters) and a 1 x 1 adaptive average pool;
    out_dim 512.

    The five 2 x 2 max pools reduce space 32 times: a face needs at least 32 x 32 pixels (one position left);
    the 7 x 7 pool and the 4096-wide fully connected layers of the classifier (124 M parameters) are dropped.

    Args:
        weights: None (random init), a `torchvision.models.VGG16_Weights` member name ("IMAGENET1K_V1",
            "IMAGENET1K_FEATURES", "DEFAULT"; torchvision downloads it) or a path to a local `.pth`/`.pt` state dict
            in torchvision's VGG-16 layout (`features.<i>.weight` / `.bias`); its `classifier.` keys may be present
            or absent, they are dropped. A VGG-Face checkpoint must be converted to that layout first (RGB input
            channel order in `features.0.weight`; the Caffe original takes BGR).
        pixel_stats: input normalisation, "imagenet" (torchvision's weights) or "vggface" (the VGG-Face mean
            colour on a 0-255 scale, for converted VGG-Face weights).
    """

    def __init__(self, weights: str | None = None, pixel_stats: str = "imagenet") -> None:
        if pixel_stats not in PIXEL_STATS:
            raise ValueError(f"vgg16: pixel_stats must be one of {sorted(PIXEL_STATS)}, got {pixel_stats!r}")
        super().__init__(*PIXEL_STATS[pixel_stats])
        model = build_torchvision_model(_vgg16, torchvision.models.VGG16_Weights, weights, "classifier.", "vgg16")
        self.trunk = nn.Sequential(model.features, nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.out_dim = 512
