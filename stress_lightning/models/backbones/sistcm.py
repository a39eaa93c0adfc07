"""SISTCM: a super-image spatio-temporal convolution model with a two-stream LSTM and multi-stage supervision.

The T frames of a clip [B, T, 3, H, W] are tiled into two super-images, H x (W*T) (frames side by side) and
(H*T) x W (frames stacked). One shared 2D conv trunk runs on both, so an ordinary 2D convolution sees two
neighbouring frames wherever its kernel crosses a tile seam: in the wide layout a frame's right edge meets the next
frame's left edge, in the tall layout its bottom edge meets the next frame's top. The two layouts differ only
there; each output map is folded back into per-frame maps, the two are fused with learned softmax weights, and
per-frame global pooling gives frame features [B, T, C].

Two LSTM streams read those: the feature stream (over the frame features) and the emotion stream (over the softmax
of per-frame expression logits). The output features are the two last hidden states side by side. Multi-stage
supervision trains L = L1 + lambda L2 + mu L3: L1 on the network's expression head (outside this module), L2 on a
classifier over the feature stream's last state, L3 on the time mean of the per-frame logits (`forward_aux`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from stress_lightning.models.backbones.spatial import IMAGENET_MEAN, IMAGENET_STD, conv_blocks
from stress_lightning.models.registry import TEMPORAL_BACKBONES


def to_wide_super_image(frames: torch.Tensor) -> torch.Tensor:
    """frames [B, T, C, H, W] -> [B, C, H, T*W], frame t in columns t*W .. (t+1)*W - 1."""
    b, t, c, h, w = frames.shape
    return frames.permute(0, 2, 3, 1, 4).reshape(b, c, h, t * w)


def from_wide_super_image(image: torch.Tensor, num_frames: int) -> torch.Tensor:
    """[B, C, H, T*W] -> per-frame maps [B, T, C, H, W] (the inverse of `to_wide_super_image`)."""
    b, c, h, tw = image.shape
    return image.reshape(b, c, h, num_frames, tw // num_frames).permute(0, 3, 1, 2, 4)


def to_tall_super_image(frames: torch.Tensor) -> torch.Tensor:
    """frames [B, T, C, H, W] -> [B, C, T*H, W], frame t in rows t*H .. (t+1)*H - 1."""
    b, t, c, h, w = frames.shape
    return frames.permute(0, 2, 1, 3, 4).reshape(b, c, t * h, w)


def from_tall_super_image(image: torch.Tensor, num_frames: int) -> torch.Tensor:
    """[B, C, T*H, W] -> per-frame maps [B, T, C, H, W] (the inverse of `to_tall_super_image`)."""
    b, c, th, w = image.shape
    return image.reshape(b, c, num_frames, th // num_frames, w).permute(0, 2, 1, 3, 4)


@TEMPORAL_BACKBONES.register("sistcm")
class SISTCM(nn.Module):
    """Super-image conv trunk + two-stream LSTM; features [B, 2 * hidden] (see the module docstring).

    Not a `TemporalBackbone`: that base permutes to a [B, 3, T, H, W] video for a 3D trunk, while this model works
    on the frame axis directly.

    Args:
        channels: widths of the conv3x3-BN-ReLU + 2x2 max-pool blocks of the shared trunk. Frames must have a
            height and width divisible by 2 ** len(channels): then every pooling window lies inside one tile, so the
            folded maps hold each frame's own cells and a tile border falls exactly between two cells at every
            depth. (Otherwise, at some depth a tile has an odd side, a window straddles two frames and the fold
            cuts frames mid-cell, smearing one frame into the next.) Only the 3x3 kernels cross a seam, by design.
        hidden: hidden size of each LSTM stream; out_dim = 2 * hidden.
        num_classes: expression classes of the per-frame and auxiliary classifiers (MultiTaskNet passes its own).
        lambda_feature: weight of the feature-stream auxiliary loss (lambda in L = L1 + lambda L2 + mu L3).
        mu_frame: weight of the per-frame (time-mean) auxiliary loss (mu).
        dropout: dropout on the output features.
    """

    def __init__(
        self,
        channels: Sequence[int] = (32, 64, 128),
        hidden: int = 128,
        num_classes: int = 7,
        lambda_feature: float = 0.5,
        mu_frame: float = 0.5,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if len(channels) == 0:
            raise ValueError("sistcm: channels must list at least one block width")
        if hidden < 1 or num_classes < 2:
            raise ValueError(f"sistcm: need hidden >= 1 and num_classes >= 2, got {hidden} and {num_classes}")
        if lambda_feature < 0 or mu_frame < 0:
            raise ValueError(f"sistcm: loss weights must be >= 0, got lambda={lambda_feature}, mu={mu_frame}")
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 1, 3, 1, 1), persistent=False)
        in_ch = int(channels[-1])
        self.trunk = conv_blocks(channels, ceil_mode=False)
        self.downsample = 2 ** len(channels)
        # Softmax(0, 0) = (0.5, 0.5): both layouts start equal.
        self.fusion_logits = nn.Parameter(torch.zeros(2))
        self.frame_classifier = nn.Linear(in_ch, num_classes)
        self.feature_stream = nn.LSTM(in_ch, hidden, batch_first=True)
        self.emotion_stream = nn.LSTM(num_classes, hidden, batch_first=True)
        self.feature_stream_classifier = nn.Linear(hidden, num_classes)
        self.dropout = nn.Dropout(dropout)
        self.num_classes = int(num_classes)
        self.aux_loss_weights: dict[str, float] = {"feature_stream": float(lambda_feature), "frame": float(mu_frame)}
        self.out_dim = 2 * int(hidden)

    def fusion_weights(self) -> torch.Tensor:
        """Weights of the (wide, tall) layouts in the fused maps, [2], summing to 1."""
        return torch.softmax(self.fusion_logits, dim=0)

    def frame_features(self, frames: torch.Tensor) -> torch.Tensor:
        """frames [B, T, 3, H, W] in [0, 1] -> fused, pooled frame features [B, T, C]."""
        if frames.ndim != 5 or frames.shape[2] != 3:
            raise ValueError(f"sistcm: expected frames [B, T, 3, H, W], got {tuple(frames.shape)}")
        num_frames, height, width = frames.shape[1], frames.shape[3], frames.shape[4]
        if height % self.downsample or width % self.downsample:
            raise ValueError(
                f"sistcm: frame height and width must be divisible by {self.downsample} (2 ** number of pooling "
                f"blocks) so that no pooling window straddles two tiles; got frames {tuple(frames.shape)}"
            )
        x = (frames - self.pixel_mean) / self.pixel_std
        wide = from_wide_super_image(self.trunk(to_wide_super_image(x)), num_frames)
        tall = from_tall_super_image(self.trunk(to_tall_super_image(x)), num_frames)
        weights = self.fusion_weights()
        fused = weights[0] * wide + weights[1] * tall
        return fused.mean(dim=(3, 4))

    def _streams(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # -> (features [B, 2*hidden], feature-stream last state [B, hidden], per-frame logits [B, T, E]).
        feats = self.frame_features(frames)
        frame_logits = self.frame_classifier(feats)
        # The last time step of a batch_first LSTM's output is its last hidden state (one layer, one direction).
        # The ONNX exporter warns on every LSTM that another batch size may fail; the zero initial states it builds
        # follow the input's batch axis, and the tests run the exported graph at a second batch size.
        feature_state = self.feature_stream(feats)[0][:, -1]
        emotion_state = self.emotion_stream(torch.softmax(frame_logits, dim=-1))[0][:, -1]
        features = self.dropout(torch.cat([feature_state, emotion_state], dim=1))
        return features, feature_state, frame_logits

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """frames [B, T, 3, H, W] in [0, 1] -> features [B, 2 * hidden] (the two streams' last hidden states)."""
        return self._streams(frames)[0]

    def forward_aux(self, frames: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """frames -> (features as `forward`, {"feature_stream": [B, E] logits, "frame": [B, E] time-mean logits})."""
        features, feature_state, frame_logits = self._streams(frames)
        aux = {"feature_stream": self.feature_stream_classifier(feature_state), "frame": frame_logits.mean(dim=1)}
        return features, aux
