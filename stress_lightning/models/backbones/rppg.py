"""rPPG stream: ROI video -> pulse signal and features; pulse -> heart rate through a fixed band spectrum.

rPPG backbones take roi [B, Tr, 3, R, R] (raw intensities in [0, 1], full frame rate) and return a tuple
`(pulse [B, Tr], features [B, out_dim])`. The pulse has arbitrary sign, scale and phase: it is trained through
its power spectrum (see `stress_lightning.models.losses.spectral_hr_loss`), which ignores all three.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import scipy.signal
import torch
from torch import nn

from stress_lightning.models.registry import RPPG_BACKBONES


@RPPG_BACKBONES.register("rppg_cnn")
class RPPGCNN(nn.Module):
    """A PhysNet-lite pulse extractor: per-frame spatial convolutions, then 1D temporal convolutions.

    1. Per clip, pixel and channel: x / temporal_mean - 1 (the normalisation DeepPhys and TS-CAN use), times
       `input_scale`, so a 0.3 % skin-colour pulse becomes O(0.1-1) whatever the skin tone and lighting.
    2. Two 1x3x3 conv-BN-ReLU blocks, each followed by a 2x2 spatial average pool, then a spatial mean:
       the colour projection that POS/CHROM hand-design and the pixel averaging that lifts the sub-LSB pulse
       out of sensor noise are learned per frame.
    3. Dilated 1D temporal conv-BN-ReLU blocks on the pooled sequence and a 1x1 conv to the pulse. With the
       defaults the temporal receptive field is 29 frames, about one second at 25 fps: enough to learn a
       band-pass around a beat, too short to memorise a rate. Zero padding keeps the length Tr.
    4. Features: the mean and standard deviation over time of the last temporal feature map, projected to
       `out_dim`.

    Doing all temporal filtering after the spatial pooling (rather than PhysNet's 3D blocks at full
    resolution) cuts the cost about four-fold (about 4-5 ms CPU per 200-frame clip, forward and backward,
    one thread) and learns as fast on synthetic clips (tests/test_models.py).

    Args:
        channels: widths of the two spatial blocks; the temporal blocks keep the second width.
        temporal_kernel: odd kernel size of the temporal convs.
        temporal_dilations: dilation of each temporal conv block.
        out_dim: size of the feature vector.
        input_scale: factor applied after the mean normalisation.
    """

    def __init__(
        self,
        channels: Sequence[int] = (16, 32),
        temporal_kernel: int = 5,
        temporal_dilations: Sequence[int] = (1, 2, 4),
        out_dim: int = 64,
        input_scale: float = 100.0,
    ) -> None:
        super().__init__()
        if len(channels) != 2:
            raise ValueError(f"rppg_cnn: channels must list 2 block widths, got {list(channels)}")
        if temporal_kernel < 1 or temporal_kernel % 2 == 0:
            raise ValueError(f"rppg_cnn: temporal_kernel must be odd and positive, got {temporal_kernel}")
        k, pad = temporal_kernel, temporal_kernel // 2
        c1, c2 = int(channels[0]), int(channels[1])
        self.input_scale = float(input_scale)
        self.spatial = nn.Sequential(
            nn.Conv3d(3, c1, (1, 3, 3), padding=(0, 1, 1), bias=False),
            nn.BatchNorm3d(c1),
            nn.ReLU(inplace=True),
            nn.AvgPool3d((1, 2, 2), ceil_mode=True),
            nn.Conv3d(c1, c2, (1, 3, 3), padding=(0, 1, 1), bias=False),
            nn.BatchNorm3d(c2),
            nn.ReLU(inplace=True),
            nn.AvgPool3d((1, 2, 2), ceil_mode=True),
        )
        temporal: list[nn.Module] = []
        for d in temporal_dilations:
            temporal += [
                nn.Conv1d(c2, c2, k, padding=d * pad, dilation=d, bias=False),
                nn.BatchNorm1d(c2),
                nn.ReLU(inplace=True),
            ]
        self.temporal = nn.Sequential(*temporal)
        # No bias: the pulse offset carries no information (every consumer removes the mean).
        self.to_pulse = nn.Conv1d(c2, 1, 1, bias=False)
        self.to_features = nn.Sequential(nn.Linear(2 * c2, out_dim), nn.ReLU(inplace=True))
        self.out_dim = int(out_dim)
        self.receptive_field_frames = 1 + sum(d * (k - 1) for d in temporal_dilations)

    def forward(self, roi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """roi [B, Tr, 3, R, R] in [0, 1] -> (pulse [B, Tr], features [B, out_dim])."""
        if roi.ndim != 5 or roi.shape[2] != 3:
            raise ValueError(f"rppg_cnn: expected roi [B, Tr, 3, R, R], got {tuple(roi.shape)}")
        x = roi.permute(0, 2, 1, 3, 4)  # [B, 3, Tr, R, R]
        # A fully dark pixel would divide by zero; 1e-4 is far below any usable skin intensity.
        mean = x.mean(dim=2, keepdim=True).clamp_min(1e-4)
        x = (x / mean - 1.0) * self.input_scale
        x = self.temporal(self.spatial(x).mean(dim=(3, 4)))  # [B, C, Tr]
        pulse = self.to_pulse(x).squeeze(1)
        features = self.to_features(torch.cat([x.mean(dim=2), x.std(dim=2)], dim=1))
        return pulse, features


class SpectralHeartRate(nn.Module):
    """Differentiable, ONNX-exportable heart rate from a pulse via a fixed real DFT over the HR band.

    The basis is the Hann-windowed cosine and sine at each band frequency (`bins_bpm`, e.g. 40..180 bpm in
    1 bpm steps; finer than the 60/duration DFT resolution, i.e. a zero-padded DTFT), kept as buffers and
    applied with one matmul, because torch.fft does not export to ONNX. The power spectrum is normalised
    to sum to 1 over the band (`spectrum`), and the heart rate is its soft-argmax: the mean bin frequency
    under softmax(log(spectrum) / temperature), i.e. under spectrum ** (1 / temperature), which sharpens the
    peak so the noise floor barely biases the estimate.

    Args:
        fps: sampling rate of the pulse.
        n_samples: pulse length Tr (the basis is built for this length).
        min_bpm, max_bpm, resolution_bpm: the band and its bin spacing.
        temperature: softmax temperature on the log spectrum; smaller is closer to a hard argmax.
        taper: the window over the clip, "hann" or "tukey" (flat in the middle, cosine edges over `taper_alpha`
            of the clip). The reference heart rate is the mean over every beat of the clip, while a Hann window
            weighs the middle seconds most: on the synthetic test clips the exact rendered pulse itself reads 1.17
            bpm MAE through Hann and 0.74 through Tukey(0.25), and every method gains alike
            (benchmarks/results/rppg_models.md).
        taper_alpha: the Tukey window's tapered fraction (0: rectangular, 1: Hann).
    """

    TAPERS = ("hann", "tukey")

    def __init__(
        self,
        fps: float,
        n_samples: int,
        min_bpm: float = 40.0,
        max_bpm: float = 180.0,
        resolution_bpm: float = 1.0,
        temperature: float = 0.1,
        taper: str = "hann",
        taper_alpha: float = 0.25,
    ) -> None:
        super().__init__()
        if taper not in self.TAPERS or not 0.0 <= taper_alpha <= 1.0:
            raise ValueError(
                f"SpectralHeartRate: taper must be one of {list(self.TAPERS)} with 0 <= taper_alpha <= 1, "
                f"got {taper!r}, {taper_alpha}"
            )
        if fps <= 0 or n_samples < 8:
            raise ValueError(f"SpectralHeartRate: need fps > 0 and n_samples >= 8, got {fps}, {n_samples}")
        if not 0 < min_bpm < max_bpm or resolution_bpm <= 0:
            raise ValueError(
                f"SpectralHeartRate: need 0 < min_bpm < max_bpm and resolution_bpm > 0, "
                f"got {min_bpm}, {max_bpm}, {resolution_bpm}"
            )
        nyquist_bpm = 30.0 * fps
        if max_bpm >= nyquist_bpm:
            raise ValueError(f"SpectralHeartRate: max_bpm {max_bpm} is not below Nyquist ({nyquist_bpm} bpm)")
        if temperature <= 0:
            raise ValueError(f"SpectralHeartRate: temperature must be > 0, got {temperature}")
        self.fps = float(fps)
        self.n_samples = int(n_samples)
        self.temperature = float(temperature)
        n_bins = int(math.floor((max_bpm - min_bpm) / resolution_bpm + 1e-9)) + 1
        bins_bpm = min_bpm + resolution_bpm * torch.arange(n_bins, dtype=torch.float64)
        t_s = torch.arange(self.n_samples, dtype=torch.float64) / self.fps
        if taper == "tukey":
            window = torch.from_numpy(scipy.signal.windows.tukey(self.n_samples, taper_alpha))
        else:
            window = torch.hann_window(self.n_samples, periodic=False, dtype=torch.float64)
        phase = 2.0 * math.pi * t_s[:, None] * (bins_bpm[None, :] / 60.0)
        self.register_buffer("bins_bpm", bins_bpm.float(), persistent=False)
        self.register_buffer("cos_basis", (window[:, None] * torch.cos(phase)).float(), persistent=False)
        self.register_buffer("sin_basis", (window[:, None] * torch.sin(phase)).float(), persistent=False)

    @property
    def bins_hz(self) -> torch.Tensor:
        """Bin frequencies in Hz, [K]."""
        return self.bins_bpm / 60.0

    def power(self, pulse: torch.Tensor) -> torch.Tensor:
        """pulse [B, Tr] -> unnormalised band power [B, K] (mean removed first)."""
        if pulse.ndim != 2 or pulse.shape[1] != self.n_samples:
            raise ValueError(f"SpectralHeartRate: expected pulse [B, {self.n_samples}], got {tuple(pulse.shape)}")
        x = pulse - pulse.mean(dim=1, keepdim=True)
        return (x @ self.cos_basis) ** 2 + (x @ self.sin_basis) ** 2

    def forward(self, pulse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pulse [B, Tr] -> (hr_bpm [B], spectrum [B, K] normalised to sum 1 over the band)."""
        power = self.power(pulse)
        spectrum = power / power.sum(dim=1, keepdim=True).clamp_min(1e-30)
        weights = torch.softmax(torch.log(spectrum + 1e-12) / self.temperature, dim=1)
        hr_bpm = (weights * self.bins_bpm).sum(dim=1)
        return hr_bpm, spectrum
