"""Fixtures for tests/signals: synthetic ECG / PPG / RGB traces with known beats, and the shared-data path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} is missing (see the shared data README)")
    return SHARED_DATA


def beat_times(duration_s: float, hr_bpm: float, seed: int = 0, jitter: float = 0.03) -> np.ndarray:
    """Beat times (s) with a respiratory-like modulation and random jitter of the RR intervals."""
    rng = np.random.default_rng(seed)
    times, t = [], 0.3
    while t < duration_s - 0.3:
        times.append(t)
        rr = 60.0 / hr_bpm * (1 + 0.05 * np.sin(2 * np.pi * 0.25 * t) + jitter * rng.standard_normal())
        t += rr
    return np.array(times)


def synth_ecg(beats_s: np.ndarray, fs: float, duration_s: float, noise_mv: float = 0.02, seed: int = 0):
    """ECG as a sum of Gaussian P, Q, R, S, T waves per beat (in the spirit of McSharry et al. 2003's ECGSYN),
    plus baseline wander and white noise. Returns ``(ecg_mv, r_peak_indices)``."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(duration_s * fs)) / fs
    x = 0.15 * np.sin(2 * np.pi * 0.2 * t) + noise_mv * rng.standard_normal(t.size)
    # (offset s, amplitude mV, width s) relative to the R peak
    waves = [(-0.2, 0.12, 0.025), (-0.03, -0.12, 0.01), (0.0, 1.2, 0.012), (0.03, -0.25, 0.012), (0.25, 0.3, 0.04)]
    for b in beats_s:
        for off, amp, width in waves:
            lo, hi = np.searchsorted(t, [b + off - 5 * width, b + off + 5 * width])
            x[lo:hi] += amp * np.exp(-0.5 * ((t[lo:hi] - b - off) / width) ** 2)
    return x, np.round(beats_s * fs).astype(int)


def synth_pulse(beats_s: np.ndarray, fs: float, duration_s: float) -> np.ndarray:
    """Finger-PPG-like pulse: a systolic and a smaller diastolic Gaussian per beat, peak 0.25 s after the beat."""
    t = np.arange(int(duration_s * fs)) / fs
    x = np.zeros(t.size)
    for b in beats_s:
        x += np.exp(-0.5 * ((t - b - 0.25) / 0.08) ** 2) + 0.35 * np.exp(-0.5 * ((t - b - 0.55) / 0.1) ** 2)
    return x


def synth_rgb(pulse: np.ndarray, fs: float, seed: int = 0, noise: float = 0.05) -> np.ndarray:
    """Skin-reflection RGB trace: per-channel DC, the pulse along [0.33, 0.77, 0.53] (green strongest),
    common-mode illumination drift and head-motion intensity changes, a specular term and camera noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(pulse.size) / fs
    p = (pulse - pulse.mean()) / pulse.std()
    dc = np.array([170.0, 115.0, 90.0])
    illum = (
        1
        + 0.02 * np.sin(2 * np.pi * 0.05 * t)
        + 0.002 * np.convolve(rng.standard_normal(t.size), np.ones(int(fs)) / np.sqrt(fs), "same")
    )
    specular = 0.1 * np.abs(np.sin(2 * np.pi * 0.07 * t))
    rgb = dc * illum[:, None] * (1 - 0.003 * np.array([0.33, 0.77, 0.53]) * p[:, None]) + specular[:, None]
    return rgb + rng.normal(0.0, noise, rgb.shape)
