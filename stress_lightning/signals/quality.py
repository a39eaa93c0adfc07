"""Input checks and quality flags shared by the ECG, PPG, HRV and rPPG code.

Every public function in this package validates its input here first, so a NaN run, a flat line, a clipped
segment, a bad or mismatched sampling rate or a too-short window ends in a :class:`SignalError` naming the
problem (or, for :func:`signal_quality`, in an explicit flag), never in a silent number.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import scipy.signal

from stress_lightning.signals.errors import SignalError

# Samples at the extreme value of a record, in runs at least this long, count as clipped (an ADC at full scale).
CLIP_MIN_RUN_S = 0.02
# A constant run this long is a lead-off / sensor-off segment, not a physiological signal.
FLAT_MIN_RUN_S = 0.5
# Sampling rates outside this range (Hz) are a wrong unit (a period, kHz for Hz) or a corrupt header; inside it the
# arithmetic on sample indices and intervals stays far from float64 overflow.
FS_RANGE_HZ = (1e-3, 1e6)
# Samples beyond this magnitude are corrupt data or a wrong scale, in any unit (V, uV, ADC counts); below it the
# squares and sums of the filters and spectra cannot overflow float64.
MAX_ABS_VALUE = 1e100
# Resampling refuses to produce more samples than this (about 28 h at 1 kHz): a larger grid means timestamps or a
# rate in the wrong unit, and allocating it would exhaust memory before anything could say so.
MAX_RESAMPLED_SAMPLES = 100_000_000
# A band edge below this fraction of the sampling rate cannot be built as a stable Butterworth section in float64
# (the design's state matrix turns singular near 1e-10 fs).
MIN_BAND_EDGE_FRACTION = 1e-6


def check_fs(fs: float, name: str = "fs") -> float:
    """Return ``fs`` as a float after checking it is a finite, positive sampling rate in Hz within ``FS_RANGE_HZ``."""
    try:
        value = float(fs)
    except (TypeError, ValueError) as err:
        raise SignalError(f"{name} must be a number in Hz, got {fs!r}") from err
    if not np.isfinite(value) or value <= 0:
        raise SignalError(f"{name} must be a finite sampling rate > 0 Hz, got {fs!r}")
    if not FS_RANGE_HZ[0] <= value <= FS_RANGE_HZ[1]:
        raise SignalError(
            f"{name} = {value:g} Hz is not a plausible sampling rate (expected {FS_RANGE_HZ[0]:g} to "
            f"{FS_RANGE_HZ[1]:g} Hz); is it in Hz?"
        )
    return value


def check_band(band_hz: tuple[float, float], fs: float, name: str = "band_hz") -> tuple[float, float]:
    """``(low, high)`` of a pass band in Hz, ``high`` clipped to 0.45 ``fs``, checked to be a band-pass filter that
    can be built at ``fs``."""
    try:
        lo, hi = (float(f) for f in band_hz)
    except (TypeError, ValueError) as err:
        raise SignalError(f"{name} must be two frequencies in Hz (low, high), got {band_hz!r}") from err
    hi = min(hi, 0.45 * fs)
    if not MIN_BAND_EDGE_FRACTION * fs <= lo < hi:  # NaN fails here too
        raise SignalError(
            f"{name} {band_hz} Hz does not fit at fs = {fs:g} Hz: need {MIN_BAND_EDGE_FRACTION * fs:g} <= low < high, "
            f"with high at most 0.45 fs = {0.45 * fs:g} Hz"
        )
    return lo, hi


def zero_phase_filter(sos: np.ndarray, x: np.ndarray, name: str = "signal", axis: int = -1) -> np.ndarray:
    """``scipy.signal.sosfiltfilt`` with its input length checked first: it pads ``3 * (2 * sections + 1)``
    samples (its default ``padlen``, for sections without zero coefficients) and needs more than that."""
    padlen = 3 * (2 * len(sos) + 1 - min(int((sos[:, 2] == 0).sum()), int((sos[:, 5] == 0).sum())))
    if x.shape[axis] <= padlen:
        raise SignalError(f"{name} has {x.shape[axis]} samples; the zero-phase band-pass needs more than {padlen}")
    return scipy.signal.sosfiltfilt(sos, x, axis=axis)


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start indices and lengths of the runs of True in a boolean array."""
    padded = np.concatenate(([False], mask, [False])).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    starts, stops = edges[0::2], edges[1::2]
    return starts, stops - starts


def check_signal(
    x: np.ndarray,
    fs: float,
    *,
    min_duration_s: float,
    name: str = "signal",
) -> np.ndarray:
    """Validate a 1-D signal and return it as a contiguous float64 array.

    Raises :class:`SignalError` for a non-1-D input, a bad ``fs``, fewer than ``min_duration_s`` seconds of
    samples, any NaN/inf (the message gives the longest run and where it starts), values beyond ``MAX_ABS_VALUE``
    or a flat line.
    """
    fs = check_fs(fs)
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise SignalError(f"{name} must be 1-D, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise SignalError(f"{name} must be real-valued numbers, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    if arr.size == 0:
        raise SignalError(f"{name} is empty (0 samples)")
    duration_s = arr.size / fs
    if duration_s < min_duration_s:
        raise SignalError(
            f"{name} is too short: {arr.size} samples = {duration_s:.2f} s at {fs:g} Hz, "
            f"need at least {min_duration_s:g} s"
        )
    bad = ~np.isfinite(arr)
    if bad.any():
        starts, lengths = _runs(bad)
        k = int(np.argmax(lengths))
        raise SignalError(
            f"{name} contains {int(bad.sum())} NaN/inf samples in {starts.size} run(s); the longest is "
            f"{int(lengths[k])} samples ({lengths[k] / fs:.2f} s) starting at sample {int(starts[k])} "
            f"(t = {starts[k] / fs:.2f} s); interpolate or cut the gap first"
        )
    peak = float(np.abs(arr).max())
    if peak > MAX_ABS_VALUE:
        raise SignalError(
            f"{name} holds values up to {peak:g}, beyond {MAX_ABS_VALUE:g}: corrupt data or a wrong scale"
        )
    if np.ptp(arr) <= 1e-12 * max(1.0, peak):
        raise SignalError(f"{name} is a flat line (constant value {arr[0]:g}); is the sensor connected?")
    return arr


def signal_quality(x: np.ndarray, fs: float) -> dict:
    """Quality flags of a raw 1-D signal, without raising for what it finds.

    Returns ``nan_fraction``, ``longest_nan_run_s``, ``flat_fraction`` (share of samples in constant runs of at
    least ``FLAT_MIN_RUN_S``), ``clipped_fraction`` (share of samples sitting at the record's min or max in
    runs of at least ``CLIP_MIN_RUN_S``) and ``ok`` with the list ``problems`` explaining a False.
    """
    fs = check_fs(fs)
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise SignalError(f"signal must be a non-empty 1-D array, got shape {arr.shape}")
    bad = ~np.isfinite(arr)
    nan_starts, nan_lengths = _runs(bad)
    finite = arr[~bad]
    problems: list[str] = []
    flat_fraction = clipped_fraction = 0.0
    if finite.size >= 2:
        # Constant runs: consecutive equal samples (NaN never equals, so gaps break runs; inf - inf is such a NaN).
        with np.errstate(invalid="ignore"):
            same = np.concatenate(([False], np.diff(arr) == 0))
        starts, lengths = _runs(same)
        long_runs = lengths + 1 >= max(2, int(FLAT_MIN_RUN_S * fs))
        flat_fraction = float((lengths[long_runs] + 1).sum() / arr.size)
        lo, hi = finite.min(), finite.max()
        at_rail = (arr == lo) | (arr == hi)
        starts, lengths = _runs(at_rail)
        clipped = lengths >= max(2, int(CLIP_MIN_RUN_S * fs))
        clipped_fraction = float(lengths[clipped].sum() / arr.size)
    nan_fraction = float(bad.mean())
    if nan_fraction > 0:
        problems.append(f"{nan_fraction:.1%} NaN/inf samples")
    if finite.size < 2 or np.ptp(finite) == 0:
        problems.append("flat line")
    elif flat_fraction > 0:
        problems.append(f"{flat_fraction:.1%} of samples in flat runs >= {FLAT_MIN_RUN_S} s")
    if clipped_fraction > 0:
        problems.append(f"{clipped_fraction:.1%} of samples clipped at the signal's min/max")
    return {
        "nan_fraction": nan_fraction,
        "longest_nan_run_s": float(nan_lengths.max() / fs) if nan_lengths.size else 0.0,
        "flat_fraction": flat_fraction,
        "clipped_fraction": clipped_fraction,
        "ok": not problems,
        "problems": problems,
    }


def fs_from_timestamps(t_s: np.ndarray, max_jitter: float = 0.05) -> float:
    """Sampling rate in Hz of a timestamp column (seconds), refusing irregular sampling.

    ``max_jitter`` is the largest tolerated deviation of any sample interval from the median interval, as a
    fraction of it; beyond that the signal must be resampled (:func:`resample_irregular`) before use.
    """
    t = np.asarray(t_s, dtype=np.float64)
    if t.ndim != 1 or t.size < 3:
        raise SignalError(f"timestamps must be a 1-D array of at least 3 values, got shape {t.shape}")
    if not np.all(np.isfinite(t)):
        raise SignalError("timestamps contain NaN/inf")
    if np.abs(t).max() > MAX_ABS_VALUE:
        raise SignalError(f"timestamps reach {np.abs(t).max():g}, beyond {MAX_ABS_VALUE:g} s: corrupt data")
    dt = np.diff(t)
    if np.any(dt <= 0):
        k = int(np.flatnonzero(dt <= 0)[0])
        raise SignalError(f"timestamps are not strictly increasing at index {k + 1} ({t[k]} -> {t[k + 1]})")
    med = float(np.median(dt))
    worst = float(np.max(np.abs(dt - med)) / med)
    if worst > max_jitter:
        raise SignalError(
            f"irregular sampling: an interval deviates {worst:.0%} from the median {med * 1e3:.3f} ms "
            f"(limit {max_jitter:.0%}); resample with resample_irregular() first"
        )
    return 1.0 / med


def resample_irregular(t_s: np.ndarray, x: np.ndarray, fs_out: float) -> tuple[np.ndarray, np.ndarray]:
    """Linearly interpolate an irregularly sampled signal onto a uniform ``fs_out`` grid.

    Returns ``(t_uniform_s, x_uniform)``; the grid starts at ``t_s[0]``.
    """
    fs_out = check_fs(fs_out, "fs_out")
    t = np.asarray(t_s, dtype=np.float64)
    v = np.asarray(x, dtype=np.float64)
    if t.shape != v.shape or t.ndim != 1 or t.size < 2:
        raise SignalError(
            f"timestamps {t.shape} and values {v.shape} must be 1-D arrays of equal length, at least 2 samples"
        )
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(v))):
        raise SignalError("timestamps or values contain NaN/inf; cut or interpolate the gap first")
    if max(np.abs(t).max(), np.abs(v).max()) > MAX_ABS_VALUE:
        raise SignalError(f"timestamps or values beyond {MAX_ABS_VALUE:g}: corrupt data or a wrong scale")
    if np.any(np.diff(t) <= 0):
        raise SignalError("timestamps are not strictly increasing")
    span_s = float(t[-1]) - float(t[0])  # Python floats: an overflow is inf here, not a warning
    n_out = span_s * fs_out
    if not n_out <= MAX_RESAMPLED_SAMPLES:
        raise SignalError(
            f"resampling {span_s:g} s at fs_out = {fs_out:g} Hz would give {n_out:.3g} samples (limit "
            f"{MAX_RESAMPLED_SAMPLES:.0e}); are the timestamps in seconds?"
        )
    grid = np.arange(t[0], t[-1], 1.0 / fs_out)
    return grid, np.interp(grid, t, v)


def resample(x: np.ndarray, fs_in: float, fs_out: float) -> np.ndarray:
    """Resample a uniformly sampled signal from ``fs_in`` to ``fs_out`` Hz (polyphase, anti-aliased)."""
    fs_in, fs_out = check_fs(fs_in, "fs_in"), check_fs(fs_out, "fs_out")
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)):
        raise SignalError(f"signal must be a non-empty 1-D array of finite values, got shape {arr.shape}")
    if np.abs(arr).max() > MAX_ABS_VALUE:
        raise SignalError(f"signal holds values beyond {MAX_ABS_VALUE:g}: corrupt data or a wrong scale")
    exact = fs_out / fs_in
    ratio = Fraction(exact).limit_denominator(1000) if 1e-3 <= exact <= 1e3 else None
    # A numerator above 1000 would make resample_poly build a filter (and a signal) that many times longer.
    if ratio is None or ratio.numerator > 1000 or abs(float(ratio) - exact) > 1e-6 * exact:
        raise SignalError(f"cannot express {fs_in:g} Hz -> {fs_out:g} Hz as a ratio of small integers")
    return scipy.signal.resample_poly(arr, ratio.numerator, ratio.denominator)


def check_same_duration(
    n_a: int, fs_a: float, n_b: int, fs_b: float, *, tolerance_s: float = 1.0, names: tuple[str, str] = ("a", "b")
) -> None:
    """Raise when two signals that should cover the same span disagree, the mark of a wrong sampling rate.

    ``n_a`` samples at ``fs_a`` Hz and ``n_b`` at ``fs_b`` must span durations within ``tolerance_s``.
    """
    dur_a, dur_b = n_a / check_fs(fs_a), n_b / check_fs(fs_b)
    if abs(dur_a - dur_b) > tolerance_s:
        raise SignalError(
            f"sampling-rate mismatch: {names[0]} spans {dur_a:.2f} s ({n_a} samples at {fs_a:g} Hz) but "
            f"{names[1]} spans {dur_b:.2f} s ({n_b} samples at {fs_b:g} Hz); check the declared rates"
        )
