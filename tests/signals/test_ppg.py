import numpy as np
import pytest
from conftest import beat_times, synth_pulse

from stress_lightning.signals import SignalError, ecg, ppg
from stress_lightning.signals.metrics import beat_detection_scores


def test_pulse_peaks_heart_rate_and_snr_on_synthetic_ppg():
    fs = 100.0
    beats = beat_times(60.0, 80.0, seed=3)
    x = synth_pulse(beats, fs, 60.0) + 0.02 * np.random.default_rng(0).standard_normal(6000)
    peaks = ppg.detect_pulse_peaks(x, fs)
    scores = beat_detection_scores(peaks, np.round((beats + 0.25) * fs), 0.05 * fs)
    assert scores["fn"] <= 1 and scores["fp"] == 0  # the last beat's pulse may fall off the end
    true_hr = 60.0 / np.mean(np.diff(beats))
    assert ppg.heart_rate_from_peaks_bpm(peaks, fs) == pytest.approx(true_hr, abs=1.0)
    assert ppg.heart_rate_spectrum_bpm(x, fs) == pytest.approx(true_hr, abs=2.0)
    noise = np.random.default_rng(1).standard_normal(6000)
    assert ppg.pulse_snr_db(x, fs) > 3.0 > ppg.pulse_snr_db(noise, fs)


def test_ppg_errors():
    with pytest.raises(SignalError, match="flat"):
        ppg.detect_pulse_peaks(np.full(1000, 3.0), 100.0)
    with pytest.raises(SignalError, match="at least 2"):
        ppg.pulse_intervals_ms(np.array([10]), 100.0)
    with pytest.raises(SignalError, match="too short"):
        ppg.heart_rate_spectrum_bpm(np.random.default_rng(0).standard_normal(200), 100.0)


@pytest.mark.shared_data
def test_ppg_against_simultaneous_ecg_a103l(shared_data):
    wfdb = pytest.importorskip("wfdb")
    rec = wfdb.rdrecord(str(shared_data / "ecg/wfdb/a103l"))
    fs = float(rec.fs)
    n = int(150 * fs)  # the finger PPG is clean for the first 150 s; motion artefacts follow
    ecg_ii = rec.p_signal[:n, rec.sig_name.index("II")]
    pleth = rec.p_signal[:n, rec.sig_name.index("PLETH")]
    hr_ecg = ecg.heart_rate_from_r_peaks(ecg.detect_r_peaks(ecg_ii, fs), fs)
    hr_ppg = ppg.heart_rate_from_peaks_bpm(ppg.detect_pulse_peaks(pleth, fs), fs)
    assert hr_ppg == pytest.approx(hr_ecg, abs=1.0)
    assert ppg.heart_rate_spectrum_bpm(pleth, fs) == pytest.approx(hr_ecg, abs=1.0)
