import numpy as np
import pytest
from conftest import beat_times, synth_pulse, synth_rgb

from stress_lightning.signals import SignalError, rppg

FS = 30.0


@pytest.fixture(scope="module")
def trace():
    beats = beat_times(20.0, 84.0, seed=7, jitter=0.02)
    pulse = synth_pulse(beats, FS, 20.0)
    return synth_rgb(pulse, FS, seed=7), pulse, 60.0 / np.mean(np.diff(beats))


@pytest.mark.parametrize("name", sorted(rppg.METHODS))
def test_method_recovers_heart_rate_and_polarity(trace, name):
    rgb, pulse, hr = trace
    out = rppg.METHODS[name](rgb, FS)
    assert out.shape == (rgb.shape[0],) and np.isfinite(out).all()
    assert out.std() == pytest.approx(1.0)
    assert rppg.heart_rate_bpm(out, FS) == pytest.approx(hr, abs=3.0)
    # same sign as the blood-volume pulse (systolic peaks are maxima)
    assert np.corrcoef(out, pulse - pulse.mean())[0, 1] > 0.3


def test_chrominance_methods_cancel_common_mode_flicker():
    beats = beat_times(20.0, 72.0, seed=2)
    pulse = synth_pulse(beats, FS, 20.0)
    rgb = synth_rgb(pulse, FS, seed=2, noise=0.01)
    t = np.arange(rgb.shape[0]) / FS
    rgb = rgb * (1 + 0.01 * np.sin(2 * np.pi * 2.5 * t))[:, None]  # 150 bpm illumination flicker, 4x the pulse
    hr = 60.0 / np.mean(np.diff(beats))
    assert rppg.heart_rate_bpm(rppg.green(rgb, FS), FS) == pytest.approx(150.0, abs=3.0)
    for method in (rppg.pos, rppg.chrom, rppg.lgi, rppg.omit):
        assert rppg.heart_rate_bpm(method(rgb, FS), FS) == pytest.approx(hr, abs=3.0)


def test_pulse_to_hr_hrv(trace):
    rgb, _, hr = trace
    out = rppg.pulse_to_hr_hrv(rppg.pos(rgb, FS), FS)
    assert out["hr_bpm"] == pytest.approx(hr, abs=3.0)
    assert out["hr_peaks_bpm"] == pytest.approx(hr, abs=3.0)
    assert out["rmssd_ms"] > 0 and out["snr_db"] > 0
    noise = np.random.default_rng(0).standard_normal(600)
    bad = rppg.pulse_to_hr_hrv(noise, FS)
    assert "rmssd_ms" not in bad and "SNR" in bad["hrv_error"]


def test_rppg_input_errors(trace):
    rgb = trace[0]
    with pytest.raises(SignalError, match=r"\[T, 3\]"):
        rppg.pos(rgb[:, :2], FS)
    with pytest.raises(SignalError, match="too short"):
        rppg.chrom(rgb[:60], FS)
    nan_rgb = rgb.copy()
    nan_rgb[100:110, 1] = np.nan
    with pytest.raises(SignalError, match="frame 100"):
        rppg.green(nan_rgb, FS)
    with pytest.raises(SignalError, match="positive"):
        rppg.pos(rgb - rgb.max(axis=0), FS)
    with pytest.raises(SignalError, match="too low"):
        rppg.lgi(rgb, 5.0)
