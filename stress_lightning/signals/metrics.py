"""Evaluation figures as the rPPG literature reports them: MAE, RMSE, MAPE, Pearson r, SNR, Bland-Altman.

Also beat-detection scores (sensitivity / positive predictivity with a matching tolerance, as in ANSI/AAMI EC57).
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless: figures are written to files / logged to MLflow, never shown

import numpy as np  # noqa: E402
import scipy.stats  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from stress_lightning.signals.errors import SignalError  # noqa: E402
from stress_lightning.signals.quality import MAX_ABS_VALUE  # noqa: E402
from stress_lightning.signals.spectrum import band_snr_db, pulse_spectrum  # noqa: E402


def _pair(pred: np.ndarray, ref: np.ndarray, min_n: int = 1) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred, dtype=np.float64).ravel()
    r = np.asarray(ref, dtype=np.float64).ravel()
    if p.shape != r.shape:
        raise SignalError(f"pred and ref differ in length: {p.size} vs {r.size}")
    if p.size < min_n:
        raise SignalError(f"need at least {min_n} pairs, got {p.size}")
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(r))):
        raise SignalError("pred/ref contain NaN/inf; mask missing labels before scoring")
    if p.size and max(np.abs(p).max(), np.abs(r).max()) > MAX_ABS_VALUE:
        raise SignalError(f"pred/ref hold values beyond {MAX_ABS_VALUE:g}: corrupt data or a wrong scale")
    return p, r


def mae(pred: np.ndarray, ref: np.ndarray) -> float:
    """Mean absolute error."""
    p, r = _pair(pred, ref)
    return float(np.mean(np.abs(p - r)))


def rmse(pred: np.ndarray, ref: np.ndarray) -> float:
    """Root mean squared error."""
    p, r = _pair(pred, ref)
    return float(np.sqrt(np.mean((p - r) ** 2)))


def mape(pred: np.ndarray, ref: np.ndarray) -> float:
    """Mean absolute percentage error (percent of the reference)."""
    p, r = _pair(pred, ref)
    if np.any(np.abs(r) < 1.0 / MAX_ABS_VALUE):
        raise SignalError(f"MAPE is undefined for a zero reference value (or one below {1.0 / MAX_ABS_VALUE:g})")
    return float(100.0 * np.mean(np.abs((p - r) / r)))


def pearson_r(pred: np.ndarray, ref: np.ndarray) -> float:
    """Pearson correlation coefficient (needs >= 3 pairs and non-constant inputs)."""
    p, r = _pair(pred, ref, min_n=3)
    # Nearly constant (spread within rounding of the values) is as undefined as constant: scipy only warns there.
    if any(np.ptp(v) <= 1e-12 * max(1.0, float(np.abs(v).max())) for v in (p, r)):
        raise SignalError("Pearson r is undefined for a constant (or nearly constant) pred or ref")
    return float(scipy.stats.pearsonr(p, r).statistic)


def snr_db(pulse: np.ndarray, fs: float, hr_ref_bpm: float) -> float:
    """SNR (dB) of a pulse signal around the reference heart rate, as in de Haan & Jeanne (2013) and the
    rPPG-Toolbox: power within +-6 bpm (0.1 Hz) of the reference fundamental and first harmonic over the rest of
    0.5-4 Hz (30-240 bpm)."""
    if not np.isfinite(hr_ref_bpm) or hr_ref_bpm <= 0:
        raise SignalError(f"hr_ref_bpm must be a positive rate, got {hr_ref_bpm}")
    freqs, power = pulse_spectrum(pulse, fs)
    return band_snr_db(freqs, power, float(hr_ref_bpm) / 60.0)


def bland_altman(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Bland & Altman (1986, Lancet 327:307-310) agreement: ``bias`` (mean of pred - ref), ``sd`` of the
    differences, 95 % limits of agreement ``loa_low``/``loa_high`` = bias -+ 1.96 sd, and ``n``."""
    p, r = _pair(pred, ref, min_n=2)
    diff = p - r
    bias, sd = float(diff.mean()), float(diff.std(ddof=1))
    return {"bias": bias, "sd": sd, "loa_low": bias - 1.96 * sd, "loa_high": bias + 1.96 * sd, "n": int(p.size)}


def bland_altman_plot(pred: np.ndarray, ref: np.ndarray, title: str = "Bland-Altman", units: str = "bpm") -> Figure:
    """Bland-Altman figure (difference against mean, bias and limits of agreement drawn), Agg backend.

    Built with ``matplotlib.figure.Figure`` directly (not pyplot), so nothing accumulates in pyplot's registry
    when called once per validation epoch.
    """
    p, r = _pair(pred, ref, min_n=2)
    stats = bland_altman(p, r)
    fig = Figure(figsize=(5.0, 4.0), dpi=100)
    ax = fig.add_subplot()
    ax.scatter((p + r) / 2, p - r, s=12, alpha=0.7)
    for key, style in (("bias", "-"), ("loa_low", "--"), ("loa_high", "--")):
        ax.axhline(stats[key], color="tab:red", linestyle=style, linewidth=1)
        ax.annotate(
            f"{key} {stats[key]:+.2f}",
            xy=(1.0, stats[key]),
            xycoords=("axes fraction", "data"),
            ha="right",
            va="bottom",
            fontsize=8,
        )
    ax.set_xlabel(f"mean of prediction and reference ({units})")
    ax.set_ylabel(f"prediction - reference ({units})")
    ax.set_title(f"{title} (n={stats['n']})")
    fig.tight_layout()
    return fig


def beat_detection_scores(detected: np.ndarray, reference: np.ndarray, tolerance: float) -> dict[str, float]:
    """Match detected beats to reference beats one-to-one within ``tolerance`` (same units, e.g. samples).

    Greedy in order of distance, so each reference and each detection is used at most once. Returns ``tp``,
    ``fp``, ``fn``, ``sensitivity`` = tp / (tp + fn) and ``ppv`` (positive predictivity) = tp / (tp + fp).
    """
    det = np.sort(np.asarray(detected, dtype=np.float64).ravel())
    ref = np.sort(np.asarray(reference, dtype=np.float64).ravel())
    if ref.size == 0:
        raise SignalError("reference beats are empty")
    if not (np.all(np.isfinite(det)) and np.all(np.isfinite(ref))):
        raise SignalError("detected/reference beats contain NaN/inf")
    if not (np.isfinite(tolerance) and tolerance >= 0):
        raise SignalError(f"tolerance must be a finite number >= 0, got {tolerance}")
    # Candidate pairs within tolerance, matched nearest first.
    lo = np.searchsorted(det, ref - tolerance, side="left")
    hi = np.searchsorted(det, ref + tolerance, side="right")
    pairs = [(abs(det[j] - ref[i]), i, j) for i in range(ref.size) for j in range(lo[i], hi[i])]
    pairs.sort()
    used_ref = np.zeros(ref.size, bool)
    used_det = np.zeros(det.size, bool)
    tp = 0
    for _, i, j in pairs:
        if not used_ref[i] and not used_det[j]:
            used_ref[i] = used_det[j] = True
            tp += 1
    fp, fn = det.size - tp, ref.size - tp
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "sensitivity": tp / ref.size,
        "ppv": tp / det.size if det.size else 0.0,
    }
