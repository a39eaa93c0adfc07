"""Late-fusion temporal backbone: a shared 2D CNN on every frame, features averaged over time -> [B, out_dim].

The per-frame encoder (`FrameEncoder`) is shared with `cnn_lstm`. Late fusion is the second of the four video
models compared in the slides the project follows (early fusion 42.5 %, late fusion 52.9 %, CNN-LSTM 60.4 %,
3D CNN 62.1 % on RAVDESS, 10 frames, actor-wise split): frames meet only after the CNN, so it sees appearance
over the clip but no motion and no order.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from stress_lightning.models.backbones.temporal import TemporalBackbone
from stress_lightning.models.registry import SPATIAL_BACKBONES, TEMPORAL_BACKBONES


class FrameEncoder(nn.Module):
    """A registered spatial backbone run on each frame with shared weights: [B, T, 3, H, W] -> [B, T, out_dim].

    Args:
        frame_backbone: a SPATIAL_BACKBONES name ("conv4", "resnet18", "fer_cnn", ...); it normalises its input.
        frame_kwargs: its constructor kwargs (e.g. {"weights": "IMAGENET1K_V1"}).
        owner: the temporal backbone's name, for error messages.
    """

    def __init__(self, frame_backbone: str, frame_kwargs: dict[str, Any] | None, owner: str) -> None:
        super().__init__()
        if frame_kwargs is not None and not isinstance(frame_kwargs, dict):
            raise TypeError(f"{owner}: frame_kwargs must be a dict or None, got {type(frame_kwargs).__name__}")
        self.owner = owner
        self.backbone = SPATIAL_BACKBONES.build(frame_backbone, **(frame_kwargs or {}))
        self.out_dim = int(self.backbone.out_dim)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """frames [B, T, 3, H, W] in [0, 1] -> per-frame features [B, T, out_dim]."""
        if frames.ndim != 5 or frames.shape[2] != 3:
            raise ValueError(f"{self.owner}: expected frames [B, T, 3, H, W], got {tuple(frames.shape)}")
        # One pass over B*T images: the frames of a clip share the CNN, as in a batch of stills.
        features = self.backbone(frames.flatten(0, 1))
        # Every size read from a tensor, not `unflatten(0, (-1, T))` / `(B, T)`: the ONNX exporter's shape inference
        # then keeps the batch axis symbolic. Otherwise it folds the zero tensors made downstream (the LSTM's initial
        # state, the stress head's placeholders) into constants of the export batch size, and other batches fail.
        return features.reshape(frames.shape[0], frames.shape[1], features.shape[-1])


@TEMPORAL_BACKBONES.register("late_fusion")
class LateFusion(TemporalBackbone):
    """Per-frame features of a shared spatial backbone, averaged over the T frames; out_dim = that backbone's.

    Args:
        frame_backbone: the SPATIAL_BACKBONES name of the per-frame CNN.
        frame_kwargs: its constructor kwargs.
    """

    def __init__(self, frame_backbone: str = "conv4", frame_kwargs: dict[str, Any] | None = None) -> None:
        # Identity statistics: the frame backbone normalises its own input (a TemporalBackbone all the same, so that
        # FSDP's per-stream wrapping, conf/trainer/fsdp.yaml, takes it).
        super().__init__(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
        self.frames = FrameEncoder(frame_backbone, frame_kwargs, owner="late_fusion")
        self.out_dim = self.frames.out_dim

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """frames [B, T, 3, H, W] in [0, 1] -> features [B, out_dim]."""
        return self.frames(frames).mean(dim=1)
