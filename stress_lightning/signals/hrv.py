"""Heart-rate variability from RR/NN intervals (ms): time domain, frequency domain, Poincare.

Definitions follow the Task Force of the ESC/NASPE (1996), "Heart rate variability: standards of measurement,
physiological interpretation and clinical use", Eur Heart J 17:354-381: SDNN with the sample standard deviation
(ddof=1, as pyhrv does; heartpy uses ddof=0, a 0.15 % difference at 300 intervals), RMSSD, pNN50 in percent;
LF 0.04-0.15 Hz, HF 0.15-0.40 Hz. Poincare SD1/SD2 follow Brennan et al. (2001, IEEE TBME 48(11):1342-1347).

Short windows: other stages compute RMSSD over 8-30 s windows. Time-domain measures need at least
``MIN_INTERVALS_TIME_DOMAIN`` intervals (3 successive differences); the frequency domain needs at least
``MIN_DURATION_FREQUENCY_S`` seconds of intervals and sets ``short_window=True`` below the Task Force's 2 min
minimum for LF, so a label computed from 20-120 s is visibly marked as a rough estimate.
"""

from __future__ import annotations

import numpy as np
import scipy.interpolate
import scipy.signal

from stress_lightning.signals.errors import SignalError
from stress_lightning.signals.quality import MAX_RESAMPLED_SAMPLES

MIN_INTERVALS_TIME_DOMAIN = 4
MIN_DURATION_FREQUENCY_S = 20.0
TASK_FORCE_MIN_LF_DURATION_S = 120.0
VLF_BAND_HZ = (0.0033, 0.04)
LF_BAND_HZ = (0.04, 0.15)
HF_BAND_HZ = (0.15, 0.40)
WELCH_RESAMPLE_HZ = 4.0
WELCH_SEGMENT_S = 240.0  # 4 min segments, 50 % overlap (heartpy's default window, so the two compare)
# A shorter one is below any ECG/PPG sampling resolution (and would not advance float64 beat times).
MIN_RR_MS = 1.0
# A longer "interval" is a gap in the recording (sensor off, data lost), not the time between two beats.
MAX_RR_MS = 60_000.0


def _check_rr(rr_ms: np.ndarray, min_count: int) -> np.ndarray:
    rr = np.asarray(rr_ms, dtype=np.float64)
    if rr.ndim != 1:
        raise SignalError(f"rr_ms must be 1-D, got shape {rr.shape}")
    if rr.size < min_count:
        raise SignalError(
            f"too few RR intervals: got {rr.size}, need at least {min_count} "
            f"(a window of ~{min_count + 1} beats); use a longer window"
        )
    if not np.all(np.isfinite(rr)):
        raise SignalError("rr_ms contains NaN/inf; clean it with ecg.clean_rr_intervals first")
    if np.any(rr <= 0):
        raise SignalError("rr_ms contains non-positive intervals")
    with np.errstate(over="ignore"):  # the median of values near float64's maximum is inf: refused just below
        median = float(np.median(rr))
    if median < 100 or median > 5000:
        raise SignalError(f"median RR {median:g} is not a plausible interval in ms (seconds given?)")
    if rr.max() > MAX_RR_MS:
        raise SignalError(
            f"rr_ms contains an interval of {rr.max():g} ms, longer than {MAX_RR_MS:g} ms: a gap in the recording, "
            "not a beat interval; split the series at gaps"
        )
    if rr.min() < MIN_RR_MS:
        raise SignalError(f"rr_ms contains an interval of {rr.min():g} ms, below {MIN_RR_MS:g} ms: not a beat interval")
    return rr


def time_domain(rr_ms: np.ndarray) -> dict[str, float]:
    """Time-domain HRV: ``mean_nn_ms``, ``sdnn_ms``, ``rmssd_ms``, ``sdsd_ms``, ``nn50``, ``pnn50`` (percent),
    ``mean_hr_bpm`` and ``n_intervals``. Needs at least ``MIN_INTERVALS_TIME_DOMAIN`` intervals."""
    rr = _check_rr(rr_ms, MIN_INTERVALS_TIME_DOMAIN)
    diff = np.diff(rr)
    nn50 = int(np.count_nonzero(np.abs(diff) > 50.0))
    return {
        "mean_nn_ms": float(rr.mean()),
        "sdnn_ms": float(rr.std(ddof=1)),
        "rmssd_ms": float(np.sqrt(np.mean(diff * diff))),
        "sdsd_ms": float(diff.std(ddof=1)),
        "nn50": nn50,
        "pnn50": 100.0 * nn50 / diff.size,
        "mean_hr_bpm": float(60000.0 / rr.mean()),
        "n_intervals": int(rr.size),
    }


def poincare(rr_ms: np.ndarray) -> dict[str, float]:
    """Poincare plot descriptors: ``sd1_ms`` (short-term, across the identity line), ``sd2_ms`` (long-term,
    along it) and ``sd1_sd2_ratio``; SD1 = SDSD / sqrt(2) (Brennan et al. 2001)."""
    rr = _check_rr(rr_ms, MIN_INTERVALS_TIME_DOMAIN)
    x, y = rr[:-1], rr[1:]
    sd1 = float(np.std((y - x) / np.sqrt(2.0), ddof=1))
    sd2 = float(np.std((y + x) / np.sqrt(2.0), ddof=1))
    return {"sd1_ms": sd1, "sd2_ms": sd2, "sd1_sd2_ratio": sd1 / sd2 if sd2 > 0 else float("inf")}


def _band_power(freqs_hz: np.ndarray, psd: np.ndarray, band: tuple[float, float]) -> float:
    sel = (freqs_hz >= band[0]) & (freqs_hz < band[1])
    return float(np.trapezoid(psd[sel], freqs_hz[sel])) if sel.sum() > 1 else 0.0


def _lomb_scargle_power(t_s: np.ndarray, y: np.ndarray, freqs_hz: np.ndarray) -> np.ndarray:
    """Classical Lomb-Scargle power (Lomb 1976, Scargle 1982) of a zero-mean series, vectorised over blocks of
    frequencies. Written out because ``scipy.signal.lombscargle`` (1.17) takes ~0.4 s for 2,300 beats x 500
    frequencies here, more than the whole R-peak detection of a 30 min record; ``tests/signals`` checks the two
    agree."""
    power = np.empty(freqs_hz.size)
    block = max(1, 2_000_000 // max(1, t_s.size))
    for start in range(0, freqs_hz.size, block):
        w = 2 * np.pi * freqs_hz[start : start + block, None]
        wt = w * t_s[None, :]
        tau = np.arctan2(np.sin(2 * wt).sum(axis=1), np.cos(2 * wt).sum(axis=1)) / (2 * w[:, 0])
        arg = wt - (w[:, 0] * tau)[:, None]
        c, s = np.cos(arg), np.sin(arg)
        power[start : start + block] = 0.5 * ((c @ y) ** 2 / (c * c).sum(axis=1) + (s @ y) ** 2 / (s * s).sum(axis=1))
    return power


def psd_lomb(rr_ms: np.ndarray, freqs_hz: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One-sided Lomb-Scargle PSD (ms^2/Hz) of an RR series at its own beat times (Lomb 1976, Scargle 1982).

    No resampling, so no interpolation low-pass. Scaled so that the PSD integrates to the series variance:
    for even sampling the Lomb-Scargle power equals |DFT|^2 / N, hence PSD = 2 * P * T / N.
    """
    rr = _check_rr(rr_ms, MIN_INTERVALS_TIME_DOMAIN)
    t_s = np.cumsum(rr) / 1000.0
    if freqs_hz is None:
        freqs_hz = np.arange(0.002, 0.5, 0.002)
    power = _lomb_scargle_power(t_s - t_s[0], rr - rr.mean(), np.asarray(freqs_hz, dtype=np.float64))
    duration_s = t_s[-1] - t_s[0]
    return freqs_hz, 2.0 * power * duration_s / rr.size


def psd_welch(rr_ms: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Welch PSD (ms^2/Hz) of the RR series resampled at ``WELCH_RESAMPLE_HZ`` by cubic spline.

    Segments of ``WELCH_SEGMENT_S`` (or the whole series if shorter), Hann window, 50 % overlap, linear detrend.
    Returns ``(freqs_hz, psd, segment_s)``.
    """
    rr = _check_rr(rr_ms, MIN_INTERVALS_TIME_DOMAIN)
    t_s = np.cumsum(rr) / 1000.0
    if (t_s[-1] - t_s[0]) * WELCH_RESAMPLE_HZ > MAX_RESAMPLED_SAMPLES:
        raise SignalError(
            f"{t_s[-1] - t_s[0]:.0f} s of intervals is too long to resample at {WELCH_RESAMPLE_HZ:g} Hz; "
            "analyse shorter windows"
        )
    grid = np.arange(t_s[0], t_s[-1], 1.0 / WELCH_RESAMPLE_HZ)
    series = scipy.interpolate.CubicSpline(t_s, rr)(grid)
    nperseg = min(int(WELCH_SEGMENT_S * WELCH_RESAMPLE_HZ), series.size)
    freqs, psd = scipy.signal.welch(series, fs=WELCH_RESAMPLE_HZ, nperseg=nperseg, detrend="linear")
    return freqs, psd, nperseg / WELCH_RESAMPLE_HZ


def frequency_domain(rr_ms: np.ndarray, method: str = "lomb") -> dict:
    """Frequency-domain HRV of an NN series (ms).

    ``method="lomb"`` (default): Lomb-Scargle over the whole series, the method suited to unevenly spaced beats
    and to short windows. ``method="welch"``: cubic-spline resampling at 4 Hz, Welch with 240 s segments.
    Returns ``vlf_ms2``, ``lf_ms2``, ``hf_ms2``, ``lf_hf_ratio``, ``lf_nu`` and ``hf_nu`` (normalised units,
    100 * LF / (LF + HF)), ``method``, ``window_s`` (the span analysed) and ``short_window`` (True below the
    Task Force's 120 s minimum for LF). Needs at least ``MIN_DURATION_FREQUENCY_S`` seconds of intervals.
    """
    rr = _check_rr(rr_ms, MIN_INTERVALS_TIME_DOMAIN)
    window_s = float(rr.sum() / 1000.0)
    if window_s < MIN_DURATION_FREQUENCY_S:
        raise SignalError(
            f"frequency-domain HRV needs at least {MIN_DURATION_FREQUENCY_S:g} s of intervals, got {window_s:.1f} s"
        )
    if method == "lomb":
        freqs, psd = psd_lomb(rr)
        segment_s = window_s
    elif method == "welch":
        freqs, psd, segment_s = psd_welch(rr)
    else:
        raise SignalError(f"unknown method {method!r}; use 'lomb' or 'welch'")
    vlf = _band_power(freqs, psd, VLF_BAND_HZ)
    lf = _band_power(freqs, psd, LF_BAND_HZ)
    hf = _band_power(freqs, psd, HF_BAND_HZ)
    if lf + hf <= 0:
        raise SignalError("no LF or HF power: the interval series is constant")
    return {
        "vlf_ms2": vlf,
        "lf_ms2": lf,
        "hf_ms2": hf,
        "lf_hf_ratio": lf / hf if hf > 0 else float("inf"),
        "lf_nu": 100.0 * lf / (lf + hf),
        "hf_nu": 100.0 * hf / (lf + hf),
        "method": method,
        "window_s": window_s,
        "segment_s": float(segment_s),
        "short_window": window_s < TASK_FORCE_MIN_LF_DURATION_S,
    }


def hrv_summary(rr_ms: np.ndarray, method: str = "lomb") -> dict:
    """Time domain, Poincare and (when the series spans enough time) frequency domain in one dict.

    Frequency-domain keys are present only when ``frequency_domain`` accepts the series; ``frequency_error``
    then carries its reason instead, so a missing LF/HF is explicit.
    """
    out: dict = {**time_domain(rr_ms), **poincare(rr_ms)}
    try:
        out.update(frequency_domain(rr_ms, method=method))
    except SignalError as err:
        out["frequency_error"] = str(err)
    return out
