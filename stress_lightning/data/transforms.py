"""Training transforms as named presets (as torchvision's references do): face-window augmentation, ROI-safe
augmentation, and CutMix / MixUp for the expression task.

Why torchvision.transforms.v2 and not albumentations: albumentations 2.x (and its albucore) declare
`opencv-python-headless` as a hard requirement in their wheels, while the face pipeline's mediapipe 0.10.14
requires `opencv-contrib-python`; both install the same `cv2` package, so having both breaks one of them and
`pip check`. v2 covers affine, flips, colour and CutMix/MixUp; CLAHE, the one transform it lacks, is OpenCV's
own (`cv2.createCLAHE`), wrapped below.

The rPPG ROI never gets a transform that could destroy the pulse: no per-frame colour jitter, no spatial
transform (the ROI is an area mean already), only one gain per clip and channel, which the rPPG stream's
per-clip normalisation removes and which keeps every frequency (tested in tests/test_transforms.py).
"""

from __future__ import annotations

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


def roi_train_transform(roi: torch.Tensor, max_gain: float = 0.15, generator: torch.Generator | None = None):
    """One random gain per colour channel for the whole ROI clip [Tr, 3, R, R] (illumination level and colour
    temperature): multiplies the pulse by a constant, so its frequency content and shape survive."""
    gains = 1.0 + (torch.rand(1, 3, 1, 1, generator=generator) * 2 - 1) * max_gain
    return roi * gains


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
