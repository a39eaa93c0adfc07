"""Cardiac ground truth per clip: heart rate from beats (ECG R-peaks or PPG pulse peaks) or a heart-rate series,
and HRV over a window around the clip.

Rules, by the kind of ground truth an item has:
- **ECG**: R-peaks (`signals.ecg.detect_r_peaks`) give beat times; heart rate per clip is the mean rate over the
  beats inside the clip; HRV (RMSSD, LF/HF) over the RR intervals inside `hrv_window_s` centred on the clip
  (clamped to the recording), after artefact cleaning (`signals.ecg.clean_rr_intervals`).
- **PPG / BVP**: systolic peaks (`signals.ppg.detect_pulse_peaks`) give beat times and heart rate as for the ECG.
  HRV only where the pulse quality allows it: the window's pulse-band SNR must reach `PPG_HRV_MIN_SNR_DB` and at
  most `PPG_HRV_MAX_FLAGGED` of its pulse intervals may be flagged as artefacts; otherwise HRV is masked (pulse
  peak times jitter more than R-peaks, which inflates RMSSD on a poor signal).
- **Heart-rate series** (UBFC's HR line, an oximeter's HR): heart rate per clip is the mean of the samples inside
  the clip, if they span at least half of it; no HRV.
A quantity that cannot be computed for a clip (too few beats, signal not covering it) is masked, never guessed.

Gaps in an ECG or PPG: NaN/inf runs up to `MAX_BRIDGED_GAP_S` are bridged by linear interpolation; longer runs,
and constant stretches of `FLAT_GAP_S` or more (a lead or a finger off the sensor), are gaps: no beat is taken
from them, and a clip or HRV window within `GAP_MARGIN_S` of one gets no heart rate or HRV. The file's gaps are
named in a `GroundTruthWarning` (and by `Corpus.check`, hence `data summary`). A signal that is flat or NaN
throughout, or whose sampling rate is implausible for its kind (`items.CARDIAC_FS_RANGE_HZ`), is a CorpusError.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from stress_lightning.data.errors import CorpusError
from stress_lightning.data.items import CardiacSignal, cardiac_rate_problem
from stress_lightning.signals import SignalError
from stress_lightning.signals.ecg import clean_rr_intervals, detect_r_peaks
from stress_lightning.signals.hrv import frequency_domain, time_domain
from stress_lightning.signals.ppg import detect_pulse_peaks, pulse_snr_db
from stress_lightning.signals.quality import resample_irregular

PPG_HRV_MIN_SNR_DB = 3.0
PPG_HRV_MAX_FLAGGED = 0.05
# Irregularly sampled ECG/PPG is put on a uniform grid at this rate before beat detection.
UNIFORM_FS_HZ = 250.0
MIN_BEATS_FOR_HRV = 8
# One beat at 40 bpm, the slowest rate the HR band admits.
MAX_EDGE_GAP_S = 1.5
# NaN runs up to this long are bridged linearly: shorter than a QRS complex, so a bridge cannot hide a whole beat,
# and as long as the one or two samples a wireless sensor drops.
MAX_BRIDGED_GAP_S = 0.05
# A constant stretch this long is a sensor off (a lead or a finger off it), not a signal (ECG and PPG only: a
# heart-rate series may well hold one value for seconds).
FLAT_GAP_S = 1.0
# Clips and HRV windows this close to a gap are masked too: the detectors' filters ring at its edges.
GAP_MARGIN_S = 0.5
# Beats are looked for in the stretches between gaps that last this long (the detectors' minimum duration).
MIN_SEGMENT_S = 3.0


class GroundTruthWarning(UserWarning):
    """Cardiac ground truth usable only in part: its gaps are masked."""


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First index and length of each run of True."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], mask.astype(np.int8), [0]))))
    return edges[0::2], edges[1::2] - edges[0::2]


def sampling_rate(signal: CardiacSignal) -> float:
    """The signal's rate: its `fs_hz`, or one over the median step of its sample times."""
    if signal.times_s is None:
        return float(signal.fs_hz)
    with np.errstate(over="ignore", invalid="ignore"):  # times near float64's limit: an inf/NaN step, refused
        steps = np.diff(np.asarray(signal.times_s, np.float64))
        step = float(np.median(steps)) if len(steps) else 0.0
    return 1.0 / step if step > 0 else float("inf")


@dataclass(frozen=True)
class SignalGaps:
    """Where a cardiac signal has no usable samples: `runs` as sample index ranges [i0, i1), `spans_s` as
    (start_s, end_s) on the video clock between the usable samples around each, and a line per kind of gap."""

    runs: list[tuple[int, int]]
    spans_s: np.ndarray
    notes: list[str]


def signal_gaps(signal: CardiacSignal) -> SignalGaps:
    """The gaps of a cardiac signal: NaN/inf runs that span more than `MAX_BRIDGED_GAP_S` (shorter ones are
    bridged, and only counted in the note) and, for ECG and PPG, constant stretches of `FLAT_GAP_S` or more."""
    values = np.asarray(signal.values, np.float64)
    t = signal.times()
    n = len(values)
    runs: list[tuple[int, int]] = []
    notes: list[str] = []
    # Vectorised over the runs: a day-long record at 250 Hz has millions of them.
    starts, lengths = _runs(~np.isfinite(values))
    if len(starts):
        # A NaN run spans from the usable sample before it to the one after it.
        a, b = t[np.maximum(starts - 1, 0)], t[np.minimum(starts + lengths, n - 1)]
        long = b - a > MAX_BRIDGED_GAP_S
        w = int(np.argmax(b - a))
        notes.append(
            f"has {int(lengths.sum())} missing (NaN) samples in {len(starts)} run(s), the longest {b[w] - a[w]:.2f} s "
            f"at {a[w]:.2f} s ({int((~long).sum())} run(s) up to {MAX_BRIDGED_GAP_S:g} s bridged, "
            f"{int(long.sum())} masked)"
        )
        runs += list(zip(starts[long].tolist(), (starts + lengths)[long].tolist(), strict=True))
    if signal.kind != "hr" and n > 1:
        # Equal neighbours: sample i equals sample i - 1 (NaN never equals, so a NaN run ends a stretch); a stretch
        # is the samples [i0, i1) of one value.
        starts, lengths = _runs(np.concatenate(([False], np.diff(values) == 0)))
        i0, i1 = starts - 1, starts + lengths
        span = t[i1 - 1] - t[i0]
        flat = span >= FLAT_GAP_S
        if flat.any():
            w = int(np.argmax(np.where(flat, span, -np.inf)))
            notes.append(
                f"is flat (constant) for {span[flat].sum():.2f} s in {int(flat.sum())} stretch(es), the longest "
                f"{span[w]:.2f} s at {t[i0[w]]:.2f} s (a sensor off?)"
            )
            runs += list(zip(i0[flat].tolist(), i1[flat].tolist(), strict=True))
    runs.sort()
    spans = [(t[max(i0 - 1, 0)], t[min(i1, n - 1)]) for i0, i1 in runs]
    return SignalGaps(runs, np.asarray(spans, np.float64).reshape(-1, 2), notes)


def unusable_reason(signal: CardiacSignal) -> str | None:
    """Why nothing at all can be labelled from a cardiac signal (an implausible sampling rate, no usable sample, a
    flat line), or None."""
    kind = signal.kind.upper()
    rate = cardiac_rate_problem(signal.kind, sampling_rate(signal))
    if rate is not None:
        return rate if signal.times_s is None else f"{rate}, as its sample times imply: are they in seconds?"
    values = np.asarray(signal.values, np.float64)
    finite = values[np.isfinite(values)]
    if finite.size < 2:
        return f"{kind} has no usable samples ({len(values) - finite.size} of {len(values)} are NaN/inf)"
    if signal.kind != "hr" and np.ptp(finite) == 0:
        return f"{kind} is a flat line (constant {finite[0]:g}): no heart rate can be read from it"
    return None


def ground_truth_problems(signal: CardiacSignal) -> list[str]:
    """What is wrong with a loaded cardiac signal, in words (empty when nothing is): `unusable_reason`, else its
    gaps (`signal_gaps`). For `Corpus.check` and `data summary`; labelling raises or masks."""
    reason = unusable_reason(signal)
    if reason is not None:
        return [reason]
    kind = signal.kind.upper()
    return [
        f"{kind} {note}: clips within {GAP_MARGIN_S:g} s of a masked gap get no heart rate"
        for note in signal_gaps(signal).notes
    ]


@dataclass
class CardiacTruth:
    """Beat times (video clock) or a heart-rate series, and the rules that turn them into clip labels."""

    kind: str
    beat_times_s: np.ndarray | None = None
    hr_times_s: np.ndarray | None = None
    hr_values_bpm: np.ndarray | None = None
    # PPG only: the band-passed pulse and its rate, for the per-window quality rule.
    pulse: np.ndarray | None = None
    pulse_fs_hz: float | None = None
    pulse_start_s: float = 0.0
    hrv_window_s: float = 60.0
    # (start_s, end_s) of the signal's gaps, margins included: windows touching one are masked.
    gaps_s: np.ndarray = field(default_factory=lambda: np.empty((0, 2)))
    _hrv_cache: dict = field(default_factory=dict, repr=False)

    def _touches_gap(self, t0_s: float, t1_s: float) -> bool:
        return bool(((self.gaps_s[:, 0] < t1_s) & (self.gaps_s[:, 1] > t0_s)).any())

    def hr_bpm(self, t0_s: float, t1_s: float) -> float | None:
        """Mean heart rate over [t0, t1]; None when the truth does not cover the window."""
        if self._touches_gap(t0_s, t1_s):
            return None
        if self.beat_times_s is not None:
            inside = self.beat_times_s[(self.beat_times_s >= t0_s) & (self.beat_times_s <= t1_s)]
            # Beats must reach both ends of the window (within one slowest beat): a window the ground truth
            # covers only in part is masked, not labelled from the part it covers.
            if len(inside) < 3 or inside[0] - t0_s > MAX_EDGE_GAP_S or t1_s - inside[-1] > MAX_EDGE_GAP_S:
                return None
            return float(60.0 * (len(inside) - 1) / (inside[-1] - inside[0]))
        t, v = self.hr_times_s, self.hr_values_bpm
        keep = (t >= t0_s) & (t <= t1_s)
        if keep.sum() < 2 or (t[keep][-1] - t[keep][0]) < 0.5 * (t1_s - t0_s):
            return None
        return float(np.mean(v[keep]))

    def hrv(self, centre_s: float) -> tuple[float, float] | None:
        """(RMSSD ms, LF/HF) over `hrv_window_s` centred on `centre_s` (clamped to the recording), or None."""
        if self.beat_times_s is None or len(self.beat_times_s) < MIN_BEATS_FOR_HRV:
            return None
        first, last = float(self.beat_times_s[0]), float(self.beat_times_s[-1])
        half = self.hrv_window_s / 2
        t0, t1 = centre_s - half, centre_s + half
        # Clamp the window inside the recording, keeping its length where the recording allows.
        if t0 < first:
            t0, t1 = first, min(last, first + self.hrv_window_s)
        if t1 > last:
            t0, t1 = max(first, last - self.hrv_window_s), last
        if self._touches_gap(t0, t1):
            return None
        key = (round(t0, 3), round(t1, 3))
        if key not in self._hrv_cache:
            self._hrv_cache[key] = self._hrv_between(t0, t1)
        return self._hrv_cache[key]

    def _hrv_between(self, t0: float, t1: float) -> tuple[float, float] | None:
        beats = self.beat_times_s[(self.beat_times_s >= t0) & (self.beat_times_s <= t1)]
        if len(beats) < MIN_BEATS_FOR_HRV:
            return None
        rr_ms = np.diff(beats) * 1000.0
        try:
            cleaned = clean_rr_intervals(rr_ms)
            if self.kind == "ppg" and not self._ppg_quality_ok(t0, t1, cleaned.flagged_fraction):
                return None
            rmssd = float(time_domain(cleaned.nn_ms)["rmssd_ms"])
            lf_hf = float(frequency_domain(cleaned.nn_ms)["lf_hf_ratio"])
        except SignalError:
            return None
        if not (np.isfinite(rmssd) and np.isfinite(lf_hf)) or lf_hf <= 0:
            return None
        return rmssd, lf_hf

    def _ppg_quality_ok(self, t0: float, t1: float, flagged_fraction: float) -> bool:
        if flagged_fraction > PPG_HRV_MAX_FLAGGED or self.pulse is None:
            return False
        i0 = max(0, int((t0 - self.pulse_start_s) * self.pulse_fs_hz))
        i1 = min(len(self.pulse), int((t1 - self.pulse_start_s) * self.pulse_fs_hz))
        try:
            return pulse_snr_db(self.pulse[i0:i1], self.pulse_fs_hz) >= PPG_HRV_MIN_SNR_DB
        except SignalError:
            return False


def _uniform(signal: CardiacSignal) -> tuple[np.ndarray, float, float]:
    """Samples on a uniform grid: (values, fs_hz, start_s)."""
    values = np.asarray(signal.values, dtype=np.float64)
    if signal.times_s is None:
        return values, float(signal.fs_hz), float(signal.start_s)
    grid, resampled = resample_irregular(np.asarray(signal.times_s, dtype=np.float64), values, UNIFORM_FS_HZ)
    return resampled, UNIFORM_FS_HZ, float(grid[0])


def cardiac_truth(signal: CardiacSignal | None, hrv_window_s: float = 60.0) -> CardiacTruth | None:
    """Beat times or an HR series from a loaded signal; a signal the detectors cannot read raises CorpusError.
    Gaps (NaN runs, flat stretches) are bridged or masked as the module docstring says, with a warning."""
    if signal is None:
        return None
    path = signal.source or "cardiac signal"
    values = np.asarray(signal.values, dtype=np.float64)
    if len(values) < 2:
        raise CorpusError(path, "has fewer than 2 samples")
    reason = unusable_reason(signal)
    if reason is not None:
        raise CorpusError(path, reason)
    finite = np.isfinite(values)
    gaps = signal_gaps(signal)
    if signal.kind == "hr":
        truth = CardiacTruth(
            "hr", hr_times_s=signal.times()[finite], hr_values_bpm=values[finite], hrv_window_s=hrv_window_s
        )
    else:
        truth = _beat_truth(signal, values, gaps, hrv_window_s)
    if gaps.notes:
        warnings.warn(
            f"{path}: {signal.kind.upper()} {'; '.join(gaps.notes)}: clips within {GAP_MARGIN_S:g} s of a masked gap "
            "get no heart rate",
            GroundTruthWarning,
            stacklevel=2,
        )
    return truth


def _beat_truth(signal: CardiacSignal, values: np.ndarray, gaps: SignalGaps, hrv_window_s: float) -> CardiacTruth:
    """Beats of an ECG or PPG, detected in each stretch between its gaps (a detector run across a long gap loses
    the beats before it), with short NaN runs bridged; windows near a gap are masked."""
    path = signal.source or "cardiac signal"
    t = signal.times()
    finite = np.isfinite(values)
    if not finite.all():
        values = values.copy()
        values[~finite] = np.interp(t[~finite], t[finite], values[finite])
    bounds = [0, *(i for run in gaps.runs for i in run), len(values)]
    pieces = [(i0, i1) for i0, i1 in zip(bounds[0::2], bounds[1::2], strict=True) if i1 > i0]
    beats = []
    for i0, i1 in pieces:
        if i1 - i0 < 2 or (gaps.runs and t[i1 - 1] - t[i0] < MIN_SEGMENT_S):
            continue  # too short a stretch between gaps to find beats in: its clips are masked (too few beats)
        piece = CardiacSignal(
            signal.kind,
            values[i0:i1],
            signal.fs_hz,
            float(t[i0]),
            None if signal.times_s is None else t[i0:i1],
            signal.source,
        )
        try:
            uniform, fs, start = _uniform(piece)
            peaks = detect_r_peaks(uniform, fs) if signal.kind == "ecg" else detect_pulse_peaks(uniform, fs)
        except SignalError as exc:
            raise CorpusError(path, f"{signal.kind.upper()} beat detection failed: {exc}") from exc
        beats.append(start + peaks / fs)
    if not beats:
        raise CorpusError(
            path, f"{signal.kind.upper()} has no stretch of {MIN_SEGMENT_S:g} s or more between its gaps: no beats"
        )
    beat_times = np.concatenate(beats)
    masked = gaps.spans_s + np.array([-GAP_MARGIN_S, GAP_MARGIN_S])
    if len(masked):  # no beat is taken from a gap's ringing edges
        near = (beat_times[:, None] > masked[:, 0]) & (beat_times[:, None] < masked[:, 1])
        beat_times = beat_times[~near.any(axis=1)]
    if signal.kind == "ecg":
        return CardiacTruth("ecg", beat_times_s=beat_times, hrv_window_s=hrv_window_s, gaps_s=masked)
    # The PPG quality rule reads the whole (bridged) pulse; windows near its gaps are masked before it is asked.
    uniform, fs, start = _uniform(
        CardiacSignal(signal.kind, values, signal.fs_hz, signal.start_s, signal.times_s, signal.source)
    )
    return CardiacTruth(
        "ppg",
        beat_times_s=beat_times,
        pulse=uniform,
        pulse_fs_hz=fs,
        pulse_start_s=start,
        hrv_window_s=hrv_window_s,
        gaps_s=masked,
    )
