"""ACCM: an attention-based channel-wise convolutional model over OpenPose BODY_25 keypoints.

Written after the ACCM description in the paper the project follows (body movement as a temporally weighted sum
of joint images, classified by channel-wise convolutions with attention); the layers below are this project's
own reading of that description, no code was copied.

body [B, T, 25, 3] (x, y in pixels of the video frame, confidence in [0, 1]; an undetected joint is (0, 0, 0))
-> features [B, out_dim]:

1. Normalisation, per clip: joints are centred on the clip's mean Neck position (else MidHip, else the mean of all
   detected joints) and divided by the clip's mean Neck-MidHip length (else 1.25 x the shoulder width, about the
   same length on an adult, else the joints' RMS spread). The result does not depend on where the person is in the
   frame or how large; motion within the clip (sway, fidgeting) is kept. Undetected joints stay 0.
2. Joint images: per frame a map [5 channels (x, y, confidence, vx, vy), P positions], the 25 joints read in a
   fixed walk along the skeleton (`SKELETON_WALK`, 45 positions: every pair of neighbouring positions is a limb,
   so a convolution along the walk only mixes joints that are connected). vx, vy: the change since the previous
   frame x `VELOCITY_GAIN` (0 where either frame misses the joint). A 1x1 convolution embeds every joint of every
   frame in `channels` features.
3. Temporal attention: a small MLP scores every frame (from the frame's joint image pooled over positions, per
   head), a softmax over T turns the scores into weights, and each head's output is the weighted sum of the
   frames' joint images: `heads` images [channels, P] -> one map [heads x channels, P]. Frames where nothing was
   detected get (almost) no weight.
4. Channel-wise convolution: blocks of a depthwise 1D convolution along the walk (each channel its own kernel),
   a pointwise convolution mixing channels, and squeeze-and-excitation channel attention, with a residual.
5. Mean and max over the positions -> a linear layer -> [B, out_dim].

No batch normalisation: the input is normalised by construction (step 1), and batch statistics would mix in the
all-zero inputs of samples without keypoints (`body_mask` False) and, early in training, make eval mode differ
from training (running statistics lag). Every sample is processed on its own.

Exports to ONNX (opset 17): all operations are convolutions, gathers, reductions and a softmax.
"""

from __future__ import annotations

import torch
from torch import nn

from stress_lightning.data.body import L_SHOULDER, MID_HIP, NECK, NUM_JOINTS, R_SHOULDER
from stress_lightning.models.registry import BODY_BACKBONES

# A walk through the BODY_25 tree (joints may repeat) so that consecutive positions are always joined by a limb:
# right arm -> neck -> left arm and back, head (right eye/ear, left eye/ear), spine, right leg with its foot, left
# leg with its foot.
SKELETON_WALK: tuple[int, ...] = (
    *(4, 3, 2, 1, 5, 6, 7, 6, 5, 1),
    *(0, 15, 17, 15, 0, 16, 18, 16, 0, 1),
    *(8, 9, 10, 11, 24, 11, 22, 23, 22, 11, 10, 9, 8),
    *(12, 13, 14, 21, 14, 19, 20, 19, 14, 13, 12, 8),
)
# Neck-MidHip length over shoulder width on an adult (the fallback scale when the hips are not detected).
TORSO_PER_SHOULDER_WIDTH = 1.25
INPUT_CHANNELS = 5  # x, y, confidence, vx, vy
# Velocities are torso lengths per frame: about 0.002 (detector jitter) to 0.02 (a fidgeting hand) for a seated
# person at 25 fps; this factor brings them to the order of the coordinates. A fixed factor rather than an input
# BatchNorm, whose running variance (starting at 1) would take thousands of steps to reach such small values.
VELOCITY_GAIN = 100.0
_EPS = 1e-6


def _clip_mean(values: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted mean over frames: values [B, T, D], weights [B, T] -> (mean [B, D], has any weight [B] bool)."""
    total = weights.sum(dim=1)
    mean = (values * weights[..., None]).sum(dim=1) / total.clamp_min(_EPS)[:, None]
    return mean, total > 0


def normalise_body(body: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """body [B, T, 25, 3] pixels + confidence -> (xy [B, T, 25, 2] centred and scaled per clip (0 where undetected),
    detected [B, T, 25] float 0/1). See the module docstring for the centre and scale."""
    xy, detected = body[..., :2], (body[..., 2] > 0).to(body.dtype)
    neck, has_neck = _clip_mean(xy[:, :, NECK], detected[:, :, NECK])
    hip, has_hip = _clip_mean(xy[:, :, MID_HIP], detected[:, :, MID_HIP])
    count = detected.sum(dim=2)  # [B, T]
    frame_mean = (xy * detected[..., None]).sum(dim=2) / count.clamp_min(1.0)[..., None]
    everything, _ = _clip_mean(frame_mean, count)
    centre = torch.where(has_neck[:, None], neck, torch.where(has_hip[:, None], hip, everything))  # [B, 2]

    def length(a: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        both = detected[:, :, a] * detected[:, :, b]
        per_frame = (xy[:, :, a] - xy[:, :, b]).square().sum(dim=-1).clamp_min(_EPS).sqrt()
        mean, has = _clip_mean(per_frame[..., None], both)
        return mean[:, 0], has

    torso, has_torso = length(NECK, MID_HIP)
    shoulders, has_shoulders = length(R_SHOULDER, L_SHOULDER)
    centred = (xy - centre[:, None, None, :]) * detected[..., None]
    spread = (centred.square().sum(dim=-1) * detected).sum(dim=(1, 2)) / detected.sum(dim=(1, 2)).clamp_min(1.0)
    scale = torch.where(
        has_torso,
        torso,
        torch.where(has_shoulders, TORSO_PER_SHOULDER_WIDTH * shoulders, spread.clamp_min(_EPS).sqrt()),
    )
    return centred / scale.clamp_min(_EPS)[:, None, None, None], detected


class SqueezeExcitation(nn.Module):
    """Channel attention: x [B, C, P] -> x * sigmoid(MLP(mean over P))."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.gate = nn.Sequential(
            nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels), nn.Sigmoid()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x.mean(dim=2))[:, :, None]


class ChannelWiseBlock(nn.Module):
    """Depthwise conv along the joints -> ReLU -> pointwise conv -> SE channel attention, plus the input, -> ReLU."""

    def __init__(self, channels: int, kernel_size: int, se_reduction: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels),
            nn.ReLU(inplace=True),
            nn.Conv1d(channels, channels, 1),
            SqueezeExcitation(channels, se_reduction),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.body(x))


@BODY_BACKBONES.register("accm")
class ACCM(nn.Module):
    """Attention-based channel-wise convolutional model: body keypoints [B, T, 25, 3] -> features [B, out_dim].

    Args:
        channels: features per joint of the embedded joint images.
        heads: temporal attention heads (each a weighted sum of the frames' joint images).
        attention_hidden: hidden width of the frame scorer.
        blocks: channel-wise conv blocks; they work on heads x channels channels.
        kernel_size: odd kernel of the depthwise convolution along the skeleton walk.
        se_reduction: squeeze-and-excitation reduction factor.
        out_dim: size of the feature vector.
        dropout: dropout on the pooled features.
    """

    def __init__(
        self,
        channels: int = 32,
        heads: int = 4,
        attention_hidden: int = 32,
        blocks: int = 2,
        kernel_size: int = 3,
        se_reduction: int = 4,
        out_dim: int = 128,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"accm: kernel_size must be odd and positive, got {kernel_size}")
        if min(channels, heads, attention_hidden, out_dim) < 1 or blocks < 0:
            raise ValueError("accm: channels, heads, attention_hidden and out_dim must be positive, blocks >= 0")
        self.heads, self.channels, self.out_dim = int(heads), int(channels), int(out_dim)
        self.register_buffer("walk", torch.tensor(SKELETON_WALK, dtype=torch.long), persistent=False)
        self.embed = nn.Sequential(nn.Conv2d(INPUT_CHANNELS, channels, 1), nn.ReLU(inplace=True))
        self.scorer = nn.Sequential(
            nn.Linear(2 * channels, attention_hidden), nn.Tanh(), nn.Linear(attention_hidden, heads)
        )
        width = heads * channels
        self.blocks = nn.Sequential(*[ChannelWiseBlock(width, kernel_size, se_reduction) for _ in range(blocks)])
        self.project = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * width, out_dim))

    def joint_images(self, body: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """body [B, T, 25, 3] -> (raw joint images [B, 5, T, P] along `SKELETON_WALK`, detected fraction [B, T])."""
        xy, detected = normalise_body(body)
        both = detected[:, 1:] * detected[:, :-1]
        velocity = VELOCITY_GAIN * (xy[:, 1:] - xy[:, :-1]) * both[..., None]
        velocity = torch.cat([torch.zeros_like(xy[:, :1]), velocity], dim=1)
        confidence = body[..., 2:3].clamp(0.0, 1.0) * detected[..., None]
        images = torch.cat([xy, confidence, velocity], dim=-1).index_select(2, self.walk)  # [B, T, P, 5]
        return images.permute(0, 3, 1, 2), detected.mean(dim=2)

    def attention(self, embedded: torch.Tensor, detected_fraction: torch.Tensor) -> torch.Tensor:
        """Frame weights [B, T, heads] (softmax over T) from the embedded joint images [B, C, T, P]."""
        per_frame = torch.cat([embedded.mean(dim=3), embedded.amax(dim=3)], dim=1).transpose(1, 2)  # [B, T, 2C]
        # A frame without any detected joint carries no body information: log(1e-4) all but removes it.
        scores = self.scorer(per_frame) + torch.log(detected_fraction + 1e-4)[..., None]
        return torch.softmax(scores, dim=1)

    def forward(self, body: torch.Tensor) -> torch.Tensor:
        """body [B, T, 25, 3] (pixels, confidence) -> features [B, out_dim]."""
        if body.ndim != 4 or tuple(body.shape[2:]) != (NUM_JOINTS, 3):
            raise ValueError(f"accm: expected body keypoints [B, T, {NUM_JOINTS}, 3], got {tuple(body.shape)}")
        images, detected_fraction = self.joint_images(body)
        embedded = self.embed(images)  # [B, C, T, P]
        weights = self.attention(embedded, detected_fraction)  # [B, T, heads]
        pooled = torch.einsum("bctp,bth->bhcp", embedded, weights)  # heads weighted sums of joint images
        x = self.blocks(pooled.flatten(1, 2))  # [B, heads * C, P]
        return self.project(torch.cat([x.mean(dim=2), x.amax(dim=2)], dim=1))
