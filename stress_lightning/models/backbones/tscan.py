"""TS-CAN-style rPPG backbone (Liu, Fromm, Patel & McDuff, "Multi-task temporal shift attention networks for
on-device contactless vitals measurement", NeurIPS 2020), adapted to the package's 8x8 ROI grid.

Input roi [B, Tr, 3, R, R] in [0, 1], output `(pulse [B, Tr], features [B, out_dim])`, as every rPPG backbone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from stress_lightning.models.backbones.physnet import Normalisation, TemporalEnvelope, normalise_roi
from stress_lightning.models.registry import RPPG_BACKBONES


def temporal_shift(x: torch.Tensor, fold_div: int = 3) -> torch.Tensor:
    """Temporal shift (Lin, Gan & Han, TSM, ICCV 2019) of x [B, C, T, ...] along T.

    The first C // fold_div channels move one step forward in time (frame t gets frame t - 1's value), the next
    C // fold_div one step backward (frame t gets t + 1's), the rest stay; the vacated end frames get zeros. So
    a per-frame convolution after it mixes three neighbouring frames at no cost. Written with slicing and
    concatenation (ONNX Slice / Concat), not in-place assignment or torch.roll, so it exports and traces cleanly.
    """
    if fold_div < 2:
        raise ValueError(f"temporal_shift: fold_div must be >= 2, got {fold_div}")
    fold = x.shape[1] // fold_div
    if fold == 0 or x.shape[2] < 2:
        return x
    fwd, bwd, keep = x[:, :fold], x[:, fold : 2 * fold], x[:, 2 * fold :]
    fwd = torch.cat([torch.zeros_like(fwd[:, :, :1]), fwd[:, :, :-1]], dim=2)
    bwd = torch.cat([bwd[:, :, 1:], torch.zeros_like(bwd[:, :, :1])], dim=2)
    return torch.cat([fwd, bwd, keep], dim=1)


class TemporalShift(nn.Module):
    """`temporal_shift` as a module (fold_div = 3: a third of the channels each way, as TS-CAN)."""

    def __init__(self, fold_div: int = 3) -> None:
        super().__init__()
        if fold_div < 2:
            raise ValueError(f"TemporalShift: fold_div must be >= 2, got {fold_div}")
        self.fold_div = int(fold_div)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return temporal_shift(x, self.fold_div)


def _frame_conv(c_in: int, c_out: int) -> nn.Sequential:
    """A per-frame 3x3 convolution (a 1x3x3 Conv3d over [B, C, T, H, W]) with BN and tanh (TS-CAN's activation)."""
    return nn.Sequential(
        nn.Conv3d(c_in, c_out, (1, 3, 3), padding=(0, 1, 1), bias=False), nn.BatchNorm3d(c_out), nn.Tanh()
    )


class SoftAttentionMask(nn.Module):
    """Appearance features [B, C, T, H, W] -> attention mask [B, 1, T, H, W]: a 1x1 conv and a sigmoid,
    L1-normalised over space to a mean of 1/2 (TS-CAN / DeepPhys: H W m / (2 ||m||_1))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(channels, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = torch.sigmoid(self.conv(x))
        hw = m.shape[3] * m.shape[4]
        return hw * m / (2.0 * m.sum(dim=(3, 4), keepdim=True).clamp_min(1e-6))


@RPPG_BACKBONES.register("tscan")
class TSCAN(nn.Module):
    """Temporal shift convolutional attention network for the pulse, after TS-CAN (Liu et al., NeurIPS 2020).

    Motion branch: normalised frame differences (x[t+1] - x[t]) / (x[t+1] + x[t]) per cell and channel
    (DeepPhys' skin-reflection model: the ratio cancels the skin tone and the illumination level), divided by
    the clip's standard deviation; last frame zero so Tr is kept. Two stages of [temporal shift, per-frame 3x3
    conv] x 2, each stage's output multiplied by the appearance branch's attention mask at that resolution, then
    a 2x2 average pool.
    Appearance branch: the raw frames standardised per clip and channel over time and space (so the masks see
    where the pulse-bearing skin is, not how bright it is), the same per-frame convolutions without shifts, and
    a `SoftAttentionMask` after each stage: it down-weights cells whose appearance says "no pulse here"
    (specular highlights, an edge of hair) and, per frame, cells that the head motion has moved.
    Head: the gated motion features averaged over space, then dilated 1D temporal conv blocks (kernel 5,
    dilations 1, 2, 4: ~1.2 s receptive field at 25 fps) and a 1x1 conv to the pulse.

    Output: the pulse itself (`output="pulse"`, default), not its derivative. TS-CAN regresses the first
    derivative of the PPG per frame with an MSE; here the losses are the spectral heart-rate loss and the
    negative Pearson loss against a reference pulse, both defined on the pulse: a derivative would tilt the
    band spectrum by f^2 (biasing the soft-argmax rate upwards unless learned away), and integrating it
    (`output="derivative"`: cumulative sum, mean removed) turns each frame's error into a random walk whose
    low-frequency power leaks into the band. The temporal head learns the integration over a beat instead.

    Differences from the paper: 8x8 ROI area means instead of 36x36 face frames (so two 3x3 stages of 16-32
    channels, not 32-64, and no dropout); BN before tanh for faster training from scratch; per-frame
    appearance as DeepPhys (TS-CAN averages the appearance frame over the segment to save compute, irrelevant
    at 8x8); a temporal conv head instead of TS-CAN's per-frame dense layers, because the pulse on an 8x8 grid
    is below the per-frame noise and needs averaging over a beat; the optional `TemporalEnvelope` of physnet.

    Args:
        motion_channels: widths of the motion branch's two stages.
        appearance_channels: widths of the appearance branch's two stages.
        fold_div: temporal shift of 1 / fold_div of the channels each way.
        temporal_dilations: dilations of the head's 1D blocks (kernel 5).
        out_dim: size of the feature vector.
        output: "pulse" or "derivative" (see above).
        normalisation, moving_window, input_scale: how the appearance input is normalised before
            standardisation (see `physnet.normalise_roi`; "clip_mean" keeps the spatial layout).
        envelope: learn a `TemporalEnvelope` on the pulse (off by default: see there for what it buys and costs).
    """

    def __init__(
        self,
        motion_channels: Sequence[int] = (16, 32),
        appearance_channels: Sequence[int] = (8, 16),
        fold_div: int = 3,
        temporal_dilations: Sequence[int] = (1, 2, 4),
        out_dim: int = 64,
        output: Literal["pulse", "derivative"] = "pulse",
        normalisation: Normalisation = "clip_mean",
        moving_window: int = 41,
        envelope: bool = False,
    ) -> None:
        super().__init__()
        if len(motion_channels) != 2 or len(appearance_channels) != 2:
            raise ValueError(
                f"tscan: motion_channels and appearance_channels must list 2 widths each, got "
                f"{list(motion_channels)}, {list(appearance_channels)}"
            )
        if output not in ("pulse", "derivative"):
            raise ValueError(f"tscan: output must be 'pulse' or 'derivative', got {output!r}")
        if normalisation not in ("clip_mean", "moving_mean"):
            raise ValueError(f"tscan: unknown normalisation {normalisation!r}; known: clip_mean, moving_mean")
        m1, m2 = int(motion_channels[0]), int(motion_channels[1])
        a1, a2 = int(appearance_channels[0]), int(appearance_channels[1])
        self.output = output
        self.normalisation: Normalisation = normalisation
        self.moving_window = int(moving_window)
        self.shift = TemporalShift(fold_div)
        self.motion1 = nn.ModuleList([_frame_conv(3, m1), _frame_conv(m1, m1)])
        self.motion2 = nn.ModuleList([_frame_conv(m1, m2), _frame_conv(m2, m2)])
        self.appearance1 = nn.Sequential(_frame_conv(3, a1), _frame_conv(a1, a1))
        self.appearance2 = nn.Sequential(_frame_conv(a1, a2), _frame_conv(a2, a2))
        self.mask1 = SoftAttentionMask(a1)
        self.mask2 = SoftAttentionMask(a2)
        self.pool = nn.AvgPool3d((1, 2, 2), ceil_mode=True)
        head: list[nn.Module] = []
        for d in temporal_dilations:
            head += [nn.Conv1d(m2, m2, 5, padding=2 * d, dilation=d, bias=False), nn.BatchNorm1d(m2), nn.ELU()]
        self.head = nn.Sequential(*head)
        self.to_pulse = nn.Conv1d(m2, 1, 1, bias=False)
        self.envelope = TemporalEnvelope() if envelope else None
        self.to_features = nn.Sequential(nn.Linear(2 * m2, out_dim), nn.ReLU(inplace=True))
        self.out_dim = int(out_dim)

    def _inputs(self, roi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """roi [B, Tr, 3, R, R] -> (motion, appearance), each [B, 3, Tr, R, R]."""
        x = roi.permute(0, 2, 1, 3, 4).clamp_min(1e-4)
        diff = (x[:, :, 1:] - x[:, :, :-1]) / (x[:, :, 1:] + x[:, :, :-1])
        diff = torch.cat([diff, torch.zeros_like(diff[:, :, :1])], dim=2)
        motion = diff / diff.flatten(1).std(dim=1).clamp_min(1e-8)[:, None, None, None, None]
        if self.normalisation == "moving_mean":
            x = normalise_roi(x, "moving_mean", self.moving_window, 1.0) + 1.0
        mean = x.mean(dim=(2, 3, 4), keepdim=True)
        std = x.flatten(2).std(dim=2)[:, :, None, None, None].clamp_min(1e-6)
        return motion, (x - mean) / std

    def forward(self, roi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """roi [B, Tr, 3, R, R] in [0, 1] -> (pulse [B, Tr], features [B, out_dim])."""
        if roi.ndim != 5 or roi.shape[2] != 3:
            raise ValueError(f"tscan: expected roi [B, Tr, 3, R, R], got {tuple(roi.shape)}")
        motion, appearance = self._inputs(roi)
        a = self.appearance1(appearance)
        m = motion
        for conv in self.motion1:
            m = conv(self.shift(m))
        m = self.pool(m * self.mask1(a))
        a = self.appearance2(self.pool(a))
        for conv in self.motion2:
            m = conv(self.shift(m))
        m = m * self.mask2(a)
        h = self.head(m.mean(dim=(3, 4)))  # [B, C, Tr]
        pulse = self.to_pulse(h).squeeze(1)
        if self.output == "derivative":
            pulse = torch.cumsum(pulse, dim=1)
            pulse = pulse - pulse.mean(dim=1, keepdim=True)
        if self.envelope is not None:
            pulse = self.envelope(pulse)
        features = self.to_features(torch.cat([h.mean(dim=2), h.std(dim=2)], dim=1))
        return pulse, features


__all__ = ["TSCAN", "TemporalShift", "SoftAttentionMask", "temporal_shift"]
