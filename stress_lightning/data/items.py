"""The data contract every corpus fills: items (a video session or a still image) with whatever labels they have.

A corpus reader (`stress_lightning.data.corpora`) parses its official layout into `Item`s. An item names its
media and carries its labels *as the corpus writes them* (original names); the run's taxonomy maps them later
(`stress_lightning.data.taxonomy`). Labels a corpus lacks are None and become masks, never sentinel values.

Media:
- `VideoFile`: any container PyAV reads, any frame rate; frame times come from the stream's timestamps, so
  dropped or duplicated frames are handled by time, not by index.
- `FrameFiles`: an image sequence (PURE's PNGs, CK+'s sequences) with per-frame timestamps or a nominal rate.
- `ImageFile`: a still image on disk, optionally with a face box the corpus ships (AffectNet).
- `CorpusImage`: a still image only the corpus can decode (FER-2013's pixel strings); `Corpus.load_image`.
- `PhysiologyRecord`: a recording without video, only physiology over time (SWELL-KW's per-minute heart rate,
  HRV and skin conductance); `Corpus.load_physiology` reads it as a `PhysiologySeries`. Only the stress head
  learns from it.

Ground truth:
- expression: `ClassLabel` (one label for the whole item: an image, a RAVDESS clip, a CK+ peak frame) or an
  `ExpressionTimeline` of events with onset/apex/offset (the synthetic corpus);
- stress: `ClassLabel` (per session) or `StressSegments` (per time segment);
- cardiac: a `CardiacRef` (ECG, PPG/BVP or a heart-rate series) that `Corpus.load_cardiac` turns into a
  `CardiacSignal` on the video's clock.

Sidecars (optional, per video): OpenPose BODY_25 body keypoints, 12 face landmarks (`data.landmarks`) and a pulse
waveform (`ppg`); `data.sidecars` samples them at a clip's times.

All of these are small frozen dataclasses: items travel to worker processes pickled.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from stress_lightning.data.errors import CorpusError

SPLITS: tuple[str, ...] = ("train", "val", "test")
CardiacKind = Literal["ecg", "ppg", "hr"]
CARDIAC_KINDS: tuple[str, ...] = ("ecg", "ppg", "hr")
# Sampling rates a cardiac signal can plausibly have; outside them the rate (or the time unit) is wrong. ECG: from
# `signals.ecg.MIN_ECG_FS_HZ` (the QRS band needs it) to a research amplifier's top rate with room to spare; PPG:
# the pulse band up to 5 Hz needs 10 Hz; a heart-rate series: one reading per 100 s up to one per millisecond.
CARDIAC_FS_RANGE_HZ: dict[str, tuple[float, float]] = {
    "ecg": (40.0, 100_000.0),
    "ppg": (10.0, 100_000.0),
    "hr": (0.01, 1_000.0),
}


def cardiac_rate_problem(kind: str, fs_hz: float) -> str | None:
    """Why `fs_hz` cannot be the sampling rate of a `kind` signal (zero, negative, absurd), or None."""
    low, high = CARDIAC_FS_RANGE_HZ[kind]
    if math.isfinite(fs_hz) and low <= fs_hz <= high:
        return None
    return f"sampling rate {fs_hz:g} Hz is not plausible for {kind.upper()} (expected {low:g} to {high:g} Hz)"


# -- media ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VideoFile:
    path: Path


@dataclass(frozen=True)
class FrameFiles:
    """An image sequence. `timestamps_s` (one per frame) wins over `fps`; one of them is required."""

    paths: tuple[Path, ...]
    timestamps_s: tuple[float, ...] | None = None
    fps: float | None = None

    def __post_init__(self) -> None:
        if self.timestamps_s is None and not (self.fps and self.fps > 0):
            raise ValueError("FrameFiles needs per-frame timestamps or a positive fps")
        if self.timestamps_s is not None and len(self.timestamps_s) != len(self.paths):
            raise ValueError(f"FrameFiles: {len(self.paths)} frames but {len(self.timestamps_s)} timestamps")


@dataclass(frozen=True)
class ImageFile:
    path: Path
    # A face box the corpus ships, (x0, y0, x1, y1) in pixels; None: the face pipeline finds the face.
    face_box: tuple[float, float, float, float] | None = None


@dataclass(frozen=True)
class CorpusImage:
    """A still image the corpus decodes itself; `source` is the file it comes from, `key` its place in it."""

    source: Path
    key: int
    face_box: tuple[float, float, float, float] | None = None


@dataclass(frozen=True)
class PhysiologyRecord:
    """A recording of physiology only; `source` is the file it is read from, `key` names its rows there."""

    source: Path
    key: str


Media = VideoFile | FrameFiles | ImageFile | CorpusImage | PhysiologyRecord
STILL_MEDIA = (ImageFile, CorpusImage)


# -- labels ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClassLabel:
    """One label (original corpus name) for the whole item."""

    label: str

    def labels(self) -> list[str]:
        return [self.label]


@dataclass(frozen=True)
class ExpressionEvent:
    start_s: float
    apex_start_s: float
    apex_end_s: float
    end_s: float
    label: str


@dataclass(frozen=True)
class ExpressionTimeline:
    """Expression events; outside every event the face shows `rest_label`; during onset and offset the label is
    unknown (the face is between two expressions, so it is left out rather than guessed)."""

    events: tuple[ExpressionEvent, ...]
    rest_label: str = "neutral"

    def label_at(self, t_s: float) -> str | None:
        for e in self.events:
            if e.start_s <= t_s < e.end_s:
                return e.label if e.apex_start_s <= t_s <= e.apex_end_s else None
        return self.rest_label

    def labels(self) -> list[str]:
        return [e.label for e in self.events]


@dataclass(frozen=True)
class StressSegment:
    start_s: float
    end_s: float
    label: str


@dataclass(frozen=True)
class StressSegments:
    segments: tuple[StressSegment, ...]

    def label_over(self, t0_s: float, t1_s: float) -> str | None:
        """The label of the segment that covers the whole window [t0, t1], else None."""
        for s in self.segments:
            if s.start_s <= t0_s and t1_s <= s.end_s:
                return s.label
        return None

    def labels(self) -> list[str]:
        return [s.label for s in self.segments]


ExpressionLabel = ClassLabel | ExpressionTimeline
StressLabel = ClassLabel | StressSegments


# -- cardiac ground truth -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CardiacRef:
    """Where an item's cardiac ground truth is; the corpus loads it (`Corpus.load_cardiac`).

    `offset_s` is the time of the video's first frame on the signal's clock (a signal that starts 2 s before
    the video has offset_s = 2). `fs_hz` is the nominal sampling rate where the file does not carry times.
    `channel` names a column or channel where a file holds several.
    """

    kind: CardiacKind
    path: Path
    fs_hz: float | None = None
    offset_s: float = 0.0
    channel: str | None = None


@dataclass(frozen=True)
class CardiacSignal:
    """A loaded cardiac signal on the video's clock (t = 0 at the first video frame).

    ECG and PPG: `values` sampled at `fs_hz` starting at `start_s` (uniform), or at `times_s` when irregular.
    Heart-rate series: `values` in bpm at `times_s`.
    """

    kind: CardiacKind
    values: np.ndarray
    fs_hz: float | None = None
    start_s: float = 0.0
    times_s: np.ndarray | None = None
    source: Path | None = None

    def __post_init__(self) -> None:
        if self.kind not in CARDIAC_KINDS:
            raise ValueError(f"cardiac kind must be one of {CARDIAC_KINDS}, got {self.kind!r}")
        # CorpusError (a ValueError) naming the file: a reader builds the signal from what the file holds.
        source = self.source or Path("<cardiac signal>")
        if self.times_s is None and not (self.fs_hz and self.fs_hz > 0):
            raise CorpusError(source, f"has no sampling rate and no per-sample times (rate {self.fs_hz!r})")
        if self.times_s is not None and len(self.times_s) != len(self.values):
            raise CorpusError(source, f"has {len(self.values)} samples but {len(self.times_s)} times")

    def times(self) -> np.ndarray:
        if self.times_s is not None:
            return np.asarray(self.times_s, dtype=np.float64)
        return self.start_s + np.arange(len(self.values)) / float(self.fs_hz)

    @property
    def end_s(self) -> float:
        t = self.times()
        return float(t[-1]) if len(t) else self.start_s


@dataclass(frozen=True)
class PhysiologySeries:
    """Physiology measured over consecutive windows of one record: window `i` covers
    [times_s[i], times_s[i] + window_s) on the record's clock. NaN marks a missing value.

    hr_bpm: mean heart rate; rmssd_ms: RMSSD of the window's RR intervals; eda: skin conductance level in the
    corpus' own unit (only ever compared with the same person's other windows, see `data.personal`).
    """

    times_s: np.ndarray
    window_s: float
    hr_bpm: np.ndarray
    rmssd_ms: np.ndarray
    eda: np.ndarray
    source: Path | None = None

    def __post_init__(self) -> None:
        n = len(self.times_s)
        for name in ("hr_bpm", "rmssd_ms", "eda"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{self.source}: {name} has {len(getattr(self, name))} values for {n} windows")
        if n > 1 and not (np.diff(self.times_s) > 0).all():
            raise ValueError(f"{self.source}: window times must increase")

    def __len__(self) -> int:
        return len(self.times_s)


# -- the item -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Item:
    """One video session or one still image of one subject.

    Args:
        item_id: unique within the corpus and usable as a relative path (letters, digits, `-_./`).
        subject_id: the person; splits are subject-disjoint and per-subject identity is kept downstream.
        split: train, val or test.
        media: what to decode.
        expression / stress: labels as the corpus writes them, or None.
        cardiac: where the cardiac ground truth is, or None.
        face_boxes: a per-frame face box CSV (`frame,x0,y0,x1,y1`) for corpora that ship boxes.
        attributes: group attributes (gender, skin tone, age, ...), for per-group metrics and model cards.
        audio: a path to the item's audio where the corpus has it separately (the roadmap's voice stream).
        body_keypoints: OpenPose BODY_25 keypoints of the video, a folder of per-frame JSON files or one JSON file
            (`data.body.read_openpose`); frame n of it is the video's frame n.
        landmarks: a 12-point landmark CSV `frame,x0,y0,...,x11,y11` in frame pixels (`data.landmarks`).
        ppg: a pulse waveform (PPG/BVP) beside the cardiac ground truth, loaded like it (`Corpus.load_cardiac`);
            None where the item has none, or where `cardiac` is itself a PPG (the dataset then uses that).
        Sidecar times: `data.sidecars` says how their frames are put on the clip's clock.
    """

    item_id: str
    subject_id: str
    split: str
    media: Media
    expression: ExpressionLabel | None = None
    stress: StressLabel | None = None
    cardiac: CardiacRef | None = None
    face_boxes: Path | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)
    audio: Path | None = None
    body_keypoints: Path | None = None
    landmarks: Path | None = None
    ppg: CardiacRef | None = None

    def __post_init__(self) -> None:
        if self.split not in SPLITS:
            raise ValueError(f"item {self.item_id}: split {self.split!r} not in {SPLITS}")
        if self.ppg is not None and self.ppg.kind != "ppg":
            raise ValueError(f"item {self.item_id}: ppg must be a CardiacRef of kind 'ppg', got {self.ppg.kind!r}")

    @property
    def is_still(self) -> bool:
        return isinstance(self.media, STILL_MEDIA)

    @property
    def is_physiology(self) -> bool:
        """A physiology-only record (no face to see)."""
        return isinstance(self.media, PhysiologyRecord)

    def files(self) -> list[Path]:
        """Every file the item reads (for fingerprints and problem reports)."""
        media = self.media
        if isinstance(media, VideoFile):
            paths = [media.path]
        elif isinstance(media, FrameFiles):
            paths = list(media.paths)
        elif isinstance(media, ImageFile):
            paths = [media.path]
        else:  # CorpusImage, PhysiologyRecord
            paths = [media.source]
        extras = (
            self.cardiac.path if self.cardiac else None,
            self.face_boxes,
            self.audio,
            self.landmarks,
            self.ppg.path if self.ppg else None,
        )
        paths.extend(p for p in extras if p is not None)
        if self.body_keypoints is not None:
            # A folder of per-frame JSON files: each file (its size is what the fingerprint sees).
            keypoints = self.body_keypoints
            paths.extend(sorted(keypoints.glob("*.json")) if keypoints.is_dir() else [keypoints])
        return paths


@dataclass(frozen=True)
class Problem:
    """Something wrong with a corpus file, found while reading or checking it."""

    path: str
    reason: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason}
