"""PPG / pulse signals: band-pass, systolic peak detection, pulse intervals, heart rate and signal quality.

Peaks come from ``scipy.signal.find_peaks`` on the zero-phase band-passed pulse, with a prominence relative to
the local pulse amplitude (drops noise bumps) and a refractory period tied to the local pulse period (drops the
dicrotic wave; see :func:`local_pulse_period_s`). A fixed refractory period cannot do the second job: on a
resting finger PPG (heartpy's ``data.csv``, 59 bpm) the dicrotic peak comes 0.36 s after the systolic one with
~40 % of the beat's prominence, which a 0.27 s minimum interval and a 0.3 prominence threshold both let through
(102 bpm counted). heartpy's PPG detector (van Gent et al. 2019) was the alternative; it is ~10x slower and
needs a tuned moving average per recording, while this one is a few vectorised scipy calls.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage
import scipy.signal

from stress_lightning.signals.errors import SignalError
from stress_lightning.signals.quality import check_band, check_fs, check_signal, zero_phase_filter
from stress_lightning.signals.spectrum import (
    HR_BAND_HZ,
    band_snr_db,
    heart_rate_spectral_bpm,
    pulse_spectrum,
    spectral_peak_hz,
)

MIN_PPG_DURATION_S = 3.0
MIN_PULSE_INTERVAL_S = 0.27  # 222 bpm
MIN_PULSE_FS_HZ = 2.0 / MIN_PULSE_INTERVAL_S  # two samples in the shortest pulse interval: 7.4 Hz
PULSE_FILTER_BAND_HZ = (0.5, 5.0)  # keeps the systolic upstroke shape, drops baseline and high-frequency noise
PEAK_PROMINENCE = 0.3  # of the local peak-to-peak pulse amplitude
# Refractory period after a systolic peak, as a fraction of the local pulse period: the dicrotic wave peaks at
# ~0.3-0.5 of the period (0.35 in heartpy's data.csv at 59 bpm, 0.5 in data3.csv at 97 bpm). The cost: a premature
# beat within 0.55 periods of the previous one is not counted (its interval merges with the next).
REFRACTORY_FRACTION = 0.55
LOCAL_PERIOD_WINDOW_S = 8.0  # several beats at 42 bpm, short enough to follow heart-rate changes
LOCAL_PERIOD_STEP_S = 1.0
UPSLOPE_SMOOTH_S = 0.1  # about the duration of a systolic upstroke
OCTAVE_RATIO = 0.7  # a shorter lag is taken as the period if its autocorrelation is within this share of the best
SPECTRAL_SUPPORT = 0.25  # a period whose frequency holds less than this share of the band's peak power is halved
SPECTRAL_SUPPORT_HALF_WIDTH_HZ = 0.1
# REFRACTORY_FRACTION, OCTAVE_RATIO and SPECTRAL_SUPPORT were chosen on heartpy's data*.csv, CinC 2015 a103l/v102s
# and POS pulses of noisy synthetic RGB traces (octave ratio 0.5-0.8 tried: 0.6 or below lets data3.csv's
# half-way dicrotic wave through, 0.8 starts to lose beats; spectral support 0.35 already halves the period of a
# pulse whose dicrotic wave is half as high as the systolic and exactly half-way, 0.15 rescues fewer noisy ones).
MIN_SNR_FOR_PEAKS_DB = -3.0  # below this pulse-band SNR, peaks (and HRV) are refused


def bandpass_pulse(ppg: np.ndarray, fs: float, band_hz: tuple[float, float] = PULSE_FILTER_BAND_HZ) -> np.ndarray:
    """Zero-phase 2nd-order Butterworth band-pass of a pulse signal."""
    fs = check_fs(fs)
    x = check_signal(ppg, fs, min_duration_s=1.0, name="ppg")
    lo, hi = check_band(band_hz, fs)
    sos = scipy.signal.butter(2, [lo, hi], btype="band", fs=fs, output="sos")
    return zero_phase_filter(sos, x, name="ppg")


def _check_pulse_fs(fs: float) -> float:
    fs = check_fs(fs)
    if fs < MIN_PULSE_FS_HZ:
        raise SignalError(
            f"pulse sampled at {fs:g} Hz is too slow for beat detection (need >= {MIN_PULSE_FS_HZ:.1f} Hz)"
        )
    return fs


def _local_amplitude(b: np.ndarray, fs: float) -> np.ndarray:
    """Peak-to-peak amplitude of the band-passed pulse over +-1.5 s around every sample, at least 1e-12 of the
    whole record's (a dead stretch has ~0 amplitude; dividing by it would blow its residue up to overflow)."""
    size = 2 * max(1, int(1.5 * fs)) + 1
    local = scipy.ndimage.maximum_filter1d(b, size) - scipy.ndimage.minimum_filter1d(b, size)
    return np.maximum(local, 1e-12 * np.ptp(b))


def local_pulse_period_s(b: np.ndarray, fs: float) -> np.ndarray:
    """Pulse period (s) at every sample of a band-passed pulse ``b`` (see :func:`bandpass_pulse`).

    The period is the lag, between ``MIN_PULSE_INTERVAL_S`` and ``1 / HR_BAND_HZ[0]``, of the autocorrelation
    maximum of the pulse's upslope energy (the squared rising slope, normalised by the local amplitude and
    smoothed over ``UPSLOPE_SMOOTH_S``; in the spirit of the slope sum function of Zong et al. 2003, Computers
    in Cardiology 30:259-262), in ``LOCAL_PERIOD_WINDOW_S`` windows every ``LOCAL_PERIOD_STEP_S``, linearly
    interpolated between window centres. Of the local maxima within ``OCTAVE_RATIO`` of the best, the shortest
    lag wins, so a rhythm whose every other beat looks alike is not read at half its rate; and a lag whose
    frequency carries less than ``SPECTRAL_SUPPORT`` of the band's peak power (noise read at two periods) is
    replaced by the autocorrelation maximum near half of it.

    Why not the spectral peak alone: a finger PPG with a sharp upstroke and a strong dicrotic wave often has more
    power at two or three times the heart rate than at the rate (8 s windows of heartpy's ``data.csv`` peak at
    170 bpm for a 59 bpm pulse; most of ``data3.csv`` peaks near 200 bpm for 97 bpm). Why the upslope: the
    dicrotic wave rises far less steeply than the systolic upstroke, so it barely correlates with it, while
    beat-to-beat differences in the diastolic part (v102s) do not matter. The amplitude normalisation stops a
    sensor drop-out from dominating a window.
    """
    fs = _check_pulse_fs(fs)
    b = check_signal(b, fs, min_duration_s=MIN_PPG_DURATION_S, name="band-passed pulse")
    amplitude = np.maximum(_local_amplitude(b, fs), np.finfo(float).tiny)
    slope = np.maximum(np.gradient(b), 0.0) / amplitude
    upslope = scipy.ndimage.uniform_filter1d(slope**2, max(1, int(round(UPSLOPE_SMOOTH_S * fs))))
    nperseg = min(upslope.size, int(round(LOCAL_PERIOD_WINDOW_S * fs)))
    step = min(max(1, int(round(LOCAL_PERIOD_STEP_S * fs))), nperseg - 1)
    windows = {"fs": fs, "nperseg": nperseg, "noverlap": nperseg - step}
    # Wiener-Khinchin: the inverse FFT of each window's power spectrum, zero-padded to 2N, is its (biased)
    # linear autocorrelation; scipy's spectrogram gives those spectra for all windows in one call.
    _, times_s, power = scipy.signal.spectrogram(
        upslope, window="boxcar", nfft=2 * nperseg, detrend="constant", **windows
    )
    acf = np.fft.irfft(power, n=2 * nperseg, axis=0)
    lo = max(1, int(np.floor(MIN_PULSE_INTERVAL_S * fs)))
    hi = min(nperseg - 2, int(np.ceil(fs / HR_BAND_HZ[0])))
    inner = acf[lo : hi + 1]
    is_max = (inner > acf[lo - 1 : hi]) & (inner >= acf[lo + 1 : hi + 2])
    best = inner.max(axis=0)
    chosen = is_max & (inner >= OCTAVE_RATIO * best)
    lag = lo + np.where(chosen.any(axis=0), np.argmax(chosen, axis=0), np.argmax(inner, axis=0))
    # Spectral check against octave errors the other way: in a noisy pulse (rPPG near 0 dB SNR) the
    # autocorrelation at two periods can beat the one at one period, and two periods as the refractory drop
    # every other beat. Such a lag has almost no power at its frequency (0.06-0.1 of the band's peak in noisy
    # rPPG windows read at two periods; >= 0.69 in heartpy's data.csv and > 0.38 in 95 % of data3.csv windows,
    # dicrotic waves and all): below SPECTRAL_SUPPORT, half the lag is taken.
    nfft = max(nperseg, int(2 ** np.ceil(np.log2(fs / 0.05))))  # a 0.05 Hz grid resolves the +-0.1 Hz check
    freqs, _, spec = scipy.signal.spectrogram(b / amplitude, window="hann", nfft=nfft, detrend="linear", **windows)
    band = (freqs >= HR_BAND_HZ[0]) & (freqs <= HR_BAND_HZ[1])
    half_width = int(np.ceil(SPECTRAL_SUPPORT_HALF_WIDTH_HZ / freqs[1]))
    near_max = scipy.ndimage.maximum_filter1d(spec, 2 * half_width + 1, axis=0, mode="nearest")
    columns = np.arange(lag.size)
    with np.errstate(invalid="ignore", divide="ignore"):
        # A window without pulse-band power gives NaN support, which compares False: its lag is kept.
        support = near_max[np.round(fs / lag / freqs[1]).astype(int), columns] / spec[band].max(axis=0)
    for k in np.flatnonzero((support < SPECTRAL_SUPPORT) & (lag // 2 >= lo)):
        half_lo, half_hi = max(lo, int(0.4 * lag[k])), int(np.ceil(0.6 * lag[k]))
        lag[k] = half_lo + int(np.argmax(acf[half_lo : half_hi + 1, k]))
    # No positive correlation at any plausible period (noise): no rate-based refractory period there.
    period_s = np.where(best > 0, lag, lo) / fs
    return np.interp(np.arange(b.size) / fs, times_s, period_s)


def _select_with_refractory(peaks: np.ndarray, priority: np.ndarray, refractory: np.ndarray) -> np.ndarray:
    """Keep the highest-priority peaks such that no kept peak lies within another's refractory period (samples).

    ``scipy.signal.find_peaks(distance=...)`` does this for one distance only; here it varies with the local
    heart rate, so the same greedy rule (highest first) is written out.
    """
    keep = np.ones(peaks.size, dtype=bool)
    for i in np.argsort(-priority, kind="stable"):
        if not keep[i]:
            continue
        lo = np.searchsorted(peaks, peaks[i] - refractory[i], side="left")
        hi = np.searchsorted(peaks, peaks[i] + refractory[i], side="right")
        keep[lo:i] = False
        keep[i + 1 : hi] = False
    return peaks[keep]


def detect_pulse_peaks(ppg: np.ndarray, fs: float) -> np.ndarray:
    """Systolic peak sample indices of a PPG or rPPG pulse (peaks = maxima: blood volume up is positive).

    The band-passed pulse's maxima whose prominence exceeds ``PEAK_PROMINENCE`` times the local peak-to-peak
    amplitude (over +-1.5 s), thinned so that no two lie closer than ``REFRACTORY_FRACTION`` of the local pulse
    period (:func:`local_pulse_period_s`) nor than ``MIN_PULSE_INTERVAL_S``; of two peaks too close, the one
    with the larger upstroke (the systolic, not the dicrotic) stays.
    """
    fs = _check_pulse_fs(fs)
    x = check_signal(ppg, fs, min_duration_s=MIN_PPG_DURATION_S, name="ppg")
    b = bandpass_pulse(x, fs)
    amplitude = _local_amplitude(b, fs)
    min_distance = max(1, int(MIN_PULSE_INTERVAL_S * fs))
    peaks, _ = scipy.signal.find_peaks(b, distance=min_distance, prominence=PEAK_PROMINENCE * amplitude)
    if peaks.size > 1:
        refractory = np.maximum(REFRACTORY_FRACTION * fs * local_pulse_period_s(b, fs)[peaks], min_distance)
        # Priority = upstroke (rise from the trough since the previous candidate), not height: the systolic
        # upstroke is the largest rise of a cardiac cycle, whatever the baseline under the two peaks.
        troughs = np.minimum.reduceat(b, np.concatenate(([0], peaks[:-1])))
        peaks = _select_with_refractory(peaks, b[peaks] - troughs, refractory)
    return peaks.astype(np.intp)


def pulse_intervals_ms(peaks: np.ndarray, fs: float) -> np.ndarray:
    """Beat-to-beat pulse intervals (ms) between consecutive systolic peaks."""
    fs = check_fs(fs)
    p = np.asarray(peaks, dtype=np.float64)
    if p.ndim != 1 or p.size < 2:
        raise SignalError(f"need at least 2 pulse peaks, got {p.size}")
    if not np.all(np.isfinite(p)) or np.abs(p).max() > 2**53:
        raise SignalError("pulse peaks must be finite sample indices (below 2**53)")
    if np.any(np.diff(p) <= 0):
        raise SignalError("pulse peaks must be strictly increasing sample indices")
    return np.diff(p) * 1000.0 / fs


def heart_rate_from_peaks_bpm(peaks: np.ndarray, fs: float) -> float:
    """Mean heart rate (bpm) from pulse peaks: 60000 / mean pulse interval."""
    return float(60000.0 / pulse_intervals_ms(peaks, fs).mean())


def heart_rate_spectrum_bpm(ppg: np.ndarray, fs: float, band_hz: tuple[float, float] = HR_BAND_HZ) -> float:
    """Heart rate (bpm) at the pulse spectrum's peak (Welch / periodogram) inside ``band_hz``."""
    return heart_rate_spectral_bpm(ppg, fs, band_hz=band_hz, name="ppg")


def pulse_snr_db(ppg: np.ndarray, fs: float, hr_bpm: float | None = None) -> float:
    """Pulse-band SNR (dB) around ``hr_bpm`` and its harmonic; around the spectral peak when not given.

    A blind quality index: a clean finger PPG scores > 5 dB, noise alone scores < -5 dB.
    """
    freqs, power = pulse_spectrum(ppg, fs, name="ppg")
    f0 = spectral_peak_hz(freqs, power) if hr_bpm is None else float(hr_bpm) / 60.0
    return band_snr_db(freqs, power, f0)
