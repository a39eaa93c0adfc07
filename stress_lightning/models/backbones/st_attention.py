"""Spatio-temporal attention over face clips with an optional facial-landmark stream (after Jeon et al., Sensors
2021: spatial attention over face regions, temporal attention over frames, landmarks as a second stream).

Appearance: a per-frame 2D conv trunk gives maps [B*T, C, h, w]; a 1x1 conv scores every position, a softmax over
the h*w positions weights them into one vector per frame [B, T, C]; a small MLP scores every frame, a softmax over T
weights the frames into the clip vector [B, C].

Landmarks (optional, [B, T, 12, 2] pixels): each frame's points are centred on their mean and divided by their RMS
distance to it, so neither where the face is nor how large it is matters; the normalised points and their change
since the previous frame go through a per-frame MLP and the same kind of temporal attention to a vector [B, C]. A
learned sigmoid gate adds it to the appearance vector for the samples that have landmarks; every other sample (mask
False, landmarks=None, the exported graph, the video stream) gets exactly the appearance-only vector. During
training the stream is dropped per sample with probability `landmark_dropout`, so the model never comes to depend on
an input that deployment does not have.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from stress_lightning.models.backbones.spatial import IMAGENET_MEAN, IMAGENET_STD, conv_blocks
from stress_lightning.models.registry import TEMPORAL_BACKBONES

NUM_LANDMARKS = 12
# Floor of the landmark scale (pixels): an absent sample's all-zero points then normalise to zeros, not NaN.
MIN_LANDMARK_SCALE_PX = 1e-6


def normalise_landmarks(landmarks: torch.Tensor) -> torch.Tensor:
    """landmarks [..., K, 2] pixels -> the same points centred on their mean and divided by their RMS distance to it
    (per frame): invariant to the face's position and size in the frame."""
    centred = landmarks - landmarks.mean(dim=-2, keepdim=True)
    scale = centred.square().sum(dim=-1).mean(dim=-1).sqrt()[..., None, None]
    return centred / scale.clamp_min(MIN_LANDMARK_SCALE_PX)


class TemporalAttention(nn.Module):
    """Attention pooling over time: a tanh MLP scores each step, a softmax over T weights the steps.

    forward(x [B, T, D]) -> (pooled [B, D], weights [B, T] summing to 1 over T).
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.score = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weights = torch.softmax(self.score(x).squeeze(-1), dim=1)
        return (weights.unsqueeze(-1) * x).sum(dim=1), weights


@TEMPORAL_BACKBONES.register("st_attention")
class STAttention(nn.Module):
    """Spatial + temporal attention over a per-frame CNN, plus a gated landmark stream; features [B, C].

    Not a `TemporalBackbone`: that base permutes to a [B, 3, T, H, W] video for a 3D trunk, while this model runs a
    2D trunk per frame.

    Args:
        channels: widths of the conv3x3-BN-ReLU + 2x2 max-pool blocks; out_dim = channels[-1].
        attention_hidden: hidden width of the temporal-attention MLPs.
        landmark_hidden: hidden width of the per-frame landmark MLP.
        num_classes: expression classes of the auxiliary landmark-stream classifier (MultiTaskNet passes its own).
        landmark_dropout: probability of dropping a sample's landmark stream during training.
        landmark_loss_weight: weight of the auxiliary landmark-stream loss.
        num_landmarks: points per frame (12: `stress_lightning.data.landmarks.LANDMARK_NAMES`).
        dropout: dropout on the output features.
    """

    uses_landmarks = True

    def __init__(
        self,
        channels: Sequence[int] = (32, 64, 128),
        attention_hidden: int = 64,
        landmark_hidden: int = 64,
        num_classes: int = 7,
        landmark_dropout: float = 0.3,
        landmark_loss_weight: float = 0.3,
        num_landmarks: int = NUM_LANDMARKS,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if len(channels) == 0:
            raise ValueError("st_attention: channels must list at least one block width")
        if not 0.0 <= landmark_dropout < 1.0:
            raise ValueError(f"st_attention: landmark_dropout must be in [0, 1), got {landmark_dropout}")
        if num_classes < 2 or num_landmarks < 2:
            raise ValueError(
                f"st_attention: need num_classes >= 2 and num_landmarks >= 2, got {num_classes} and {num_landmarks}"
            )
        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        dim = int(channels[-1])
        self.trunk = conv_blocks(channels)
        self.spatial_score = nn.Conv2d(dim, 1, 1)
        self.temporal_attention = TemporalAttention(dim, attention_hidden)
        # Per frame: normalised points and their change since the previous frame, 2 x K x 2 numbers.
        self.landmark_encoder = nn.Sequential(
            nn.Linear(4 * num_landmarks, landmark_hidden),
            nn.ReLU(inplace=True),
            nn.Linear(landmark_hidden, dim),
            nn.ReLU(inplace=True),
        )
        self.landmark_attention = TemporalAttention(dim, attention_hidden)
        self.gate = nn.Linear(2 * dim, dim)
        self.landmark_classifier = nn.Linear(dim, num_classes)
        self.dropout = nn.Dropout(dropout)
        self.num_landmarks = int(num_landmarks)
        self.num_classes = int(num_classes)
        self.landmark_dropout = float(landmark_dropout)
        self.aux_loss_weights: dict[str, float] = {"landmark_stream": float(landmark_loss_weight)}
        # The landmark stream's own logits mean something only where a sample has landmarks: the module masks
        # their loss with this batch key.
        self.aux_masks: dict[str, str] = {"landmark_stream": "landmarks_mask"}
        self.out_dim = int(dim)

    def attention(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """frames [B, T, 3, H, W] in [0, 1] -> (appearance vector [B, C], spatial weights [B, T, h, w] summing to 1
        per frame, temporal weights [B, T] summing to 1)."""
        if frames.ndim != 5 or frames.shape[2] != 3:
            raise ValueError(f"st_attention: expected frames [B, T, 3, H, W], got {tuple(frames.shape)}")
        b, t = frames.shape[:2]
        x = frames.reshape(b * t, *frames.shape[2:])
        maps = self.trunk((x - self.pixel_mean) / self.pixel_std)
        h, w = maps.shape[2:]
        spatial = torch.softmax(self.spatial_score(maps).flatten(1), dim=1)
        frame_vectors = torch.bmm(maps.flatten(2), spatial.unsqueeze(-1)).reshape(b, t, -1)
        appearance, temporal = self.temporal_attention(frame_vectors)
        return appearance, spatial.reshape(b, t, h, w), temporal

    def _check_landmarks(
        self, frames: torch.Tensor, landmarks: torch.Tensor, landmarks_mask: torch.Tensor | None
    ) -> torch.Tensor:
        # -> the availability mask [B] bool (all True when landmarks come without one).
        expected = (frames.shape[0], frames.shape[1], self.num_landmarks, 2)
        if tuple(landmarks.shape) != expected:
            raise ValueError(
                f"st_attention: landmarks must be [B, T, {self.num_landmarks}, 2] = {expected} to match frames "
                f"{tuple(frames.shape)}, got {tuple(landmarks.shape)}"
            )
        if landmarks_mask is None:
            return torch.ones(frames.shape[0], dtype=torch.bool, device=frames.device)
        if landmarks_mask.shape != (frames.shape[0],) or landmarks_mask.dtype != torch.bool:
            raise ValueError(
                f"st_attention: landmarks_mask must be a bool tensor [B] = [{frames.shape[0]}], got "
                f"{landmarks_mask.dtype} {tuple(landmarks_mask.shape)}"
            )
        return landmarks_mask

    def _landmark_vector(self, landmarks: torch.Tensor) -> torch.Tensor:
        # landmarks [B, T, K, 2] pixels -> landmark-stream vector [B, C].
        points = normalise_landmarks(landmarks.float())
        motion = torch.cat([torch.zeros_like(points[:, :1]), points[:, 1:] - points[:, :-1]], dim=1)
        per_frame = self.landmark_encoder(torch.cat([points, motion], dim=-1).flatten(2))
        return self.landmark_attention(per_frame)[0]

    def forward_aux(
        self,
        frames: torch.Tensor,
        landmarks: torch.Tensor | None = None,
        landmarks_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """frames [B, T, 3, H, W] in [0, 1], landmarks [B, T, K, 2] pixels or None, landmarks_mask [B] bool or None
        -> (features [B, C], aux logits).

        aux is {} without landmarks, else {"landmark_stream": [B, E] logits of the landmark stream alone}. The
        module masks auxiliary losses with the expression mask only, so a sample without landmarks gets all-zero
        (uniform) logits: its cross-entropy is the constant log E, with no gradient into any weight.
        """
        appearance = self.attention(frames)[0]
        if landmarks is None:
            if landmarks_mask is not None:
                raise ValueError("st_attention: landmarks_mask was given without landmarks")
            return self.dropout(appearance), {}
        available = self._check_landmarks(frames, landmarks, landmarks_mask)
        landmark_vector = self._landmark_vector(landmarks)
        use = available
        if self.training and self.landmark_dropout > 0:
            keep = torch.rand(available.shape, device=available.device) >= self.landmark_dropout
            use = available & keep
        gate = torch.sigmoid(self.gate(torch.cat([appearance, landmark_vector], dim=1)))
        # torch.where, not a multiplication by the mask: an absent sample's features are exactly the appearance ones.
        features = torch.where(use[:, None], appearance + gate * landmark_vector, appearance)
        logits = self.landmark_classifier(landmark_vector)
        aux = {"landmark_stream": torch.where(available[:, None], logits, torch.zeros_like(logits))}
        return self.dropout(features), aux

    def forward(
        self,
        frames: torch.Tensor,
        landmarks: torch.Tensor | None = None,
        landmarks_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """frames [B, T, 3, H, W] in [0, 1] (+ optional landmarks, as `forward_aux`) -> features [B, C]."""
        return self.forward_aux(frames, landmarks, landmarks_mask)[0]
