"""PhysNet-style rPPG backbone (Yu, Li & Zhao, "Remote photoplethysmograph signal measurement from facial videos
using spatio-temporal networks", BMVC 2019), adapted to the package's ROI grid; plus the input normalisation and
the learned output envelope that the rPPG backbones of this package share (`tscan` imports them from here).

Input: roi [B, Tr, 3, R, R] in [0, 1] (R = 8: forehead and cheek area means, docs/ARCHITECTURE.md), output
`(pulse [B, Tr], features [B, out_dim])`, as every rPPG backbone (`stress_lightning.models.backbones.rppg`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from stress_lightning.models.registry import RPPG_BACKBONES

Normalisation = Literal["clip_mean", "moving_mean"]


def normalise_roi(x: torch.Tensor, mode: Normalisation, window: int, scale: float) -> torch.Tensor:
    """Relative intensity change of each ROI cell and channel: x / mean - 1, times `scale`.

    x: [B, 3, T, R, R] raw intensities. `mode` "clip_mean" divides by the clip's temporal mean (DeepPhys,
    TS-CAN); "moving_mean" by a centred moving mean over `window` frames (edges replicated), as CHROM/POS
    normalise per 1.6 s window: it also removes slow multiplicative drifts (illumination, camera auto-exposure
    and white balance) that the clip mean leaves in. A dark cell would divide by zero; 1e-4 is far below any
    usable skin intensity.
    """
    if mode == "clip_mean":
        mean = x.mean(dim=2, keepdim=True)
    elif mode == "moving_mean":
        half = window // 2
        # Replicate padding, then a box filter over time only: both export to ONNX (Pad edge, AveragePool).
        padded = F.pad(x, (0, 0, 0, 0, half, half), mode="replicate")
        mean = F.avg_pool3d(padded, kernel_size=(2 * half + 1, 1, 1), stride=1)
    else:
        raise ValueError(f"unknown normalisation {mode!r}; known: clip_mean, moving_mean")
    return (x / mean.clamp_min(1e-4) - 1.0) * scale


class TemporalEnvelope(nn.Module):
    """A learned, symmetric gain over the relative position u in [0, 1] of each sample in the clip.

    Why: the heart-rate readout (`SpectralHeartRate`) tapers the pulse with a Hann window, so its spectral peak
    follows the rate of the middle seconds, while the clip's label is the mean rate over all its beats. On the
    synthetic test clips even the exact rendered skin pulse is 1.17 bpm MAE through that readout (the best
    classic method 1.29-1.32); the same pulse read with a Tukey(0.25) taper scores 0.74
    (benchmarks/results/rppg_models.md). The gain is exp(sum_k a_k exp(-d(u) / s_k)), d(u) = min(u, 1 - u)
    the distance to the nearer clip end, for a few fixed scales s_k; a = 0 (the initial value) is the identity,
    and the heart-rate loss sets how much the ends count: the network learns to undo the readout's taper.

    What it costs: the pulse is no longer the skin pulse near the clip ends (trained without a reference pulse
    the learned gain reaches 100-1000x at the first frames; with the negative Pearson loss it stays below ~3x,
    and that loss and the envelope pull against each other). A flatter readout taper gives the same gain to every
    method, learned or classic, and leaves the pulse alone; the envelope is the backbone-local alternative,
    hence off by default in physnet and tscan. A function of u, not of the frame index, so it holds for any Tr.
    """

    def __init__(self, scales: Sequence[float] = (0.02, 0.06, 0.2), rate: float = 10.0) -> None:
        super().__init__()
        if not scales or any(s <= 0 for s in scales):
            raise ValueError(f"TemporalEnvelope: scales must be positive fractions of the clip, got {list(scales)}")
        if rate <= 0:
            raise ValueError(f"TemporalEnvelope: rate must be > 0, got {rate}")
        self.register_buffer("scales", torch.tensor([float(s) for s in scales]), persistent=False)
        # Adam moves a parameter by about lr per step whatever its gradient; the log-gains it must reach are
        # O(1-5), so the parameters are scaled by `rate` in the forward (a per-parameter learning-rate factor).
        self.rate = float(rate)
        self.log_gain = nn.Parameter(torch.zeros(len(scales)))

    def gain(self, n_samples: int) -> torch.Tensor:
        """The gain at each of `n_samples` positions, [n_samples]."""
        u = (torch.arange(n_samples, device=self.log_gain.device, dtype=self.log_gain.dtype) + 0.5) / n_samples
        d = torch.minimum(u, 1.0 - u)
        return torch.exp(torch.exp(-d[:, None] / self.scales[None, :]) @ (self.rate * self.log_gain))

    def forward(self, pulse: torch.Tensor) -> torch.Tensor:
        """pulse [B, T] -> pulse [B, T] times the gain."""
        return pulse * self.gain(pulse.shape[1])[None, :]


def _block3d(c_in: int, c_out: int, kernel: tuple[int, int, int]) -> nn.Sequential:
    pad = tuple(k // 2 for k in kernel)
    return nn.Sequential(nn.Conv3d(c_in, c_out, kernel, padding=pad, bias=False), nn.BatchNorm3d(c_out), nn.ELU())


def _block1d(c_in: int, c_out: int, kernel: int, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv1d(c_in, c_out, kernel, padding=dilation * (kernel // 2), dilation=dilation, bias=False),
        nn.BatchNorm1d(c_out),
        nn.ELU(),
    )


@RPPG_BACKBONES.register("physnet")
class PhysNet(nn.Module):
    """3D-CNN pulse extractor with a temporal encoder-decoder, after PhysNet (Yu et al., BMVC 2019).

    1. `normalise_roi` (per clip x / temporal mean - 1, or a moving mean), times `input_scale`.
    2. Encoder, 3D conv-BN-ELU blocks as in PhysNet: a (t, 3, 3) block at R x R and a 2x2 spatial average
       pool; a 3x3x3 block, then a 2x2x2 pool (time / 2); another 3x3x3 block and the remaining space pooled
       away (mean), another time / 2 (time / 4 in all).
    3. Bottleneck: dilated 1D conv blocks at Tr / 4 (receptive field ~2.5 s at 25 fps with the defaults).
    4. Decoder: two transposed 1D convs (kernel 4, stride 2), each added to the encoder's features at that
       rate (U-Net skips, which PhysNet does not have: they carry the beat timing that the pooling blurs), and a
       1x1 conv to the pulse. Tr is kept (replicate-padded to a multiple of 4 inside, cropped back).
    5. Optional `TemporalEnvelope` on the pulse (see there); features: mean and std over time of the
       decoder's last map, projected to `out_dim`.

    Differences from the paper, and why: PhysNet reads 128x128 face frames (conv 1x5x5, max-pooled to
    frames of 8x8 and less) and its first layers learn where the skin is. Here the input is already 8x8 area
    means over forehead and cheeks (the ROI the cache computes from the full-resolution frame, so a sub-LSB
    pulse survives), so the spatial part shrinks to two 3x3 stages, average pooling replaces max pooling
    (averaging lifts the pulse out of sensor noise, a max does not), the widths are 16-32 instead of 64, and the
    encoder-decoder runs over time only, mostly in 1D after the spatial pooling, which keeps it under
    ~20 ms per 200-frame clip forward and backward on one CPU core. PhysNet was trained with the negative
    Pearson loss alone; here the spectral heart-rate loss against the ECG rate does most of the work and the
    negative Pearson loss joins where a reference pulse exists.

    Args:
        channels: widths (c1, c2): the first 3D block has c1, the rest c2.
        temporal_kernel: temporal size of the first 3D block (3-5).
        bottleneck_dilations: dilations of the 1D blocks at Tr / 4 (kernel 3).
        out_dim: size of the feature vector.
        input_scale: factor after the normalisation (a 0.3 % pulse becomes O(0.1-1)).
        normalisation: "clip_mean" or "moving_mean" (see `normalise_roi`); moving_window frames for the latter.
        envelope: learn a `TemporalEnvelope` on the pulse (off by default: see there for what it buys and costs).
    """

    def __init__(
        self,
        channels: Sequence[int] = (16, 32),
        temporal_kernel: int = 5,
        bottleneck_dilations: Sequence[int] = (1, 2, 4),
        out_dim: int = 64,
        input_scale: float = 100.0,
        normalisation: Normalisation = "clip_mean",
        moving_window: int = 41,
        envelope: bool = False,
    ) -> None:
        super().__init__()
        if len(channels) != 2:
            raise ValueError(f"physnet: channels must list 2 widths, got {list(channels)}")
        if temporal_kernel not in (3, 5):
            raise ValueError(f"physnet: temporal_kernel must be 3 or 5, got {temporal_kernel}")
        if normalisation not in ("clip_mean", "moving_mean"):
            raise ValueError(f"physnet: unknown normalisation {normalisation!r}; known: clip_mean, moving_mean")
        if moving_window < 3:
            raise ValueError(f"physnet: moving_window must be >= 3 frames, got {moving_window}")
        c1, c2 = int(channels[0]), int(channels[1])
        self.input_scale = float(input_scale)
        self.normalisation: Normalisation = normalisation
        self.moving_window = int(moving_window)
        self.enc1 = nn.Sequential(_block3d(3, c1, (temporal_kernel, 3, 3)), nn.AvgPool3d((1, 2, 2), ceil_mode=True))
        self.enc2 = _block3d(c1, c2, (3, 3, 3))
        self.pool2 = nn.AvgPool3d((2, 2, 2), ceil_mode=True)
        self.enc3 = _block3d(c2, c2, (3, 3, 3))
        self.bottleneck = nn.Sequential(*[_block1d(c2, c2, 3, d) for d in bottleneck_dilations])
        self.up1 = nn.Sequential(nn.ConvTranspose1d(c2, c2, 4, stride=2, padding=1, bias=False), nn.BatchNorm1d(c2))
        self.dec1 = _block1d(c2, c2, 3)
        self.up2 = nn.Sequential(nn.ConvTranspose1d(c2, c2, 4, stride=2, padding=1, bias=False), nn.BatchNorm1d(c2))
        self.skip_full = nn.Conv1d(c1, c2, 1, bias=False)
        self.dec2 = _block1d(c2, c2, 5)
        # No bias: the pulse offset carries no information (every consumer removes the mean).
        self.to_pulse = nn.Conv1d(c2, 1, 1, bias=False)
        self.envelope = TemporalEnvelope() if envelope else None
        self.to_features = nn.Sequential(nn.Linear(2 * c2, out_dim), nn.ReLU(inplace=True))
        self.out_dim = int(out_dim)

    def forward(self, roi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """roi [B, Tr, 3, R, R] in [0, 1] -> (pulse [B, Tr], features [B, out_dim])."""
        if roi.ndim != 5 or roi.shape[2] != 3:
            raise ValueError(f"physnet: expected roi [B, Tr, 3, R, R], got {tuple(roi.shape)}")
        n = roi.shape[1]
        x = normalise_roi(roi.permute(0, 2, 1, 3, 4), self.normalisation, self.moving_window, self.input_scale)
        pad = (-n) % 4
        if pad:
            x = F.pad(x, (0, 0, 0, 0, 0, pad), mode="replicate")
        e1 = self.enc1(x)  # [B, c1, T, R/2, R/2]
        e2 = self.enc2(e1)  # [B, c2, T, R/2, R/2]
        e3 = self.enc3(self.pool2(e2))  # [B, c2, T/2, R/4, R/4]
        z = F.avg_pool1d(e3.mean(dim=(3, 4)), 2)  # [B, c2, T/4]
        z = self.bottleneck(z)
        h = self.dec1(F.elu(self.up1(z) + e3.mean(dim=(3, 4))))  # [B, c2, T/2]
        h = self.dec2(F.elu(self.up2(h) + self.skip_full(e1.mean(dim=(3, 4)))))  # [B, c2, T]
        h = h[:, :, :n]
        pulse = self.to_pulse(h).squeeze(1)
        if self.envelope is not None:
            pulse = self.envelope(pulse)
        features = self.to_features(torch.cat([h.mean(dim=2), h.std(dim=2)], dim=1))
        return pulse, features


__all__ = ["PhysNet", "TemporalEnvelope", "normalise_roi"]
