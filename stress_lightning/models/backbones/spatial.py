"""Spatial (single-frame) backbones: image [B, 3, H, W] in [0, 1] -> feature vector [B, out_dim].

Each backbone normalises its input itself (ImageNet statistics), so callers always pass raw [0, 1] pixels.
The torchvision backbones take `weights`: None (random init), a torchvision weight name such as
"IMAGENET1K_V1" or "DEFAULT" (torchvision downloads it into the torch hub cache), or a path to a local
`.pth`/`.pt` state dict of the torchvision architecture (loaded with `torch.load(weights_only=True)`; the
classifier keys may be present or absent, they are dropped).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
import torchvision
from torch import nn

from stress_lightning.models.registry import SPATIAL_BACKBONES

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _looks_like_path(weights: str) -> bool:
    return Path(weights).suffix in {".pth", ".pt"} or os.sep in weights or Path(weights).exists()


def load_state_dict_file(path: Path, owner: str, wrapper_key: str | None = None) -> Mapping[str, torch.Tensor]:
    """A tensor state dict from `path` (unwrapped from `wrapper_key` when the file is a checkpoint holding one
    there, as pytorchvideo's model-zoo `.pyth` files do under "model_state")."""
    if not path.is_file():
        raise FileNotFoundError(f"{owner}: weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as err:
        raise ValueError(f"{owner}: cannot read weights file {path} as a tensor state dict: {err}") from err
    if wrapper_key is not None and isinstance(state, Mapping) and isinstance(state.get(wrapper_key), Mapping):
        state = state[wrapper_key]
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        wrapped = f' nor a checkpoint with one under "{wrapper_key}"' if wrapper_key else ""
        raise ValueError(f"{owner}: weights file {path} holds neither a state dict (name -> tensor){wrapped}")
    return state


def load_backbone_state(
    model: nn.Module, state: Mapping[str, torch.Tensor], path: Path, owner: str, head_prefix: str, what: str = ""
) -> None:
    """Load a backbone's weights from a file's state dict, its classifier (`head_prefix`) left out; wrong shapes,
    missing or unexpected keys are errors naming the file (`what` names the architecture in the message)."""
    backbone_state = {k: v for k, v in state.items() if not k.startswith(head_prefix)}
    own = model.state_dict()
    wrong = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in backbone_state.items()
        if k in own and own[k].shape != v.shape
    ]
    if wrong:
        raise ValueError(f"{owner}: weights file {path} has tensors of the wrong shape: {wrong[:3]}")
    missing, unexpected = model.load_state_dict(backbone_state, strict=False)
    missing = [k for k in missing if not k.startswith(head_prefix)]
    if missing or unexpected:
        raise ValueError(
            f"{owner}: weights file {path} does not match the {what or 'architecture'}: "
            f"{len(missing)} missing keys (e.g. {missing[:3]}), {len(unexpected)} unexpected keys "
            f"(e.g. {unexpected[:3]})"
        )


def build_torchvision_model(
    builder: Callable[..., nn.Module],
    weights_enum: type[torchvision.models.WeightsEnum],
    weights: str | None,
    head_prefix: str,
    owner: str,
) -> nn.Module:
    """Build a torchvision classifier with `weights` resolved as described in the module docstring.

    Args:
        builder: torchvision constructor, e.g. `torchvision.models.efficientnet_b0`.
        weights_enum: its weights enum, e.g. `EfficientNet_B0_Weights`.
        weights: None, a member name of `weights_enum`, or a path to a local state dict.
        head_prefix: state-dict prefix of the classifier layer (ignored when loading a file), e.g. "fc.".
        owner: backbone name for error messages.
    """
    if weights is None:
        return builder(weights=None)
    if not isinstance(weights, str):
        raise TypeError(f"{owner}: weights must be None or a string, got {type(weights).__name__}")
    if weights in weights_enum.__members__:
        # The real pretrained path: torchvision downloads (or reuses) the checkpoint in the hub cache.
        return builder(weights=weights_enum[weights])
    if not _looks_like_path(weights):
        names = ", ".join(weights_enum.__members__)
        raise ValueError(
            f"{owner}: weights {weights!r} is neither a torchvision weight name ({names}) "
            "nor a path to a local .pth/.pt state dict"
        )
    path = Path(weights).expanduser()
    state = load_state_dict_file(path, owner)
    model = builder(weights=None)
    load_backbone_state(model, state, path, owner, head_prefix)
    return model


class SpatialBackbone(nn.Module):
    """Base class: normalises [0, 1] RGB with fixed per-channel statistics, then runs `self.trunk`."""

    out_dim: int
    trunk: nn.Module

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        super().__init__()
        # Constants, not state: keep them out of checkpoints.
        self.register_buffer("pixel_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image [B, 3, H, W] in [0, 1] -> features [B, out_dim]."""
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"{type(self).__name__}: expected image [B, 3, H, W], got {tuple(image.shape)}")
        # Subclasses set `self.trunk`: normalised image -> [B, out_dim].
        return self.trunk((image - self.pixel_mean) / self.pixel_std)


@SPATIAL_BACKBONES.register("efficientnet_b0")
class EfficientNetB0(SpatialBackbone):
    """torchvision EfficientNet-B0 trunk with global average pooling; out_dim 1280."""

    def __init__(self, weights: str | None = None) -> None:
        super().__init__()
        model = build_torchvision_model(
            torchvision.models.efficientnet_b0,
            torchvision.models.EfficientNet_B0_Weights,
            weights,
            head_prefix="classifier.",
            owner="efficientnet_b0",
        )
        self.trunk = nn.Sequential(model.features, nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.out_dim = 1280


@SPATIAL_BACKBONES.register("resnet18")
class ResNet18(SpatialBackbone):
    """torchvision ResNet-18 trunk with global average pooling; out_dim 512."""

    def __init__(self, weights: str | None = None) -> None:
        super().__init__()
        model = build_torchvision_model(
            torchvision.models.resnet18,
            torchvision.models.ResNet18_Weights,
            weights,
            head_prefix="fc.",
            owner="resnet18",
        )
        model.fc = nn.Identity()
        self.trunk = model
        self.out_dim = 512


def conv_blocks(channels: Sequence[int], in_channels: int = 3, ceil_mode: bool = True) -> nn.Sequential:
    """conv3x3-BN-ReLU-maxpool(2) blocks of the given widths: the small 2D trunk several backbones share.
    `ceil_mode=False` pools only whole 2x2 windows (a tiled super-image must not pool across tile borders)."""
    if len(channels) == 0:
        raise ValueError("conv_blocks: channels must list at least one block width")
    layers: list[nn.Module] = []
    in_ch = in_channels
    for out_ch in channels:
        layers += [
            nn.Conv2d(in_ch, int(out_ch), 3, padding=1, bias=False),
            nn.BatchNorm2d(int(out_ch)),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2, ceil_mode=ceil_mode),
        ]
        in_ch = int(out_ch)
    return nn.Sequential(*layers)


@SPATIAL_BACKBONES.register("conv4")
class Conv4(SpatialBackbone):
    """Four conv3x3-BN-ReLU-maxpool blocks and global pooling: a fast stream for tests and CPU smoke runs."""

    def __init__(self, channels: Sequence[int] = (16, 32, 64, 64)) -> None:
        super().__init__()
        if len(channels) == 0:
            raise ValueError("conv4: channels must be non-empty")
        self.trunk = nn.Sequential(*conv_blocks(channels), nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.out_dim = int(channels[-1])
