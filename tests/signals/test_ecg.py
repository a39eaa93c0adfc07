import time

import numpy as np
import pytest
from conftest import beat_times, synth_ecg

from stress_lightning.signals import SignalError, ecg
from stress_lightning.signals.metrics import beat_detection_scores


@pytest.mark.parametrize(("fs", "hr_bpm", "polarity"), [(250.0, 62.0, 1), (360.0, 95.0, 1), (250.0, 150.0, -1)])
def test_detect_r_peaks_finds_every_synthetic_beat(fs, hr_bpm, polarity):
    beats = beat_times(60.0, hr_bpm, seed=int(hr_bpm))
    x, ref = synth_ecg(beats, fs, 60.0, noise_mv=0.05)
    peaks = ecg.detect_r_peaks(polarity * x, fs)
    scores = beat_detection_scores(peaks, ref, 0.05 * fs)
    assert scores["fn"] == 0 and scores["fp"] == 0
    assert np.max(np.abs(np.sort(peaks) - ref)) <= 0.02 * fs  # within 20 ms of the true R peak


def test_detect_r_peaks_keeps_premature_beat_and_pause():
    fs = 250.0
    beats = beat_times(40.0, 70.0, jitter=0.0)
    beats[20] = beats[19] + 0.55 * (beats[20] - beats[19])  # premature beat at 55 % of the RR, then a pause
    beats = np.concatenate([beats[beats < 25], beats[beats >= 27.5]])  # a 2.5 s+ pause
    x, ref = synth_ecg(beats, fs, 40.0)
    scores = beat_detection_scores(ecg.detect_r_peaks(x, fs), ref, 0.05 * fs)
    assert scores["fn"] == 0 and scores["fp"] == 0


def test_detect_r_peaks_is_fast_on_short_windows():
    fs = 250.0
    x, _ = synth_ecg(beat_times(24.0, 75.0), fs, 24.0)
    ecg.detect_r_peaks(x, fs)
    t0 = time.perf_counter()
    for _ in range(20):
        ecg.detect_r_peaks(x, fs)
    assert (time.perf_counter() - t0) / 20 < 0.05  # the dataset pipeline calls it hundreds of times


def test_detect_r_peaks_errors():
    fs = 250.0
    x, _ = synth_ecg(beat_times(10.0, 70.0), fs, 10.0)
    x[100:200] = np.nan
    with pytest.raises(SignalError, match="NaN"):
        ecg.detect_r_peaks(x, fs)
    with pytest.raises(SignalError, match="flat line"):
        ecg.detect_r_peaks(np.zeros(2500), fs)
    with pytest.raises(SignalError, match="too short"):
        ecg.detect_r_peaks(np.random.default_rng(0).standard_normal(500), fs)
    with pytest.raises(SignalError, match="too low"):
        ecg.detect_r_peaks(np.random.default_rng(0).standard_normal(500), 30.0)


def test_rr_and_heart_rate():
    fs = 200.0
    peaks = np.array([0, 200, 400, 560, 760])
    assert np.allclose(ecg.rr_intervals_ms(peaks, fs), [1000, 1000, 800, 1000])
    assert ecg.heart_rate_from_r_peaks(peaks, fs) == pytest.approx(60000 / 950)
    t, hr = ecg.instantaneous_hr_bpm(peaks, fs)
    assert np.allclose(hr, [60, 60, 75, 60]) and np.allclose(t, [1.0, 2.0, 2.8, 3.8])
    centres, whr, valid = ecg.windowed_hr_bpm(peaks, fs, duration_s=6.0, window_s=3.0, step_s=1.0)
    assert valid.tolist() == [True, True, True, False]
    assert whr[0] == pytest.approx(60000 * 3 / 2800) and np.isnan(whr[3])
    with pytest.raises(SignalError, match="at least 2"):
        ecg.heart_rate_from_r_peaks(np.array([5]), fs)
    with pytest.raises(SignalError, match="increasing"):
        ecg.rr_intervals_ms(np.array([5, 3, 9]), fs)


def test_clean_rr_flags_and_interpolates_ectopic():
    rr = np.full(30, 800.0)
    rr[10], rr[11] = 480.0, 1120.0  # premature beat + compensatory pause
    rr[20] = 3000.0  # missed beat / artefact
    cleaned = ecg.clean_rr_intervals(rr)
    assert np.flatnonzero(cleaned.flagged).tolist() == [10, 11, 20]
    assert np.allclose(cleaned.nn_ms, 800.0)
    assert cleaned.rr_ms[10] == 480.0  # the input is kept, nothing silently dropped
    with pytest.raises(SignalError, match="in ms"):
        ecg.clean_rr_intervals(np.full(10, 0.8))


@pytest.mark.shared_data
@pytest.mark.parametrize("lead", [0, 1])
def test_mitbih_100_both_leads(shared_data, lead):
    wfdb = pytest.importorskip("wfdb")
    rec = wfdb.rdrecord(str(shared_data / "ecg/wfdb/100"))
    ann = wfdb.rdann(str(shared_data / "ecg/wfdb/100"), "atr")
    ref = np.array([s for s, sym in zip(ann.sample, ann.symbol, strict=True) if sym != "+"])
    assert ref.size == 2273
    scores = beat_detection_scores(ecg.detect_r_peaks(rec.p_signal[:, lead], rec.fs), ref, 0.15 * rec.fs)
    assert scores["sensitivity"] >= 0.995 and scores["ppv"] >= 0.995


@pytest.mark.shared_data
@pytest.mark.parametrize(("snr_db", "minimum"), [("24", 0.99), ("12", 0.99), ("06", 0.95)])
def test_noise_stress_118(shared_data, snr_db, minimum):
    x = np.loadtxt(shared_data / f"ecg/heartpy_examples/118e{snr_db}.csv")
    ref = np.loadtxt(shared_data / f"ecg/heartpy_examples/118e{snr_db}_ann.csv").astype(int)
    scores = beat_detection_scores(ecg.detect_r_peaks(x, 360.0), ref, 0.15 * 360.0)
    assert scores["sensitivity"] >= minimum and scores["ppv"] >= minimum
