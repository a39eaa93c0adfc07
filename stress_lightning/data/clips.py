"""Clip sampling, kept apart from decoding and datasets (as pytorchvideo does).

A clip is `clip_seconds` of ROI frames at the full frame rate (the rPPG window) plus `face_frames` face crops
spread over `face_span_s` around the clip centre (the expression window). Each clip gets the labels its session
has at that time: the expression at the centre, the ECG heart rate over the window, the session's HRV and stress.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stress_lightning.data.corpora.base import SessionRecord
from stress_lightning.data.labels import CardiacTruth, ExpressionTimeline


@dataclass(frozen=True)
class ClipSpec:
    fps: float
    clip_seconds: float = 8.0
    face_frames: int = 8
    face_span_s: float = 1.4

    @property
    def roi_frames(self) -> int:
        return round(self.clip_seconds * self.fps)

    def face_offsets(self) -> np.ndarray:
        """Frame offsets of the face crops relative to the clip centre."""
        return np.round(np.linspace(-self.face_span_s / 2, self.face_span_s / 2, self.face_frames) * self.fps).astype(
            np.int64
        )


@dataclass(frozen=True)
class ClipLabels:
    session: np.ndarray  # index into the record list
    start: np.ndarray  # first ROI frame
    expression: np.ndarray
    expression_mask: np.ndarray
    hr_bpm: np.ndarray
    hr_mask: np.ndarray
    rmssd_ms: np.ndarray
    lf_hf_ratio: np.ndarray
    hrv_mask: np.ndarray
    stress: np.ndarray
    stress_mask: np.ndarray

    def __len__(self) -> int:
        return len(self.start)


def sample_clips(
    records: list[SessionRecord],
    spec: ClipSpec,
    stride_s: float,
    cardiac: list[CardiacTruth | None],
    expressions: list[ExpressionTimeline | None],
) -> ClipLabels:
    rows: dict[str, list] = {name: [] for name in ClipLabels.__dataclass_fields__}
    offsets = spec.face_offsets()
    stride = max(1, round(stride_s * spec.fps))
    for i, record in enumerate(records):
        last_start = record.n_frames - spec.roi_frames
        # Keep the face window inside the video too.
        for start in range(0, last_start + 1, stride):
            centre = start + spec.roi_frames // 2
            if centre + offsets[0] < 0 or centre + offsets[-1] >= record.n_frames:
                continue
            t0, t1, tc = start / spec.fps, (start + spec.roi_frames) / spec.fps, centre / spec.fps
            expression = expressions[i].label_at(tc) if expressions[i] is not None else None
            truth = cardiac[i]
            hr = truth.hr_bpm(t0, t1) if truth is not None else None
            hrv_known = truth is not None and truth.rmssd_ms is not None and truth.lf_hf_ratio is not None
            rows["session"].append(i)
            rows["start"].append(start)
            rows["expression"].append(expression if expression is not None else 0)
            rows["expression_mask"].append(expression is not None)
            rows["hr_bpm"].append(hr if hr is not None else 0.0)
            rows["hr_mask"].append(hr is not None)
            rows["rmssd_ms"].append(truth.rmssd_ms if hrv_known else 0.0)
            rows["lf_hf_ratio"].append(truth.lf_hf_ratio if hrv_known else 0.0)
            rows["hrv_mask"].append(hrv_known)
            rows["stress"].append(record.stress if record.stress is not None else 0)
            rows["stress_mask"].append(record.stress is not None)
    dtypes = {
        "session": np.int64,
        "start": np.int64,
        "expression": np.int64,
        "stress": np.int64,
        "hr_bpm": np.float32,
        "rmssd_ms": np.float32,
        "lf_hf_ratio": np.float32,
    }
    return ClipLabels(**{k: np.asarray(v, dtype=dtypes.get(k, bool)) for k, v in rows.items()})
