"""The one Sample type every corpus fills: a clip plus whatever labels it has, each with an explicit mask.

A physiology record (SWELL-KW) has no frames at all: its sample holds the person-relative physiology
(`personal`, `personal_mask`, see `data.personal`) and the stress label; the model runs only its stress head on it.
A still image is a one-frame clip: its face crop is repeated over the face window (the spatial stream sees it,
the temporal stream sees a still face), its ROI is zeros with `roi_mask` False (no pulse to learn), and only its
expression label can be present. Class indices refer to the run's taxonomy (`stress_lightning.data.taxonomy`).

Sidecar streams ride along with every clip (zeros with their mask False where the item has none, and for stills):
`body` [Tf, 25, 3] OpenPose BODY_25 (x, y in frame pixels, confidence) and `landmarks` [Tf, 12, 2] (frame pixels,
`data.landmarks.LANDMARK_NAMES`) at the face window's frame times, `ppg` [Tr] the reference pulse waveform on the
ROI clock (zero mean over the window; blood volume up = up). `data.sidecars` computes them.
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

# Sidecar keys, their mask, and the per-frame shape after the time axis.
SIDECAR_MASKS: Final[dict[str, str]] = {"body": "body_mask", "landmarks": "landmarks_mask", "ppg": "ppg_mask"}
BODY_JOINTS: Final[int] = 25
NUM_LANDMARKS: Final[int] = 12

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
    body: torch.Tensor | None = None,
    landmarks: torch.Tensor | None = None,
    ppg: torch.Tensor | None = None,
) -> Sample:
    """Build a Sample; a label given as None is stored as zero with its mask False (never a sentinel).

    body [Tf, 25, 3], landmarks [Tf, 12, 2] and ppg [Tr] follow the same rule: None is zeros with the mask False.
    """
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"frames must be [Tf, 3, H, W], got {tuple(frames.shape)}")
    if roi.ndim != 4 or roi.shape[1] != 3:
        raise ValueError(f"roi must be [Tr, 3, R, R], got {tuple(roi.shape)}")
    hrv_known = rmssd_ms is not None and lf_hf_ratio is not None
    tf, tr = frames.shape[0], roi.shape[0]
    sidecars = {
        "body": _sidecar("body", body, (tf, BODY_JOINTS, 3)),
        "landmarks": _sidecar("landmarks", landmarks, (tf, NUM_LANDMARKS, 2)),
        "ppg": _sidecar("ppg", ppg, (tr,)),
    }
    sample = {
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
    for key, (value, known) in sidecars.items():
        sample[key] = value
        sample[SIDECAR_MASKS[key]] = torch.tensor(known)
    return sample


def _sidecar(name: str, value: torch.Tensor | None, shape: tuple[int, ...]) -> tuple[torch.Tensor, bool]:
    if value is None:
        return torch.zeros(shape, dtype=torch.float32), False
    if tuple(value.shape) != shape:
        raise ValueError(f"{name} must be {list(shape)} for this clip, got {list(value.shape)}")
    return value.float(), True


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
