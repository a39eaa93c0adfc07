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


def check_fs(fs: float, name: str = "fs") -> float:
    """Return ``fs`` as a float after checking it is a finite, positive sampling rate in Hz."""
    try:
        value = float(fs)
    except (TypeError, ValueError) as err:
        raise SignalError(f"{name} must be a number in Hz, got {fs!r}") from err
    if not np.isfinite(value) or value <= 0:
        raise SignalError(f"{name} must be a finite sampling rate > 0 Hz, got {fs!r}")
    return value


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
    samples, any NaN/inf (the message gives the longest run and where it starts) or a flat line.
    """
    fs = check_fs(fs)
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise SignalError(f"{name} must be 1-D, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise SignalError(f"{name} must be real-valued numbers, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float64)
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
    if np.ptp(arr) <= 1e-12 * max(1.0, float(np.abs(arr).max())):
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
        # Constant runs: consecutive equal samples (NaN never equals, so gaps break runs).
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
    if t.shape != v.shape or t.ndim != 1:
        raise SignalError(f"timestamps {t.shape} and values {v.shape} must be 1-D arrays of equal length")
    if np.any(np.diff(t) <= 0):
        raise SignalError("timestamps are not strictly increasing")
    grid = np.arange(t[0], t[-1], 1.0 / fs_out)
    return grid, np.interp(grid, t, v)


def resample(x: np.ndarray, fs_in: float, fs_out: float) -> np.ndarray:
    """Resample a uniformly sampled signal from ``fs_in`` to ``fs_out`` Hz (polyphase, anti-aliased)."""
    fs_in, fs_out = check_fs(fs_in, "fs_in"), check_fs(fs_out, "fs_out")
    ratio = Fraction(fs_out / fs_in).limit_denominator(1000)
    if abs(float(ratio) - fs_out / fs_in) > 1e-6 * fs_out / fs_in:
        raise SignalError(f"cannot express {fs_in:g} Hz -> {fs_out:g} Hz as a ratio of small integers")
    return scipy.signal.resample_poly(np.asarray(x, dtype=np.float64), ratio.numerator, ratio.denominator)


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
