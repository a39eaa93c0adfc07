"""The embedded default corpus: face videos with a faint skin pulse, ECG ground truth, expressions and stress.

`generate_corpus(root, SyntheticConfig(...))` writes the layout of docs/ARCHITECTURE.md (read back by
`stress_lightning.data.corpora.synthetic`). Every subject has one session per stress level (low, normal, high).

Physiology per session (`physiology.py`): RR intervals with LF (Mayer, ~0.1 Hz) and HF (respiratory) bands, an
ECG at `ecg_fs_hz` built from the beat times, and a pulse wave one pulse-transit time after each R peak.
Stress (0 low, 1 normal, 2 high) acts as follows (subject baselines vary, so the levels overlap):

=====================  ===============================  ===========================================
quantity               subject baseline                 stress level low / normal / high
=====================  ===============================  ===========================================
heart rate             U(62, 82) bpm                    -5 / 0 / +12 bpm, + N(0, 2) bpm per session
RMSSD                  40 ms x lognormal(sd 0.2)        x 1.35 / 1.0 / 0.5, x lognormal(sd 0.08)
LF/HF power ratio      x lognormal(sd 0.2)              0.8 / 1.6 / 3.5
respiration            + U(-0.03, 0.03) Hz              0.22 / 0.26 / 0.32 Hz (inside the HF band)
pulse transit time     U(150, 300) ms                   +12 / 0 / -12 ms
expression events      (see EVENT_PROBS, GAP_MEAN_S)    low: 75 % happy, long neutral gaps;
                                                        normal: 45 % surprise + a mix; high: 94 % angry,
                                                        fear, disgust or sad, short gaps
=====================  ===============================  ===========================================

With these settings (seed 0, 30 subjects, 8 s clips every 2 s, val+test subjects held out) a logistic
regression on ground-truth clip features reaches a stress macro-F1 of 0.92 with mean HR, log RMSSD and the
share of time in each expression; 0.82 with HR, RMSSD and only the centre frame's expression; 0.90 with the
expression shares alone; 0.75 with HR and RMSSD alone and 0.68 with HR alone
(`tests/test_synthetic.py::test_stress_is_learnable_from_clip_features`).

Video per session (`render.py`): a parametric face (Fitzpatrick I-VI-like skin reflectance spread evenly over
subjects, gender-dependent shape, brows, eyes, nose, mouth, hair) with expression events (onset, apex, offset;
2-4 s each, neutral gaps), smooth head motion (translation, rotation <= 3 deg, scale), lighting drift (and an
optional step) with a lateral gradient, a motion-dependent specular highlight, and the pulse on skin pixels:
relative amplitude `pulse_amplitude` (peak-to-peak, green; R and B scaled by 0.33/0.77 and 0.53/0.77), which is
below one 8-bit level per pixel. Shot and read noise are added before 8-bit quantisation. Videos are FFV1 in
MKV (lossless RGB, `bgr0`), or H.264 MP4 for robustness studies (`codec="h264"`).

Sidecars per session (generator 1.2): `ppg.csv` (`time_s,ppg`), the blood-volume pulse the renderer puts on the
skin at each frame time (up = more blood = darker skin, as a contact PPG reads it); `landmarks.csv`, the 12 face
landmarks of `data.landmarks` computed from the renderer's geometry for each frame's expression and head pose
(`data.render_landmarks`; config `landmarks`); `body/`, OpenPose BODY_25 per-frame JSON from
`data.body.synthesize_body25`, whose movement depends on the stress level and the expression events (config
`body_keypoints`). Landmarks draw nothing at random and keypoints a random stream of their own: a seed's video and
ECG are the same with them on or off.

Caching: `corpus.json` records the generator version and a hash of the config (plus the pulse-source file's
bytes); a call with the same config returns at once, a different config in a non-empty root is an error. The
corpus is written into a temporary sibling folder and renamed into place when complete. `corpus.json`'s
`fingerprint` is a sha256 over the bytes of every written file (path + content hash, sorted; corpus.json itself
excluded): it identifies the data actually on disk. Video bytes can differ between FFmpeg builds while the
decoded frames stay identical; determinism is defined on ECG CSVs (byte-identical) and decoded frames.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.signal import butter, sosfiltfilt
from tqdm.auto import tqdm

from stress_lightning.data import physiology as phys
from stress_lightning.data import render
from stress_lightning.data.landmarks import write_landmarks_csv
from stress_lightning.data.render_landmarks import session_landmarks
from stress_lightning.data.taxonomy import STRESS_LEVELS
from stress_lightning.signals.quality import resample

GENERATOR_VERSION = "1.2.0"
EXPRESSION_NAMES: tuple[str, ...] = render.EXPRESSION_NAMES
STRESS_NAMES: tuple[str, ...] = STRESS_LEVELS

HR_SHIFT_BPM = (-5.0, 0.0, 12.0)
RMSSD_FACTOR = (1.35, 1.0, 0.5)
LF_HF_RATIO = (0.8, 1.6, 3.5)
RESP_RATE_HZ = (0.22, 0.26, 0.32)
PTT_SHIFT_S = (0.012, 0.0, -0.012)
# Probability of each expression class for an event (neutral is the gap between events).
EVENT_PROBS: dict[str, dict[str, float]] = {
    "low": {"happy": 0.75, "surprise": 0.09, "sad": 0.04, "disgust": 0.04, "fear": 0.04, "angry": 0.04},
    "normal": {"surprise": 0.45, "happy": 0.13, "sad": 0.11, "disgust": 0.1, "fear": 0.1, "angry": 0.11},
    "high": {"angry": 0.3, "fear": 0.25, "disgust": 0.2, "sad": 0.19, "surprise": 0.04, "happy": 0.02},
}
GAP_MEAN_S = {"low": 2.0, "normal": 1.4, "high": 0.8}
EVENT_LABELS = tuple(n for n in EXPRESSION_NAMES if n != "neutral")
# Below this many frames in all, starting worker processes (each imports numpy/scipy/OpenCV/PyAV) costs more
# than it saves.
POOL_MIN_FRAMES = 6000


@dataclass(frozen=True)
class SyntheticConfig:
    """Settings of the synthetic corpus (see the module docstring for the physics behind each)."""

    num_subjects: int = 30  # split subject-disjoint 60/20/20 train/val/test (at least 1 each)
    duration_s: float = 24.0  # per session; one session per stress level
    fps: float = 25.0
    width: int = 128
    height: int = 128
    ecg_fs_hz: float = 250.0
    seed: int = 0
    codec: str = "ffv1"  # "ffv1" (lossless MKV) or "h264" (lossy MP4, robustness studies only)
    pulse_source: str | None = None  # None = cardiac model; else a PPG .csv or a WFDB record path (no extension)
    pulse_source_fs_hz: float = 100.0  # sampling rate of a one-column PPG CSV source
    pulse_amplitude: float = 0.003  # peak-to-peak relative skin reflectance change in green
    noise_scale: float = 1.0  # multiplies shot and read noise
    motion_scale: float = 1.0  # multiplies head translation/rotation/scale amplitudes
    lighting_drift: float = 0.025  # std of the slow relative illumination drift
    lighting_step: bool = False  # one +-8 % illumination step per session at a random time
    h264_crf: int = 23
    body_keypoints: bool = True  # write OpenPose BODY_25 keypoints per frame (body/, `data.body.synthesize_body25`)
    landmarks: bool = True  # write the 12 face landmarks per frame (landmarks.csv, `data.render_landmarks`)
    # Camera realism (render.py), all off by default (the default corpus is unchanged by them): per-subject skin
    # texture, a webcam's auto-exposure loop (and grey-world white balance), quick head turns and nods (bursts per
    # minute), face boxes jittered as a tracker reports them (relative std of the box size). With codec "h264"
    # these bring the classic methods' and the learned streams' errors towards what real webcams show
    # (benchmarks/results/rppg_models.md).
    skin_texture: float = 0.0
    auto_exposure: bool = False
    auto_white_balance: bool = False
    motion_bursts_per_min: float = 0.0
    box_jitter: float = 0.0

    def __post_init__(self) -> None:
        problems = []
        if self.num_subjects < 3:
            problems.append(f"num_subjects must be >= 3 (one per split), got {self.num_subjects}")
        if not self.duration_s >= 4.0:
            problems.append(f"duration_s must be >= 4 (room for an expression event), got {self.duration_s}")
        if not 5.0 <= self.fps <= 120.0:
            problems.append(f"fps must be in [5, 120], got {self.fps}")
        for name in ("width", "height"):
            value = getattr(self, name)
            if value < 48 or value % 2:
                problems.append(f"{name} must be an even number >= 48, got {value}")
        if not self.ecg_fs_hz >= 100.0:
            problems.append(f"ecg_fs_hz must be >= 100, got {self.ecg_fs_hz}")
        if self.codec not in ("ffv1", "h264"):
            problems.append(f"codec must be 'ffv1' or 'h264', got {self.codec!r}")
        if not 0.0 < self.pulse_amplitude <= 0.02:
            problems.append(f"pulse_amplitude must be in (0, 0.02], got {self.pulse_amplitude}")
        for name in (
            "noise_scale",
            "motion_scale",
            "lighting_drift",
            "skin_texture",
            "motion_bursts_per_min",
            "box_jitter",
        ):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.auto_white_balance and not self.auto_exposure:
            problems.append("auto_white_balance needs auto_exposure (the camera loop that applies it)")
        if not self.pulse_source_fs_hz > 0:
            problems.append(f"pulse_source_fs_hz must be > 0, got {self.pulse_source_fs_hz}")
        if problems:
            raise ValueError("SyntheticConfig: " + "; ".join(problems))

    @property
    def n_frames(self) -> int:
        return int(round(self.duration_s * self.fps))


# ---------------------------------------------------------------------------------------------------------------
# Planning: everything random is drawn here from per-subject/per-session seeds, so workers are order-independent.
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Subject:
    index: int
    subject_id: str
    split: str
    identity: render.Identity
    baseline_hr_bpm: float
    baseline_rmssd_ms: float
    lf_hf_factor: float
    resp_offset_hz: float
    ptt_s: float
    ecg_morphology: phys.EcgMorphology


@dataclass(frozen=True)
class ExpressionEvent:
    start_s: float
    apex_start_s: float
    apex_end_s: float
    end_s: float
    label: str
    intensity: float


@dataclass(frozen=True)
class SessionPlan:
    subject: Subject
    stress_level: int
    cardiac: phys.CardiacParams
    events: tuple[ExpressionEvent, ...]
    seed: tuple[int, ...]
    source_offset_s: float = 0.0

    @property
    def session_id(self) -> str:
        return f"{self.subject.subject_id}_{STRESS_NAMES[self.stress_level]}"


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(list(key)))


def _assign_splits(tones: np.ndarray, rng: np.random.Generator) -> list[str]:
    """60/20/20 split (>= 1 each), spread over the skin-tone range: subjects in tone order go to the split
    furthest below its target share (ties at random)."""
    n = len(tones)
    n_val = max(1, int(round(0.2 * n)))
    n_test = max(1, int(round(0.2 * n)))
    targets = {"train": n - n_val - n_test, "val": n_val, "test": n_test}
    counts = dict.fromkeys(targets, 0)
    splits = [""] * n
    for i in np.argsort(tones, kind="stable"):
        open_splits = [s for s in targets if counts[s] < targets[s]]
        deficit = np.array([counts[s] / targets[s] for s in open_splits]) + 1e-6 * rng.random(len(open_splits))
        choice = open_splits[int(np.argmin(deficit))]
        counts[choice] += 1
        splits[i] = choice
    return splits


def plan_subjects(config: SyntheticConfig) -> list[Subject]:
    n = config.num_subjects
    rng = _rng(config.seed, 0)
    # Skin tones spread evenly over Fitzpatrick I-VI, genders balanced, both in random subject order.
    tones = 5.0 * (rng.permutation(n) + rng.random(n)) / n
    genders = np.where(rng.permutation(n) < n / 2, "female", "male")
    splits = _assign_splits(tones, rng)
    subjects = []
    for i in range(n):
        srng = _rng(config.seed, 1, i)
        identity = render.sample_identity(srng, skin_tone=float(tones[i]), gender=str(genders[i]))
        subjects.append(
            Subject(
                index=i,
                subject_id=f"S{i + 1:03d}",
                split=splits[i],
                identity=identity,
                baseline_hr_bpm=float(srng.uniform(62.0, 82.0)),
                baseline_rmssd_ms=float(np.clip(40.0 * np.exp(0.2 * srng.standard_normal()), 25.0, 65.0)),
                lf_hf_factor=float(np.exp(0.2 * srng.standard_normal())),
                resp_offset_hz=float(srng.uniform(-0.03, 0.03)),
                ptt_s=float(srng.uniform(0.15, 0.30)),
                ecg_morphology=phys.EcgMorphology.sample(srng),
            )
        )
    return subjects


def _draw_events(
    stress_name: str, duration_s: float, expressiveness: float, rng: np.random.Generator
) -> list[ExpressionEvent]:
    labels = list(EVENT_PROBS[stress_name])
    probs = np.array([EVENT_PROBS[stress_name][k] for k in labels])
    events: list[ExpressionEvent] = []
    t = float(rng.uniform(0.2, 1.0))
    while True:
        onset, apex, offset = rng.uniform(0.5, 1.0), rng.uniform(1.0, 2.0), rng.uniform(0.5, 1.0)
        label = labels[int(rng.choice(len(labels), p=probs / probs.sum()))]
        intensity = expressiveness * rng.uniform(0.85, 1.0)
        if t + onset + apex + offset > duration_s - 0.1:
            break
        events.append(ExpressionEvent(t, t + onset, t + onset + apex, t + onset + apex + offset, label, intensity))
        t += onset + apex + offset + GAP_MEAN_S[stress_name] * rng.uniform(0.5, 1.5)
    return events


def _cover_classes(per_session: list[list[ExpressionEvent]]) -> None:
    """Relabel events so each subject shows every expression class, when it has enough events.

    A missing class replaces an event of the subject's most frequent class, in the session whose stress level
    favours the missing class most; this keeps all classes in every split even for few subjects.
    """
    n_events = sum(len(s) for s in per_session)
    if n_events < len(EVENT_LABELS):
        return
    for missing in EVENT_LABELS:
        labels = [e.label for s in per_session for e in s]
        if missing in labels:
            continue
        counts = {k: labels.count(k) for k in set(labels)}
        order = np.argsort([-EVENT_PROBS[STRESS_NAMES[i]][missing] for i in range(len(per_session))])
        for si in order:
            candidates = [j for j, e in enumerate(per_session[si]) if counts[e.label] > 1]
            if candidates:
                j = max(candidates, key=lambda j: (counts[per_session[si][j].label], -j))
                old = per_session[si][j]
                per_session[si][j] = ExpressionEvent(
                    old.start_s, old.apex_start_s, old.apex_end_s, old.end_s, missing, old.intensity
                )
                break


def plan_sessions(config: SyntheticConfig, source_duration_s: float | None = None) -> list[SessionPlan]:
    """All sessions of the corpus with their physiology parameters and expression events (no rendering)."""
    plans = []
    for subject in plan_subjects(config):
        per_session = []
        for level, name in enumerate(STRESS_NAMES):
            erng = _rng(config.seed, 2, subject.index, level)
            per_session.append(_draw_events(name, config.duration_s, subject.identity.expressiveness, erng))
        _cover_classes(per_session)
        for level in range(len(STRESS_NAMES)):
            prng = _rng(config.seed, 4, subject.index, level)
            hr = subject.baseline_hr_bpm + HR_SHIFT_BPM[level] + 2.0 * prng.standard_normal()
            rmssd = subject.baseline_rmssd_ms * RMSSD_FACTOR[level] * np.exp(0.08 * prng.standard_normal())
            cardiac = phys.CardiacParams(
                mean_hr_bpm=float(hr),
                rmssd_ms=float(rmssd),
                lf_hf_ratio=float(LF_HF_RATIO[level] * subject.lf_hf_factor),
                resp_rate_hz=float(RESP_RATE_HZ[level] + subject.resp_offset_hz),
                lf_freq_hz=float(prng.uniform(0.08, 0.12)),
                ptt_s=float(subject.ptt_s + PTT_SHIFT_S[level]),
            )
            offset = 0.0
            if source_duration_s is not None:
                # Real recordings: each session reads its own stretch (3 s of pre-roll for the pulse delay).
                latest = source_duration_s - config.duration_s - 1.0
                if latest < 3.0:
                    raise ValueError(
                        f"pulse_source {config.pulse_source}: lasts {source_duration_s:.1f} s, needs at least "
                        f"duration_s + 4 = {config.duration_s + 4.0:.1f} s"
                    )
                offset = float(prng.uniform(3.0, latest))
            plans.append(
                SessionPlan(
                    subject=subject,
                    stress_level=level,
                    cardiac=cardiac,
                    events=tuple(per_session[level]),
                    seed=(config.seed, 5, subject.index, level),
                    source_offset_s=offset,
                )
            )
    return plans


def expression_track(events: tuple[ExpressionEvent, ...], t_s: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Per-time expression label and intensity: smooth (raised-cosine) onset and offset, flat apex."""
    labels = ["neutral"] * len(t_s)
    intensity = np.zeros(len(t_s))
    for e in events:
        inside = np.flatnonzero((t_s >= e.start_s) & (t_s < e.end_s))
        for i in inside:
            t = t_s[i]
            if t < e.apex_start_s:
                x = (t - e.start_s) / (e.apex_start_s - e.start_s)
            elif t <= e.apex_end_s:
                x = 1.0
            else:
                x = (e.end_s - t) / (e.end_s - e.apex_end_s)
            labels[i] = e.label
            intensity[i] = e.intensity * 0.5 * (1 - np.cos(np.pi * x))
    return labels, intensity


# ---------------------------------------------------------------------------------------------------------------
# Session synthesis
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionSignals:
    """Ground-truth signals of one session (times from the first video frame)."""

    r_times_s: np.ndarray
    ecg_mv: np.ndarray
    pulse: np.ndarray  # blood-volume pulse at the frame times, zero mean, peak-to-peak 1
    resp: np.ndarray  # respiration at the frame times, unit std


def session_signals(
    plan: SessionPlan, config: SyntheticConfig, source: phys.PulseSource | None = None
) -> SessionSignals:
    rng = _rng(*plan.seed, 0)
    n_frames = config.n_frames
    t_frames = np.arange(n_frames) / config.fps
    n_ecg = int(np.ceil(n_frames / config.fps * config.ecg_fs_hz)) + 1
    series = phys.simulate_beats(plan.cardiac, config.duration_s, rng)
    ptt = plan.cardiac.ptt_s
    if source is None:
        ecg = phys.synthesize_ecg(series, plan.subject.ecg_morphology, config.ecg_fs_hz, n_ecg, rng)
        r_times = series.r_times_s
        pulse = phys.synthesize_pulse(r_times, ptt, t_frames, series.respiration(t_frames))
    elif source.ppg is not None:
        # Real PPG drives the skin; the ECG's R peaks precede each systolic peak by PTT + the 0.12 s upstroke.
        off = plan.source_offset_s
        peaks = source.ppg_peak_times_s - off
        r_times = peaks[(peaks > -3.0) & (peaks < config.duration_s + 3.0)] - ptt - 0.12
        series = phys.CardiacSeries(r_times, series.resp_t_s, series.resp)
        ecg = phys.synthesize_ecg(series, plan.subject.ecg_morphology, config.ecg_fs_hz, n_ecg, rng)
        t_src = np.arange(len(source.ppg)) / source.ppg_fs_hz - off
        sos = butter(2, [0.5, 8.0], btype="bandpass", fs=source.ppg_fs_hz, output="sos")
        ppg = np.interp(t_frames, t_src, sosfiltfilt(sos, source.ppg))
        pulse = (ppg - ppg.mean()) / np.ptp(ppg)
    else:
        # Real ECG is the ground truth; the pulse follows its R peaks.
        off = plan.source_offset_s
        lo = int(np.floor(off * source.ecg_fs_hz))
        n_src = int(np.ceil((n_ecg / config.ecg_fs_hz + 0.5) * source.ecg_fs_hz))
        ecg = resample(source.ecg_mv[lo : lo + n_src], source.ecg_fs_hz, config.ecg_fs_hz)
        if len(ecg) < n_ecg:
            raise ValueError(f"pulse_source {source.path}: too short for a {config.duration_s} s session")
        ecg = ecg[:n_ecg]
        r_all = source.r_times_s - lo / source.ecg_fs_hz
        r_times = r_all[(r_all > -3.0) & (r_all < config.duration_s + 3.0)]
        pulse = phys.synthesize_pulse(r_times, ptt, t_frames, series.respiration(t_frames))
    return SessionSignals(r_times, ecg, pulse, series.respiration(t_frames))


def _smooth_noise(n: int, fps: float, smooth_s: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-std smooth random trajectory (white noise through a Gaussian filter of width smooth_s)."""
    x = gaussian_filter1d(rng.standard_normal(n + int(6 * smooth_s * fps)), sigma=smooth_s * fps, mode="wrap")
    x = x[:n]
    return (x - x.mean()) / max(x.std(), 1e-9)


@dataclass(frozen=True)
class SessionScene:
    """Per-frame pose, illumination and expression of one session."""

    poses: list[render.Pose]
    light_rgb: np.ndarray  # [n, 3]
    gradient_slope: np.ndarray  # [n], relative change across the frame width
    specular: np.ndarray  # [n]
    labels: list[str]
    intensity: np.ndarray


def session_scene(plan: SessionPlan, config: SyntheticConfig, resp: np.ndarray) -> SessionScene:
    rng = _rng(*plan.seed, 1)
    n, fps, ms = config.n_frames, config.fps, config.motion_scale
    w = config.width
    tx = ms * (0.015 * w * _smooth_noise(n, fps, 0.8, rng) + 0.004 * w * _smooth_noise(n, fps, 0.25, rng))
    ty = ms * (0.012 * w * _smooth_noise(n, fps, 0.8, rng) + 0.002 * w * resp)  # breathing moves the head
    rot = np.clip(ms * 1.2 * _smooth_noise(n, fps, 1.0, rng), -3.0, 3.0)
    scale = 1.0 + np.clip(ms * 0.015 * _smooth_noise(n, fps, 1.5, rng), -0.04, 0.04)
    if config.motion_bursts_per_min > 0:
        bursts = render.head_motion_bursts(n, fps, w, _rng(*plan.seed, 5), config.motion_bursts_per_min, ms)
        tx, ty, rot, scale = tx + bursts[:, 0], ty + bursts[:, 1], rot + bursts[:, 2], scale + bursts[:, 3]
    poses = [render.Pose(float(a), float(b), float(c), float(d)) for a, b, c, d in zip(tx, ty, rot, scale, strict=True)]
    base = rng.uniform(0.72, 0.85)
    warmth = rng.uniform(-0.05, 0.05)
    drift = 1.0 + config.lighting_drift * _smooth_noise(n, fps, 4.0, rng)
    if config.lighting_step:
        t_step = rng.uniform(0.25, 0.75) * n
        sign = rng.choice([-1.0, 1.0])
        drift = drift * (1.0 + sign * 0.08 / (1.0 + np.exp(-(np.arange(n) - t_step) / (0.08 * fps))))
    tint = np.array([1.0 + warmth, 1.0, 1.0 - warmth])
    light = base * drift[:, None] * (tint + 0.01 * _smooth_noise(n, fps, 5.0, rng)[:, None] * [1, 0, -1])
    slope = rng.uniform(-0.12, 0.12) + 0.03 * _smooth_noise(n, fps, 3.0, rng)
    spec = plan.subject.identity.specular * np.clip(1.0 + 0.25 * rot + 0.04 * tx / max(w / 128, 1e-6), 0.2, 2.5)
    labels, intensity = expression_track(plan.events, np.arange(n) / fps)
    return SessionScene(poses, light, slope, spec, labels, intensity)


def pulse_rel_rgb(amplitude: float) -> np.ndarray:
    """Relative reflectance change per channel for a unit blood-volume pulse (green = amplitude)."""
    return -amplitude * render.PULSE_RGB_WEIGHTS / render.PULSE_RGB_WEIGHTS[1]


def render_frames(
    plan: SessionPlan,
    config: SyntheticConfig,
    signals: SessionSignals,
    noise: bool = True,
    pulse_scale: float = 1.0,
    as_float: bool = False,
    renderer: render.FaceRenderer | None = None,
    scene: SessionScene | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (RGB frame, face box) per frame: uint8, or float 8-bit units before quantisation when as_float.

    noise, pulse_scale and as_float exist to inspect the clean signal; `scene` is `session_scene`'s (computed here
    when not given; a caller that also needs it passes it in)."""
    if scene is None:
        scene = session_scene(plan, config, signals.resp)
    if renderer is None:
        renderer = render.FaceRenderer(plan.subject.identity, config.width, config.height, config.skin_texture)
    elif renderer.identity != plan.subject.identity:
        raise ValueError(f"{plan.session_id}: renderer was built for another identity")
    background = render.render_background(plan.subject.identity, config.width, config.height)
    x = (np.arange(config.width, dtype=np.float32) - config.width / 2) / (config.width / 2)
    rel = pulse_rel_rgb(config.pulse_amplitude * pulse_scale).astype(np.float32)
    nrng = _rng(*plan.seed, 2)
    # Noise sigma ~0.6 levels at mid-grey (shot variance 0.0025 x value, read sigma 0.35): an 8-bit camera's
    # ~1.5-2 levels after the area-averaging that shrinks a 640x480 face video to this size; the pulse
    # (<= 0.77 levels peak-to-peak) then needs hundreds of skin pixels averaged to stand out.
    shot, read = 0.0025 * config.noise_scale**2, 0.35 * config.noise_scale
    camera = None
    if config.auto_exposure:
        camera = render.AutoExposure(config.fps, white_balance_s=3.0 if config.auto_white_balance else None)
    for i in range(config.n_frames):
        layers = renderer.layers(scene.labels[i], scene.intensity[i])
        face, skin = render.warp_layers(layers, renderer, scene.poses[i])
        gradient = (1.0 + scene.gradient_slope[i] * x)[None, :, None]
        value = render.compose_frame(
            face,
            skin,
            background,
            scene.light_rgb[i].astype(np.float32),
            gradient,
            rel * np.float32(signals.pulse[i]),
            float(scene.specular[i]),
            nrng.standard_normal(face.shape[:2] + (3,), dtype=np.float32) if noise else None,
            shot,
            read,
            exposure=None if camera is None else camera.gain,
        )
        if camera is not None:
            camera.update(value)
        yield (value if as_float else render.quantize(value)), scene.poses[i].box(renderer.box)


# ---------------------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------------------


def write_video(path: Path, frames: Iterator[np.ndarray], config: SyntheticConfig) -> None:
    import av

    # bitexact: no random segment UID or encoder-version string, so equal frames give equal bytes.
    with av.open(str(path), mode="w", options={"fflags": "+bitexact"}) as container:
        rate = Fraction(config.fps).limit_denominator(1001)
        if config.codec == "ffv1":
            # bgr0: packed 8-bit RGB (this FFV1 build has no 8-bit gbrp), so RGB -> file -> RGB is bit-exact.
            stream = container.add_stream("ffv1", rate=rate, options={"level": "3", "context": "1", "g": "1"})
            stream.pix_fmt = "bgr0"
        else:
            stream = container.add_stream("libx264", rate=rate, options={"crf": str(config.h264_crf)})
            stream.pix_fmt = "yuv420p"
        stream.width, stream.height = config.width, config.height
        stream.codec_context.thread_count = 1
        for img in frames:
            if config.codec == "ffv1":
                # Fill the packed bgr0 plane directly: exact, and cheaper than a swscale conversion per frame.
                frame = av.VideoFrame(config.width, config.height, "bgr0")
                plane = frame.planes[0]
                buf = np.zeros((config.height, plane.line_size), np.uint8)
                buf[:, : 4 * config.width].reshape(config.height, config.width, 4)[..., :3] = img[..., ::-1]
                plane.update(buf)
            else:
                frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def write_body_keypoints(folder: Path, plan: SessionPlan, config: SyntheticConfig) -> None:
    """The session's body keypoints as OpenPose per-frame JSON (`video_<frame:012d>_keypoints.json`), moving with
    the session's stress level and expression events (`data.body.synthesize_body25`; its own random stream, so the
    video and ECG of a seed do not depend on whether keypoints are written)."""
    from stress_lightning.data.body import synthesize_body25, write_openpose

    events = plan.events

    def expression_at(t_s: float) -> str | None:
        # The face's own timeline: the label at the apex, None (the body ramps) during onset and offset, neutral
        # between events.
        for e in events:
            if e.start_s <= t_s < e.end_s:
                return e.label if e.apex_start_s <= t_s <= e.apex_end_s else None
        return "neutral"

    n = config.n_frames
    keypoints = np.asarray(
        synthesize_body25(
            n / config.fps,
            config.fps,
            plan.stress_level,
            expression_at,
            _rng(*plan.seed, 3),
            config.width,
            config.height,
        ),
        dtype=np.float32,
    )
    if keypoints.shape != (n, 25, 3):
        raise ValueError(f"synthesize_body25 returned {keypoints.shape}, expected {(n, 25, 3)}")
    write_openpose(folder, keypoints, prefix="video")


def _fmt_rows(rows: list[tuple], header: str) -> str:
    return header + "\n" + "".join(",".join(str(v) for v in row) + "\n" for row in rows)


def _render_subject(
    plans: list[SessionPlan], config: SyntheticConfig, out_dir: str, source: phys.PulseSource | None
) -> list[dict]:
    """Writes one subject's sessions; they share the subject's render cache (faces per expression level)."""
    import cv2

    cv2.setNumThreads(1)  # parallelism is across subjects
    renderer = render.FaceRenderer(plans[0].subject.identity, config.width, config.height, config.skin_texture)
    return [_render_session(plan, config, out_dir, source, renderer) for plan in plans]


def _render_session(
    plan: SessionPlan,
    config: SyntheticConfig,
    out_dir: str,
    source: phys.PulseSource | None,
    renderer: render.FaceRenderer,
) -> dict:
    """Writes one session's files under out_dir/<subject>/<session>/ and returns its manifest row + truth."""
    session_dir = Path(out_dir) / plan.subject.subject_id / plan.session_id
    session_dir.mkdir(parents=True, exist_ok=True)
    sig = session_signals(plan, config, source)
    t_ecg = np.arange(len(sig.ecg_mv)) / config.ecg_fs_hz
    (session_dir / "ecg.csv").write_text(
        "time_s,ecg_mv\n" + "".join(f"{t:.4f},{v:.4f}\n" for t, v in zip(t_ecg, sig.ecg_mv, strict=True))
    )
    events = [
        (f"{e.start_s:.3f}", f"{e.apex_start_s:.3f}", f"{e.apex_end_s:.3f}", f"{e.end_s:.3f}", e.label)
        for e in plan.events
    ]
    (session_dir / "expressions.csv").write_text(_fmt_rows(events, "start_s,apex_start_s,apex_end_s,end_s,label"))
    # The skin pulse the renderer applies (blood volume at the frame times; up = more blood = darker skin).
    t_frames = np.arange(config.n_frames) / config.fps
    (session_dir / "ppg.csv").write_text(
        "time_s,ppg\n" + "".join(f"{t:.4f},{v:.6f}\n" for t, v in zip(t_frames, sig.pulse, strict=True))
    )
    scene = session_scene(plan, config, sig.resp)
    if config.landmarks:
        points = session_landmarks(renderer, scene.labels, scene.intensity, scene.poses)
        write_landmarks_csv(session_dir / "landmarks.csv", points)
    if config.body_keypoints:
        write_body_keypoints(session_dir / "body", plan, config)
    boxes: list[np.ndarray] = []

    def frames() -> Iterator[np.ndarray]:
        for img, box in render_frames(plan, config, sig, renderer=renderer, scene=scene):
            boxes.append(box)
            yield img

    video_name = "video.mkv" if config.codec == "ffv1" else "video.mp4"
    write_video(session_dir / video_name, frames(), config)
    if config.box_jitter > 0:
        boxes = list(render.jitter_face_boxes(np.array(boxes), _rng(*plan.seed, 6), config.box_jitter))
    box_rows = [(i, *(f"{v:.2f}" for v in b)) for i, b in enumerate(boxes)]
    (session_dir / "face_boxes.csv").write_text(_fmt_rows(box_rows, "frame,x0,y0,x1,y1"))
    duration = config.n_frames / config.fps
    rr = np.diff(sig.r_times_s[(sig.r_times_s >= 0) & (sig.r_times_s <= duration)])
    rel = f"{plan.session_id}/"
    return {
        "subject_id": plan.subject.subject_id,
        "row": {
            "session_id": plan.session_id,
            "video": rel + video_name,
            "ecg": rel + "ecg.csv",
            "expressions": rel + "expressions.csv",
            "face_boxes": rel + "face_boxes.csv",
            "body": rel + "body" if config.body_keypoints else "",
            "landmarks": rel + "landmarks.csv" if config.landmarks else "",
            "ppg": rel + "ppg.csv",
            "stress_level": plan.stress_level,
            "stress_name": STRESS_NAMES[plan.stress_level],
            "fps": config.fps,
            "ecg_fs_hz": config.ecg_fs_hz,
            "duration_s": round(duration, 6),
            "n_frames": config.n_frames,
        },
        "truth": {
            "mean_hr_bpm": round(float(60.0 / rr.mean()), 4),
            "rmssd_ms": round(float(np.sqrt(np.mean(np.diff(rr * 1000.0) ** 2))), 4),
            "target_hr_bpm": round(plan.cardiac.mean_hr_bpm, 4),
            "target_rmssd_ms": round(plan.cardiac.rmssd_ms, 4),
            "target_lf_hf_ratio": round(plan.cardiac.lf_hf_ratio, 4),
            "resp_rate_hz": round(plan.cardiac.resp_rate_hz, 4),
            "pulse_transit_ms": round(plan.cardiac.ptt_s * 1000.0, 2),
            "n_beats": len(rr) + 1,
            "source_offset_s": round(plan.source_offset_s, 4),
        },
    }


LABEL_COLUMNS = (
    "session_id",
    "video",
    "ecg",
    "expressions",
    "face_boxes",
    "stress_level",
    "stress_name",
    "fps",
    "ecg_fs_hz",
    "duration_s",
    "n_frames",
    "body",
    "landmarks",
    "ppg",
)


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def corpus_fingerprint(root: Path) -> str:
    """sha256 over (relative path, sha256 of content) of every file under root except corpus.json."""
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != "corpus.json"):
        h.update(f"{path.relative_to(root).as_posix()}\0{_file_sha256(path)}\n".encode())
    return h.hexdigest()


# Options added after a generator version with their "off" values: a corpus written before they existed is the
# corpus they give when off, so they enter the hash (and the comparison with corpus.json) only when on.
OPTIONAL_DEFAULTS = {
    "skin_texture": 0.0,
    "auto_exposure": False,
    "auto_white_balance": False,
    "motion_bursts_per_min": 0.0,
    "box_jitter": 0.0,
}


def _config_record(config: SyntheticConfig) -> dict:
    return {k: v for k, v in asdict(config).items() if not (k in OPTIONAL_DEFAULTS and v == OPTIONAL_DEFAULTS[k])}


def config_hash(config: SyntheticConfig) -> str:
    payload = {"config": _config_record(config), "version": GENERATOR_VERSION}
    if config.pulse_source is not None:
        src = Path(config.pulse_source)
        files = [src] if src.suffix.lower() == ".csv" else sorted(src.parent.glob(src.name + ".*"))
        payload["pulse_source_sha256"] = {p.name: _file_sha256(p) for p in files if p.is_file()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _check_existing(root: Path, config: SyntheticConfig, digest: str) -> bool:
    """True when root already holds this corpus; raises when it holds something else."""
    manifest = root / "corpus.json"
    if manifest.is_file():
        try:
            meta = json.loads(manifest.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{manifest}: not valid JSON ({exc}); remove {root} to regenerate") from exc
        if meta.get("config_hash") == digest and meta.get("generator_version") == GENERATOR_VERSION:
            return True
        stored = {**OPTIONAL_DEFAULTS, **meta.get("config", {})}
        differing = [k for k, v in asdict(config).items() if stored.get(k, object()) != v]
        if meta.get("generator_version") != GENERATOR_VERSION:
            differing.append(f"generator_version {meta.get('generator_version')} != {GENERATOR_VERSION}")
        raise ValueError(
            f"{root}: holds a synthetic corpus with a different config (differing: "
            f"{', '.join(differing) or 'pulse source file contents'}); choose another root or delete it to "
            f"regenerate"
        )
    if root.exists() and any(root.iterdir()):
        raise ValueError(f"{root}: exists, is not empty and has no corpus.json; refusing to overwrite it")
    return False


def _remove_stale_temporaries(root: Path) -> None:
    """Temporary folders left by killed runs (their process no longer exists)."""
    pattern = re.compile(rf"^\.{re.escape(root.name)}\.tmp-(\d+)-[0-9a-f]+$")
    if not root.parent.is_dir():
        return
    for p in root.parent.iterdir():
        m = pattern.match(p.name)
        if not m:
            continue
        try:
            os.kill(int(m.group(1)), 0)
        except ProcessLookupError:
            shutil.rmtree(p)
        except PermissionError:
            continue  # another user's live process


def generate_corpus(
    root: str | Path, config: SyntheticConfig = SyntheticConfig(), progress: bool = True, workers: int = 2
) -> Path:
    """Write the synthetic corpus to root (or return at once if root already holds it). Returns root."""
    root = Path(root)
    digest = config_hash(config)
    if _check_existing(root, config, digest):
        return root
    started = time.perf_counter()
    source = None
    if config.pulse_source is not None:
        source = phys.load_pulse_source(config.pulse_source, config.pulse_source_fs_hz)
    plans = plan_sessions(config, None if source is None else source.duration_s)
    root.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(root)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        results = _run_sessions(plans, config, tmp, source, progress, workers)
        _write_manifests(tmp, config, digest, plans, results, source, time.perf_counter() - started)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # best effort; the original error propagates
        raise
    try:
        if root.exists():
            root.rmdir()  # empty (checked above); a root filled meanwhile raises here rather than being replaced
        os.replace(tmp, root)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if _racing_writer_finished(root, config, digest):
            return root
        raise
    return root


def _racing_writer_finished(root: Path, config: SyntheticConfig, digest: str) -> bool:
    """Another process may have renamed the same corpus into place first; then its copy is the result."""
    try:
        return (root / "corpus.json").is_file() and _check_existing(root, config, digest)
    except ValueError:
        return False


def _run_sessions(
    plans: list[SessionPlan],
    config: SyntheticConfig,
    tmp: Path,
    source: phys.PulseSource | None,
    progress: bool,
    workers: int,
) -> list[dict]:
    by_subject: dict[str, list[SessionPlan]] = {}
    for plan in plans:
        by_subject.setdefault(plan.subject.subject_id, []).append(plan)
    groups = list(by_subject.values())
    bar = tqdm(total=len(plans), desc="synthetic corpus", unit="session", disable=not progress)
    results: list[dict] = []
    try:
        if workers <= 1 or len(groups) < 2 * workers or len(plans) * config.n_frames < POOL_MIN_FRAMES:
            for group in groups:
                results.extend(_render_subject(group, config, str(tmp), source))
                bar.update(len(group))
        else:
            # spawn: the caller may hold torch/OpenMP threads, which fork would copy in a broken state.
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                futures = [pool.submit(_render_subject, g, config, str(tmp), source) for g in groups]
                for fut, group in zip(futures, groups, strict=True):
                    results.extend(fut.result())
                    bar.update(len(group))
    finally:
        bar.close()
    return results


def _write_manifests(
    tmp: Path,
    config: SyntheticConfig,
    digest: str,
    plans: list[SessionPlan],
    results: list[dict],
    source: phys.PulseSource | None,
    elapsed_s: float,
) -> None:
    import av

    subjects = {p.subject.subject_id: p.subject for p in plans}
    rows: dict[str, list[dict]] = {sid: [] for sid in subjects}
    for r in results:
        rows[r["subject_id"]].append(r["row"])
    subject_rows = []
    for sid, s in subjects.items():
        (tmp / sid / "labels.csv").write_text(
            _fmt_rows([tuple(row[c] for c in LABEL_COLUMNS) for row in rows[sid]], ",".join(LABEL_COLUMNS))
        )
        fr = render.FaceRenderer(s.identity, config.width, config.height)
        subject_rows.append(
            (
                sid,
                s.split,
                f"{s.identity.skin_tone:.3f}",
                s.identity.gender,
                f"{fr.box[2] - fr.box[0]:.2f}",
                f"{fr.box[3] - fr.box[1]:.2f}",
                f"{s.baseline_hr_bpm:.2f}",
                f"{s.baseline_rmssd_ms:.2f}",
                f"{s.ptt_s * 1000:.1f}",
                f"{s.identity.expressiveness:.3f}",
            )
        )
    header = (
        "subject_id,split,skin_tone,gender,face_width,face_height,baseline_hr_bpm,baseline_rmssd_ms,"
        "pulse_transit_ms,expressiveness"
    )
    (tmp / "subjects.csv").write_text(_fmt_rows(subject_rows, header))
    meta = {
        "generator": "stress_lightning.data.synthetic",
        "generator_version": GENERATOR_VERSION,
        "config": asdict(config),
        "config_hash": digest,
        "seed": config.seed,
        "expression_names": list(EXPRESSION_NAMES),
        "stress_names": list(STRESS_NAMES),
        "fingerprint": corpus_fingerprint(tmp),
        "fingerprint_method": "sha256 over sorted (relative path, sha256 of bytes) of all files except corpus.json",
        "pulse_source": None if source is None else str(source.path),
        "software": {"av": av.__version__, "libavcodec": _libavcodec_version(), "numpy": np.__version__},
        "generation_time_s": round(elapsed_s, 2),
        "sessions": {r["row"]["session_id"]: r["truth"] for r in results},
    }
    (tmp / "corpus.json").write_text(json.dumps(meta, indent=2) + "\n")


def _libavcodec_version() -> str:
    import av

    return ".".join(str(x) for x in av.library_versions.get("libavcodec", ()))
