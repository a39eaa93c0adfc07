"""Temporal (clip) backbones: frames [B, T, 3, H, W] in [0, 1] -> feature vector [B, out_dim].

Each backbone normalises its input itself. `r3d_18` takes `weights` like the spatial torchvision backbones
(None, a torchvision weight name such as "KINETICS400_V1", or a path to a local state dict); `i3d_r50` takes
None or a path to a local state dict (it never downloads).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
import torchvision
from torch import nn

from stress_lightning.models.backbones.spatial import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_torchvision_model,
    load_backbone_state,
    load_state_dict_file,
)
from stress_lightning.models.registry import TEMPORAL_BACKBONES

# Statistics torchvision's Kinetics-400 video models were trained with.
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)
# pytorchvideo's model zoo (PySlowFast recipes) trained its Kinetics models with these instead.
PYTORCHVIDEO_KINETICS_MEAN = (0.45, 0.45, 0.45)
PYTORCHVIDEO_KINETICS_STD = (0.225, 0.225, 0.225)


def load_zoo_checkpoint(net: nn.Module, weights: str, owner: str, head_prefix: str, what: str, zoo_file: str) -> None:
    """Load a local state dict, or a pytorchvideo model-zoo checkpoint holding one under "model_state", into `net`
    without its classifier (`head_prefix`); nothing is downloaded (`zoo_file` names the checkpoint in messages)."""
    if not isinstance(weights, str):
        raise TypeError(f"{owner}: weights must be None or a path string, got {type(weights).__name__}")
    path = Path(weights).expanduser()
    if not path.exists() and not path.suffix:
        raise ValueError(
            f"{owner}: weights {weights!r} is not a file; {owner} takes a local state dict path (the Kinetics "
            f"weights are pytorchvideo's {zoo_file}) and downloads nothing"
        )
    state = load_state_dict_file(path, owner, wrapper_key="model_state")
    load_backbone_state(net, state, path, owner, head_prefix=head_prefix, what=what)


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


@TEMPORAL_BACKBONES.register("i3d_r50")
class I3DR50(TemporalBackbone):
    """pytorchvideo's I3D ResNet-50 (the `I3D_8x8_R50` Kinetics-400 architecture) without its classifier.

    The trunk is `pytorchvideo.models.hub.resnet.i3d_r50` built with `head=None` (stem and four residual
    stages), followed by global average pooling; out_dim 2048. The model-zoo head pools with a fixed (4, 7, 7)
    kernel, which only fits 8 x 224 x 224 clips; adaptive pooling takes any clip with T >= 2 (8 x 64 x 64 face
    clips, 16 x 112 x 112, 8 x 224 x 224 ...). Time is halved once (the pool after stage 1), space 32 times, so
    below 32 x 32 pixels the last stage sees a single position.

    Args:
        weights: None (random init) or a path to a local state dict of this architecture. The Kinetics-400
            weights are pytorchvideo's `I3D_8x8_R50` checkpoint (`I3D_8x8_R50.pyth` from the pytorchvideo model
            zoo, 73.3 % top-1): download it once yourself and pass its path; the checkpoint's "model_state" is
            unwrapped and its classifier keys (`blocks.6.*`) dropped. Nothing is downloaded at run time.
        dropout: dropout on the pooled features.
    """

    # The stage-1 max pool halves time with a kernel of 2 and no padding: one frame leaves nothing.
    MIN_FRAMES = 2

    def __init__(self, weights: str | None = None, dropout: float = 0.0) -> None:
        super().__init__(PYTORCHVIDEO_KINETICS_MEAN, PYTORCHVIDEO_KINETICS_STD)
        with warnings.catch_warnings():
            # fvcore (imported by pytorchvideo) calls the deprecated torch.jit.script at import; not ours to fix.
            warnings.filterwarnings("ignore", category=FutureWarning)
            # Imported here, not at module top: pytorchvideo's hub pulls in fvcore and iopath (~2 s), which every
            # other backbone would otherwise pay for.
            from pytorchvideo.models.hub.resnet import i3d_r50

        # The hub builder fixes the I3D kernel layout the checkpoint was trained with; head=None drops the
        # classifier, so the block names (blocks.0 ... blocks.5) are the checkpoint's.
        net = i3d_r50(pretrained=False, head=None)
        if weights is not None:
            self._load(net, weights)
        self.trunk = nn.Sequential(net, nn.AdaptiveAvgPool3d(1), nn.Flatten(1), nn.Dropout(dropout))
        self.out_dim = 2048

    @staticmethod
    def _load(net: nn.Module, weights: str) -> None:
        # The checkpoint's classifier (the model zoo's blocks.6 head) has no counterpart here.
        load_zoo_checkpoint(net, weights, "i3d_r50", "blocks.6.", "I3D R50 architecture", "I3D_8x8_R50.pyth")

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """frames [B, T, 3, H, W] in [0, 1] with T >= 2 -> features [B, 2048]."""
        if frames.ndim == 5 and frames.shape[1] < self.MIN_FRAMES:
            raise ValueError(
                f"i3d_r50: a clip needs at least {self.MIN_FRAMES} frames (the stage-1 pool halves time), "
                f"got frames of shape {tuple(frames.shape)}"
            )
        return super().forward(frames)
