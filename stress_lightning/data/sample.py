"""The one Sample type every corpus fills: a clip plus whatever labels it has, each with an explicit mask.

A physiology record (SWELL-KW) has no frames at all: its sample holds the person-relative physiology
(`personal`, `personal_mask`, see `data.personal`) and the stress label; the model runs only its stress head on it.
A still image is a one-frame clip: its face crop is repeated over the face window (the spatial stream sees it,
the temporal stream sees a still face), its ROI is zeros with `roi_mask` False (no pulse to learn), and only its
expression label can be present. Class indices refer to the run's taxonomy (`stress_lightning.data.taxonomy`).
"""

from __future__ import annotations

from typing import Final

import torch

# Label keys and the mask that says whether a sample carries them.
LABEL_MASKS: Final[dict[str, str]] = {
    "expression": "expression_mask",
    "hr_bpm": "hr_mask",
    "rmssd_ms": "hrv_mask",
    "lf_hf_ratio": "hrv_mask",
    "stress": "stress_mask",
}

Sample = dict[str, torch.Tensor]


def make_sample(
    frames: torch.Tensor,
    roi: torch.Tensor,
    fps: float,
    *,
    expression: int | None = None,
    hr_bpm: float | None = None,
    rmssd_ms: float | None = None,
    lf_hf_ratio: float | None = None,
    stress: int | None = None,
    still: bool = False,
) -> Sample:
    """Build a Sample; a label given as None is stored as zero with its mask False (never a sentinel)."""
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames must be [Tf, 3, H, W], got {tuple(frames.shape)}")
    if roi.ndim != 4 or roi.shape[1] != 3:
        raise ValueError(f"roi must be [Tr, 3, R, R], got {tuple(roi.shape)}")
    hrv_known = rmssd_ms is not None and lf_hf_ratio is not None
    return {
        "frames": frames,
        "roi": roi,
        "roi_mask": torch.tensor(not still),
        "still": torch.tensor(bool(still)),
        "fps": torch.tensor(float(fps), dtype=torch.float32),
        "expression": torch.tensor(expression if expression is not None else 0, dtype=torch.int64),
        "expression_mask": torch.tensor(expression is not None),
        "hr_bpm": torch.tensor(hr_bpm if hr_bpm is not None else 0.0, dtype=torch.float32),
        "hr_mask": torch.tensor(hr_bpm is not None and not still),
        "rmssd_ms": torch.tensor(rmssd_ms if hrv_known else 0.0, dtype=torch.float32),
        "lf_hf_ratio": torch.tensor(lf_hf_ratio if hrv_known else 0.0, dtype=torch.float32),
        "hrv_mask": torch.tensor(hrv_known and not still),
        "stress": torch.tensor(stress if stress is not None else 0, dtype=torch.int64),
        "stress_mask": torch.tensor(stress is not None),
    }


def make_physiology_sample(personal: torch.Tensor, personal_mask: torch.Tensor, *, stress: int | None) -> Sample:
    """A sample without video: personal physiology features [P] with their mask [P], and the stress label."""
    if personal.ndim != 1 or personal.shape != personal_mask.shape:
        raise ValueError(
            f"personal and personal_mask must be [P], got {tuple(personal.shape)}, {tuple(personal_mask.shape)}"
        )
    false = torch.tensor(False)
    return {
        "personal": personal.float(),
        "personal_mask": personal_mask.bool(),
        "expression": torch.tensor(0, dtype=torch.int64),
        "expression_mask": false,
        "hr_bpm": torch.tensor(0.0),
        "hr_mask": false,
        "rmssd_ms": torch.tensor(0.0),
        "lf_hf_ratio": torch.tensor(0.0),
        "hrv_mask": false,
        "stress": torch.tensor(stress if stress is not None else 0, dtype=torch.int64),
        "stress_mask": torch.tensor(stress is not None),
    }
