import warnings

import numpy as np
import pytest
import scipy.signal

from stress_lightning.signals import SignalError, hrv


def test_time_domain_known_values():
    rr = np.array([800.0, 900.0, 800.0, 900.0, 800.0])
    td = hrv.time_domain(rr)
    assert td["mean_nn_ms"] == pytest.approx(840.0)
    assert td["rmssd_ms"] == pytest.approx(100.0)
    assert td["sdnn_ms"] == pytest.approx(np.std(rr, ddof=1))
    assert td["pnn50"] == pytest.approx(100.0) and td["nn50"] == 4
    p = hrv.poincare(rr)
    assert p["sd1_ms"] == pytest.approx(np.std(np.diff(rr), ddof=1) / np.sqrt(2))


def test_short_windows_have_a_defined_minimum():
    hrv.time_domain(np.full(hrv.MIN_INTERVALS_TIME_DOMAIN, 800.0))
    with pytest.raises(SignalError, match="too few RR intervals"):
        hrv.time_domain(np.full(hrv.MIN_INTERVALS_TIME_DOMAIN - 1, 800.0))
    with pytest.raises(SignalError, match="seconds given"):
        hrv.time_domain(np.full(10, 0.8))
    with pytest.raises(SignalError, match="NaN"):
        hrv.time_domain(np.array([800.0, np.nan, 810.0, 790.0, 800.0]))
    rng = np.random.default_rng(0)
    with pytest.raises(SignalError, match="at least 20 s"):
        hrv.frequency_domain(800 + 20 * rng.standard_normal(20))  # 16 s
    fd = hrv.frequency_domain(800 + 20 * rng.standard_normal(40))  # 32 s
    assert fd["short_window"] and fd["window_s"] == pytest.approx(32.0, abs=2.0)
    summary = hrv.hrv_summary(np.full(8, 800.0) + np.arange(8))
    assert "rmssd_ms" in summary and "frequency_error" in summary


@pytest.mark.parametrize("method", ["lomb", "welch"])
@pytest.mark.parametrize(("f_mod_hz", "dominant"), [(0.1, "lf"), (0.25, "hf")])
def test_frequency_domain_puts_power_in_the_right_band(method, f_mod_hz, dominant):
    rr, t = [], 0.0
    while t < 300.0:
        rr.append(850.0 + 40.0 * np.sin(2 * np.pi * f_mod_hz * t))
        t += rr[-1] / 1000.0
    fd = hrv.frequency_domain(np.array(rr), method=method)
    ratio = fd["lf_hf_ratio"]
    assert (ratio > 10) if dominant == "lf" else (ratio < 0.1)
    # a sinusoid of amplitude 40 ms carries 800 ms^2 of variance
    assert fd[f"{dominant}_ms2"] == pytest.approx(800.0, rel=0.15)
    assert fd["lf_nu"] + fd["hf_nu"] == pytest.approx(100.0)


def test_lomb_matches_scipy():
    rr = 800 + 30 * np.random.default_rng(1).standard_normal(200)
    freqs, psd = hrv.psd_lomb(rr)
    t = np.cumsum(rr) / 1000.0
    ref = scipy.signal.lombscargle(t, rr - rr.mean(), 2 * np.pi * freqs, precenter=False)
    assert np.allclose(psd, ref * 2 * (t[-1] - t[0]) / rr.size, rtol=1e-8, atol=1e-9 * ref.max())


@pytest.mark.shared_data
@pytest.mark.parametrize("name", ["Short", "Long"])
def test_against_heartpy_on_pyhrv_series(shared_data, name):
    heartpy = pytest.importorskip("heartpy")
    rr = np.load(shared_data / f"hrv/pyhrv/SampleNNISeries{name}.npy").astype(np.float64)
    ours = hrv.time_domain(rr)
    diff = np.abs(np.diff(rr))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, ref = heartpy.analysis.calc_ts_measures(rr, diff, diff**2, measures={}, working_data={})
        _, ref_fd = heartpy.analysis.calc_fd_measures(
            method="welch", welch_wsize=240, measures={}, working_data={"RR_list_cor": rr}
        )
    assert ours["rmssd_ms"] == pytest.approx(ref["rmssd"], rel=0.01)
    assert ours["sdnn_ms"] == pytest.approx(ref["sdnn"], rel=0.01)  # ddof 1 vs heartpy's ddof 0
    assert ours["pnn50"] == pytest.approx(100 * ref["pnn50"], rel=0.01)
    welch = hrv.frequency_domain(rr, method="welch")
    assert welch["lf_hf_ratio"] == pytest.approx(ref_fd["lf/hf"], rel=0.10)
