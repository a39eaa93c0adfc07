import numpy as np
import pytest

from stress_lightning.signals import SignalError
from stress_lightning.signals.errors import SignalError as SignalErrorDirect
from stress_lightning.signals.quality import (
    check_same_duration,
    check_signal,
    fs_from_timestamps,
    resample,
    resample_irregular,
    signal_quality,
)


def test_signal_error_is_value_error_and_reexported():
    assert SignalError is SignalErrorDirect
    assert issubclass(SignalError, ValueError)


def test_check_signal_reports_nan_run_position():
    x = np.sin(np.arange(1000) / 10.0)
    x[300:350] = np.nan
    with pytest.raises(SignalError, match=r"longest is 50 samples .* starting at sample 300"):
        check_signal(x, 100.0, min_duration_s=1.0)


@pytest.mark.parametrize(
    ("x", "fs", "pattern"),
    [
        (np.ones(1000), 100.0, "flat line"),
        (np.random.default_rng(0).standard_normal(50), 100.0, "too short"),
        (np.random.default_rng(0).standard_normal(500), 0.0, "sampling rate"),
        (np.random.default_rng(0).standard_normal(500), float("nan"), "sampling rate"),
        (np.zeros((10, 2)), 100.0, "1-D"),
    ],
)
def test_check_signal_rejects_bad_input(x, fs, pattern):
    with pytest.raises(SignalError, match=pattern):
        check_signal(x, fs, min_duration_s=1.0)


def test_signal_quality_flags_clipping_and_flat_runs():
    fs = 100.0
    x = np.sin(2 * np.pi * 1.2 * np.arange(2000) / fs)
    clean = signal_quality(x, fs)
    assert clean["ok"] and clean["clipped_fraction"] == 0.0
    clipped = np.clip(x * 2, -1.0, 1.0)
    q = signal_quality(clipped, fs)
    assert not q["ok"] and q["clipped_fraction"] > 0.2
    flat = x.copy()
    flat[500:700] = 0.3
    q = signal_quality(flat, fs)
    assert q["flat_fraction"] == pytest.approx(0.1, abs=0.01)
    assert any("flat" in p for p in q["problems"])


def test_timestamps_irregular_sampling_is_refused_and_resampled():
    t = np.cumsum(np.full(100, 0.01))
    assert fs_from_timestamps(t) == pytest.approx(100.0)
    t_irregular = t.copy()
    t_irregular[50:] += 0.005
    with pytest.raises(SignalError, match="irregular sampling"):
        fs_from_timestamps(t_irregular)
    grid, v = resample_irregular(t_irregular, np.arange(100.0), 50.0)
    assert np.allclose(np.diff(grid), 0.02)
    assert np.all(np.diff(v) > 0)


def test_sampling_rate_mismatch_and_resample():
    with pytest.raises(SignalError, match="sampling-rate mismatch"):
        check_same_duration(30000, 250.0, 30000, 125.0, names=("ecg", "ppg"))
    check_same_duration(30000, 250.0, 15000, 125.0)
    y = resample(np.sin(np.arange(1000) / 50.0), 250.0, 100.0)
    assert y.size == 400
