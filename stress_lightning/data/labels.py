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
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from stress_lightning.data.errors import CorpusError
from stress_lightning.data.items import CardiacSignal
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
    _hrv_cache: dict = field(default_factory=dict, repr=False)

    def hr_bpm(self, t0_s: float, t1_s: float) -> float | None:
        """Mean heart rate over [t0, t1]; None when the truth does not cover the window."""
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
    """Beat times or an HR series from a loaded signal; a signal the detectors cannot read raises CorpusError."""
    if signal is None:
        return None
    path = signal.source or "cardiac signal"
    if len(signal.values) < 2:
        raise CorpusError(path, "has fewer than 2 samples")
    if not np.isfinite(np.asarray(signal.values, dtype=np.float64)).all():
        bad = int((~np.isfinite(np.asarray(signal.values, dtype=np.float64))).sum())
        raise CorpusError(path, f"has {bad} non-finite values")
    if signal.kind == "hr":
        return CardiacTruth(
            "hr",
            hr_times_s=signal.times(),
            hr_values_bpm=np.asarray(signal.values, np.float64),
            hrv_window_s=hrv_window_s,
        )
    try:
        values, fs, start = _uniform(signal)
        if signal.kind == "ecg":
            peaks = detect_r_peaks(values, fs)
            return CardiacTruth("ecg", beat_times_s=start + peaks / fs, hrv_window_s=hrv_window_s)
        peaks = detect_pulse_peaks(values, fs)
    except SignalError as exc:
        raise CorpusError(path, f"{signal.kind.upper()} beat detection failed: {exc}") from exc
    return CardiacTruth(
        "ppg",
        beat_times_s=start + peaks / fs,
        pulse=values,
        pulse_fs_hz=fs,
        pulse_start_s=start,
        hrv_window_s=hrv_window_s,
    )
