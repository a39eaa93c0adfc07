"""Property-based tests (hypothesis): no input crashes the signal functions or the corpus readers' parsers with
anything but the package's own errors (`SignalError`, `CorpusError`).

Each property calls a public function with generated input and accepts two outcomes only: a well-formed result
(finite numbers, arrays of the documented shape, NaN only where the function documents NaN for "no estimate") or
the package's own error with a message. Anything else (an `IndexError`, a `ZeroDivisionError`, numpy's
`LinAlgError`, a scipy `ValueError` from deep inside, or a `RuntimeWarning`: the mark of a silent NaN/inf) fails.

A reader's `CorpusError` must also name a file or folder of the example's input. Every crash these properties
found is kept as an explicit `@example` on the property that found it (the regression test); a few representative
signal cases go into the bad-input table (docs/BAD_INPUTS.md, area "signals").

Examples are derandomised (the same on every run and machine, so CI is reproducible) and no example database is
written. To hunt for new failures locally, `STRESS_PROPERTY_SEARCH=20 pytest tests/test_properties.py` draws
random examples, 20 times as many (`--hypothesis-show-statistics` shows how many got past the input checks).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyedflib
import pytest
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from hypothesis.extra import numpy as hnp

from stress_lightning.data.corpora.affectnet import AFFECTNET_COLUMNS, AffectNetCorpus
from stress_lightning.data.corpora.ckplus import CKPLUS_LABELS, CkPlusCorpus
from stress_lightning.data.corpora.common import read_expression_events
from stress_lightning.data.corpora.cremad import CremaDCorpus, parse_cremad_name
from stress_lightning.data.corpora.fer2013 import Fer2013Corpus, decode_pixel_rows
from stress_lightning.data.corpora.mahnob_hci import EcgLead, MahnobHciCorpus, bdf_sync, read_ecg
from stress_lightning.data.corpora.manifest import (
    ManifestCorpus,
    read_cardiac_file,
    read_frame_times,
    read_stress_segments,
)
from stress_lightning.data.corpora.pure import read_pure_json
from stress_lightning.data.corpora.rafdb import RafDbCorpus
from stress_lightning.data.corpora.ravdess import parse_ravdess_name
from stress_lightning.data.corpora.swell_kw import SwellKwCorpus, parse_timestamps
from stress_lightning.data.corpora.ubfc_phys import read_bvp, read_info
from stress_lightning.data.corpora.ubfc_rppg import read_ubfc_ground_truth
from stress_lightning.data.errors import CorpusError
from stress_lightning.data.faces import read_face_boxes
from stress_lightning.data.items import CardiacSignal
from stress_lightning.data.labels import cardiac_truth
from stress_lightning.data.physiology import load_pulse_source
from stress_lightning.data.taxonomy import (
    BASIC_EXPRESSIONS,
    EXPRESSION_SYNONYMS,
    STRESS_LEVELS,
    LabelMap,
    canonical_expression,
    canonical_stress,
)
from stress_lightning.signals import ecg, hrv, metrics, ppg, quality, rppg, spectrum
from stress_lightning.signals.errors import SignalError

# -- settings -------------------------------------------------------------------------------------------------
# With the example database off, hypothesis still caches Unicode tables and the constants of the code under test;
# outside the repository, so a test run leaves no .hypothesis folder in the checkout.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "stress-lightning-hypothesis")
_SEARCH = float(os.environ.get("STRESS_PROPERTY_SEARCH", "0") or 0)
settings.register_profile(
    "stress_lightning.properties",
    derandomize=not _SEARCH,
    database=None,  # no .hypothesis folder in the repository
    deadline=None,  # filter and ICA timings vary on a shared CI machine
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    print_blob=bool(_SEARCH),
)
_PROFILE = settings.get_profile("stress_lightning.properties")


def budget(n: int) -> settings:
    """Settings with `n` examples (scaled up when searching)."""
    return settings(_PROFILE, max_examples=max(1, int(n * (_SEARCH or 1))))


# -- outcome checks -------------------------------------------------------------------------------------------
def outcome(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`fn(*args, **kwargs)`, or the `SignalError` it raised; any other exception, and any RuntimeWarning (a NaN
    or inf computed on the way), propagates and fails the example."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        try:
            result = fn(*args, **kwargs)
        except SignalError as err:
            assert str(err).strip(), f"{fn.__name__} raised a SignalError without a message"
            # `pytest --hypothesis-show-statistics` shows how many examples got past the input checks.
            event(f"{fn.__name__}: refused")
            return err
    event(f"{fn.__name__}: computed")
    return result


def failed(result: Any) -> bool:
    return isinstance(result, SignalError)


def assert_finite_number(value: Any, what: str) -> None:
    assert isinstance(value, int | float | np.floating | np.integer), f"{what}: {value!r} is not a number"
    assert math.isfinite(float(value)), f"{what}: {value!r} is not finite"


def assert_finite_dict(result: dict, what: str, allow_inf: tuple[str, ...] = ()) -> None:
    for key, value in result.items():
        if isinstance(value, bool | str):
            continue
        if key in allow_inf and value == float("inf"):
            continue
        assert_finite_number(value, f"{what}[{key!r}]")


def assert_indices(peaks: Any, n: int, what: str) -> None:
    """Sorted, strictly increasing integer sample indices inside [0, n)."""
    assert isinstance(peaks, np.ndarray) and peaks.ndim == 1, f"{what}: not a 1-D array"
    assert np.issubdtype(peaks.dtype, np.integer), f"{what}: dtype {peaks.dtype} is not integer"
    if peaks.size:
        assert peaks[0] >= 0 and peaks[-1] < n, f"{what}: index outside [0, {n})"
        assert np.all(np.diff(peaks) > 0), f"{what}: not strictly increasing"


# -- strategies: sampling rates, signals, interval series -------------------------------------------------------
NUMERIC_DTYPES = (np.float64, np.float32, np.int16, np.int32, np.int64, np.uint8)
BAD_RATES = (0.0, -1.0, -250.0, math.nan, math.inf, -math.inf, 5e-324, 1e-300, 1e300, None, "fast", "", 3j)
PLAUSIBLE_RATES = (250.0, 100.0, 360.0, 128.0, 64.0, 40.0, 30.0, 25.0, 8.0, 256.0)
VIDEO_RATES = (30.0, 25.0, 60.0, 30.0, 8.0, 7.0)
ECG_RATES = (250.0, 360.0, 128.0, 500.0, 100.0, 40.0)
PULSE_RATES = (64.0, 100.0, 30.0, 250.0, 25.0, 8.0)


def rates(plausible: tuple[float, ...] = PLAUSIBLE_RATES) -> st.SearchStrategy:
    """Sampling rates: mostly plausible ones, and 0, negative, NaN, inf, tiny, huge, or no number at all."""
    return st.one_of(
        st.sampled_from(plausible),
        st.sampled_from(plausible),
        st.sampled_from(plausible),
        st.sampled_from(plausible),
        st.floats(1.0, 500.0),
        st.sampled_from(BAD_RATES),
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(-10, 1000),
    )


def _as_rate(fs: Any) -> float:
    try:
        return float(fs)
    except (TypeError, ValueError):
        return math.nan


# Strategies list the typical, valid choice first: hypothesis draws the first (simplest) choice often, and most
# examples should get past the input checks to the computation.
# A signal's length in multiples of the shortest duration a function accepts.
DURATION_FACTORS = (2.0, 1.0, 1.5, 3.0, 4.0, 2.0, 1.2, 0.99, 0.5, 0.0)
# Values a signal is scaled by: tiny, huge, negative (polarity), and plain.
SCALES = (1.0, 1.0, 1.0, -1.0, 1e-300, 1e-12, 1e-6, 1e-3, 1e3, 1e6, 1e30, 1e150, 1e300)
OFFSETS = (0.0, 0.0, 1.0, -1e6, 1e12)
SHAPES = ("beats", "noise", "sine", "beats", "constant", "spike", "steps", "ramp")


def _beats_wave(n: int, rate_per_sample: float, width: float, rng: np.random.Generator) -> np.ndarray:
    """Narrow bumps every 1 / rate_per_sample samples (ECG- or pulse-like), with a little jitter."""
    t = np.arange(n, dtype=np.float64)
    period = 1.0 / max(rate_per_sample, 1e-6)
    x = np.zeros(n)
    for centre in np.arange(period / 2, n, period) + rng.normal(0.0, 0.02 * period, 1):
        x += np.exp(-0.5 * ((t - centre) / width) ** 2)
    return x


@st.composite
def signals(draw: st.DrawFn, max_size: int = 1500, n: int | None = None) -> np.ndarray:
    """1-D signals of any length (0, 1, 2, short, a few seconds; `n` when given): noise, sines, beat trains, flat
    lines, spikes, steps, ramps; scaled by tiny to huge factors, offset, with NaN/inf injected, in float and
    integer dtypes. Short raw arrays with arbitrary elements (any float, NaN, inf, subnormals) come in too."""
    if draw(st.integers(0, 9)) == 9:
        dtype = draw(st.sampled_from([np.float64, np.float32]))
        return draw(hnp.arrays(dtype, st.integers(0, 64), elements=hnp.from_dtype(np.dtype(dtype))))
    if n is None:
        n = draw(st.one_of(st.just(max_size), st.integers(0, max_size), st.sampled_from([0, 1, 2, 3, 10])))
    shape = draw(st.sampled_from(SHAPES))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    t = np.arange(n, dtype=np.float64)
    if shape == "noise":
        x = rng.standard_normal(n)
    elif shape == "sine":
        x = np.sin(2 * np.pi * draw(st.floats(0.0, 0.5)) * t + rng.uniform(0, 2 * np.pi))
    elif shape == "beats":
        x = _beats_wave(n, draw(st.floats(0.001, 0.2)), draw(st.floats(0.5, 20.0)), rng)
        x += draw(st.sampled_from([0.0, 0.01, 0.3])) * rng.standard_normal(n)
    elif shape == "constant":
        x = np.full(n, draw(st.sampled_from([0.0, 1.0, -3.5, 1e9])))
    elif shape == "spike":
        x = np.zeros(n)
        if n:
            x[draw(st.integers(0, n - 1))] = 1.0
    elif shape == "steps":
        x = np.repeat(rng.integers(-3, 4, size=max(1, n // 50 + 1)).astype(np.float64), 50)[:n]
    else:
        x = t / max(n, 1)
    with np.errstate(over="ignore", invalid="ignore"):
        x = x * draw(st.sampled_from(SCALES)) + draw(st.sampled_from(OFFSETS))
    if n and draw(st.integers(0, 5)) == 5:
        value = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
        start = draw(st.integers(0, n - 1))
        x[start : start + draw(st.integers(1, max(1, n // 4)))] = value
    dtype = draw(st.sampled_from(NUMERIC_DTYPES))
    if np.issubdtype(dtype, np.integer):
        # Bounds exactly representable as float64, so the cast cannot overflow.
        lo, hi = max(np.iinfo(dtype).min, -(2**53)), min(np.iinfo(dtype).max, 2**53)
        x = np.clip(np.nan_to_num(x, nan=0.0, posinf=hi, neginf=lo), lo, hi).round().astype(dtype)
    else:
        with np.errstate(over="ignore"):
            x = x.astype(dtype)
    return x


@st.composite
def recordings(
    draw: st.DrawFn, min_duration_s: float = 3.0, max_size: int = 1500, plausible: tuple[float, ...] = PLAUSIBLE_RATES
) -> tuple[np.ndarray, Any]:
    """`(signal, fs)`: a rate from `rates` and a signal whose length at that rate is mostly long enough for a
    function that needs `min_duration_s` (capped at `max_size` samples)."""
    fs = draw(rates(plausible))
    rate = _as_rate(fs)
    n = None
    if 0 < rate <= 1e4:  # NaN fails too
        n = min(max_size, round(draw(st.sampled_from(DURATION_FACTORS)) * min_duration_s * rate))
    return draw(signals(max_size=max_size, n=n)), fs


@st.composite
def rr_series(draw: st.DrawFn, max_size: int = 400) -> np.ndarray:
    """RR/NN intervals: plausible ms series and broken ones (zeros, negatives, NaN/inf, one interval, seconds
    instead of ms, unsorted, huge)."""
    kind = draw(st.sampled_from(["plausible", "plausible", "plausible", "constant", "raw", "seconds", "broken"]))
    if kind == "raw":
        return draw(hnp.arrays(np.float64, st.integers(0, 40), elements=st.floats(allow_nan=True, allow_infinity=True)))
    n = draw(st.one_of(st.integers(20, 120), st.integers(0, max_size), st.sampled_from([0, 1, 2, 3, 4, 5])))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    mean = draw(st.floats(300.0, 1800.0))
    if kind == "constant":
        rr = np.full(n, mean)
    else:
        beat = np.arange(n)
        rr = mean * (1 + 0.05 * np.sin(2 * np.pi * beat / draw(st.floats(3.0, 30.0)))) + rng.normal(0, 20, n)
        rr = np.abs(rr) + 1.0
    if kind == "seconds":
        rr = rr / 1000.0
    if kind == "broken" and n:
        i = draw(st.integers(0, n - 1))
        rr[i] = draw(st.sampled_from([0.0, -800.0, math.nan, math.inf, 1e300, 1e-300, 30000.0, 5.0]))
        if draw(st.booleans()):
            rng.shuffle(rr)
    dtype = draw(st.sampled_from([np.float64, np.float64, np.float32, np.int64]))
    if dtype is np.int64 and not np.all(np.abs(rr) < 2**53):  # NaN fails too
        dtype = np.float64
    with np.errstate(over="ignore"):
        return rr.astype(dtype)


@st.composite
def rgb_recordings(draw: st.DrawFn, max_frames: int = 360) -> tuple[np.ndarray, Any]:
    """`(rgb, fs)`: [T, 3] RGB traces of a skin ROI with a pulse, mostly long enough at their frame rate, and
    broken ones (wrong shape, NaN, zero or negative means, a constant or identical channels, huge or tiny values)."""
    fs = draw(st.one_of(*[st.sampled_from(VIDEO_RATES)] * 3, st.sampled_from(BAD_RATES)))
    kind = draw(st.sampled_from(["skin", "skin", "skin", "skin", "raw", "shape", "constant_channel", "identical"]))
    if kind == "raw":
        elements = st.floats(allow_nan=True, allow_infinity=True)
        return draw(hnp.arrays(np.float64, st.tuples(st.integers(0, 40), st.just(3)), elements=elements)), fs
    if kind == "shape":
        return np.ones(draw(st.sampled_from([(0,), (10,), (10, 2), (10, 4), (3, 10), (2, 10, 3), (0, 3)]))), fs
    rate = _as_rate(fs)
    if 0 < rate <= 1e4:
        n = min(max_frames, round(draw(st.sampled_from(DURATION_FACTORS)) * rppg.MIN_RPPG_DURATION_S * rate))
    else:
        n = draw(st.integers(0, max_frames))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    t = np.arange(n) / 30.0
    pulse = np.sin(2 * np.pi * draw(st.floats(0.7, 3.0)) * t)
    dc = np.array([170.0, 115.0, 90.0])
    x = dc * (1 - 0.003 * np.array([0.33, 0.77, 0.53]) * pulse[:, None]) + rng.normal(0, draw(st.floats(0, 2)), (n, 3))
    if kind == "constant_channel":
        x[:, draw(st.integers(0, 2))] = draw(st.sampled_from([0.0, 1.0, 255.0]))
    elif kind == "identical":
        x[:, 1] = x[:, 0]
        x[:, 2] = x[:, 0]
    with np.errstate(over="ignore"):
        x = x * draw(st.sampled_from([1.0, 1.0, 1.0, -1.0, 1e-300, 1e-6, 1e6, 1e150, 1e300]))
    if n and draw(st.integers(0, 6)) == 6:
        x[draw(st.integers(0, n - 1)), draw(st.integers(0, 2))] = draw(st.sampled_from([math.nan, math.inf]))
    if draw(st.booleans()) and np.all(np.isfinite(x)):
        x = np.clip(x, 0, 255).round().astype(np.uint8)
    return x, fs


def _plausible_peaks(seed: int) -> np.ndarray:
    """Beat sample indices at 250 Hz, 40-180 bpm, a few dozen beats."""
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.integers(80, 380, size=rng.integers(2, 60)))


peak_arrays = st.one_of(
    st.integers(0, 2**32 - 1).map(_plausible_peaks),
    st.integers(0, 2**32 - 1).map(_plausible_peaks),
    hnp.arrays(np.int64, st.integers(0, 50), elements=st.integers(-5, 10**6)),
    hnp.arrays(np.float64, st.integers(0, 50), elements=st.floats(allow_nan=True, allow_infinity=True)),
    st.integers(0, 50).map(lambda n: np.sort(np.random.default_rng(n).choice(10**5, n, replace=False))),
    st.sampled_from([np.zeros((2, 3)), np.array([5]), np.array([3, 3]), np.array([9, 2]), np.array([])]),
)


# -- inputs that crashed before the fixes (found by the properties below, kept as explicit examples) -----------
_NOISE = np.random.default_rng(0).standard_normal(1500)
# A lone spike on a tiny sine: the ECG envelope's running sums rounded below zero (NaN from sqrt).
_SPIKE = np.where(np.arange(1500) == 700, 1.0, 1e-8 * np.sin(np.arange(1500)))
_IMPULSE = np.r_[1.0, np.zeros(1499)]  # a pulse that dies out: dividing by its ~0 local amplitude overflowed
_NAN_RUN = np.r_[_NOISE[:5], [math.nan] * 6, _NOISE[:13]]
_SKIN = np.array([170.0, 115.0, 90.0]) * (
    1 - 0.003 * np.array([0.33, 0.77, 0.53]) * np.sin(2 * np.pi * 1.2 * np.arange(360) / 30.0)[:, None]
)
_RR_ONE_HUGE = np.array([1e300, 311.3, 300.8, 303.1])


# -- signals: quality and spectrum -----------------------------------------------------------------------------
@budget(120)
@given(fs=rates())
def test_check_fs_accepts_only_finite_positive_rates(fs):
    result = outcome(quality.check_fs, fs)
    if not failed(result):
        assert_finite_number(result, "check_fs")
        assert result > 0


@budget(120)
@given(rec=recordings(min_duration_s=1.0), min_duration_s=st.sampled_from([0.0, 1.0, 3.0]))
@example(rec=(np.array([]), 8.0), min_duration_s=0.0)
def test_check_signal_returns_a_clean_float_array_or_refuses(rec, min_duration_s):
    x, fs = rec
    result = outcome(quality.check_signal, x, fs, min_duration_s=min_duration_s)
    if not failed(result):
        assert result.dtype == np.float64 and result.shape == x.shape
        assert np.all(np.isfinite(result)) and np.ptp(result) > 0


@budget(120)
@given(rec=recordings(min_duration_s=1.0))
@example(rec=(np.r_[math.inf, math.inf, _NOISE[:6]], 8.0))
def test_signal_quality_reports_fractions(rec):
    x, fs = rec
    result = outcome(quality.signal_quality, x, fs)
    if not failed(result):
        for key in ("nan_fraction", "flat_fraction", "clipped_fraction"):
            assert 0.0 <= result[key] <= 1.0, key
        assert_finite_number(result["longest_nan_run_s"], "longest_nan_run_s")
        assert result["ok"] == (not result["problems"])


timestamps = st.one_of(
    hnp.arrays(np.float64, st.integers(0, 30), elements=st.floats(allow_nan=True, allow_infinity=True)),
    st.tuples(st.integers(0, 300), st.sampled_from([1e-300, 1e-9, 0.004, 0.04, 1.0, 1e200]), st.floats(0, 0.2)).map(
        lambda a: np.cumsum(np.full(a[0], a[1]) * (1 + a[2] * np.random.default_rng(a[0]).standard_normal(a[0])))
    ),
)


@budget(120)
@given(t=timestamps, max_jitter=st.sampled_from([0.05, 0.0, 1.0, math.nan]))
@example(t=np.array([1e308, -1e308, 0.0]), max_jitter=0.05)
def test_fs_from_timestamps(t, max_jitter):
    result = outcome(quality.fs_from_timestamps, t, max_jitter=max_jitter)
    if not failed(result):
        assert_finite_number(result, "fs")
        assert result > 0


@budget(120)
@given(t=timestamps, fs_out=rates(), extra=st.sampled_from([0, 0, 0, 1, -1]))
@example(t=np.array([0.0, 1e12]), fs_out=250.0, extra=0)  # ns stamps read as s: a 2 PB grid
@example(t=np.array([]), fs_out=250.0, extra=0)
@example(t=np.array([0.0, math.nan]), fs_out=250.0, extra=0)
def test_resample_irregular(t, fs_out, extra):
    x = np.sin(np.arange(max(0, t.size + extra)))  # mostly one value per timestamp
    result = outcome(quality.resample_irregular, t, x, fs_out)
    if not failed(result):
        grid, values = result
        assert grid.shape == values.shape and grid.ndim == 1
        assert np.all(np.isfinite(grid)) and np.all(np.isfinite(values))


@budget(120)
@given(x=signals(max_size=400), fs_in=rates(), fs_out=rates())
@example(x=_NOISE[:10], fs_in=1e-300, fs_out=1e300)
@example(x=np.full(5, 1.56e308), fs_in=250.0, fs_out=100.0)
def test_resample(x, fs_in, fs_out):
    result = outcome(quality.resample, x, fs_in, fs_out)
    if not failed(result):
        assert result.ndim == 1 and np.all(np.isfinite(result))


@budget(80)
@given(
    n_a=st.integers(-5, 10**6), fs_a=rates(), n_b=st.integers(-5, 10**6), fs_b=rates(), tol=st.floats(allow_nan=True)
)
def test_check_same_duration(n_a, fs_a, n_b, fs_b, tol):
    outcome(quality.check_same_duration, n_a, fs_a, n_b, fs_b, tolerance_s=tol)


@budget(120)
@given(rec=recordings(min_duration_s=spectrum.MIN_SPECTRAL_WINDOW_S, plausible=PULSE_RATES))
@example(rec=(_NOISE, 0.015625))
@example(rec=(_NOISE * 1e299, 8.0))
def test_pulse_spectrum_and_spectral_heart_rate(rec):
    x, fs = rec
    result = outcome(spectrum.pulse_spectrum, x, fs)
    if not failed(result):
        freqs, power = result
        assert freqs.shape == power.shape and np.all(np.isfinite(power)) and np.all(power >= 0)
    hr = outcome(spectrum.heart_rate_spectral_bpm, x, fs)
    if not failed(hr):
        assert_finite_number(hr, "heart rate")
        assert 60 * spectrum.HR_BAND_HZ[0] - 1 <= hr <= 60 * spectrum.HR_BAND_HZ[1] + 1


spectra = st.integers(0, 200).flatmap(
    lambda n: st.tuples(
        st.one_of(
            st.just(np.linspace(0.0, 5.0, n)),
            hnp.arrays(np.float64, n, elements=st.floats(allow_nan=True, allow_infinity=True)),
        ),
        st.one_of(
            hnp.arrays(np.float64, n, elements=st.floats(0, 1e6)),
            hnp.arrays(np.float64, st.integers(0, 200), elements=st.floats(allow_nan=True, allow_infinity=True)),
        ),
    )
)


@budget(120)
@given(spec=spectra, f0=st.floats(allow_nan=True, allow_infinity=True))
@example(spec=(np.arange(6.0), np.array([])), f0=0.0)
@example(spec=(np.linspace(0.0, 5.0, 4), np.full(4, 8.98846567e307)), f0=0.0)
@example(spec=(np.array([0.0, 5.0]), np.array([-math.inf, math.inf])), f0=0.0)
def test_spectral_peak_and_band_snr(spec, f0):
    freqs, power = spec
    peak = outcome(spectrum.spectral_peak_hz, freqs, power)
    if not failed(peak):
        assert_finite_number(peak, "spectral peak")
    snr = outcome(spectrum.band_snr_db, freqs, power, f0)
    if not failed(snr):
        assert_finite_number(snr, "band SNR")


# -- signals: ECG ----------------------------------------------------------------------------------------------
band_edges = st.one_of(
    st.just((0.5, 40.0)),
    st.tuples(st.floats(allow_nan=True, allow_infinity=True), st.floats(allow_nan=True, allow_infinity=True)),
)


@budget(120)
@given(rec=recordings(min_duration_s=1.0, plausible=ECG_RATES), band_hz=band_edges)
@example(rec=(_NOISE[:10], 8.0), band_hz=(0.5, 40.0))
@example(rec=(_NOISE, 8.0), band_hz=(6.4e-279, 1.0))
@example(rec=(_NOISE, "250"), band_hz=(0.5, 40.0))
def test_bandpass_ecg(rec, band_hz):
    x, fs = rec
    result = outcome(ecg.bandpass_ecg, x, fs, band_hz)
    if not failed(result):
        assert result.shape == x.shape and np.all(np.isfinite(result))


@budget(160)
@given(rec=recordings(min_duration_s=ecg.MIN_ECG_DURATION_S, plausible=ECG_RATES))
@example(rec=(_NOISE * 1e299, 40.0))
@example(rec=(_SPIKE, 250.0))
def test_detect_r_peaks(rec):
    x, fs = rec
    result = outcome(ecg.detect_r_peaks, x, fs)
    if not failed(result):
        assert_indices(result, x.size, "R-peaks")
        assert np.all(np.diff(result) >= ecg.MIN_RR_S * float(fs) - 1)


@budget(160)
@given(peaks=peak_arrays, fs=rates())
@example(peaks=np.arange(0, 4100, 100), fs=1.7e308)
def test_rr_and_heart_rate_from_r_peaks(peaks, fs):
    rr = outcome(ecg.rr_intervals_ms, peaks, fs)
    if not failed(rr):
        assert rr.shape == (peaks.size - 1,) and np.all(np.isfinite(rr)) and np.all(rr > 0)
    hr = outcome(ecg.heart_rate_from_r_peaks, peaks, fs)
    if not failed(hr):
        assert_finite_number(hr, "heart rate")
        assert hr > 0
    inst = outcome(ecg.instantaneous_hr_bpm, peaks, fs)
    if not failed(inst):
        times, rates_bpm = inst
        assert times.shape == rates_bpm.shape and np.all(np.isfinite(rates_bpm)) and np.all(rates_bpm > 0)


@budget(120)
@given(
    peaks=peak_arrays,
    fs=rates(),
    duration_s=st.one_of(st.floats(10, 120), st.floats(10, 120), st.floats(allow_nan=True, allow_infinity=True)),
    window_s=st.one_of(st.just(10.0), st.floats(0.1, 100), st.sampled_from([1e-300, 0.0, -1.0, math.nan, math.inf])),
    step_s=st.one_of(st.just(1.0), st.floats(0.1, 100), st.sampled_from([1e-300, 0.0, -1.0, math.nan, math.inf])),
)
@example(peaks=np.array([26161, 83756]), fs=8.0, duration_s=1.0, window_s=1.0, step_s=1e-300)
@example(peaks=np.array([100, 300, 500]), fs=250.0, duration_s=math.inf, window_s=10.0, step_s=1.0)
@example(peaks=np.array([-1.79e308, 9.98e291]), fs=250.0, duration_s=10.0, window_s=10.0, step_s=1.0)
def test_windowed_hr(peaks, fs, duration_s, window_s, step_s):
    result = outcome(ecg.windowed_hr_bpm, peaks, fs, duration_s, window_s=window_s, step_s=step_s)
    if not failed(result):
        centres, hr, valid = result
        assert centres.shape == hr.shape == valid.shape
        # NaN is the documented "no estimate" of a window with fewer than two intervals.
        assert np.all(np.isnan(hr[~valid])) and np.all(np.isfinite(hr[valid])) and np.all(hr[valid] > 0)


@budget(160)
@given(
    rr=rr_series(),
    max_deviation=st.one_of(st.just(0.2), st.floats(allow_nan=True, allow_infinity=True)),
    window=st.one_of(st.just(11), st.integers(-3, 1000)),
    min_rr_ms=st.one_of(st.just(250.0), st.floats(allow_nan=True, allow_infinity=True)),
    max_rr_ms=st.one_of(st.just(2000.0), st.floats(allow_nan=True, allow_infinity=True)),
)
@example(
    rr=np.array([0, 0, 2001, 2001, 2001, 2001, 2001, 2001.0]),
    max_deviation=0.2,
    window=11,
    min_rr_ms=0.0,
    max_rr_ms=2000.0,
)
@example(rr=np.full(4, -8.98846567e307), max_deviation=0.2, window=11, min_rr_ms=-8.98846567e307, max_rr_ms=2000.0)
@example(rr=np.full(3, 250.0), max_deviation=7.19e305, window=11, min_rr_ms=250.0, max_rr_ms=2000.0)
def test_clean_rr_intervals(rr, max_deviation, window, min_rr_ms, max_rr_ms):
    result = outcome(ecg.clean_rr_intervals, rr, max_deviation, window, min_rr_ms, max_rr_ms)
    if not failed(result):
        assert result.nn_ms.shape == result.rr_ms.shape == result.flagged.shape == rr.shape
        assert np.all(np.isfinite(result.nn_ms))
        assert 0.0 <= result.flagged_fraction < 1.0


# -- signals: HRV ----------------------------------------------------------------------------------------------
@budget(200)
@given(rr=rr_series())
@example(rr=_RR_ONE_HUGE)
@example(rr=np.full(4, 8.98846567e307))
def test_time_domain_and_poincare(rr):
    td = outcome(hrv.time_domain, rr)
    if not failed(td):
        assert_finite_dict(td, "time_domain")
        assert td["sdnn_ms"] >= 0 and td["rmssd_ms"] >= 0 and 0 <= td["pnn50"] <= 100
        assert td["n_intervals"] == rr.size
    pc = outcome(hrv.poincare, rr)
    if not failed(pc):
        # A series without spread along the identity line has SD2 = 0: the ratio is documented as inf.
        assert_finite_dict(pc, "poincare", allow_inf=("sd1_sd2_ratio",))


@budget(120)
@given(rr=rr_series(), method=st.sampled_from(["lomb", "welch", "fft", ""]))
@example(rr=_RR_ONE_HUGE, method="welch")
@example(rr=_RR_ONE_HUGE, method="lomb")
def test_frequency_domain_and_summary(rr, method):
    fd = outcome(hrv.frequency_domain, rr, method=method)
    if not failed(fd):
        assert_finite_dict(fd, "frequency_domain", allow_inf=("lf_hf_ratio",))
        assert fd["lf_ms2"] >= 0 and fd["hf_ms2"] >= 0 and fd["vlf_ms2"] >= 0
    summary = outcome(hrv.hrv_summary, rr, method=method)
    if not failed(summary):
        assert ("lf_hf_ratio" in summary) != ("frequency_error" in summary)


@budget(120)
@given(rr=rr_series())
@example(rr=np.array([]))
@example(rr=np.array([300.0]))
@example(rr=np.array([303.5, 1e-300, 300.8, 303.1]))
def test_psd_lomb_and_welch(rr):
    for fn in (hrv.psd_lomb, hrv.psd_welch):
        result = outcome(fn, rr)
        if not failed(result):
            freqs, psd = result[0], result[1]
            assert freqs.shape == psd.shape and np.all(np.isfinite(psd)), fn.__name__


# -- signals: PPG ----------------------------------------------------------------------------------------------
@budget(120)
@given(
    rec=recordings(min_duration_s=1.0, plausible=PULSE_RATES),
    band_hz=st.one_of(st.just(ppg.PULSE_FILTER_BAND_HZ), band_edges),
)
def test_bandpass_pulse(rec, band_hz):
    x, fs = rec
    result = outcome(ppg.bandpass_pulse, x, fs, band_hz)
    if not failed(result):
        assert result.shape == x.shape and np.all(np.isfinite(result))


@budget(160)
@given(rec=recordings(min_duration_s=ppg.MIN_PPG_DURATION_S, plausible=PULSE_RATES))
@example(rec=(np.array([]), None))
@example(rec=(np.array([]), 8.0))
@example(rec=(_NOISE[:3], 1))
@example(rec=(_NAN_RUN, 1))
@example(rec=(_IMPULSE, 8.0))
def test_detect_pulse_peaks_and_period(rec):
    x, fs = rec
    result = outcome(ppg.detect_pulse_peaks, x, fs)
    if not failed(result):
        assert_indices(result, x.size, "pulse peaks")
    period = outcome(ppg.local_pulse_period_s, x, fs)
    if not failed(period):
        assert period.shape == x.shape and np.all(np.isfinite(period)) and np.all(period > 0)


@budget(120)
@given(peaks=peak_arrays, fs=rates())
@example(peaks=np.array([math.inf, math.inf]), fs=250.0)
def test_pulse_intervals_and_rate(peaks, fs):
    intervals = outcome(ppg.pulse_intervals_ms, peaks, fs)
    if not failed(intervals):
        assert np.all(np.isfinite(intervals)) and np.all(intervals > 0)
    hr = outcome(ppg.heart_rate_from_peaks_bpm, peaks, fs)
    if not failed(hr):
        assert_finite_number(hr, "heart rate")
        assert hr > 0


@budget(120)
@given(
    rec=recordings(min_duration_s=spectrum.MIN_SPECTRAL_WINDOW_S, plausible=PULSE_RATES),
    hr_bpm=st.one_of(st.none(), st.floats(40, 200), st.floats(allow_nan=True, allow_infinity=True)),
)
def test_ppg_spectral_rate_and_snr(rec, hr_bpm):
    x, fs = rec
    hr = outcome(ppg.heart_rate_spectrum_bpm, x, fs)
    if not failed(hr):
        assert_finite_number(hr, "heart rate")
    snr = outcome(ppg.pulse_snr_db, x, fs, hr_bpm)
    if not failed(snr):
        assert_finite_number(snr, "pulse SNR")


# -- signals: rPPG ---------------------------------------------------------------------------------------------
@budget(40)
@given(rec=rgb_recordings(), method=st.sampled_from(sorted(rppg.METHODS)))
@example(rec=(_SKIN * 1e300, 30.0), method="lgi")
def test_rppg_methods(rec, method):
    rgb, fs = rec
    result = outcome(rppg.METHODS[method], rgb, fs)
    if not failed(result):
        assert result.shape == (rgb.shape[0],) and np.all(np.isfinite(result))
        assert result.std() == pytest.approx(1.0, rel=1e-6)


@budget(30)
@given(
    rec=rgb_recordings(),
    signature=st.one_of(
        st.none(),
        hnp.arrays(np.float64, st.integers(0, 4), elements=st.floats(allow_nan=True, allow_infinity=True)),
    ),
)
@example(rec=(_SKIN, 30.0), signature=np.full(3, 7.741e153))
def test_pbv_with_signature(rec, signature):
    rgb, fs = rec
    result = outcome(rppg.pbv, rgb, fs, signature=signature)
    if not failed(result):
        assert result.shape == (rgb.shape[0],) and np.all(np.isfinite(result))


@budget(120)
@given(rec=recordings(min_duration_s=spectrum.MIN_SPECTRAL_WINDOW_S, plausible=PULSE_RATES))
def test_pulse_to_hr_hrv(rec):
    x, fs = rec
    result = outcome(rppg.pulse_to_hr_hrv, x, fs)
    if not failed(result):
        assert_finite_number(result["hr_bpm"], "hr_bpm")
        assert_finite_number(result["snr_db"], "snr_db")
        assert ("rmssd_ms" in result) != ("hrv_error" in result)
        if "peaks" in result:
            assert_indices(result["peaks"], x.size, "pulse peaks")


# -- signals: metrics ------------------------------------------------------------------------------------------
metric_values = st.one_of(
    st.floats(30, 200),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1e-300, 1e300, -1e300, 5e-324]),
)


@st.composite
def prediction_pairs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    n = draw(st.integers(0, 30))
    values = draw(st.sampled_from([st.floats(30, 200), metric_values]))  # clean rates, or anything
    pred = draw(hnp.arrays(np.float64, n, elements=values))
    ref = draw(st.one_of(hnp.arrays(np.float64, n, elements=values), st.just(pred.copy())))
    if draw(st.integers(0, 9)) == 0:
        ref = draw(hnp.arrays(np.float64, st.integers(0, 30), elements=metric_values))
    return pred, ref


@budget(200)
@given(pair=prediction_pairs())
@example(pair=(np.array([1.35e154]), np.array([30.0])))
@example(pair=(np.array([30.0, 30.0]), np.array([30.0, 2.68e154])))
@example(pair=(np.array([30.0]), np.array([5e-324])))
@example(pair=(np.array([30.0, 30.0, 30.000000000000004]), np.array([30.0, 30.000000000000004, 30.0])))
def test_error_metrics(pair):
    pred, ref = pair
    for fn in (metrics.mae, metrics.rmse, metrics.mape, metrics.pearson_r):
        result = outcome(fn, pred, ref)
        if not failed(result):
            assert_finite_number(result, fn.__name__)
    r = outcome(metrics.pearson_r, pred, ref)
    if not failed(r):
        assert -1.0 - 1e-9 <= r <= 1.0 + 1e-9
    ba = outcome(metrics.bland_altman, pred, ref)
    if not failed(ba):
        assert_finite_dict(ba, "bland_altman")
        assert ba["loa_low"] <= ba["bias"] <= ba["loa_high"]


@budget(5)
@given(pair=prediction_pairs())
def test_bland_altman_plot(pair):
    fig = outcome(metrics.bland_altman_plot, *pair)
    if not failed(fig):
        assert len(fig.axes) == 1


@budget(120)
@given(rec=recordings(min_duration_s=spectrum.MIN_SPECTRAL_WINDOW_S, plausible=PULSE_RATES), hr_ref=metric_values)
def test_snr_db(rec, hr_ref):
    x, fs = rec
    result = outcome(metrics.snr_db, x, fs, hr_ref)
    if not failed(result):
        assert_finite_number(result, "snr_db")


beat_lists = st.one_of(
    hnp.arrays(np.float64, st.integers(0, 40), elements=st.floats(-10, 10**4)),
    hnp.arrays(np.float64, st.integers(0, 10), elements=st.floats(allow_nan=True, allow_infinity=True)),
)


@budget(160)
@given(
    detected=beat_lists,
    reference=beat_lists,
    tolerance=st.one_of(st.floats(0, 100), st.floats(allow_nan=True, allow_infinity=True)),
)
@example(detected=np.array([math.inf]), reference=np.array([math.inf]), tolerance=0.0)
def test_beat_detection_scores(detected, reference, tolerance):
    result = outcome(metrics.beat_detection_scores, detected, reference, tolerance)
    if not failed(result):
        assert result["tp"] + result["fn"] == reference.size
        assert result["tp"] + result["fp"] == detected.size
        assert 0.0 <= result["sensitivity"] <= 1.0 and 0.0 <= result["ppv"] <= 1.0


# -- signals: invariants on valid input -------------------------------------------------------------------------
def _synthetic_ecg(hr_bpm: float, fs: float, duration_s: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """ECG (mV) as Gaussian P, Q, R, S, T waves per beat (2 % RR jitter), baseline wander and noise; and the R times."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(duration_s * fs)) / fs
    beats, b = [], rng.uniform(0.1, 60.0 / hr_bpm)
    while b < duration_s - 0.2:
        beats.append(b)
        b += 60.0 / hr_bpm * (1 + 0.02 * rng.standard_normal())
    x = 0.1 * np.sin(2 * np.pi * 0.25 * t) + 0.02 * rng.standard_normal(t.size)
    for beat in beats:
        for offset, amplitude, width in (
            (-0.2, 0.12, 0.025),
            (-0.03, -0.12, 0.01),
            (0, 1.2, 0.012),
            (0.03, -0.25, 0.012),
        ):
            x += amplitude * np.exp(-0.5 * ((t - beat - offset) / width) ** 2)
        x += 0.3 * np.exp(-0.5 * ((t - beat - 0.25) / 0.04) ** 2)
    return x, np.asarray(beats)


@budget(25)
@given(
    hr_bpm=st.floats(40.0, 180.0),
    fs=st.sampled_from([128.0, 250.0, 360.0, 500.0]),
    scale=st.sampled_from([1.0, -1.0, 1e-3, -1e3, 1e3]),  # units (V, mV, uV) and lead polarity
    seed=st.integers(0, 2**16),
)
def test_heart_rate_of_a_clean_synthetic_ecg(hr_bpm, fs, scale, seed):
    x, beats = _synthetic_ecg(hr_bpm, fs, 10.0, seed)
    truth = 60.0 / np.mean(np.diff(beats))
    peaks64 = ecg.detect_r_peaks(scale * x, fs)
    peaks32 = ecg.detect_r_peaks((scale * x).astype(np.float32), fs)
    assert peaks64.size == beats.size
    assert np.max(np.abs(peaks64 / fs - beats)) < 0.02  # every R peak within 20 ms
    assert ecg.heart_rate_from_r_peaks(peaks64, fs) == pytest.approx(truth, abs=1.0)
    # float32 input (a recorder's native type) finds the same beats, to a sample.
    assert peaks32.size == peaks64.size and np.max(np.abs(peaks32 - peaks64)) <= 1


@budget(60)
@given(rr_ms=st.floats(300.0, 1800.0), n=st.integers(4, 300))
def test_hrv_of_a_constant_rr_series_is_zero(rr_ms, n):
    td = hrv.time_domain(np.full(n, rr_ms))
    assert td["rmssd_ms"] == 0.0 and td["pnn50"] == 0.0
    assert td["sdnn_ms"] == pytest.approx(0.0, abs=1e-9)  # the mean of n equal floats can round off by an ulp
    assert td["mean_hr_bpm"] == pytest.approx(60000.0 / rr_ms)


@budget(60)
@given(rr=rr_series())
def test_time_domain_ignores_direction_and_dtype(rr):
    """RMSSD and SDNN are the same read backwards, and for float32 or float64 intervals."""
    td = outcome(hrv.time_domain, rr.astype(np.float64))
    assume(not failed(td))
    backwards = hrv.time_domain(rr[::-1].astype(np.float64))
    single = hrv.time_domain(rr.astype(np.float32))
    for key in ("rmssd_ms", "sdnn_ms", "mean_nn_ms"):
        assert backwards[key] == pytest.approx(td[key], rel=1e-9, abs=1e-9)
        assert single[key] == pytest.approx(td[key], rel=1e-4, abs=1e-3)


@budget(15)
@given(hr_bpm=st.floats(45.0, 180.0), method=st.sampled_from(sorted(rppg.METHODS)), seed=st.integers(0, 2**16))
def test_rppg_heart_rate_of_a_clean_trace(hr_bpm, method, seed):
    fs = 30.0
    t = np.arange(int(10 * fs)) / fs
    pulse = np.sin(2 * np.pi * hr_bpm / 60 * t) + 0.3 * np.sin(2 * np.pi * 2 * hr_bpm / 60 * t + 1)
    illumination = 1 + 0.01 * np.sin(2 * np.pi * 0.1 * t)
    rgb = (
        np.array([170.0, 115.0, 90.0])
        * illumination[:, None]
        * (1 - 0.003 * np.array([0.33, 0.77, 0.53]) * pulse[:, None])
    )
    rgb += np.random.default_rng(seed).normal(0, 0.05, rgb.shape)
    assert rppg.heart_rate_bpm(rppg.METHODS[method](rgb, fs), fs) == pytest.approx(hr_bpm, abs=2.0)


@budget(80)
@given(pair=prediction_pairs())
def test_error_metric_relations(pair):
    pred, ref = pair
    mae = outcome(metrics.mae, pred, ref)
    assume(not failed(mae))
    assert mae <= metrics.rmse(pred, ref) * (1 + 1e-12) + 1e-12
    assert metrics.mae(pred, pred) == 0.0


# -- signals: the bad-input table --------------------------------------------------------------------------------
def _ecg_10s() -> np.ndarray:
    return _synthetic_ecg(72.0, 250.0, 10.0, 0)[0]


SIGNAL_BAD_INPUTS = {
    "heart rate of a flat-line ECG (lead off)": lambda: ecg.detect_r_peaks(np.zeros(2500), 250.0),
    "ECG with sampling rate 0": lambda: ecg.detect_r_peaks(_ecg_10s(), 0),
    "ECG with sampling rate 2.5e9 Hz (a wrong unit)": lambda: ecg.detect_r_peaks(_ecg_10s(), 2.5e9),
    "ECG values of 1e300 (corrupt scale)": lambda: ecg.detect_r_peaks(_ecg_10s() * 1e300, 250.0),
    "HRV of one RR interval": lambda: hrv.time_domain(np.array([800.0])),
    "LF/HF of an RR series with a 5-minute gap": lambda: hrv.frequency_domain(np.r_[np.full(40, 800.0), 300_000.0]),
    "windowed heart rate with step_s = 1e-300": lambda: ecg.windowed_hr_bpm(
        np.array([0, 250, 500]), 250.0, 10.0, 10.0, 1e-300
    ),
    "irregular timestamps in ns resampled to 250 Hz": lambda: quality.resample_irregular(
        np.array([0.0, 4e9, 8e9]), np.array([0.1, 0.2, 0.3]), 250.0
    ),
    "PPG sampled at 5 Hz": lambda: ppg.detect_pulse_peaks(np.sin(np.arange(100) / 2.0), 5.0),
}


@pytest.mark.parametrize("case", list(SIGNAL_BAD_INPUTS))
def test_signal_bad_inputs_say_what_is_wrong(bad_input, case):
    with pytest.raises(SignalError) as err:
        SIGNAL_BAD_INPUTS[case]()
    bad_input.record("signals", case, str(err.value))


# -- readers' parsers --------------------------------------------------------------------------------------------
def parsed(root: Path, fn: Callable[..., Any], *args: Any, strict: bool = True, **kwargs: Any) -> Any:
    """`fn(*args, **kwargs)`, or the `CorpusError` it raised, which must name a file or folder under `root` (the
    example's input) and say what is wrong; any other exception (and, when `strict`, any RuntimeWarning) fails
    the example."""
    with warnings.catch_warnings():
        warnings.simplefilter("error" if strict else "ignore", RuntimeWarning)
        try:
            result = fn(*args, **kwargs)
        except CorpusError as err:
            assert err.problem.strip(), f"{fn.__name__}: CorpusError without a problem"
            # A pure string check: a path holding a NUL byte (from a file's content) cannot be resolved.
            named = os.path.abspath(err.path)
            assert os.path.commonpath([named, os.path.abspath(root)]) == os.path.abspath(root), f"names {named}"
            event(f"{fn.__name__}: refused")
            return err
    event(f"{fn.__name__}: parsed")
    return result


def write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", errors="surrogatepass")
    return path


# Text a corpus file might hold instead of what it should: anything, a number in another script ("²" passes
# str.isdigit(), "١" is an Arabic-Indic one), separators, quotes, NaN/inf spellings, huge numbers.
ODD_TOKENS = ("", " ", "²", "١٢", "٣", "-1", "1e999", "nan", "inf", "-inf", "1_000", "0x10", "9" * 40, '"', ",", "\t")
tokens = st.one_of(st.sampled_from(ODD_TOKENS), st.text(max_size=8), st.integers(-3, 300).map(str))
free_text = st.one_of(st.text(max_size=300), st.binary(max_size=300))


def csv_text(rows: list[list[str]], sep: str = ",") -> str:
    return "\n".join(sep.join(row) for row in rows) + "\n"


def spoil(draw: st.DrawFn, fields: list[str], odd: st.SearchStrategy = tokens) -> list[str]:
    """The fields as given or, one time in four, with one field replaced by an odd token: most rows stay valid,
    so the examples reach past the first check, and each kind of field gets its turn at being wrong."""
    if fields and draw(st.integers(0, 3)) == 3:
        fields = list(fields)
        fields[draw(st.integers(0, len(fields) - 1))] = draw(odd)
    return fields


def row_counts(most: int = 4, least: int = 1) -> st.SearchStrategy:
    return st.one_of(st.integers(least, most), st.integers(least, most), st.integers(0, least))


@st.composite
def fer_csv(draw: st.DrawFn) -> str | bytes:
    """A FER-2013 CSV: the header and rows, fields valid or odd (codes, pixel strings, usages)."""
    if draw(st.integers(0, 9)) == 9:
        return draw(free_text)
    header = draw(st.sampled_from([["emotion", "pixels", "Usage"], ["emotion", " Usage", " pixels"], ["a", "b"]]))
    rows = [header]
    odd_pixels = st.one_of(st.lists(st.integers(0, 999).map(str), max_size=30).map(" ".join), tokens)
    for k in range(draw(row_counts())):
        valid = {"emotion": str(k % 7), "pixels": " ".join([str(k)] * 2304), "Usage": "Training"}
        fields = [valid.get(c.strip(), "x") for c in header]
        rows.append(spoil(draw, fields, st.one_of(tokens, odd_pixels)))
    return csv_text(rows)


@budget(80)
@given(content=fer_csv())
@example(content="emotion,pixels,Usage\n²," + " ".join(["128"] * 2304) + ",Training\n")
def test_fer2013_csv(tmp_path_factory, content):
    root = tmp_path_factory.mktemp("fer")
    path = write(root, "fer2013.csv", content)
    corpus = Fer2013Corpus(on_error="skip")
    items = parsed(root, corpus.read_csv, path)
    if not isinstance(items, CorpusError):
        for item in items:
            image = parsed(root, corpus.load_image, item)
            assert image.shape == (48, 48, 3) and image.dtype == np.uint8


@budget(80)
@given(strings=st.lists(st.one_of(st.just(" ".join(["7"] * 4)), st.text(max_size=40)), max_size=5))
def test_fer2013_pixel_rows(strings):
    values, reasons = decode_pixel_rows(strings, 4)
    assert values.shape == (len(strings), 4) and values.dtype == np.uint8
    assert set(reasons) <= set(range(len(strings)))


@st.composite
def affectnet_list(draw: st.DrawFn) -> str | bytes:
    """An AffectNet file list (with or without its header) with valid and odd fields."""
    if draw(st.integers(0, 9)) == 9:
        return draw(free_text)
    rows = [list(AFFECTNET_COLUMNS)] if draw(st.booleans()) else []
    odd = st.one_of(st.sampled_from(["0", "-5", "1e400", "nan", "11"]), tokens)
    for k in range(draw(row_counts())):
        rows.append(spoil(draw, [f"1/{k}.jpg", "10", "12", "100", "120", '"1;2;3"', str(k % 8), "0.5", "-0.2"], odd))
    return csv_text(rows)


@budget(80)
@given(content=affectnet_list())
@example(content='1/0.jpg,10,10,10,10,"1;2;3",²,0.5,\n')
def test_affectnet_lists(tmp_path_factory, content):
    root = tmp_path_factory.mktemp("affectnet")
    for i in range(4):
        write(root, f"Manually_Annotated_Images/1/{i}.jpg", b"")
    write(root, "training.csv", content)
    items = parsed(root, AffectNetCorpus(on_error="skip").read, root)
    if not isinstance(items, CorpusError):
        assert all(item.media.face_box is not None for item in items)


@budget(80)
@given(
    lines=st.lists(
        st.one_of(st.sampled_from(["train_00001.jpg 5", "test_0001.jpg 1"]), st.text(max_size=30)), max_size=4
    )
)
def test_rafdb_label_file(tmp_path_factory, lines):
    root = tmp_path_factory.mktemp("rafdb")
    write(root, "EmoLabel/list_patition_label.txt", "\n".join(lines))
    write(root, "Image/aligned/train_00001_aligned.jpg", b"")
    write(root, "Image/aligned/test_0001_aligned.jpg", b"")
    parsed(root, RafDbCorpus(on_error="skip").read, root)


@budget(80)
@given(
    content=st.one_of(
        *[st.sampled_from(["   3.0000000e+00", "7", "  1.0e+00\n", "8", "-1", "2.5", "1e999", "nan", "²"])] * 3,
        free_text,
    )
)
@example(content="   7.0000000e+00")
def test_ckplus_emotion_file(tmp_path_factory, content):
    root = tmp_path_factory.mktemp("ckplus")
    sequence = root / "cohn-kanade-images/S005/001"
    for k in range(1, 4):
        write(sequence, f"S005_001_0000000{k}.png", b"")
    label = write(root, "Emotion/S005/001/S005_001_00000003_emotion.txt", content)
    frames = parsed(root, CkPlusCorpus(on_error="fail").sequence_frames, sequence, label)
    if not isinstance(frames, CorpusError):
        assert all(name in CKPLUS_LABELS for _, name in frames)


file_stems = st.one_of(
    st.lists(st.sampled_from(["01", "02", "03", "08", "24", "25", "00", "٠١", "²²"]), min_size=7, max_size=7).map(
        "-".join
    ),
    st.lists(st.one_of(st.sampled_from(["1001", "1091", "1092", "IEO", "ANG", "XX", "١٠٠١"]), tokens), max_size=5).map(
        "_".join
    ),
    st.text(max_size=24),
)


@budget(120)
@given(stem=file_stems)
def test_ravdess_and_cremad_file_names(stem):
    for parse in (parse_ravdess_name, parse_cremad_name):
        code, reason = parse(stem)
        assert (code is None) == bool(reason), f"{parse.__name__}({stem!r})"


@st.composite
def ubfc_ground_truth(draw: st.DrawFn) -> tuple[str, str | bytes]:
    """(file name, content) of a UBFC-rPPG ground truth: DATASET_2's three lines or DATASET_1's 4-column CSV."""
    n = draw(row_counts(8, least=2))
    if draw(st.booleans()):
        lines = [
            spoil(draw, [f"{np.sin(k):.7e}" for k in range(n)]),
            spoil(draw, [f"{70 + k:.7e}" for k in range(n)]),
            spoil(draw, [f"{0.033 * k:.7e}" for k in range(n)]),
        ]
        lines = lines[: draw(st.sampled_from([3, 3, 3, 2, 4]))]
        return "ground_truth.txt", draw(st.one_of(*[st.just("\n".join("  ".join(v) for v in lines))] * 3, free_text))
    rows = [spoil(draw, [str(33 * k), "70", "98", str(k % 5)][: draw(st.sampled_from([4, 4, 4, 3]))]) for k in range(n)]
    return "gtdump.xmp", draw(st.one_of(*[st.just(csv_text(rows))] * 3, free_text))


@budget(80)
@given(gt=ubfc_ground_truth())
def test_ubfc_rppg_ground_truth(tmp_path_factory, gt):
    root = tmp_path_factory.mktemp("ubfc")
    result = parsed(root, read_ubfc_ground_truth, write(root, *gt))
    if not isinstance(result, CorpusError):
        assert result.ppg.shape == result.hr_bpm.shape == result.times_s.shape
        assert np.all(np.isfinite(result.times_s)) and np.all(np.diff(result.times_s) >= 0)


json_values = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=10)
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=12), children, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def pure_json(draw: st.DrawFn) -> str | bytes:
    """A PURE meta file: valid packages and image stamps with, now and then, one entry or field replaced by any
    JSON value (or a list too short); other JSON; text; an int of 5000 digits; nesting 100,000 deep."""
    kind = draw(st.sampled_from(["meta", "meta", "meta", "json", "text", "huge_int", "deep"]))
    if kind == "meta":
        t0 = 1_392_643_993_642_362_000  # ns since the epoch, as the release writes them
        packages = [
            {"Timestamp": t0 + 16_000_000 * k, "Value": {"waveform": 50 + k, "pulseRate": 70, "signalStrength": 4}}
            for k in range(draw(row_counts(5, least=2)))
        ]
        images = [{"Timestamp": t0 + 33_000_000 * k} for k in range(draw(row_counts(5, least=2)))]
        if draw(st.integers(0, 2)) == 2:
            entries = draw(st.sampled_from([packages, images, packages[0]["Value"] if packages else images]))
            keys = list(range(len(entries))) if isinstance(entries, list) else list(entries)
            if keys:
                entries[draw(st.sampled_from(keys))] = draw(json_values)
        return json.dumps({"/FullPackage": packages, "/Image": images}, allow_nan=True)
    if kind == "json":
        return json.dumps(draw(json_values), allow_nan=True)
    if kind == "huge_int":  # beyond Python's default limit on int digits
        return '{"/Image": [{"Timestamp": ' + "9" * 5000 + "}]}"
    if kind == "deep":
        return "[" * 100_000
    return draw(free_text)


@budget(80)
@given(content=pure_json())
@example(content="[" * 100_000)
@example(content='{"/Image": [{"Timestamp": ' + "9" * 5000 + "}]}")
def test_pure_meta_file(tmp_path_factory, content):
    root = tmp_path_factory.mktemp("pure")
    record = parsed(root, read_pure_json, write(root, "01-01.json", content))
    if not isinstance(record, CorpusError):
        assert record.package_ns.shape == record.waveform.shape == record.pulse_rate.shape


@budget(80)
@given(stamps=st.lists(st.one_of(st.sampled_from(["20120918T131600000", "20121001T162"]), tokens), max_size=6))
def test_swell_kw_timestamps(stamps):
    import pandas as pd

    times = parse_timestamps(pd.Series(stamps, dtype=object))
    assert len(times) == len(stamps)


@st.composite
def swell_csv(draw: st.DrawFn) -> str | bytes:
    if draw(st.integers(0, 9)) == 9:
        return draw(free_text)
    rows = [["PP", "C", "Condition", "timestamp", "HR", "RMSSD", "SCL"]]
    for minute in range(draw(row_counts(6))):
        condition = "NITR"[minute % 4]
        rows.append(spoil(draw, ["PP1", "1", condition, f"20120918T13{16 + minute:02d}00000", "70", "0.05", "999"]))
    return csv_text(rows)


@budget(80)
@given(content=swell_csv())
@example(content="PP,C,Condition,timestamp,HR,RMSSD,SCL\n²,1,N,20120918T131600000,70,70,70\n")
@example(content="PP,C,Condition,timestamp,HR,RMSSD,SCL\n,1,N,20120918T131600000,70,70,70\n")
@example(content="PP,C,Condition,timestamp,HR,RMSSD,SCL\n/0,1,N,20120918T131600000,70,0.05,999\n")
def test_swell_kw_table(tmp_path_factory, content):
    root = tmp_path_factory.mktemp("swell")
    write(root, "features.csv", content)
    corpus = SwellKwCorpus(file="features.csv", on_error="skip")
    items = parsed(root, corpus.read, root)
    if not isinstance(items, CorpusError):
        for item in items:
            series = parsed(root, corpus.load_physiology, item)
            if not isinstance(series, CorpusError):
                assert len(series.times_s) == len(series.hr_bpm)


BDF_FS = 256
_BDF_DIGITAL = {"digital_min": -8388608, "digital_max": 8388607}


@pytest.fixture(scope="module")
def bdf_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A small valid MAHNOB-like BDF (EXG2 and a Status channel with one trigger), written once per module."""
    path = tmp_path_factory.mktemp("bdf") / "Part_1_S_Trial1_emotion.bdf"
    status = np.zeros(4 * BDF_FS)
    status[BDF_FS:] = 4.0
    headers = [
        {"label": "EXG2", "sample_frequency": BDF_FS, "dimension": "uV", **_BDF_DIGITAL}
        | {"physical_min": -262144, "physical_max": 262143},
        {"label": "Status", "sample_frequency": BDF_FS, "dimension": "Boolean", **_BDF_DIGITAL}
        | {"physical_min": -8388608, "physical_max": 8388607},
    ]
    writer = pyedflib.EdfWriter(str(path), 2, file_type=pyedflib.FILETYPE_BDF)
    try:
        writer.setSignalHeaders(headers)
        writer.writeSamples([np.sin(np.arange(4 * BDF_FS) / 10.0) * 1000.0, status])
    finally:
        writer.close()
    return path.read_bytes()


bdf_damage = st.one_of(
    st.just(("whole", None)),
    st.tuples(st.just("cut"), st.floats(0.0, 1.0)),
    st.tuples(
        st.just("header"),  # the header: 256 bytes plus 256 per channel
        st.lists(
            st.tuples(
                st.integers(0, 256 * 3 - 1),
                st.one_of(
                    st.sampled_from([b"0", b"-1", b"99999999", b" ", b"1e999"]), st.binary(min_size=1, max_size=8)
                ),
            ),
            min_size=1,
            max_size=6,
        ),
    ),
    st.tuples(st.just("bytes"), st.binary(max_size=2000)),
)


@budget(80)
@given(damage=bdf_damage, lead=st.sampled_from(["EXG2", "EXG2-Status", "EXG9"]))
@example(damage=("whole", None), lead="EXG2")
def test_mahnob_bdf_rate_and_trigger(tmp_path_factory, bdf_bytes, damage, lead):
    """The BDF as written, cut anywhere, with header bytes overwritten, or arbitrary bytes."""
    kind, how = damage
    content = bytearray(bdf_bytes)
    if kind == "cut":
        content = content[: int(how * len(content))]
    elif kind == "header":
        for at, chunk in how:
            content[at : at + len(chunk)] = chunk
    elif kind == "bytes":
        content = bytearray(how)
    event(f"BDF {kind}")
    root = tmp_path_factory.mktemp("mahnob")
    path = write(root, "Part_1_S_Trial1_emotion.bdf", bytes(content))
    ecg_lead = EcgLead.parse(lead)
    sync = parsed(root, bdf_sync, path, ecg_lead)
    if not isinstance(sync, CorpusError):
        offset_s, fs = sync
        assert_finite_number(offset_s, "video onset")
        assert_finite_number(fs, "ECG rate")
        assert fs > 0 and offset_s >= 0
    values = parsed(root, read_ecg, path, ecg_lead)
    if not isinstance(values, CorpusError):
        assert values[0].ndim == 1


def _xml_attribute(value: str) -> str:
    return "".join({"&": "&amp;", "<": "&lt;", '"': "&quot;"}.get(c, c) for c in value)


@st.composite
def session_xml(draw: st.DrawFn) -> str | bytes:
    if draw(st.integers(0, 9)) == 9:
        return draw(free_text)
    is_stim, felt, subject = spoil(draw, ["1", "4", "1"], st.one_of(st.sampled_from(["12", "7", "27"]), tokens))
    return (
        f'<?xml version="1.0"?>\n<session isStim="{_xml_attribute(is_stim)}" feltEmo="{_xml_attribute(felt)}">'
        f'<subject id="{_xml_attribute(subject)}"/></session>\n'
    )


@budget(80)
@given(
    xml=session_xml(),
    folder_name=st.one_of(st.just("10"), st.sampled_from(["²", "١٢", "٣", "x"]), st.text(max_size=6)),
)
@example(xml="", folder_name="²")
def test_mahnob_session_xml(tmp_path_factory, bdf_bytes, xml, folder_name):
    assume(folder_name not in ("", ".", "..") and "/" not in folder_name and "\x00" not in folder_name)
    assume(not folder_name.startswith("."))
    root = tmp_path_factory.mktemp("mahnob")
    folder = root / "Sessions" / folder_name
    write(folder, "session.xml", xml)
    write(folder, "Part_1_S_Trial1_emotion.bdf", bdf_bytes)
    write(folder, "P1-Rec1-2009.07.09.17.53.46_C1 trigger _C_Section_10.avi", b"")
    items = parsed(root, MahnobHciCorpus(sessions=("stimulus", "neutral", "tagging"), on_error="skip").read, root)
    if not isinstance(items, CorpusError):
        assert all(item.cardiac.fs_hz == BDF_FS for item in items)


# Side files every manifest example can point at (docs/MANIFEST.md): a video, an image, frames, a cardiac CSV.
MANIFEST_COLUMNS = ("path", "subject", "id", "split", "fps", "expression", "stress", "cardiac", "cardiac_kind")
MANIFEST_COLUMNS += ("cardiac_fs_hz", "cardiac_offset_s", "cardiac_column", "gender", "face_boxes", "frame_times")
MANIFEST_VALID = {
    "path": "v.mp4",
    "subject": "s1",
    "id": "a",
    "split": "train",
    "fps": "30",
    "expression": "happy",
    "stress": "high",
    "cardiac": "ecg.csv",
    "cardiac_kind": "ecg",
    "cardiac_fs_hz": "250",
    "cardiac_offset_s": "0.5",
    "cardiac_column": "ecg",
    "gender": "f",
    "face_boxes": "boxes.csv",
    "frame_times": "times.csv",
}
manifest_odd = st.one_of(
    st.sampled_from(["p.jpg", "frames", "missing.mp4", "../v.mp4", "VAL", "ppg", "hr", "0", "-1", "nan", "time_s"]),
    tokens,
)


@st.composite
def manifest_rows(draw: st.DrawFn) -> list[dict[str, str]]:
    columns = ["path", "subject", *draw(st.lists(st.sampled_from(MANIFEST_COLUMNS[2:]), max_size=6, unique=True))]
    if draw(st.integers(0, 9)) == 9:
        columns = draw(st.lists(st.one_of(st.sampled_from(MANIFEST_COLUMNS), st.text(max_size=6)), max_size=5))
    rows = []
    for k in range(draw(row_counts())):
        valid = [MANIFEST_VALID.get(c, "x") + (str(k) if c in ("id", "subject") else "") for c in columns]
        rows.append(dict(zip(columns, spoil(draw, valid, manifest_odd), strict=True)))
    return rows


def manifest_side_files(root: Path) -> None:
    write(root, "v.mp4", b"\x00\x00\x00\x18ftypmp42")
    write(root, "p.jpg", b"\xff\xd8\xff")
    write(root, "frames/frame_1.png", b"")
    write(root, "frames/frame_2.png", b"")
    write(root, "ecg.csv", "time_s,ecg\n0,0.1\n0.004,0.3\n0.008,0.2\n")
    write(root, "boxes.csv", "frame,x0,y0,x1,y1\n0,1,2,30,40\n")
    write(root, "times.csv", "time_s\n0\n0.033\n")


@budget(80)
@given(rows=manifest_rows(), fmt=st.sampled_from(["csv", "jsonl"]), raw=st.one_of(st.none(), st.none(), free_text))
@example(rows=[], fmt="jsonl", raw=b"\x80")
@example(rows=[], fmt="jsonl", raw="[" * 100_000)
def test_manifest(tmp_path_factory, rows, fmt, raw):
    root = tmp_path_factory.mktemp("manifest")
    manifest_side_files(root)
    if raw is not None:
        content = raw
    elif fmt == "csv":
        columns = list(dict.fromkeys(c for row in rows for c in row)) or ["path", "subject"]
        content = csv_text([columns] + [[row.get(c, "") for c in columns] for row in rows])
    else:
        content = "\n".join(json.dumps(row) for row in rows)
    name = f"manifest.{fmt}"
    write(root, name, content)
    corpus = ManifestCorpus(path=name, on_error="skip")
    items = parsed(root, corpus.read, root)
    if not isinstance(items, CorpusError):
        for item in items:
            assert item.subject_id and item.split in ("train", "val", "test")
            if item.cardiac is not None:
                parsed(root, corpus.load_cardiac, item)


@st.composite
def table_text(draw: st.DrawFn, columns: tuple[str, ...]) -> str | bytes:
    """A small CSV with the given columns (or some of them), its numbers increasing along each row and down each
    column (valid times, events, segments and boxes), text in the label and file columns; a row now and then
    with an odd token."""
    if draw(st.integers(0, 9)) == 9:
        return draw(free_text)
    header = list(columns) if draw(st.integers(0, 4)) < 4 else draw(st.lists(st.sampled_from(columns), max_size=4))
    rows = [header]
    for k in range(draw(row_counts(5, least=2))):
        valid = [f"{10 * k + j:.3f}" if c not in ("label", "file") else "happy" for j, c in enumerate(header)]
        rows.append(spoil(draw, valid, st.one_of(st.floats(0, 100).map(str), tokens)))
    return csv_text(rows, sep=draw(st.sampled_from([",", ",", ",", "\t", " "])))


npy_arrays = st.one_of(
    hnp.arrays(np.float64, st.integers(2, 50), elements=st.floats(-10, 10)),
    hnp.arrays(
        st.sampled_from([np.float64, np.int16, np.complex128, np.bool_, np.dtype("<U3")]),
        hnp.array_shapes(min_dims=0, max_dims=3, max_side=4),
    ),
)


@budget(80)
@given(
    content=table_text(("time_s", "ecg")),
    suffix=st.sampled_from([".csv", ".tsv", ".txt", ".npy"]),
    column=st.sampled_from([None, "ecg", "time_s", "x"]),
    array=npy_arrays,
    npy_bytes=st.booleans(),
)
@example(content="", suffix=".npy", column=None, array=np.array([1 + 1j, 2 + 0j]), npy_bytes=False)
def test_manifest_cardiac_file(tmp_path_factory, content, suffix, column, array, npy_bytes):
    root = tmp_path_factory.mktemp("cardiac")
    if suffix == ".npy" and not npy_bytes:
        path = root / "signal.npy"
        np.save(path, array)  # a real array, of any shape and dtype
    else:
        path = write(root, f"signal{suffix}", content)
    result = parsed(root, read_cardiac_file, path, column)
    if not isinstance(result, CorpusError):
        times, values = result
        # NaN/inf samples are kept on purpose: dropouts, bridged or masked when labelling (`cardiac_truth`).
        assert values.ndim == 1 and values.dtype == np.float64
        if times is not None:
            assert times.shape == values.shape and np.all(np.diff(times) > 0)


@budget(80)
@given(
    segments=table_text(("start_s", "end_s", "label")),
    events=table_text(("start_s", "apex_start_s", "apex_end_s", "end_s", "label")),
    frame_times=table_text(("time_s", "file")),
    boxes=table_text(("frame", "x0", "y0", "x1", "y1")),
)
@example(segments="", events="", frame_times="", boxes="frame,x0,y0,x1,y1\n0,0,0,0,happy\n")
@example(segments="", events="", frame_times="time_s,file\n0.000,happy\n10.000,\x00\n", boxes="")
def test_manifest_label_and_side_tables(tmp_path_factory, segments, events, frame_times, boxes):
    root = tmp_path_factory.mktemp("tables")
    write(root, "frames/happy", b"")  # the frame the `file` column names
    frames = [root / "frames/happy"]
    parsed(root, read_stress_segments, write(root, "segments.csv", segments))
    parsed(root, read_expression_events, write(root, "events.csv", events))
    parsed(root, read_frame_times, write(root, "times.csv", frame_times), root / "frames", frames)
    result = parsed(root, read_face_boxes, write(root, "boxes.csv", boxes))
    if not isinstance(result, CorpusError):
        assert result.ndim == 2 and result.shape[1] == 4


@st.composite
def ppg_csv(draw: st.DrawFn) -> str | bytes:
    """A one-column PPG CSV at 100 Hz (a pulse at 50-150 bpm, a few seconds), or a broken one."""
    kind = draw(st.sampled_from(["pulse", "pulse", "flat", "short", "text", "columns"]))
    if kind == "text":
        return draw(free_text)
    t = np.arange(int(100 * draw(st.sampled_from([6.0, 10.0, 2.0])))) / 100.0
    x = np.sin(2 * np.pi * draw(st.floats(50, 150)) / 60 * t) ** 9 if kind != "flat" else np.zeros_like(t)
    if kind == "short":
        x = x[: draw(st.integers(0, 150))]
    lines = [f"{v:.4f}" for v in x]
    if kind == "columns":
        lines = [f"{v:.4f},{v:.4f}" for v in x]
    if lines and draw(st.integers(0, 3)) == 3:
        lines[draw(st.integers(0, len(lines) - 1))] = draw(tokens)
    return "\n".join(lines) + "\n"


@budget(20)
@given(content=ppg_csv())
@example(content=":")
@example(content="0")
@example(content="")
def test_physiology_pulse_source_csv(tmp_path_factory, content):
    """The synthetic corpus' `pulse_source` option: a one-column PPG CSV."""
    root = tmp_path_factory.mktemp("pulse_source")
    # Not strict: heartpy's own statistics warn about empty slices on short records (its peaks are still fine).
    source = parsed(root, load_pulse_source, write(root, "ppg.csv", content), 100.0, strict=False)
    if not isinstance(source, CorpusError):
        assert source.ppg_peak_times_s is not None and np.all(np.isfinite(source.ppg_peak_times_s))


@st.composite
def cardiac_signals(draw: st.DrawFn) -> CardiacSignal:
    """Loaded cardiac signals as readers hand them to the labeller: any kind, values, rates and sample times."""
    kind = draw(st.sampled_from(["ecg", "ppg", "hr"]))
    if kind == "hr":
        values = draw(st.one_of(st.just(70 + 5 * np.sin(np.arange(40) / 5.0)), signals(max_size=60)))
    else:
        fs = 250.0 if kind == "ecg" else 64.0
        values = draw(
            st.one_of(st.just(_synthetic_ecg(70.0, fs, 20.0, 0)[0]), recordings(min_duration_s=8.0).map(lambda r: r[0]))
        )
    values = np.asarray(values, dtype=np.float64).ravel()
    step = {"ecg": 1 / 250.0, "ppg": 1 / 64.0, "hr": 0.5}[kind]
    if kind == "hr" or draw(st.booleans()):
        odd_times = hnp.arrays(np.float64, values.size, elements=st.floats(allow_nan=True, allow_infinity=True))
        times = draw(st.one_of(st.just(np.arange(values.size) * step), odd_times))
        return CardiacSignal(kind, values, times_s=times, source=Path("signal.csv"))
    fs = draw(st.one_of(st.just(1.0 / step), st.floats(1e-3, 1e5)))
    return CardiacSignal(kind, values, fs_hz=fs, source=Path("signal.csv"))


@budget(80)
@given(signal=cardiac_signals(), window=st.tuples(st.floats(-10, 20), st.floats(0.1, 20)))
@example(  # sample times at float64's limit: their steps overflowed
    signal=CardiacSignal(
        "ecg", np.sin(np.arange(1500) / 10.0), times_s=np.r_[1.79e308, np.full(1499, -1e291)], source=Path("signal.csv")
    ),
    window=(0.0, 1.0),
)
def test_cardiac_truth(signal, window):
    root = Path("signal.csv").resolve().parent  # the CorpusError names the signal's source
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # gaps that are masked and said so are no failure
        truth = parsed(root, cardiac_truth, signal)
        if truth is None or isinstance(truth, CorpusError):
            return
        t0, length = window
        hr = parsed(root, truth.hr_bpm, t0, t0 + length)
        if hr is not None:
            assert_finite_number(hr, "clip heart rate")
        if truth.beat_times_s is not None:
            hrv_value = parsed(root, truth.hrv, t0)
            if hrv_value is not None:
                assert all(math.isfinite(v) for v in hrv_value)


@budget(80)
@given(label=st.one_of(st.text(max_size=20), st.sampled_from(["Happiness", " ANG ", "calm", "T2", "none"])))
def test_taxonomy_lookups(label):
    expression = LabelMap(BASIC_EXPRESSIONS, corpus_map={"none": None}, overrides={"calm": "neutral"})
    stress = LabelMap(STRESS_LEVELS, synonyms=canonical_stress)
    for labels in (expression, stress):
        index = labels.index(label)
        assert index is None or 0 <= index < len(labels.classes)
    assert canonical_expression(label) in (None, *EXPRESSION_SYNONYMS.values())


@budget(60)
@given(
    bvp=table_text(("bvp",)).map(lambda text: text.split("\n", 1)[-1] if isinstance(text, str) else text),
    info=st.one_of(st.sampled_from(["m\ntest\n", "gender: f\ngroup: ctrl\n"]), free_text),
    demographics=table_text(("ActorID", "Age", "Sex", "Race", "Ethnicity")),
)
def test_ubfc_phys_and_cremad_side_files(tmp_path_factory, bvp, info, demographics):
    """UBFC-Phys' BVP and info files, CREMA-D's demographics table."""
    root = tmp_path_factory.mktemp("side")
    values = parsed(root, read_bvp, write(root, "bvp_s1_T1.csv", bvp))
    if not isinstance(values, CorpusError):
        assert values.ndim == 1 and np.all(np.isfinite(values))
    attributes = parsed(root, read_info, write(root, "info_s1.txt", info))
    assert set(attributes) <= {"gender", "group"}
    actors = parsed(
        root, CremaDCorpus(on_error="skip")._demographics, write(root, "VideoDemographics.csv", demographics)
    )
    assert all(set(row) == {"gender", "age", "race", "ethnicity"} for row in actors.values())
