"""Pulse-band spectra and the spectral heart rate shared by PPG, rPPG and the evaluation metrics."""

from __future__ import annotations

import numpy as np
import scipy.signal

from stress_lightning.signals.errors import SignalError
from stress_lightning.signals.quality import check_fs, check_signal

# Physiological heart-rate band: 42-210 bpm covers rest to hard exercise.
HR_BAND_HZ = (0.7, 3.5)
MIN_SPECTRAL_WINDOW_S = 4.0  # about 3 cycles at the lowest rate in HR_BAND_HZ
WELCH_SEGMENT_S = 20.0  # longer signals are averaged over 20 s Hann segments (50 % overlap)
FREQ_RESOLUTION_HZ = 1.0 / 600.0  # zero-padding to a 0.1 bpm grid before the parabolic peak fit


def pulse_spectrum(pulse: np.ndarray, fs: float, name: str = "pulse") -> tuple[np.ndarray, np.ndarray]:
    """One-sided power spectrum ``(freqs_hz, power)`` of a pulse signal.

    A single Hann-windowed periodogram for signals up to ``WELCH_SEGMENT_S``, Welch averaging of 20 s segments
    beyond; zero-padded to a ``FREQ_RESOLUTION_HZ`` grid. Linear detrend per segment.
    """
    fs = check_fs(fs)
    x = check_signal(pulse, fs, min_duration_s=MIN_SPECTRAL_WINDOW_S, name=name)
    if fs <= 2 * HR_BAND_HZ[1]:
        raise SignalError(f"{name} sampled at {fs:g} Hz cannot resolve the heart-rate band {HR_BAND_HZ} Hz")
    nperseg = min(x.size, int(round(WELCH_SEGMENT_S * fs)))
    nfft = max(nperseg, int(2 ** np.ceil(np.log2(fs / FREQ_RESOLUTION_HZ))))
    freqs, power = scipy.signal.welch(x, fs=fs, window="hann", nperseg=nperseg, nfft=nfft, detrend="linear")
    return freqs, power


def _check_spectrum(freqs: np.ndarray, power: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(freqs, power)`` as float arrays after checking they are one finite, non-negative spectrum."""
    f = np.asarray(freqs, dtype=np.float64)
    p = np.asarray(power, dtype=np.float64)
    if f.ndim != 1 or f.shape != p.shape:
        raise SignalError(f"freqs {f.shape} and power {p.shape} must be 1-D arrays of equal length")
    with np.errstate(over="ignore", invalid="ignore"):  # a sum that overflows (or inf - inf): refused below
        total = float(p.sum())
    if not (np.all(np.isfinite(f)) and np.isfinite(total)) or np.any(p < 0):
        raise SignalError("a spectrum needs finite frequencies and finite, non-negative power (with a finite sum)")
    return f, p


def spectral_peak_hz(freqs: np.ndarray, power: np.ndarray, band_hz: tuple[float, float] = HR_BAND_HZ) -> float:
    """Frequency of the largest spectral peak inside ``band_hz``, refined by a parabolic fit on log power."""
    freqs, power = _check_spectrum(freqs, power)
    sel = np.flatnonzero((freqs >= band_hz[0]) & (freqs <= band_hz[1]))
    if sel.size < 3:
        raise SignalError(f"band {band_hz} Hz holds fewer than 3 spectral bins; is fs right?")
    k = sel[int(np.argmax(power[sel]))]
    if 0 < k < freqs.size - 1 and np.all(power[k - 1 : k + 2] > 0):
        a, b, c = np.log(power[k - 1 : k + 2])
        denom = a - 2 * b + c
        shift = 0.5 * (a - c) / denom if denom < 0 else 0.0
        return float(freqs[k] + np.clip(shift, -0.5, 0.5) * (freqs[1] - freqs[0]))
    return float(freqs[k])


def heart_rate_spectral_bpm(
    pulse: np.ndarray, fs: float, band_hz: tuple[float, float] = HR_BAND_HZ, name: str = "pulse"
) -> float:
    """Heart rate (bpm) at the largest spectral peak of a pulse signal inside the physiological band."""
    freqs, power = pulse_spectrum(pulse, fs, name=name)
    if not np.any(power[(freqs >= band_hz[0]) & (freqs <= band_hz[1])] > 0):
        raise SignalError(f"{name} has no power in the heart-rate band {band_hz} Hz")
    return 60.0 * spectral_peak_hz(freqs, power, band_hz)


def band_snr_db(
    freqs: np.ndarray,
    power: np.ndarray,
    f0_hz: float,
    half_width_hz: float = 0.1,
    band_hz: tuple[float, float] = (0.5, 4.0),
) -> float:
    """SNR (dB) of a spectrum: power within +-``half_width_hz`` of ``f0_hz`` and of its first harmonic over the
    rest of ``band_hz`` (de Haan & Jeanne 2013, IEEE TBME 60(10):2878-2886, eq. 12)."""
    freqs, power = _check_spectrum(freqs, power)
    in_band = (freqs >= band_hz[0]) & (freqs <= band_hz[1])
    signal = in_band & ((np.abs(freqs - f0_hz) <= half_width_hz) | (np.abs(freqs - 2 * f0_hz) <= half_width_hz))
    noise = in_band & ~signal
    p_signal, p_noise = float(power[signal].sum()), float(power[noise].sum())
    if p_signal <= 0 or p_noise <= 0:
        raise SignalError(f"cannot form an SNR around {f0_hz * 60:.1f} bpm: signal {p_signal}, noise {p_noise}")
    return 10.0 * np.log10(p_signal / p_noise)
