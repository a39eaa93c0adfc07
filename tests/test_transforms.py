"""Training transforms: the face window is augmented as one clip, the pulse in the ROI survives, CutMix/MixUp make
soft expression targets only for samples that have an expression label."""

from __future__ import annotations

import numpy as np
import torch

from stress_lightning.data.transforms import CLAHE, ExpressionMix, face_train_transform, roi_train_transform
from stress_lightning.signals.rppg import heart_rate_bpm, pos


def _roi_with_pulse(hr_bpm: float = 72.0, fps: float = 25.0, seconds: float = 8.0) -> torch.Tensor:
    t = torch.arange(int(seconds * fps)) / fps
    pulse = 0.003 * torch.sin(2 * torch.pi * hr_bpm / 60.0 * t)
    base = torch.tensor([0.55, 0.40, 0.32]).view(1, 3, 1, 1)
    weights = torch.tensor([0.33, 0.77, 0.53]).view(1, 3, 1, 1)
    noise = 0.0005 * torch.randn(len(t), 3, 8, 8, generator=torch.Generator().manual_seed(0))
    return base * (1 + weights * pulse.view(-1, 1, 1, 1)) + noise


def test_pulse_survives_the_training_transforms() -> None:
    """The ROI augmentation is the only transform the ROI gets: the heart rate read from it is unchanged."""
    roi = _roi_with_pulse(72.0)
    for seed in range(5):
        augmented = roi_train_transform(roi, generator=torch.Generator().manual_seed(seed))
        rgb = augmented.mean(dim=(2, 3)).numpy().astype(np.float64)
        assert abs(heart_rate_bpm(pos(rgb, 25.0), 25.0) - 72.0) < 2.0
        # one gain per channel for the whole clip: the normalised pulse is the same signal
        ratio = (augmented / roi).mean(dim=(2, 3))
        assert torch.allclose(ratio, ratio[:1].expand_as(ratio), atol=1e-5)


def test_face_transform_draws_one_set_of_parameters_per_clip() -> None:
    torch.manual_seed(0)
    frame = torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)
    clip = frame.unsqueeze(0).repeat(8, 1, 1, 1)
    out = face_train_transform()(clip)
    assert out.shape == clip.shape and out.dtype == torch.uint8
    # identical input frames stay identical: the clip is augmented as one
    assert all(torch.equal(out[0], out[i]) for i in range(1, 8))


def test_clahe_keeps_shape_and_raises_local_contrast() -> None:
    rng = np.random.default_rng(0)
    low = torch.from_numpy((100 + 10 * rng.random((2, 3, 32, 32))).astype(np.uint8))
    out = CLAHE(p=1.0)(low)
    assert out.shape == low.shape and out.dtype == torch.uint8
    assert out.float().std() > low.float().std()


def test_expression_mix_soft_targets_respect_the_mask() -> None:
    torch.manual_seed(0)
    batch = {
        "frames": torch.rand(6, 4, 3, 16, 16),
        "expression": torch.tensor([0, 1, 2, 3, 0, 0]),
        "expression_mask": torch.tensor([True, True, True, True, False, False]),
    }
    mixed = ExpressionMix(num_classes=7, p=1.0)(dict(batch))
    soft = mixed["expression_soft"]
    assert soft.shape == (6, 7)
    assert torch.allclose(soft[:4].sum(dim=1), torch.ones(4), atol=1e-5)
    assert (soft[4:] == 0).all()
    # unlabelled samples' frames are never mixed
    assert torch.equal(mixed["frames"][4:], batch["frames"][4:])
