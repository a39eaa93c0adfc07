"""Classic (unsupervised) rPPG methods: RGB trace of a skin ROI -> pulse signal.

Every method takes ``rgb`` of shape ``[T, 3]`` (spatially averaged R, G, B per frame, any positive scale) and the
frame rate ``fs`` in Hz, and returns a pulse of length ``T``: band-passed to ``PULSE_BAND_HZ``, zero mean, unit
standard deviation, and signed so that a rise in blood volume is positive (systolic peaks are maxima; the sign is
aligned with the inverted green channel, since skin reflects less green when it holds more blood). These are the
baselines the learned rPPG stream must beat and labels for self-supervised pretraining.

Methods and sources:
- ``green``: Verkruysse, Svaasand & Nelson (2008), Opt Express 16(26):21434 - the green channel alone.
- ``ica``: Poh, McDuff & Picard (2010), Opt Express 18(10):10762 - ICA of the normalised traces; the component
  with the strongest pulse-band peak. Poh et al. used JADE; here scikit-learn's FastICA (a maintained ICA).
- ``chrom``: de Haan & Jeanne (2013), IEEE TBME 60(10):2878 - chrominance signals X = 3R - 2G and
  Y = 1.5R + G - 1.5B, combined as X - alpha Y with alpha = std(X)/std(Y) per 1.6 s window, overlap-added.
- ``pbv``: de Haan & van Leest (2014), Physiol Meas 35(9):1913 - projection on the blood-volume pulse signature
  (the unit vector of normalised channel pulse amplitudes); data-driven unless ``signature`` is given.
- ``pos``: Wang, den Brinker, Stuijk & de Haan (2017), IEEE TBME 64(7):1479 - plane orthogonal to skin,
  P = [[0, 1, -1], [-2, 1, 1]], h = S1 + (std(S1)/std(S2)) S2 per 1.6 s window, overlap-added.
- ``lgi``: Pilz, Zaunseder, Krajewski & Blazek (2018), CVPR Workshops - local group invariance: project the
  traces onto the orthogonal complement of their principal (skin tone / illumination) direction.
- ``omit``: Casado & Lopez (2023), IEEE TAFFC 14(4):3268 "Face2PPG" - orthogonal matrix image transformation:
  the same projection with the direction found by a (pivoted) QR decomposition instead of an SVD.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.linalg
import scipy.ndimage
import scipy.signal
from sklearn.decomposition import FastICA

from stress_lightning.signals import ppg as _ppg
from stress_lightning.signals import spectrum as _spectrum
from stress_lightning.signals.errors import SignalError
from stress_lightning.signals.hrv import MIN_INTERVALS_TIME_DOMAIN, time_domain
from stress_lightning.signals.quality import MAX_ABS_VALUE, check_fs

PULSE_BAND_HZ = (0.7, 3.5)  # 42-210 bpm
WINDOW_S = 1.6  # CHROM / POS window: about one cardiac cycle at 40 bpm (Wang et al. 2017 use l = 1.6 s at 20 fps)
MIN_RPPG_DURATION_S = 4.0
MIN_SNR_FOR_HRV_DB = 0.0  # below this pulse SNR the peaks are too unreliable for beat-to-beat HRV


def _check_rgb(rgb: np.ndarray, fs: float) -> tuple[np.ndarray, float]:
    fs = check_fs(fs)
    arr = np.asarray(rgb)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise SignalError(f"rgb must have shape [T, 3], got {arr.shape}")
    arr = arr.astype(np.float64)
    if arr.shape[0] / fs < MIN_RPPG_DURATION_S:
        raise SignalError(
            f"rgb trace is too short: {arr.shape[0]} frames = {arr.shape[0] / fs:.2f} s at {fs:g} Hz, "
            f"need at least {MIN_RPPG_DURATION_S:g} s"
        )
    if fs < 2 * PULSE_BAND_HZ[1] + 1:
        raise SignalError(f"frame rate {fs:g} Hz is too low for the pulse band {PULSE_BAND_HZ} Hz")
    bad = ~np.isfinite(arr)
    if bad.any():
        frames = np.flatnonzero(bad.any(axis=1))
        raise SignalError(f"rgb contains NaN/inf in {frames.size} frames (first at frame {int(frames[0])})")
    if np.abs(arr).max() > MAX_ABS_VALUE:
        raise SignalError(f"rgb holds values beyond {MAX_ABS_VALUE:g}: corrupt data or a wrong scale")
    means = arr.mean(axis=0)
    if np.any(means <= 0):
        raise SignalError(f"rgb channel means must be positive intensities, got {means}; pass raw ROI means")
    if np.any(np.ptp(arr, axis=0) == 0):
        raise SignalError("rgb has a constant channel (flat line); is the ROI empty or saturated?")
    return arr, fs


def _bandpass(x: np.ndarray, fs: float) -> np.ndarray:
    sos = scipy.signal.butter(2, PULSE_BAND_HZ, btype="band", fs=fs, output="sos")
    return scipy.signal.sosfiltfilt(sos, x, axis=0)


def _finish(pulse: np.ndarray, rgb: np.ndarray, fs: float) -> np.ndarray:
    """Band-pass, standardise and sign-align a raw pulse estimate."""
    p = _bandpass(pulse, fs)
    p = p - p.mean()
    sd = p.std()
    if sd == 0:
        raise SignalError("the method produced a constant pulse (no signal in the pulse band)")
    p /= sd
    reference = -_bandpass(rgb[:, 1] / rgb[:, 1].mean(), fs)
    return -p if np.dot(p, reference) < 0 else p


def _normalised(rgb: np.ndarray, fs: float) -> np.ndarray:
    """Each channel divided by its moving mean over WINDOW_S, minus one (temporal normalisation)."""
    moving = scipy.ndimage.uniform_filter1d(rgb, max(2, int(round(WINDOW_S * fs))), axis=0, mode="nearest")
    return rgb / moving - 1.0


def _overlap_add(rgb: np.ndarray, fs: float, per_window: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Apply ``per_window`` to Hann-weighted, half-overlapping windows of WINDOW_S and overlap-add the results."""
    n = max(4, int(round(WINDOW_S * fs)))
    step = n // 2
    out = np.zeros(rgb.shape[0])
    weight = np.zeros(rgb.shape[0])
    win = np.hanning(n)
    starts = list(range(0, rgb.shape[0] - n + 1, step))
    if starts[-1] != rgb.shape[0] - n:
        starts.append(rgb.shape[0] - n)
    for s in starts:
        seg = per_window(rgb[s : s + n])
        out[s : s + n] += win * (seg - seg.mean())
        weight[s : s + n] += win
    return out / np.maximum(weight, 1e-12)


def green(rgb: np.ndarray, fs: float) -> np.ndarray:
    """GREEN (Verkruysse et al. 2008): the inverted, normalised green channel."""
    arr, fs = _check_rgb(rgb, fs)
    return _finish(-arr[:, 1] / arr[:, 1].mean(), arr, fs)


def chrom(rgb: np.ndarray, fs: float) -> np.ndarray:
    """CHROM (de Haan & Jeanne 2013): alpha-tuned difference of two chrominance signals."""
    arr, fs = _check_rgb(rgb, fs)
    n = _normalised(arr, fs)
    xs = 3.0 * n[:, 0] - 2.0 * n[:, 1]
    ys = 1.5 * n[:, 0] + n[:, 1] - 1.5 * n[:, 2]
    xy = _bandpass(np.stack([xs, ys], axis=1), fs)

    def combine(w: np.ndarray) -> np.ndarray:
        sy = w[:, 1].std()
        return w[:, 0] - (w[:, 0].std() / sy if sy > 0 else 0.0) * w[:, 1]

    return _finish(_overlap_add(xy, fs, combine), arr, fs)


def pos(rgb: np.ndarray, fs: float) -> np.ndarray:
    """POS (Wang et al. 2017): projection on the plane orthogonal to the skin tone, alpha-tuned."""
    arr, fs = _check_rgb(rgb, fs)
    projection = np.array([[0.0, 1.0, -1.0], [-2.0, 1.0, 1.0]])

    def window(w: np.ndarray) -> np.ndarray:
        s = (w / w.mean(axis=0)) @ projection.T
        s2 = s[:, 1].std()
        return s[:, 0] + (s[:, 0].std() / s2 if s2 > 0 else 0.0) * s[:, 1]

    return _finish(_overlap_add(arr, fs, window), arr, fs)


def ica(rgb: np.ndarray, fs: float, seed: int = 0) -> np.ndarray:
    """ICA (Poh et al. 2010): FastICA on the detrended, standardised traces; the component whose spectrum has
    the highest peak in the pulse band (fixed ``seed``, so the result is deterministic)."""
    arr, fs = _check_rgb(rgb, fs)
    x = scipy.signal.detrend(arr / arr.mean(axis=0), axis=0)
    x = _bandpass(x, fs)
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    sources = FastICA(n_components=3, whiten="unit-variance", random_state=seed, max_iter=1000, tol=1e-4)
    components = sources.fit_transform(x)
    best, best_peak = 0, -np.inf
    for k in range(3):
        freqs, power = _spectrum.pulse_spectrum(components[:, k], fs, name="ICA component")
        band = (freqs >= PULSE_BAND_HZ[0]) & (freqs <= PULSE_BAND_HZ[1])
        peak = power[band].max() / power.sum()
        if peak > best_peak:
            best, best_peak = k, peak
    return _finish(components[:, best], arr, fs)


def lgi(rgb: np.ndarray, fs: float) -> np.ndarray:
    """LGI (Pilz et al. 2018): remove the principal colour direction (SVD), keep the green row."""
    arr, fs = _check_rgb(rgb, fs)
    _, _, vt = np.linalg.svd(arr, full_matrices=False)
    u = vt[0]
    projected = arr @ (np.eye(3) - np.outer(u, u))
    return _finish(-projected[:, 1], arr, fs)


def omit(rgb: np.ndarray, fs: float) -> np.ndarray:
    """OMIT (Casado & Lopez 2023): remove the colour direction given by the first column of the orthogonal
    factor of a column-pivoted QR decomposition of the [3, T] trace matrix, keep the green row."""
    arr, fs = _check_rgb(rgb, fs)
    q, _, _ = scipy.linalg.qr(arr.T, mode="economic", pivoting=True)
    s = q[:, 0]
    projected = arr @ (np.eye(3) - np.outer(s, s))
    return _finish(-projected[:, 1], arr, fs)


def pbv(rgb: np.ndarray, fs: float, signature: np.ndarray | None = None) -> np.ndarray:
    """PBV (de Haan & van Leest 2014): pulse = C W / (pbv . W) with W = (C^T C)^-1 pbv, C the band-passed
    normalised traces and pbv the blood-volume signature (estimated from the channels' pulse-band amplitudes
    unless ``signature`` is given, e.g. the paper's camera-specific [0.33, 0.77, 0.53])."""
    arr, fs = _check_rgb(rgb, fs)
    c = _bandpass(arr / arr.mean(axis=0) - 1.0, fs)
    if signature is None:
        sig = c.std(axis=0)
    else:
        sig = np.asarray(signature, dtype=np.float64)
        if sig.shape != (3,) or not np.all(np.isfinite(sig)) or not np.any(sig):
            raise SignalError(f"signature must be 3 finite values, not all zero, got {signature!r}")
    # Scaled to a largest entry of 1 before the norm, which would overflow (or underflow to 0) at extreme scales.
    sig = sig / np.abs(sig).max()
    sig = sig / np.linalg.norm(sig)
    w = np.linalg.lstsq(c.T @ c, sig, rcond=None)[0]
    return _finish(-(c @ w) / (sig @ w), arr, fs)


METHODS: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
    "green": green,
    "chrom": chrom,
    "pos": pos,
    "ica": ica,
    "lgi": lgi,
    "pbv": pbv,
    "omit": omit,
}


def heart_rate_bpm(pulse: np.ndarray, fs: float) -> float:
    """Heart rate (bpm) of any pulse signal: the spectral peak in the 42-210 bpm band (Welch/periodogram,
    zero-padded to 0.1 bpm, parabolic refinement)."""
    return _spectrum.heart_rate_spectral_bpm(pulse, fs, band_hz=PULSE_BAND_HZ)


def pulse_to_hr_hrv(pulse: np.ndarray, fs: float) -> dict:
    """HR and, where the signal allows, HRV from any pulse signal.

    Always returns ``hr_bpm`` (spectral) and ``snr_db`` (blind, around the spectral peak). ``hr_peaks_bpm``,
    the peak indices and time-domain HRV (``rmssd_ms`` etc.) are added when the SNR reaches
    ``MIN_SNR_FOR_HRV_DB`` and there are enough pulse intervals; otherwise ``hrv_error`` says why.
    """
    hr = heart_rate_bpm(pulse, fs)
    out: dict = {"hr_bpm": hr, "snr_db": _ppg.pulse_snr_db(pulse, fs, hr)}
    if out["snr_db"] < MIN_SNR_FOR_HRV_DB:
        out["hrv_error"] = f"pulse SNR {out['snr_db']:.1f} dB is below {MIN_SNR_FOR_HRV_DB:g} dB"
        return out
    peaks = _ppg.detect_pulse_peaks(pulse, fs)
    out["peaks"] = peaks
    if peaks.size < MIN_INTERVALS_TIME_DOMAIN + 1:
        out["hrv_error"] = f"only {peaks.size} pulse peaks; need {MIN_INTERVALS_TIME_DOMAIN + 1}"
        return out
    out["hr_peaks_bpm"] = _ppg.heart_rate_from_peaks_bpm(peaks, fs)
    out.update(time_domain(_ppg.pulse_intervals_ms(peaks, fs)))
    return out
