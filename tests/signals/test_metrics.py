import numpy as np
import pytest
from matplotlib.figure import Figure

from stress_lightning.signals import SignalError, metrics


def test_error_metrics():
    pred, ref = np.array([70.0, 82.0, 90.0, 61.0]), np.array([72.0, 80.0, 90.0, 60.0])
    assert metrics.mae(pred, ref) == pytest.approx(1.25)
    assert metrics.rmse(pred, ref) == pytest.approx(np.sqrt(9 / 4))
    assert metrics.mape(pred, ref) == pytest.approx(100 * np.mean([2 / 72, 2 / 80, 0, 1 / 60]))
    assert metrics.pearson_r(pred, ref) == pytest.approx(np.corrcoef(pred, ref)[0, 1])
    with pytest.raises(SignalError, match="differ in length"):
        metrics.mae(pred, ref[:3])
    with pytest.raises(SignalError, match="NaN"):
        metrics.rmse(np.array([1.0, np.nan]), np.array([1.0, 2.0]))
    with pytest.raises(SignalError, match="constant"):
        metrics.pearson_r(np.ones(4), ref)


def test_bland_altman_and_plot():
    rng = np.random.default_rng(0)
    ref = rng.uniform(60, 100, 200)
    pred = ref + 2.0 + rng.normal(0, 1.0, 200)
    ba = metrics.bland_altman(pred, ref)
    assert ba["bias"] == pytest.approx(2.0, abs=0.2) and ba["sd"] == pytest.approx(1.0, abs=0.15)
    assert ba["loa_high"] - ba["loa_low"] == pytest.approx(2 * 1.96 * ba["sd"]) and ba["n"] == 200
    fig = metrics.bland_altman_plot(pred, ref, title="HR", units="bpm")
    assert isinstance(fig, Figure)
    assert "HR" in fig.axes[0].get_title() and "bpm" in fig.axes[0].get_ylabel()


def test_snr_db_prefers_the_reference_rate():
    fs = 30.0
    t = np.arange(int(20 * fs)) / fs
    pulse = np.sin(2 * np.pi * 1.2 * t) + 0.3 * np.random.default_rng(0).standard_normal(t.size)
    assert metrics.snr_db(pulse, fs, 72.0) > 5.0
    assert metrics.snr_db(pulse, fs, 100.0) < -5.0
    with pytest.raises(SignalError, match="positive"):
        metrics.snr_db(pulse, fs, 0.0)


def test_beat_detection_scores_match_one_to_one():
    ref = np.array([100, 200, 300, 400])
    det = np.array([102, 198, 205, 390, 600])
    s = metrics.beat_detection_scores(det, ref, tolerance=10)
    assert (s["tp"], s["fp"], s["fn"]) == (3, 2, 1)
    assert s["sensitivity"] == pytest.approx(0.75) and s["ppv"] == pytest.approx(0.6)
