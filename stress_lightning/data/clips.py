"""Clip sampling, kept apart from decoding and datasets (as pytorchvideo does).

A video clip is `clip_seconds` of ROI frames at the clip rate (the rPPG window) plus `face_frames` face crops
spread over `face_span_s` around the clip centre (the expression window); it gets the labels its item has at
that time: the expression at the centre (or the item's one label), the heart rate over the window and the HRV
around it, the stress of the session or of the segment covering the window. Clips with too few valid frames
(no face, or a gap in the video) are left out and counted. A still image is one entry of its own.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from stress_lightning.data.items import ClassLabel, ExpressionTimeline, Item, StressSegments
from stress_lightning.data.labels import CardiacTruth
from stress_lightning.data.taxonomy import LabelMap

# A clip needs a face in at least this share of its frames (and in every face-window frame).
MIN_VALID_FRACTION = 0.9


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


def clip_window(
    faces: np.ndarray, roi: np.ndarray, start: int, roi_frames: int, face_offsets: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """A clip's arrays from a cached video's (`ClipCache.load_video`): the face window [Tf, S, S, 3] (a copy) at
    `face_offsets` (`ClipSpec.face_offsets`) around the ROI window's centre, and the ROI window [Tr, 3, R, R] (a view
    of the memory map) starting at `start`. The one definition of a clip that the dataset and the shards share."""
    centre = start + roi_frames // 2
    return faces[centre + face_offsets], roi[start : start + roi_frames]


@dataclass(frozen=True)
class ClipLabels:
    item: np.ndarray  # index into the item list
    start: np.ndarray  # first ROI frame at the clip rate; -1 for a still image
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


@dataclass
class SamplingStats:
    clips: int = 0
    stills: int = 0
    dropped_no_face: int = 0
    dropped_unlabelled: int = 0
    too_short: list[str] = field(default_factory=list)


def _expression_at(label, t_s: float | None, labels: LabelMap) -> int | None:
    if label is None:
        return None
    if isinstance(label, ClassLabel):
        return labels.index(label.label)
    if isinstance(label, ExpressionTimeline):
        name = label.label_at(t_s if t_s is not None else 0.0)
        return None if name is None else labels.index(name)
    raise TypeError(f"unknown expression label type {type(label).__name__}")


def stress_over(label, t0_s: float, t1_s: float, labels: LabelMap) -> int | None:
    if label is None:
        return None
    if isinstance(label, ClassLabel):
        return labels.index(label.label)
    if isinstance(label, StressSegments):
        name = label.label_over(t0_s, t1_s)
        return None if name is None else labels.index(name)
    raise TypeError(f"unknown stress label type {type(label).__name__}")


def sample_clips(
    items: list[Item],
    spec: ClipSpec,
    stride_s: float,
    cardiac: list[CardiacTruth | None],
    valid: list[np.ndarray | None],
    expression_labels: LabelMap,
    stress_labels: LabelMap,
) -> tuple[ClipLabels, SamplingStats]:
    """Clip entries with their labels. `valid[i]` is the per-frame validity of a cached video (None: a still)."""
    rows: dict[str, list] = {name: [] for name in ClipLabels.__dataclass_fields__}
    stats = SamplingStats()
    offsets = spec.face_offsets()
    stride = max(1, round(stride_s * spec.fps))

    def add(i: int, start: int, expression, hr, hrv, stress) -> None:
        rows["item"].append(i)
        rows["start"].append(start)
        rows["expression"].append(expression if expression is not None else 0)
        rows["expression_mask"].append(expression is not None)
        rows["hr_bpm"].append(hr if hr is not None else 0.0)
        rows["hr_mask"].append(hr is not None)
        rows["rmssd_ms"].append(hrv[0] if hrv is not None else 0.0)
        rows["lf_hf_ratio"].append(hrv[1] if hrv is not None else 0.0)
        rows["hrv_mask"].append(hrv is not None)
        rows["stress"].append(stress if stress is not None else 0)
        rows["stress_mask"].append(stress is not None)

    for i, item in enumerate(items):
        if item.is_still:
            expression = _expression_at(item.expression, None, expression_labels)
            stress = stress_over(item.stress, 0.0, 0.0, stress_labels)
            if expression is None and stress is None:
                stats.dropped_unlabelled += 1
                continue
            add(i, -1, expression, None, None, stress)
            stats.stills += 1
            continue
        ok = valid[i]
        n = len(ok)
        if n < spec.roi_frames or n < offsets[-1] - offsets[0] + 1:
            stats.too_short.append(item.item_id)
            continue
        valid_cumsum = np.concatenate(([0], np.cumsum(ok)))
        truth = cardiac[i]
        for start in range(0, n - spec.roi_frames + 1, stride):
            centre = start + spec.roi_frames // 2
            if centre + offsets[0] < 0 or centre + offsets[-1] >= n:
                continue
            share = (valid_cumsum[start + spec.roi_frames] - valid_cumsum[start]) / spec.roi_frames
            if share < MIN_VALID_FRACTION or not ok[centre + offsets].all():
                stats.dropped_no_face += 1
                continue
            t0, t1, tc = start / spec.fps, (start + spec.roi_frames) / spec.fps, centre / spec.fps
            expression = _expression_at(item.expression, tc, expression_labels)
            hr = truth.hr_bpm(t0, t1) if truth is not None else None
            hrv = truth.hrv(tc) if truth is not None and truth.kind != "hr" else None
            stress = stress_over(item.stress, t0, t1, stress_labels)
            add(i, start, expression, hr, hrv, stress)
            stats.clips += 1
    dtypes = {
        "item": np.int64,
        "start": np.int64,
        "expression": np.int64,
        "stress": np.int64,
        "hr_bpm": np.float32,
        "rmssd_ms": np.float32,
        "lf_hf_ratio": np.float32,
    }
    labels = ClipLabels(**{k: np.asarray(v, dtype=dtypes.get(k, bool)) for k, v in rows.items()})
    return labels, stats


def class_counts(labels: ClipLabels, names: tuple[str, ...]) -> Counter[str]:
    """Expression label counts over the entries that carry one."""
    idx = labels.expression[labels.expression_mask]
    return Counter({names[k]: int(v) for k, v in zip(*np.unique(idx, return_counts=True), strict=True)})
