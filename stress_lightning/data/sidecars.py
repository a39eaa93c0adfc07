"""An item's sidecar streams (body keypoints, face landmarks, a pulse waveform) sampled at a clip's times.

Clocks. The cache resamples every video to k / fps (t = 0 at the first decoded frame). Body keypoints and landmarks
follow the SOURCE video's frames: sidecar frame n is at the source frame's time, which is
- for an image sequence (`FrameFiles`): its timestamps (relative to the first), else n / its fps;
- for a video file: n / the container's frame rate (its header's average rate, what the corpus states about
  its frames), so a sidecar computed frame by frame lines up with the decoded frames of a constant-rate video;
- without a stated rate: n x (cached duration / sidecar frames), the frame-count ratio.
Variable-rate video whose sidecar is indexed by frame is placed by that nominal rate (the frames' own times are not
kept by the cache). Values at a clip time are interpolated linearly between the two sidecar frames around it; a
time outside the sidecar (more than half a frame), or between two frames more than `MAX_GAP_S` apart or without a
value (a landmark frame the file does not list), leaves the clip's stream masked. A body joint undetected (0, 0, 0)
in either neighbour takes the nearer frame's value instead of a blend with the origin.

The pulse waveform is a `CardiacSignal` (`Corpus.load_cardiac`, so every format a corpus reads for its cardiac
ground truth works): sampled at the ROI window's times (start + k) / fps by linear interpolation, masked where the
window is not covered, crosses a gap over `MAX_GAP_S` or holds a dropout (NaN), and stored minus its window mean
(the negative-Pearson loss ignores offset and scale; float32 keeps a small pulse on a large offset).

Bad files: `load_sidecars` applies the data module's `on_error` ("fail" raises `CorpusError` naming the file;
"skip" drops that sidecar of the item, records the `Problem` and warns with `SidecarWarning`, which also reaches
the console from loader worker processes, whose own problem lists the main process never sees).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from stress_lightning.data.cache import MAX_GAP_S
from stress_lightning.data.corpora.base import Corpus, cardiac_coverage_problems
from stress_lightning.data.errors import CorpusError
from stress_lightning.data.items import (
    CardiacRef,
    CardiacSignal,
    FrameFiles,
    Item,
    Problem,
    VideoFile,
    cardiac_rate_problem,
)
from stress_lightning.data.landmarks import NUM_LANDMARKS, read_landmarks_csv

BODY_JOINTS = 25
# A sidecar that runs this much (or a tenth of the video, whichever is more) past the video's end was computed at
# another frame rate or belongs to another video.
OVERRUN_TOLERANCE_S = 1.0


class SidecarWarning(UserWarning):
    """A sidecar file was left out (`on_error="skip"`); the message names the file."""


@dataclass(frozen=True)
class Track:
    """Per-frame values of a sidecar on the video's clock: `values[n]` at `times_s[n]` (increasing)."""

    times_s: np.ndarray  # float64 [N]
    values: np.ndarray  # float32 [N, ...]; NaN rows: no value at that frame
    source: Path


@dataclass
class ItemSidecars:
    """An item's loaded sidecars; None where it has none (or one was left out)."""

    body: Track | None = None
    landmarks: Track | None = None
    ppg: CardiacSignal | None = None


def pulse_ref(item: Item) -> CardiacRef | None:
    """The item's pulse waveform: its `ppg`, else its cardiac ground truth where that is a PPG."""
    if item.ppg is not None:
        return item.ppg
    if item.cardiac is not None and item.cardiac.kind == "ppg":
        return item.cardiac
    return None


def source_frame_times(item: Item, n: int, video_duration_s: float) -> np.ndarray:
    """Times (s, video clock) of source frames 0..n-1 (see the module docstring for the rule)."""
    media = item.media
    if isinstance(media, FrameFiles):
        if media.timestamps_s is not None:
            stamps = np.asarray(media.timestamps_s, dtype=np.float64) - media.timestamps_s[0]
            if n <= len(stamps):
                return stamps[:n]
            step = float(np.median(np.diff(stamps))) if len(stamps) > 1 else 1.0 / float(media.fps or 1.0)
            return np.concatenate([stamps, stamps[-1] + step * np.arange(1, n - len(stamps) + 1)])
        return np.arange(n) / float(media.fps)
    rate = 0.0
    if isinstance(media, VideoFile):
        from stress_lightning.data.video import probe_video

        rate = probe_video(media.path).fps
    if rate > 0:
        return np.arange(n) / rate
    return np.arange(n) * (video_duration_s / max(n, 1))


def _overrun_problem(times: np.ndarray, video_duration_s: float) -> str | None:
    end = float(times[-1]) if len(times) else 0.0
    if end - video_duration_s > max(OVERRUN_TOLERANCE_S, 0.1 * video_duration_s):
        return (
            f"has {len(times)} frames, up to {end:.2f} s, but the video lasts {video_duration_s:.2f} s: "
            "computed at another frame rate, or for another video?"
        )
    return None


def load_body(item: Item, video_duration_s: float) -> Track | None:
    """The item's OpenPose BODY_25 keypoints as a Track of [N, 25, 3] (x, y pixels, confidence)."""
    if item.body_keypoints is None:
        return None
    from stress_lightning.data.body import read_openpose  # the body stream's own module, only when used

    path = item.body_keypoints
    try:
        values = np.asarray(read_openpose(path), dtype=np.float32)
    except CorpusError:
        raise
    except (ValueError, OSError, KeyError, TypeError) as exc:
        raise CorpusError(path, f"cannot be read as OpenPose BODY_25 keypoints ({exc})") from exc
    if values.ndim != 3 or values.shape[1:] != (BODY_JOINTS, 3) or not len(values):
        raise CorpusError(path, f"expected keypoints [frames, {BODY_JOINTS}, 3], got {list(values.shape)}")
    if not np.isfinite(values).all():
        raise CorpusError(path, "holds non-finite keypoint values")
    times = source_frame_times(item, len(values), video_duration_s)
    overrun = _overrun_problem(times, video_duration_s)
    if overrun:
        raise CorpusError(path, overrun)
    return Track(times, values, path)


def load_landmarks(item: Item, video_duration_s: float) -> Track | None:
    """The item's 12 face landmarks as a Track of [N, 12, 2] (pixels; NaN rows: frames the file does not list)."""
    if item.landmarks is None:
        return None
    values = read_landmarks_csv(item.landmarks)
    times = source_frame_times(item, len(values), video_duration_s)
    overrun = _overrun_problem(times, video_duration_s)
    if overrun:
        raise CorpusError(item.landmarks, overrun)
    return Track(times, values, item.landmarks)


def load_pulse(item: Item, reader: Corpus, video_duration_s: float) -> tuple[CardiacSignal | None, list[Problem]]:
    """The item's pulse waveform via the corpus' own cardiac loader, with the coverage problems `_cardiac` would
    report for it (labels then use the overlap)."""
    ref = pulse_ref(item)
    if ref is None:
        return None, []
    signal = reader.load_cardiac(replace(item, cardiac=ref))
    if signal is None:
        return None, []
    if signal.fs_hz:
        problem = cardiac_rate_problem("ppg", float(signal.fs_hz))
        if problem:
            raise CorpusError(ref.path, problem)
    if ref is item.cardiac:
        return signal, []  # the data module checked the cardiac ground truth's coverage already (`_cardiac`)
    return signal, cardiac_coverage_problems(signal, video_duration_s, ref.path, item.files()[0])


def load_sidecars(
    item: Item,
    reader: Corpus | None,
    video_duration_s: float,
    on_error: str = "fail",
    problems: list[Problem] | None = None,
) -> ItemSidecars:
    """Every sidecar of a video item, each under the `on_error` policy (module docstring)."""
    problems = problems if problems is not None else []
    out = ItemSidecars()

    def left_out(exc: CorpusError, what: str) -> None:
        if on_error == "fail":
            raise exc
        problem = Problem(str(exc.path), f"{exc.problem} ({what} of this item left out)")
        problems.append(problem)
        warnings.warn(f"{problem.path}: {problem.reason}", SidecarWarning, stacklevel=3)

    try:
        out.body = load_body(item, video_duration_s)
    except CorpusError as exc:
        left_out(exc, "body keypoints")
    try:
        out.landmarks = load_landmarks(item, video_duration_s)
    except CorpusError as exc:
        left_out(exc, "landmarks")
    if reader is not None:
        try:
            out.ppg, coverage = load_pulse(item, reader, video_duration_s)
            if coverage:
                if on_error == "fail":
                    raise CorpusError(coverage[0].path, coverage[0].reason)
                problems.append(coverage[0])
        except CorpusError as exc:
            left_out(exc, "pulse waveform")
    return out


# -- sampling at clip times ---------------------------------------------------------------------------------------
def _neighbours(times: np.ndarray, query: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """(left index, right index, weight of the right one, covered) of each query time."""
    n = len(times)
    step = float(np.median(np.diff(times))) if n > 1 else 0.0
    tol = 0.5 * step + 1e-9
    covered = bool(n and query.min() >= times[0] - tol and query.max() <= times[-1] + tol)
    right = np.clip(np.searchsorted(times, query, side="right"), 1, max(n - 1, 1))
    left = right - 1
    if n == 1:
        return np.zeros_like(right), np.zeros_like(right), np.zeros(len(query)), covered
    span = times[right] - times[left]
    weight = np.clip((query - times[left]) / np.where(span > 0, span, 1.0), 0.0, 1.0)
    bridged = (span <= MAX_GAP_S) | (weight == 0.0) | (weight == 1.0)
    return left, right, weight, covered and bool(bridged.all())


def sample_track(track: Track | None, query_s: np.ndarray, body: bool = False) -> np.ndarray | None:
    """Values [len(query), ...] at `query_s` (video clock), or None where the clip is not covered (docstring)."""
    if track is None:
        return None
    left, right, weight, ok = _neighbours(track.times_s, np.asarray(query_s, dtype=np.float64))
    if not ok:
        return None
    a, b = track.values[left], track.values[right]
    w = weight.reshape((-1,) + (1,) * (a.ndim - 1)).astype(np.float32)
    # Exact hits take the frame itself (its neighbour may be a frame without a value).
    out = np.where(w == 0.0, a, np.where(w == 1.0, b, (1.0 - w) * a + w * b))
    if body:
        # An undetected joint (confidence 0) on either side: the nearer frame's value, not a blend with (0, 0).
        undetected = ((a[..., 2] <= 0) | (b[..., 2] <= 0))[..., None]
        nearer = np.where(w < 0.5, a, b)
        out = np.where(undetected & (w > 0.0) & (w < 1.0), nearer, out)
    if not np.isfinite(out).all():
        return None
    return out.astype(np.float32)


def sample_pulse(signal: CardiacSignal | None, query_s: np.ndarray) -> np.ndarray | None:
    """The pulse waveform at `query_s` minus its mean (float32), or None where the window is not covered."""
    if signal is None:
        return None
    times = signal.times()
    values = np.asarray(signal.values, dtype=np.float64)
    query = np.asarray(query_s, dtype=np.float64)
    left, right, weight, ok = _neighbours(times, query)
    if not ok:
        return None
    # Every sample inside the window counts: a dropout between two query times leaves the window masked too.
    inside = values[max(int(left.min()), 0) : int(right.max()) + 1]
    if not np.isfinite(inside).all():
        return None
    out = (1.0 - weight) * values[left] + weight * values[right]
    return (out - out.mean()).astype(np.float32)


__all__ = [
    "BODY_JOINTS",
    "NUM_LANDMARKS",
    "ItemSidecars",
    "SidecarWarning",
    "Track",
    "load_sidecars",
    "pulse_ref",
    "sample_pulse",
    "sample_track",
    "source_frame_times",
]
