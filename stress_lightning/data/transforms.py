"""Training transforms as named presets (as torchvision's references do): face-window augmentation, ROI-safe
augmentation, and CutMix / MixUp for the expression task.

Why torchvision.transforms.v2 and not albumentations: albumentations 2.x (and its albucore) declare
`opencv-python-headless` as a hard requirement in their wheels, while the face pipeline's mediapipe 0.10.14
requires `opencv-contrib-python`; both install the same `cv2` package, so having both breaks one of them and
`pip check`. v2 covers affine, flips, colour and CutMix/MixUp; CLAHE, the one transform it lacks, is OpenCV's
own (`cv2.createCLAHE`), wrapped below.

The rPPG ROI never gets a transform that could destroy the pulse or change its frequency: no per-frame colour
jitter, no spatial transform (the ROI is an area mean already). The "gain" preset (the default) is one gain per
clip and channel, which the rPPG stream's per-clip normalisation removes and which keeps every frequency (tested
in tests/test_transforms.py). The "camera" preset (`roi_camera_transform`) adds what a webcam does to the ROI and
the renderer does not: sensor noise, slow auto-exposure / white-balance gain drifts and exposure steps,
achromatic motion-like shading changes, 8-bit-like quantisation and frame-time jitter; each one multiplies or
adds to the pulse without moving its frequency (tests/test_zoo_rppg.py checks the dominant frequency).
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
from torchvision.transforms import v2


class CLAHE(torch.nn.Module):
    """Contrast-limited adaptive histogram equalisation on the lightness channel of uint8 frames [T, 3, H, W],
    with probability `p` per clip (the same for all frames, so the clip stays consistent)."""

    def __init__(self, clip_limit: float = 2.0, tile_grid: int = 4, p: float = 0.5) -> None:
        super().__init__()
        self.clip_limit = clip_limit
        self.tile_grid = tile_grid
        self.p = p

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        if frames.dtype != torch.uint8:
            raise TypeError(f"CLAHE expects uint8 frames, got {frames.dtype}")
        if torch.rand(()) >= self.p:
            return frames
        clahe = cv2.createCLAHE(clipLimit=self.clip_limit, tileGridSize=(self.tile_grid, self.tile_grid))
        out = []
        for frame in frames.permute(0, 2, 3, 1).numpy():
            lab = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2LAB)
            lab[..., 0] = clahe.apply(lab[..., 0])
            out.append(cv2.cvtColor(lab, cv2.COLOR_LAB2RGB))
        return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


def face_train_transform(strength: str = "default") -> v2.Transform:
    """Augmentation of the face window [Tf, 3, S, S] uint8; v2 draws one set of parameters for the whole clip.

    "default": CLAHE, flip, affine jitter (rotation, shift, scale), colour jitter, a little blur.
    "light": flip and a small affine jitter only.
    """
    if strength == "light":
        return v2.Compose([v2.RandomHorizontalFlip(), v2.RandomAffine(degrees=5, translate=(0.04, 0.04))])
    if strength != "default":
        raise ValueError(f"unknown augmentation strength {strength!r}; known: default, light")
    return v2.Compose(
        [
            CLAHE(p=0.3),
            v2.RandomHorizontalFlip(),
            v2.RandomAffine(degrees=10, translate=(0.06, 0.06), scale=(0.9, 1.1)),
            v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.2, hue=0.02),
            v2.RandomApply([v2.GaussianBlur(kernel_size=3, sigma=(0.1, 1.0))], p=0.2),
            v2.RandomGrayscale(p=0.1),
        ]
    )


ROI_PRESETS = ("gain", "camera")


def roi_train_transform(
    roi: torch.Tensor,
    max_gain: float = 0.15,
    generator: torch.Generator | None = None,
    preset: str = "gain",
    fps: float = 25.0,
) -> torch.Tensor:
    """Augment one ROI clip [Tr, 3, R, R] (intensities in [0, 1]) for training the rPPG stream.

    "gain" (default): one random gain per colour channel for the whole clip (illumination level and colour
    temperature): multiplies the pulse by a constant, so its frequency content and shape survive.
    "camera": that gain, then `roi_camera_transform` (webcam effects; `fps` is the ROI frame rate).
    """
    if preset not in ROI_PRESETS:
        raise ValueError(f"roi_train_transform: unknown preset {preset!r}; known: {', '.join(ROI_PRESETS)}")
    gains = 1.0 + (torch.rand(1, 3, 1, 1, generator=generator) * 2 - 1) * max_gain
    roi = roi * gains
    if preset == "camera":
        roi = roi_camera_transform(roi, fps=fps, generator=generator)
    return roi


# -- camera-like ROI augmentations (each keeps the pulse's frequency) ------------------------------------------------

# Smoothing of the per-channel (white-balance) gain drift, in seconds: a Gaussian of this width passes
# exp(-(2 pi f s)^2 / 2) of a frequency f, ~1e-17 at the 0.7 Hz bottom of the pulse band (42 bpm; with the kernel cut
# at 4 sigma, under 1e-6 of the drift's power lands in the band, tests/test_zoo_rppg.py), so the drift never adds a
# colour change at a heart rate; white-balance loops take seconds to settle.
DRIFT_SMOOTH_S = 2.0


def _uniform(lo: float, hi: float, generator: torch.Generator | None) -> float:
    return float(lo + (hi - lo) * torch.rand((), generator=generator))


def _check_roi(roi: torch.Tensor, name: str) -> None:
    if roi.ndim != 4 or roi.shape[1] != 3:
        raise ValueError(f"{name}: expected an ROI clip [Tr, 3, R, R], got {tuple(roi.shape)}")


def smooth_noise(
    n: int, sigma_frames: float, generator: torch.Generator | None = None, channels: int = 1
) -> torch.Tensor:
    """Random smooth trajectories [channels, n] with zero mean and unit std: white noise through a Gaussian filter
    of `sigma_frames` (its spectrum falls as exp(-(2 pi f sigma)^2 / 2))."""
    if n < 2 or sigma_frames <= 0:
        raise ValueError(f"smooth_noise: need n >= 2 and sigma_frames > 0, got {n}, {sigma_frames}")
    half = int(math.ceil(4 * sigma_frames))
    k = torch.arange(-half, half + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (k / sigma_frames) ** 2)
    white = torch.randn(channels, 1, n + 2 * half, generator=generator)
    x = torch.nn.functional.conv1d(white, (kernel / kernel.sum()).view(1, 1, -1)).squeeze(1)
    x = x - x.mean(dim=1, keepdim=True)
    return x / x.std(dim=1, keepdim=True).clamp_min(1e-12)


def roi_sensor_noise(roi: torch.Tensor, sigma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Add shot-like noise: per frame, cell and channel, Gaussian with std `sigma` * sqrt(value / 0.5) (intensity
    units; an ROI cell at mid-grey gets `sigma`). A webcam's cell means are noisier than the renderer's (a smaller
    face, compression); the pulse is about 0.0015 peak-to-peak at mid-grey."""
    _check_roi(roi, "roi_sensor_noise")
    if sigma < 0:
        raise ValueError(f"roi_sensor_noise: sigma must be >= 0, got {sigma}")
    return roi + sigma * torch.sqrt(roi.clamp_min(0) / 0.5) * torch.randn(roi.shape, generator=generator)


def roi_gain_drift(
    roi: torch.Tensor,
    fps: float,
    channel_amplitude: float,
    common_amplitude: float,
    step: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Camera gain changes over the clip: auto-white-balance (a smooth gain per channel, smoothed over
    `DRIFT_SMOOTH_S`, so below the pulse band, relative std `channel_amplitude`), auto-exposure (a smooth gain
    equal in all channels, smoothed over 0.5 s, relative std `common_amplitude`) and, if `step` > 0, one
    exposure step (equal in all channels, relative size `step`, random sign and time, eased over 2 frames).
    Multiplicative: the pulse is scaled, its frequency untouched; the in-band parts are equal in all channels,
    which a colour projection (POS, CHROM, a learned one) removes."""
    _check_roi(roi, "roi_gain_drift")
    if fps <= 0 or channel_amplitude < 0 or common_amplitude < 0 or step < 0:
        raise ValueError(
            f"roi_gain_drift: need fps > 0 and non-negative amplitudes, got {fps}, {channel_amplitude}, "
            f"{common_amplitude}, {step}"
        )
    n = roi.shape[0]
    per_channel = 1.0 + channel_amplitude * smooth_noise(n, DRIFT_SMOOTH_S * fps, generator, channels=3)  # [3, n]
    common = 1.0 + common_amplitude * smooth_noise(n, 0.5 * fps, generator)[0]  # [n]
    if step > 0:
        t_step = _uniform(0.2, 0.8, generator) * n
        sign = 1.0 if float(torch.rand((), generator=generator)) < 0.5 else -1.0
        common = common * (1.0 + sign * step * torch.sigmoid((torch.arange(n) - t_step) / 0.5))
    gain = per_channel.t() * common[:, None]  # [n, 3]
    return roi * gain[:, :, None, None].clamp_min(0.05)


def roi_shading_modulation(
    roi: torch.Tensor, fps: float, amplitude: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Motion-like shading: as the head moves, each ROI cell slides over the face's shading, so its brightness
    changes with the motion, differently across the grid (a random spatial gradient plus a common part), equal
    in all channels (shading is achromatic). The motion is smooth noise over 0.3-1 s (head movements, some of
    it inside the pulse band, as real motion is), relative std `amplitude` at the grid's edge."""
    _check_roi(roi, "roi_shading_modulation")
    if fps <= 0 or amplitude < 0:
        raise ValueError(f"roi_shading_modulation: need fps > 0 and amplitude >= 0, got {fps}, {amplitude}")
    n, _, h, w = roi.shape
    motion = smooth_noise(n, _uniform(0.3, 1.0, generator) * fps, generator, channels=2)  # [2, n]
    ys = torch.linspace(-1.0, 1.0, h).view(h, 1)
    xs = torch.linspace(-1.0, 1.0, w).view(1, w)
    direction = torch.randn(2, 3, generator=generator)  # per trajectory: x, y gradient and a common offset
    fields = direction[:, 0, None, None] * xs + direction[:, 1, None, None] * ys + direction[:, 2, None, None]
    fields = fields / fields.abs().amax(dim=(1, 2), keepdim=True).clamp_min(1e-6)  # [2, h, w]
    gain = 1.0 + amplitude * torch.einsum("kn,khw->nhw", motion, fields) / math.sqrt(2.0)
    return roi * gain[:, None].clamp_min(0.05)


def roi_quantise(roi: torch.Tensor, levels: float = 255.0) -> torch.Tensor:
    """Round intensities to 1 / `levels` steps. The cache's cell means are float (area means of many 8-bit
    pixels); a compressed webcam stream flattens skin regions into fewer effective levels. Apply after noise
    (which dithers the pulse through the rounding, as sensor noise does in a camera)."""
    _check_roi(roi, "roi_quantise")
    if levels < 1:
        raise ValueError(f"roi_quantise: levels must be >= 1, got {levels}")
    return torch.round(roi * levels) / levels


def roi_time_jitter(roi: torch.Tensor, max_shift: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Frame-time jitter: each frame is read at its nominal time plus a random offset of up to `max_shift`
    frames (uniform, independent per frame, linear interpolation between neighbours), as a webcam whose frame
    timestamps wander around the nominal rate. The mean rate, hence the pulse frequency, is unchanged."""
    _check_roi(roi, "roi_time_jitter")
    if not 0 <= max_shift < 1:
        raise ValueError(f"roi_time_jitter: max_shift must be in [0, 1) frames, got {max_shift}")
    n = roi.shape[0]
    t = torch.arange(n, dtype=torch.float32) + (torch.rand(n, generator=generator) * 2 - 1) * max_shift
    t = t.clamp(0, n - 1)
    lo = t.floor().long().clamp(max=n - 2)
    frac = (t - lo.float()).view(n, 1, 1, 1)
    return roi[lo] * (1 - frac) + roi[lo + 1] * frac


def roi_camera_transform(
    roi: torch.Tensor, fps: float = 25.0, strength: float = 1.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Webcam-like ROI augmentation [Tr, 3, R, R] -> [Tr, 3, R, R] in [0, 1], in the order a camera applies
    them: shading changes from motion (p 0.5), frame-time jitter (p 0.5), auto-exposure / white-balance gains
    (p 0.8, with an exposure step in 30 % of those), sensor noise (p 0.8), quantisation (p 0.3). Each
    amplitude is drawn up to `strength` times its maximum (shading 2 %, white-balance drift 1 %, exposure
    drift 3 %, exposure step 4 %, noise 0.002, jitter 0.3 frames, quantisation 255-1020 levels). The
    white-balance drift is kept small: a slow colour drift of a few percent is 10x the pulse, and colour
    projections that normalise per 1.6 s window (POS, CHROM) let its ramps leak into the band."""
    _check_roi(roi, "roi_camera_transform")
    if strength < 0:
        raise ValueError(f"roi_camera_transform: strength must be >= 0, got {strength}")

    def chance(p: float) -> bool:
        return float(torch.rand((), generator=generator)) < p

    def amount(top: float) -> float:
        return _uniform(0.0, strength * top, generator)

    if chance(0.5):
        roi = roi_shading_modulation(roi, fps, amount(0.02), generator)
    if chance(0.5):
        roi = roi_time_jitter(roi, min(amount(0.3), 0.99), generator)
    if chance(0.8):
        step = amount(0.04) if chance(0.3) else 0.0
        roi = roi_gain_drift(roi, fps, amount(0.01), amount(0.03), step, generator)
    if chance(0.8):
        roi = roi_sensor_noise(roi, amount(0.002), generator)
    if chance(0.3):
        roi = roi_quantise(roi, 255.0 * (1 + 3 * float(torch.rand((), generator=generator))))
    return roi.clamp(0.0, 1.0)


class ExpressionMix:
    """CutMix or MixUp (chosen at random per batch) over the batch's face windows, for the samples that carry an
    expression label; adds `expression_soft` [B, C] targets (one-hot for unmixed samples, zeros where no label).

    The box (CutMix) is the same for all Tf frames of a clip: the face window is mixed as one image with
    Tf x 3 channels. The ROI is never mixed: two pulses added are no pulse.
    """

    def __init__(self, num_classes: int, cutmix_alpha: float = 1.0, mixup_alpha: float = 0.2, p: float = 0.5):
        self.num_classes = int(num_classes)
        self.p = p
        choices = []
        if cutmix_alpha > 0:
            choices.append(v2.CutMix(alpha=cutmix_alpha, num_classes=self.num_classes))
        if mixup_alpha > 0:
            choices.append(v2.MixUp(alpha=mixup_alpha, num_classes=self.num_classes))
        self.mix = v2.RandomChoice(choices) if choices else None

    def __call__(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        mask = batch["expression_mask"].bool()
        soft = torch.zeros(len(mask), self.num_classes, device=batch["frames"].device)
        soft[mask] = torch.nn.functional.one_hot(batch["expression"][mask], self.num_classes).float()
        batch["expression_soft"] = soft
        if self.mix is None or mask.sum() < 2 or torch.rand(()) >= self.p:
            return batch
        frames = batch["frames"]
        b, t, c, h, w = frames.shape
        idx = mask.nonzero().squeeze(1)
        flat = frames[idx].reshape(len(idx), t * c, h, w)
        mixed, targets = self.mix(flat, batch["expression"][idx])
        frames = frames.clone()
        frames[idx] = mixed.reshape(len(idx), t, c, h, w)
        batch["frames"] = frames
        soft[idx] = targets.to(soft.dtype)
        batch["expression_soft"] = soft
        return batch
