import numpy as np
import pytest
import scipy.ndimage
from conftest import beat_times, synth_pulse, synth_rgb

from stress_lightning.signals import SignalError, ecg, ppg, rppg
from stress_lightning.signals.metrics import beat_detection_scores
from stress_lightning.signals.quality import fs_from_timestamps, resample_irregular


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


def _pulse_with_dicrotic_wave(
    hr_bpm, duration_s: float, fs: float, dicrotic_amp: float, dicrotic_frac: float, seed: int = 0
):
    """Finger-PPG-like pulse whose dicrotic wave peaks ``dicrotic_frac`` of a period after the systolic peak
    with ``dicrotic_amp`` of its height; ``hr_bpm`` is a function of time. Returns ``(pulse, beat_times_s)``."""
    rng = np.random.default_rng(seed)
    beats, t_s = [], 0.5
    while t_s < duration_s - 1.0:
        beats.append(t_s)
        t_s += 60.0 / hr_bpm(t_s) * (1 + 0.02 * rng.standard_normal())
    t = np.arange(int(duration_s * fs)) / fs
    x = 0.02 * rng.standard_normal(t.size)
    for b in beats:
        systolic = b + 0.15
        dicrotic = systolic + dicrotic_frac * 60.0 / hr_bpm(b)
        x += np.exp(-0.5 * ((t - systolic) / 0.06) ** 2) + dicrotic_amp * np.exp(-0.5 * ((t - dicrotic) / 0.07) ** 2)
    return x, np.array(beats)


@pytest.mark.parametrize(
    ("hr_bpm", "dicrotic_amp", "dicrotic_frac"),
    [
        (lambda t: 60.0, 0.6, 0.35),  # resting pulse with a strong, well separated dicrotic wave
        (lambda t: 95.0, 0.5, 0.5),  # dicrotic wave exactly half-way: the pulse spectrum peaks at 2x the rate
        (lambda t: 60.0 + 80.0 * t / 60.0, 0.5, 0.35),  # rate rising 60 -> 140 bpm: the refractory must follow
        (lambda t: 140.0 - 80.0 * t / 60.0, 0.5, 0.35),
    ],
    ids=["60bpm", "95bpm-halfway", "rising", "falling"],
)
def test_dicrotic_wave_is_not_a_beat(hr_bpm, dicrotic_amp, dicrotic_frac):
    fs = 100.0
    x, beats = _pulse_with_dicrotic_wave(hr_bpm, 60.0, fs, dicrotic_amp, dicrotic_frac)
    peaks = ppg.detect_pulse_peaks(x, fs)
    scores = beat_detection_scores(peaks, np.round((beats + 0.15) * fs), 0.05 * fs)
    assert scores["fp"] == 0 and scores["fn"] == 0, scores


def test_pulse_peaks_on_noisy_rppg_keep_the_heart_rate():
    """POS pulses of noisy RGB traces (~4 dB pulse SNR), 10 s at 25 fps, 55-142 bpm: the rate-based refractory
    period must neither read the pulse at half its rate (an autocorrelation octave error) nor count noise."""
    fs, errors = 25.0, []
    for seed in range(30):
        beats = beat_times(10.0, 55.0 + 3.0 * seed, seed=seed + 100)
        rgb = synth_rgb(synth_pulse(beats, fs, 10.0), fs, seed=seed + 100, noise=0.1)
        pulse = rppg.pos(rgb, fs)
        hr = ppg.heart_rate_from_peaks_bpm(ppg.detect_pulse_peaks(pulse, fs), fs)
        errors.append(abs(hr - 60.0 / np.mean(np.diff(beats))))
    assert np.mean(errors) < 1.5 and np.max(errors) < 10.0, np.round(errors, 1)


def _heartpy_bpm(x: np.ndarray, fs: float) -> float:
    heartpy = pytest.importorskip("heartpy")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # heartpy 1.2.7 warns about pkg_resources and np.trapz
        _, measures = heartpy.process(x, fs)
    return float(measures["bpm"])


@pytest.mark.shared_data
def test_pulse_rate_matches_heartpy_on_its_finger_ppg(shared_data):
    """Regression: on heartpy's data.csv the dicrotic wave was counted as a beat (102 bpm instead of 59)."""
    x = np.loadtxt(shared_data / "ppg/heartpy/data.csv")
    fs = 100.0
    hr = ppg.heart_rate_from_peaks_bpm(ppg.detect_pulse_peaks(x, fs), fs)
    assert hr == pytest.approx(_heartpy_bpm(x, fs), abs=2.0)


@pytest.mark.shared_data
def test_pulse_rate_matches_heartpy_on_timestamped_ppg(shared_data):
    pd = pytest.importorskip("pandas")
    # data2.csv: timer in ms, regular at ~117 Hz; the sensor settles after ~45 s (heartpy rejects 18 beats there).
    d2 = pd.read_csv(shared_data / "ppg/heartpy/data2.csv")
    fs2 = fs_from_timestamps(d2["timer"].to_numpy() / 1000.0)
    x2 = d2["hr"].to_numpy(dtype=np.float64)[int(45 * fs2) :]
    hr2 = ppg.heart_rate_from_peaks_bpm(ppg.detect_pulse_peaks(x2, fs2), fs2)
    assert hr2 == pytest.approx(_heartpy_bpm(x2, fs2), abs=2.0)
    # data3.csv: ~100 Hz datetimes on a ~15.6 ms clock, so up to 2 samples share a stamp and the sampling drifts
    # (+-0.2 s from a straight line over 682 s). Smooth the stamps over ~1 s (strictly increasing again) and
    # resample. A 685 s record at ~97 bpm with sensor drop-outs; the dicrotic wave sits half-way between beats.
    d3 = pd.read_csv(shared_data / "ppg/heartpy/data3.csv")
    stamps = pd.to_datetime(d3["datetime"], format="ISO8601").to_numpy().astype("datetime64[us]").astype(np.int64)
    t3_s = scipy.ndimage.uniform_filter1d((stamps - stamps[0]) / 1e6, 101, mode="nearest")
    _, x3 = resample_irregular(t3_s, d3["hr"].to_numpy(dtype=np.float64), 100.0)
    hr3 = ppg.heart_rate_from_peaks_bpm(ppg.detect_pulse_peaks(x3, 100.0), 100.0)
    assert hr3 == pytest.approx(_heartpy_bpm(x3, 100.0), abs=2.0)


@pytest.mark.shared_data
def test_ppg_against_simultaneous_ecg_v102s(shared_data):
    wfdb = pytest.importorskip("wfdb")
    rec = wfdb.rdrecord(str(shared_data / "ecg/wfdb/v102s"))
    fs = float(rec.fs)
    n = int(240 * fs)  # motion artefacts in the PPG after ~245 s
    k = rec.sig_name.index("PLETH")
    # The PLETH channel overflows its 12-bit format-212 range: it wraps from -2048 to +2047 ADC units once
    # per beat (and 17 samples at exactly -2048 are read as NaN). Unwrap over the 4096-unit range.
    pleth = rec.p_signal[:n, k].copy()
    bad = ~np.isfinite(pleth)
    pleth[bad] = -2048 / rec.adc_gain[k]
    pleth = np.unwrap(pleth, period=4096 / rec.adc_gain[k])
    ecg_ii = rec.p_signal[:n, rec.sig_name.index("II")].copy()
    gap = ~np.isfinite(ecg_ii)  # 3 single-sample gaps
    ecg_ii[gap] = np.interp(np.flatnonzero(gap), np.flatnonzero(~gap), ecg_ii[~gap])
    r = ecg.detect_r_peaks(ecg_ii, fs)
    p = ppg.detect_pulse_peaks(pleth, fs)
    assert ppg.heart_rate_from_peaks_bpm(p, fs) == pytest.approx(ecg.heart_rate_from_r_peaks(r, fs), abs=1.0)
    # Beat by beat: each R-peak is followed by its pulse after a near-constant transit time.
    ptt = np.median(p[np.searchsorted(p, r[:-1])] - r[:-1])
    scores = beat_detection_scores(p, r + ptt, 0.15 * fs)
    assert scores["sensitivity"] >= 0.95 and scores["ppv"] >= 0.95, scores
