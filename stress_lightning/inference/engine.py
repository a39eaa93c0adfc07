"""The streaming engine: raw frames in, per-frame expression and windowed heart rate, HRV and stress out.

Per frame: the face tracker of the training caches (`data.faces`: Face Mesh tracking, re-detection when lost),
the aligned face crop and the landmark-placed forehead/cheek ROI (`faces.face_and_roi`), resampled by timestamp
to the model's clip rate exactly as the cache resamples training video (`data.cache.TimeGrid`). Ring buffers hold
the last pulse window of face crops, ROI grids and ROI colour means. Each stream runs at its own rate:

- expression: the spatial + temporal streams on the latest face window, every `expression_every` frames;
- pulse, HRV and stress: every `update_every_s` seconds of video, the whole network on the last `roi_frames`
  samples (its face window centred in the pulse window, as in training), and, unless `hr_method="model"`, a classic
  rPPG method (`signals.rppg`) on the ROI colour trace of the last `hr_window_s`.

Nothing is written anywhere: frames live in the ring buffers only. Memory is bounded by the longest window.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.signal

from stress_lightning.data import faces as fp
from stress_lightning.data.cache import TimeGrid
from stress_lightning.inference.loading import LoadedModel
from stress_lightning.inference.runtime import Backend, Runner, make_runner
from stress_lightning.inference.sources import FrameSource
from stress_lightning.signals import rppg
from stress_lightning.signals.ecg import clean_rr_intervals
from stress_lightning.signals.errors import SignalError
from stress_lightning.signals.hrv import frequency_domain, time_domain
from stress_lightning.signals.ppg import pulse_intervals_ms, pulse_snr_db

HR_METHODS: tuple[str, ...] = ("model", *rppg.METHODS)
# POS on the forehead and cheeks: the more accurate of the two on real video in our measurements and in the
# literature (README, "Heart rate in the stream"); the learned stream of the default (synthetic-trained) model is not.
DEFAULT_HR_METHOD = "pos"
CLASSIC_WINDOW_S = 10.0
MIN_FACE_FRACTION = 0.9  # a window is scored only when a face was tracked this share of its time (as in training)
LF_HF_MIN_WINDOW_S = 60.0  # LF power (0.04-0.15 Hz) needs several of its slowest cycles
# Quality: the pulse SNR (dB, de Haan & Jeanne 2013) mapped linearly from SNR_FLOOR (0) to SNR_GOOD (1), times the
# face fraction, times a motion term that falls to 0 at MOTION_LIMIT face widths per second of head movement.
SNR_FLOOR_DB = -3.0
SNR_GOOD_DB = 6.0
MOTION_LIMIT = 0.5
HRV_UPSAMPLE = 10  # 25 fps -> 250 Hz: pulse peak times to 4 ms instead of 40 ms
MAX_FLAGGED_FRACTION = 0.2
# Below this pulse SNR camera RMSSD is mostly peak jitter (see pulse_hrv); the stream then withholds HRV.
HRV_MIN_SNR_DB = 6.0
MAX_CAMERA_FPS = 120  # sizes the per-frame histories (expression, head motion) of one window


@dataclass
class StreamSettings:
    """How the stream runs; `None` fields follow the model spec.

    Args:
        hr_method: "model" (the learned rPPG stream) or a classic method of `signals.rppg` ("pos", "chrom", ...).
        hr_window_s: span of each heart-rate estimate (default 10 s for classic methods, the model's pulse window
            for "model").
        update_every_s: how often heart rate, HRV and stress are re-estimated (seconds of video).
        hrv_window_s: span of the pulse peaks used for classic HRV (RMSSD; LF/HF from 60 s on).
        expression_every: run the expression streams every N frames (1: every frame).
        detect_every: face re-detection interval while the tracker has lost the face (default: the model's).
        max_faces: faces Face Mesh tracks at once; the largest is used and a crowd is reported.
        record_timings: keep per-frame stage timings in `StreamEngine.timings` (benchmarks).
    """

    hr_method: str = DEFAULT_HR_METHOD
    hr_window_s: float | None = None
    update_every_s: float = 1.0
    hrv_window_s: float = 60.0
    expression_every: int = 1
    detect_every: int | None = None
    max_faces: int = 2
    record_timings: bool = False

    def __post_init__(self) -> None:
        if self.hr_method not in HR_METHODS:
            raise ValueError(f"unknown hr_method {self.hr_method!r}; known: {', '.join(HR_METHODS)}")
        if self.hr_window_s is not None and self.hr_window_s < rppg.MIN_RPPG_DURATION_S:
            raise ValueError(f"hr_window_s must be >= {rppg.MIN_RPPG_DURATION_S:g} s, got {self.hr_window_s}")
        if not self.update_every_s > 0:
            raise ValueError(f"update_every_s must be positive, got {self.update_every_s}")
        if self.expression_every < 1 or self.max_faces < 1:
            raise ValueError("expression_every and max_faces must be >= 1")


@dataclass
class _Buffers:
    """Ring buffers at the model's clip rate (one entry per resampled sample)."""

    faces: deque
    roi: deque
    rgb: deque
    valid: deque
    n: int = 0  # samples ever emitted


class _StreamGrid(TimeGrid):
    def __init__(self, fps: float, buffers: _Buffers) -> None:
        super().__init__(fps)
        self.buffers = buffers

    def _emit(self, face: np.ndarray, roi: np.ndarray, ok: bool) -> None:
        b = self.buffers
        b.faces.append(face)
        b.roi.append(roi)
        b.rgb.append(roi.reshape(3, -1).mean(axis=1) if ok else np.full(3, np.nan))
        b.valid.append(bool(ok))
        b.n += 1


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


def _fill_gaps(rgb: np.ndarray) -> np.ndarray:
    """Linear interpolation over samples without a face (at most 1 - MIN_FACE_FRACTION of a window)."""
    good = np.isfinite(rgb).all(axis=1)
    if good.all():
        return rgb
    idx = np.arange(len(rgb))
    return np.stack([np.interp(idx, idx[good], rgb[good, c]) for c in range(3)], axis=1)


def pulse_hrv(pulse: np.ndarray, fs: float) -> tuple[float, float | None]:
    """RMSSD (and LF/HF from LF_HF_MIN_WINDOW_S of pulse on) from a camera pulse; SignalError when its beats are
    not reliable enough to say.

    Two things make camera-rate beats unfit for HRV as they come: peak times quantised to one frame (40 ms at
    25 fps, as large as a resting RMSSD) and a missed or doubled beat now and then, each of which adds an interval
    error of a whole beat. So the pulse is upsampled (polyphase FIR, `HRV_UPSAMPLE` x) before peak detection, the
    intervals are cleaned like ECG RR intervals (`signals.ecg.clean_rr_intervals`, Malik's 20 % rule), and the
    window is withheld when more than `MAX_FLAGGED_FRACTION` of them needed correcting. Even so, noise moves
    every peak: on the synthetic sessions (pulse SNR 0-5 dB, real ECG as reference) RMSSD came out at about twice
    the ECG's (MAE 46 ms over 15 windows, median reference 36 ms), hence the SNR gate `HRV_MIN_SNR_DB`.
    """
    hr = rppg.heart_rate_bpm(pulse, fs)
    snr = pulse_snr_db(pulse, fs, hr)
    if snr < HRV_MIN_SNR_DB:
        raise SignalError(f"pulse SNR {snr:.1f} dB is below the {HRV_MIN_SNR_DB:g} dB HRV needs")
    up = scipy.signal.resample_poly(pulse, HRV_UPSAMPLE, 1)
    fs_up = fs * HRV_UPSAMPLE
    summary = rppg.pulse_to_hr_hrv(up, fs_up)
    if "peaks" not in summary or "rmssd_ms" not in summary:
        raise SignalError(summary.get("hrv_error", "no pulse peaks"))
    clean = clean_rr_intervals(pulse_intervals_ms(summary["peaks"], fs_up))
    if clean.flagged_fraction > MAX_FLAGGED_FRACTION:
        raise SignalError(
            f"{100 * clean.flagged_fraction:.0f} % of {clean.rr_ms.size} pulse intervals are implausible "
            f"(more than {100 * MAX_FLAGGED_FRACTION:.0f} %)"
        )
    rmssd = float(time_domain(clean.nn_ms)["rmssd_ms"])
    lf_hf = None
    if len(pulse) / fs >= LF_HF_MIN_WINDOW_S:
        lf_hf = float(frequency_domain(clean.nn_ms)["lf_hf_ratio"])
    return rmssd, lf_hf


@dataclass
class WindowEstimate:
    """One pulse update: what the stream knows about the last window."""

    t_end_s: float
    hr_window_s: float
    hr_bpm: float | None = None
    rmssd_ms: float | None = None
    lf_hf_ratio: float | None = None
    stress_probs: np.ndarray | None = None
    snr_db: float | None = None
    face_fraction: float = 0.0
    motion: float | None = None
    quality: float | None = None
    expression_probs: np.ndarray | None = None  # mean of the per-frame expression over the window
    faces_in_view: int = 0  # the most faces seen at once in the window (the largest is the one tracked)
    notes: list[str] = field(default_factory=list)


class StreamEngine:
    """Frames in, records out. `process(t_s, rgb)` returns the record of one frame; `run(source)` iterates a
    `FrameSource`. Window estimates (one per pulse update) are kept in `windows` when `keep_windows` is set.

    A record (JSON-ready dict): `t_s`, `frame`, `face` (tracked in this frame), `faces_in_view`, `expression` (label
    or null), `expression_probs`, `hr_bpm` (null until a window allows it, and again when the face is lost),
    `hr_window_s` (span of the estimate, ending at `hr_t_s`, the last update, at most `update_every_s` before
    `t_s`), `hr_method`, `rmssd_ms`, `lf_hf_ratio`, `stress`, `stress_probs`, `quality` in [0, 1], `snr_db`,
    `face_fraction`, and `events` (face lost/found, several faces, a frame size change) when something happened.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        settings: StreamSettings | None = None,
        backend: Backend = "auto",
        threads: int | None = None,
        keep_windows: bool = False,
        runner: Runner | None = None,
    ) -> None:
        self.loaded = loaded
        self.spec = spec = loaded.spec
        self.settings = s = settings or StreamSettings()
        self.runner = runner or make_runner(loaded, backend, threads)
        if s.hr_method == "model":
            # The learned heart rate is the network's estimate over its pulse window; no other span can be claimed.
            if s.hr_window_s is not None and not math.isclose(s.hr_window_s, spec.window_s):
                raise ValueError(
                    f"hr_window_s={s.hr_window_s:g}: the learned heart rate (hr_method 'model') covers the model's "
                    f"pulse window, {spec.window_s:g} s; a window applies to the classic methods only"
                )
            self.hr_window_s = spec.window_s
        else:
            self.hr_window_s = s.hr_window_s or CLASSIC_WINDOW_S
        offsets = np.asarray(spec.face_offsets())
        self._face_last = int(offsets[-1])
        self._face_span = int(offsets[-1] - offsets[0] + 1)
        self._face_index = offsets - offsets[0]  # positions inside a face span
        classic_samples = round(max(self.hr_window_s, s.hrv_window_s) * spec.fps)
        self._pulse_samples = max(spec.roi_frames, self._face_span)
        self.buffers = _Buffers(
            faces=deque(maxlen=self._pulse_samples),
            roi=deque(maxlen=spec.roi_frames),
            rgb=deque(maxlen=max(classic_samples, spec.roi_frames)),
            valid=deque(maxlen=max(classic_samples, self._pulse_samples)),
        )
        self.grid = _StreamGrid(spec.fps, self.buffers)
        self.tracker = fp.make_tracker(
            spec.detector,
            detect_every=s.detect_every or spec.detect_every,
            **({"max_faces": s.max_faces} if spec.detector == "mediapipe" else {}),
        )
        self.keep_windows = keep_windows
        self.windows: list[WindowEstimate] = []
        self.timings: dict[str, list[float]] = {k: [] for k in ("face", "expression", "pulse", "hr", "total")}
        self.frames_seen = 0
        self.frames_with_face = 0
        self.max_faces_seen = 0
        self.frames_with_several_faces = 0
        self.last_observation: fp.FaceObservation | None = None
        self._frame_shape: tuple[int, ...] | None = None
        self._expression: np.ndarray | None = None
        self._expression_history: deque = deque(maxlen=round(self.hr_window_s * MAX_CAMERA_FPS) + 1)
        self._estimate: WindowEstimate | None = None
        self._next_update_s = 0.0
        self._had_face = False
        self._faces_in_view = 0
        self._motion: deque = deque(maxlen=round(self.hr_window_s * MAX_CAMERA_FPS) + 2)
        self._crowd: deque = deque(maxlen=round(self.hr_window_s * MAX_CAMERA_FPS) + 1)  # (t_s, faces) when > 1

    def close(self) -> None:
        self.tracker.close()

    # -- per frame ---------------------------------------------------------------------------------------------
    def process(self, t_s: float, rgb: np.ndarray) -> dict[str, Any]:
        """One frame (uint8 RGB [H, W, 3]) at `t_s` seconds from the start -> its record."""
        start = time.perf_counter()
        events: list[str] = []
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"frame {self.frames_seen} at {t_s:.3f} s: expected uint8 RGB [H, W, 3], got {rgb.shape}")
        if self._frame_shape is not None and rgb.shape != self._frame_shape:
            events.append(
                f"frame size changed from {self._frame_shape[1]}x{self._frame_shape[0]} to "
                f"{rgb.shape[1]}x{rgb.shape[0]}: face tracking and the pulse windows restart"
            )
            self._restart()
        self._frame_shape = rgb.shape

        spec = self.spec
        obs = self.tracker(rgb, timestamp_s=t_s)
        ok = obs is not None
        if ok:
            face, roi = fp.face_and_roi(rgb, obs, spec.face_size, spec.roi_size, spec.face_margin)
            width = float(obs.box[2] - obs.box[0])
            self._motion.append((t_s, (obs.box[0] + obs.box[2]) / 2, (obs.box[1] + obs.box[3]) / 2, width))
        else:
            face = np.zeros((spec.face_size, spec.face_size, 3), np.uint8)
            roi = np.zeros((3, spec.roi_size, spec.roi_size), np.float32)
        t_face = time.perf_counter()
        self.grid.push(t_s, face, roi, ok)

        faces_in_view = self.tracker.faces_in_view if ok else 0
        if ok != self._had_face:
            events.append("face found" if ok else "face lost: expression, heart rate and stress are withheld")
        if faces_in_view > 1 and faces_in_view != self._faces_in_view:
            events.append(f"{faces_in_view} faces in view: tracking the largest")
        self._had_face, self._faces_in_view = ok, faces_in_view
        self.max_faces_seen = max(self.max_faces_seen, faces_in_view)
        if faces_in_view > 1:
            self.frames_with_several_faces += 1
            self._crowd.append((t_s, faces_in_view))

        t_expr = t_face
        if self.frames_seen % self.settings.expression_every == 0 or not ok:
            self._expression = self._run_expression() if ok else None
            t_expr = time.perf_counter()
        if self._expression is not None:
            self._expression_history.append((t_s, self._expression))

        pulse_s = hr_s = 0.0
        now_s = self.buffers.n / spec.fps
        if now_s >= self._next_update_s and self.buffers.n:
            self._next_update_s = now_s + self.settings.update_every_s
            self._estimate, pulse_s, hr_s = self._update(t_s)
            est = self._estimate
            if self.keep_windows and (est.hr_bpm is not None or est.stress_probs is not None):
                self.windows.append(self._estimate)
        if not ok and self._estimate is not None and self._estimate.hr_bpm is not None:
            self._estimate = None  # the face is gone: stop reporting the last pulse as current

        self.frames_seen += 1
        self.frames_with_face += int(ok)
        self.last_observation = obs
        end = time.perf_counter()
        if self.settings.record_timings:
            self.timings["face"].append(t_face - start)
            self.timings["expression"].append(t_expr - t_face)
            self.timings["pulse"].append(pulse_s)
            self.timings["hr"].append(hr_s)
            self.timings["total"].append(end - start)
        return self._record(t_s, ok, faces_in_view, events)

    def run(self, source: FrameSource) -> Iterator[dict[str, Any]]:
        """Records for every frame of `source`; `timings["decode"]` holds the time spent waiting for frames."""
        self.timings.setdefault("decode", [])
        frames = iter(source)
        while True:
            t0 = time.perf_counter()
            try:
                t_s, rgb = next(frames)
            except StopIteration:
                return
            if self.settings.record_timings:
                self.timings["decode"].append(time.perf_counter() - t0)
            yield self.process(t_s, rgb)

    # -- streams -----------------------------------------------------------------------------------------------
    def _restart(self) -> None:
        self.tracker.reset()
        for buffer in (self.buffers.faces, self.buffers.roi, self.buffers.rgb, self.buffers.valid):
            buffer.clear()
        self._expression_history.clear()
        self._motion.clear()
        self._crowd.clear()
        self._estimate = None
        # The resampling grid keeps its clock (sample k at k / fps); only its memory of the last frame goes.
        self.grid.prev = None

    def _face_window(self, end: int) -> np.ndarray | None:
        """The face window whose last sample is `end` samples back from the newest (0: newest), or None."""
        faces, valid = self.buffers.faces, self.buffers.valid
        if len(faces) < self._face_span + end:
            return None
        first = len(faces) - end - self._face_span
        picks = [first + int(i) for i in self._face_index]
        valid_offset = len(valid) - len(faces)
        if not all(valid[valid_offset + i] for i in picks):
            return None
        stack = np.stack([faces[i] for i in picks]).astype(np.float32) / 255.0
        return np.ascontiguousarray(stack.transpose(0, 3, 1, 2)[None])

    def _run_expression(self) -> np.ndarray | None:
        frames = self._face_window(0)
        return None if frames is None else self.runner.expression(frames)[0]

    def _valid_fraction(self, samples: int, partial: bool = False) -> float:
        """Share of the last `samples` samples with a face; 0 while fewer exist, unless `partial` (then over
        those there are)."""
        valid = self.buffers.valid
        if len(valid) < samples and not partial:
            return 0.0
        samples = min(samples, len(valid))
        return float(np.mean([valid[i] for i in range(len(valid) - samples, len(valid))])) if samples else 0.0

    def _motion_per_s(self, t_end: float) -> float | None:
        track = [m for m in self._motion if m[0] >= t_end - self.hr_window_s]
        if len(track) < 2:
            return None
        arr = np.asarray(track)
        dt = np.diff(arr[:, 0])
        keep = dt > 0
        if not keep.any():
            return None
        speed = np.hypot(np.diff(arr[:, 1]), np.diff(arr[:, 2]))[keep] / dt[keep] / np.maximum(arr[1:, 3][keep], 1.0)
        return float(np.median(speed))

    def _update(self, t_s: float) -> tuple[WindowEstimate, float, float]:
        spec, s = self.spec, self.settings
        estimate = WindowEstimate(t_end_s=t_s, hr_window_s=self.hr_window_s)
        hr_samples = round(self.hr_window_s * spec.fps)
        estimate.face_fraction = self._valid_fraction(hr_samples, partial=True)
        full_window = len(self.buffers.valid) >= hr_samples
        estimate.motion = self._motion_per_s(t_s)
        recent = [p for (t, p) in self._expression_history if t >= t_s - self.hr_window_s]
        if recent:
            estimate.expression_probs = np.mean(recent, axis=0)
        crowd = [n for (t, n) in self._crowd if t >= t_s - self.hr_window_s]
        estimate.faces_in_view = max(crowd, default=1 if estimate.face_fraction > 0 else 0)

        t0 = time.perf_counter()
        full = None
        roi_fraction = self._valid_fraction(spec.roi_frames)
        if roi_fraction >= MIN_FACE_FRACTION and len(self.buffers.roi) == spec.roi_frames:
            # The face window centred in the pulse window, as the training clips have it (data.clips: centre at
            # start + roi_frames // 2); counted in samples back from the newest.
            frames = self._face_window(spec.roi_frames - 1 - spec.roi_frames // 2 - self._face_last)
            if frames is not None:
                roi = np.stack(self.buffers.roi).astype(np.float32)[None]
                full = self.runner.full(frames, np.ascontiguousarray(roi))
                estimate.stress_probs = full["stress_probs"][0]
        t1 = time.perf_counter()

        if s.hr_method == "model":
            if full is not None:
                estimate.hr_bpm = float(full["hr_bpm"].reshape(-1)[0])
                estimate.rmssd_ms = float(full["rmssd_ms"].reshape(-1)[0])
                estimate.lf_hf_ratio = float(full["lf_hf_ratio"].reshape(-1)[0])
                pulse = full["pulse"].reshape(-1)
                estimate.snr_db = pulse_snr_db(pulse, spec.fps, estimate.hr_bpm)
                estimate.face_fraction = roi_fraction
        elif full_window and estimate.face_fraction >= MIN_FACE_FRACTION:
            self._classic(estimate, hr_samples)
        t2 = time.perf_counter()

        if estimate.hr_bpm is not None and estimate.snr_db is not None:
            snr_score = np.clip((estimate.snr_db - SNR_FLOOR_DB) / (SNR_GOOD_DB - SNR_FLOOR_DB), 0.0, 1.0)
            motion_score = 1.0 if estimate.motion is None else np.clip(1 - estimate.motion / MOTION_LIMIT, 0.0, 1.0)
            estimate.quality = float(estimate.face_fraction * snr_score * motion_score)
        return estimate, t1 - t0, t2 - t1

    def _classic(self, estimate: WindowEstimate, hr_samples: int) -> None:
        spec, s = self.spec, self.settings
        method = rppg.METHODS[s.hr_method]
        trace = np.asarray(self.buffers.rgb, dtype=np.float64)
        try:
            pulse = method(_fill_gaps(trace[-hr_samples:]), spec.fps)
            estimate.hr_bpm = rppg.heart_rate_bpm(pulse, spec.fps)
            estimate.snr_db = pulse_snr_db(pulse, spec.fps, estimate.hr_bpm)
        except SignalError as err:
            estimate.notes.append(f"heart rate: {err}")
            return
        hrv_samples = min(len(trace), round(s.hrv_window_s * spec.fps))
        if hrv_samples < hr_samples or self._valid_fraction(hrv_samples) < MIN_FACE_FRACTION:
            return
        try:
            hrv_pulse = pulse if hrv_samples == hr_samples else method(_fill_gaps(trace[-hrv_samples:]), spec.fps)
            estimate.rmssd_ms, estimate.lf_hf_ratio = pulse_hrv(hrv_pulse, spec.fps)
        except SignalError as err:
            estimate.notes.append(f"HRV withheld: {err}")

    # -- output ------------------------------------------------------------------------------------------------
    def _record(self, t_s: float, face: bool, faces_in_view: int, events: list[str]) -> dict[str, Any]:
        spec = self.spec
        record: dict[str, Any] = {
            "t_s": round(float(t_s), 4),
            "frame": self.frames_seen - 1,
            "face": face,
            "faces_in_view": faces_in_view,
            "expression": None,
            "expression_probs": None,
            "hr_bpm": None,
            "hr_window_s": None,
            "hr_t_s": None,
            "hr_method": self.settings.hr_method,
            "rmssd_ms": None,
            "lf_hf_ratio": None,
            "stress": None,
            "stress_probs": None,
            "quality": None,
            "snr_db": None,
            "face_fraction": None,
        }
        if self._expression is not None and face:
            probs = self._expression
            record["expression"] = spec.expression_names[int(np.argmax(probs))]
            record["expression_probs"] = {n: _round(p, 4) for n, p in zip(spec.expression_names, probs, strict=True)}
        est = self._estimate
        if est is not None and face:
            if est.hr_bpm is not None:
                record.update(
                    hr_bpm=_round(est.hr_bpm, 2),
                    hr_window_s=_round(est.hr_window_s, 2),
                    hr_t_s=_round(est.t_end_s, 4),
                    rmssd_ms=_round(est.rmssd_ms, 2),
                    lf_hf_ratio=_round(est.lf_hf_ratio, 3),
                    quality=_round(est.quality, 3),
                    snr_db=_round(est.snr_db, 2),
                    face_fraction=_round(est.face_fraction, 3),
                )
            if est.stress_probs is not None:
                record["stress"] = spec.stress_names[int(np.argmax(est.stress_probs))]
                record["stress_probs"] = {
                    n: _round(p, 4) for n, p in zip(spec.stress_names, est.stress_probs, strict=True)
                }
        if events:
            record["events"] = events
        return record
