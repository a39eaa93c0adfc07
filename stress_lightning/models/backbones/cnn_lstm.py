"""CNN-LSTM temporal backbone: a shared 2D CNN on every frame, then an LSTM over time -> [B, hidden_size].

The third of the four video models compared in the slides the project follows (early fusion 42.5 %, late
fusion 52.9 %, CNN-LSTM 60.4 %, 3D CNN 62.1 % on RAVDESS, 10 frames, actor-wise split): unlike late fusion it
reads the frames in order, so it can tell an expression forming from one fading.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from stress_lightning.models.backbones.late_fusion import FrameEncoder
from stress_lightning.models.backbones.temporal import TemporalBackbone
from stress_lightning.models.registry import TEMPORAL_BACKBONES


@TEMPORAL_BACKBONES.register("cnn_lstm")
class CNNLSTM(TemporalBackbone):
    """Per-frame features of a shared spatial backbone -> LSTM (batch_first) -> the top layer's last hidden
    state; out_dim = hidden_size.

    The last hidden state, not the mean of the outputs: it has read the whole clip in order, so it summarises
    the sequence, while averaging the outputs would weight the early steps that have seen only a few frames.

    Args:
        frame_backbone: the SPATIAL_BACKBONES name of the per-frame CNN; frame_kwargs: its constructor kwargs.
        hidden_size: LSTM width (= out_dim).
        num_layers: stacked LSTM layers.
        dropout: dropout between stacked layers (only used with num_layers > 1).
    """

    def __init__(
        self,
        frame_backbone: str = "conv4",
        frame_kwargs: dict[str, Any] | None = None,
        hidden_size: int = 128,
        num_layers: int = 1,
        dropout: float = 0.0,
    ) -> None:
        # Identity statistics: the frame backbone normalises its own input (see late_fusion.LateFusion).
        super().__init__(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
        if hidden_size < 1 or num_layers < 1:
            raise ValueError(f"cnn_lstm: hidden_size and num_layers must be >= 1, got {hidden_size}, {num_layers}")
        self.frames = FrameEncoder(frame_backbone, frame_kwargs, owner="cnn_lstm")
        self.lstm = nn.LSTM(
            self.frames.out_dim,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.out_dim = int(hidden_size)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """frames [B, T, 3, H, W] in [0, 1] -> features [B, hidden_size]."""
        _, (hidden, _) = self.lstm(self.frames(frames))
        return hidden[-1]
